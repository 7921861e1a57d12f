"""`llmcli serve` under load: the same requests straight to the fake provider and through serve.

    python bench/serve.py                     # 100 clients x 10 requests, then 500 open streams
    python bench/serve.py --clients 100 --requests 20 --streams 500
    python bench/serve.py --write-docs        # also replace the numbers in docs/performance.md

The fake OpenAI server (tests/fakeserver.py) runs in its own process; `llmcli serve` in another,
pointed at it, with the log on (every request is a row, as in use). The load comes from this
process: `--clients` asyncio clients, each sending `--requests` Chat Completions one after the
other on a new connection each (as the fake closes streams), non-streamed then streamed.
Latency is from the request's first byte to the response's last; time to first token is to the
first byte of the answer's first word. "Added" is the figure through serve minus the same
figure straight to the fake, per percentile. Server CPU and peak RSS are serve's own
(/proc/PID). Then `--streams` streams are opened through serve at once and held open (the fake
sends a word every 0.5 s) to check that all complete and what they cost in memory.

Goals (issue #12): added latency p50 <= 3 ms and p99 <= 20 ms; 500 open streams with no error
and <= 400 MiB RSS. LiteLLM's proxy is not run here (not installed on the benchmark machine).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as m

ROOT = Path(__file__).resolve().parent.parent
LLMCLI = str(Path(sys.executable).with_name("llmcli"))
KEYS = {"OPENAI_API_KEY": "sk-bench-openai", "ANTHROPIC_API_KEY": "sk-ant-bench"}
CHAT = "/v1/chat/completions"
FIRST_WORD = b"Hello"  # the fake's default answer: "Hello from the fake server."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """`llmcli serve` in its own process, pointed at the fake server."""

    def __init__(self, fake: m.ServerProcess, home: Path) -> None:
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "LLM_", "LLMCLI_"))
        }
        # The default retry policy, as in use: the fake (one thread per connection, a listen
        # backlog of 64) resets a few of 500 connections opened at once.
        env.update({**fake.env, **KEYS, "LLMCLI_HOME": str(home)})
        self.proc = subprocess.Popen(
            [LLMCLI, "serve", "--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("llmcli serve did not start")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def request(port: int, path: str, body: dict[str, Any]) -> tuple[float, float, bytes]:
    """One POST on a new connection: (seconds to the first word, seconds in all, the body)."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench-openai\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + data)
    await writer.drain()
    received = b""
    first = None
    while True:
        piece = await reader.read(65536)
        if not piece:
            break
        received += piece
        if first is None and FIRST_WORD in received.partition(b"\r\n\r\n")[2]:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    writer.close()
    status = received.split(b" ", 2)[1] if received else b"---"
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {received[-300:]!r}")
    return first if first is not None else total, total, received


async def load(port: int, path: str, model: str, stream: bool, clients: int, each: int) -> dict:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Hi there"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    firsts: list[float] = []
    totals: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        for _ in range(each):
            try:
                first, total, _ = await request(port, path, body)
            except Exception:
                errors += 1
                continue
            firsts.append(first)
            totals.append(total)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"first": sorted(firsts), "total": sorted(totals), "errors": errors, "wall": wall}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def hold(port: int, count: int) -> tuple[int, int]:
    """`count` streams through serve at once; (completed, failed)."""
    body = {"message": "Tell me slowly", "provider": "openai"}
    results = await asyncio.gather(
        *(request(port, "/stream", body) for _ in range(count)), return_exceptions=True
    )
    done = sum(1 for r in results if not isinstance(r, BaseException) and b"[DONE]" in r[2])
    return done, count - done


def retried_streams(home: Path, count: int) -> int:
    """How many of the held streams the log says took more than one attempt."""
    env = {**os.environ, "LLMCLI_HOME": str(home)}
    out = subprocess.run(
        [LLMCLI, "logs", "--json", "-n", str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return sum(1 for row in json.loads(out or "[]") if (row.get("attempts") or 1) > 1)


def phase_rows(mode: str, stream: bool, n: int, direct: dict, served: dict, cpu: float) -> list:
    rows = []
    for name, found in (("fake alone", direct), ("through serve", served)):
        rows.append(
            [
                f"{mode}, {name}",
                f"{n / found['wall']:.0f}",
                *(m.ms(pct(found["total"], p)) for p in (50, 95, 99)),
                m.ms(pct(found["first"], 50)) if stream else "",
                str(found["errors"]),
                f"{cpu * 1000 / n:.1f} ms" if found is served else "",
            ]
        )
    added = [pct(served["total"], p) - pct(direct["total"], p) for p in (50, 95, 99)]
    ttft = pct(served["first"], 50) - pct(direct["first"], 50)
    rows.append(
        [
            f"{mode}, added by serve",
            "",
            *(m.ms(a) for a in added),
            m.ms(ttft) if stream else "",
            "",
            "",
        ]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200, help="requests from one client")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10, help="per client, per mode")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    load_before = m.warn_if_busy(lambda s: print(s, file=sys.stderr))
    began = time.monotonic()
    fake = m.ServerProcess()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        serve = Serve(fake, Path(home))
        try:
            fake_port = int(fake.url.rsplit(":", 1)[1])
            phases = [(1, args.sequential), (args.clients, args.requests)]
            for (clients, each), stream in itertools.product(phases, (False, True)):
                mode = f"{clients} client{'s' if clients > 1 else ''}, " + (
                    "streamed" if stream else "whole"
                )
                # Warm-up: connections, the SDK's first request, the log's first row.
                asyncio.run(load(serve.port, CHAT, "openai/gpt-4o-mini", stream, 10, 2))
                direct = asyncio.run(load(fake_port, CHAT, "gpt-4o-mini", stream, clients, each))
                cpu = serve.cpu()
                served = asyncio.run(
                    load(serve.port, CHAT, "openai/gpt-4o-mini", stream, clients, each)
                )
                cpu = serve.cpu() - cpu
                rows += phase_rows(mode, stream, clients * each, direct, served, cpu)
            fake.script("openai", args.streams, chunk_delay=0.5)
            held = time.perf_counter()
            done, failed = asyncio.run(hold(serve.port, args.streams))
            held = time.perf_counter() - held
            peak = serve.peak_rss()
            retried = retried_streams(Path(home), args.streams)
        finally:
            serve.stop()
            fake.stop()
    headers = [
        "load",
        "req/s",
        "p50",
        "p95",
        "p99",
        "first token p50",
        "errors",
        "serve CPU per request",
    ]
    text = m.table(rows, headers)
    text += (
        f"\n\n{args.streams} streams held open at once (a word every 0.5 s): {done} complete, "
        f"{failed} failed ({retried} needed a retry), in {held:.1f} s; "
        f"serve's peak RSS {peak / 2**20:.0f} MiB."
    )
    text += f"\n\n{args.clients} clients x {args.requests} requests per mode; "
    text += m.conditions(load_before, time.monotonic() - began)
    print(text)
    if args.write_docs:
        m.replace_block(ROOT / "docs" / "performance.md", "serve", text)


if __name__ == "__main__":
    main()
