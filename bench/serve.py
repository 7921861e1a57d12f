"""`llmcli serve` under load: the same requests straight to the fake provider and through serve.

    python bench/serve.py                     # about 2 minutes
    python bench/serve.py --litellm /tmp/litellm-venv/bin/litellm    # LiteLLM's proxy as the peer
    python bench/serve.py --bare              # the floors: the openai SDK behind uvicorn, a bare httpx2 relay
    python bench/serve.py --rounds 5 --seconds 5 --write-docs

Four processes, so that none shares a GIL with another: the fake OpenAI server
(tests/fakeserver.py, `_measure.ServerProcess`), `llmcli serve` pointed at it with the log on
(every request is a row, as in use), optionally LiteLLM's proxy pointed at the same fake and the
floors (`--bare`: bench/bare_proxy.py, the openai SDK's async client behind uvicorn and nothing
else, what serve's added latency cannot go below while it calls the SDK; and under it a bare
httpx2 client relaying the bytes, what no Python server that calls a provider over HTTP goes
below), and the load
generator, started afresh for each measured run (`--drive`, below). This process only starts
them and reads /proc.

What is measured, for each target (the fake alone, serve, the peer), non-streamed and streamed:

* **Throughput, closed loop** (saturation): `--clients` clients each send `--requests` requests
  back to back. Every client waits for its answer before it sends again, so the offered load is
  whatever the slowest process in the chain can take, and the latencies are mostly time spent
  queueing behind the other 99 clients. Only the requests per second are reported.
* **Added latency, open loop**: `--clients` clients, each with its own keep-alive connection
  (reopened when the server closes it, as the fake does after a stream), send at a fixed total
  rate: Poisson arrivals, `--rate` requests per second across all clients (default: a quarter,
  the `--fraction`, of the slowest server's own closed-loop throughput measured in the same
  run, so that every server compared is a quarter busy, whatever the machine). The rate does
  not slow down when a server does, and a request's latency counts from the moment it was due,
  not from when it went out, so a server that falls behind shows it. At a rate the machine can
  carry, "added by serve" (serve's percentile minus the fake's, with all rounds' samples pooled)
  is serve's own cost per request plus the queueing its cost causes, not a queue the load
  generator built. The targets take turns, `--rounds` rounds of `--seconds` each (fake, serve,
  peer, fake, serve, peer, ...), so a busier moment of the shared machine falls on all alike.
* serve's (and the peer's) CPU time per request and its share of one core at that rate, the
  time per request its threads were ready to run but waited for a CPU (other processes on this
  shared machine: part of the added latency that is not serve's code), and the peak RSS, from
  /proc (the process and its children, for `--workers`). The footer says how far behind its
  schedule the load generator itself fell (p99): a figure near the latencies would mean the
  generator, not the server, set them.
* `--variant LABEL:VAR=VALUE,...`: one more serve with those environment variables, measured
  in the same rounds (`PYTHONPATH=DIR` runs an older copy of the llmcli package: before/after
  in one run).
* `--streams` streams opened through serve at once and held open (the fake sends a word every
  0.5 s): all must complete, and serve's peak RSS then.

Goals (issue #12): added latency p50 <= 3 ms and p99 <= 20 ms; 500 open streams with no error
and <= 400 MiB RSS; half of LiteLLM's added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
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
PEER_KEY = "sk-bench-peer-0123456789abcdef0123456789"
CHAT = "/v1/chat/completions"
FIRST_WORD = b"Hello"  # the fake's default answer: "Hello from the fake server."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def clean_env() -> dict[str, str]:
    prefixes = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "LLM_", "LLMCLI_", "LITELLM_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


class Target:
    """A server the load is sent to: its port, the model name it wants, and its process."""

    name = "fake alone"
    model = "gpt-4o-mini"
    proc: subprocess.Popen | None = None

    def __init__(self, port: int) -> None:
        self.port = port

    def pids(self) -> list[int]:
        """The process and its descendants (uvicorn's `--workers` are children)."""
        if self.proc is None:
            return []
        found, pending = [], [self.proc.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                    pending.extend(int(c) for c in text.split())
            except OSError:
                continue
        return found

    def sched(self) -> dict[tuple[int, str], tuple[int, int]]:
        """Per thread (of the process and its children): nanoseconds on a CPU, and nanoseconds
        ready to run but waiting for one (/proc/PID/task/TID/schedstat, exact where /proc/PID/stat
        counts clock ticks)."""
        found = {}
        for pid in self.pids():
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
                    found[pid, task] = (int(fields[0]), int(fields[1]))
                except (OSError, IndexError, ValueError):
                    continue
        return found

    def used(self, before: dict[tuple[int, str], tuple[int, int]]) -> tuple[float, float]:
        """Seconds on a CPU, and seconds waiting for one, since `before` (threads that ended in
        between are not counted: serve's threads live as long as it does)."""
        after = self.sched()
        run = sum(v[0] - before.get(k, (0, 0))[0] for k, v in after.items())
        wait = sum(v[1] - before.get(k, (0, 0))[1] for k, v in after.items())
        return run / 1e9, wait / 1e9

    def peak_rss(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += sum(int(x.split()[1]) * 1024 for x in lines if x.startswith("VmHWM:"))
        return total

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        what: str,
        *,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> None:
        """Start the server, quiet, and wait until it listens on `self.port`."""
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, what, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Serve(Target):
    """`llmcli serve` in its own process, pointed at the fake server, the log on."""

    name = "serve"
    model = "openai/gpt-4o-mini"

    def __init__(
        self,
        fake: m.ServerProcess,
        home: Path,
        workers: int,
        label: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(free_port())
        if label:
            self.name = f"serve ({label})"
        env = clean_env()
        # The default retry policy, as in use: the fake (one thread per connection, a listen
        # backlog of 64) resets a few of 500 connections opened at once.
        env.update({**fake.env, **KEYS, "LLMCLI_HOME": str(home), **(extra or {})})
        argv = [LLMCLI, "serve", "--port", str(self.port), "--workers", str(workers)]
        self.start(argv, env, "llmcli serve")


class BareProxy(Target):
    """bench/bare_proxy.py: the openai SDK's async client behind uvicorn, nothing of llmcli's;
    `raw`: no SDK either, the bytes relayed by a bare httpx2 client."""

    model = "gpt-4o-mini"

    def __init__(self, fake: m.ServerProcess, *, raw: bool = False) -> None:
        super().__init__(free_port())
        self.name = "bare httpx2 relay" if raw else "bare SDK proxy"
        env = clean_env()
        env.update({**fake.env, **KEYS})
        argv = [sys.executable, str(Path(__file__).with_name("bare_proxy.py")), str(self.port)]
        self.start(argv + ["--raw"] * raw, env, f"the {self.name}")


class LiteLLM(Target):
    """LiteLLM's proxy (`litellm --config`), installed apart, pointed at the same fake.

    Its defaults, but for a master key (it refuses to start without one) and the price map read
    from its package rather than fetched from GitHub (nothing leaves the machine).
    """

    name = "LiteLLM proxy"
    model = "gpt-4o-mini"

    def __init__(self, fake: m.ServerProcess, executable: str, home: Path, workers: int) -> None:
        super().__init__(free_port())
        config = home / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-4o-mini\n"
            "    litellm_params:\n"
            "      model: openai/gpt-4o-mini\n"
            f"      api_base: {fake.env['OPENAI_BASE_URL']}\n"
            f"      api_key: {KEYS['OPENAI_API_KEY']}\n"
        )
        env = clean_env()
        env.update(
            LITELLM_MASTER_KEY=PEER_KEY,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            HOME=str(home),
        )
        argv = [executable, "--config", str(config), "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--num_workers", str(workers)]
        self.start(argv, env, "LiteLLM's proxy", cwd=home, timeout=120)


# --- the load generator (its own process: `--drive SPEC`) -----------------------------------------


class Connection:
    """One client's HTTP/1.1 keep-alive connection, reopened when the server has closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes, started: float) -> tuple[float, float, int, bytes]:
        """Send one request; (seconds to the first word, seconds in all, status, body), from
        `started` (when the request was due)."""
        if self.reader is None or self.reader.at_eof():
            self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.reader, self.writer
        assert writer is not None
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        first = None
        if b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            pieces = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                piece = (await reader.readexactly(size + 2))[:-2]
                if not size:
                    break
                pieces.append(piece)
                if first is None and FIRST_WORD in piece:
                    first = time.perf_counter() - started
            body = b"".join(pieces)
        else:
            body = await reader.read()
            headers[b"connection"] = b"close"
        total = time.perf_counter() - started
        if headers.get(b"connection") == b"close":
            self.close()
        return (first if first is not None else total), total, status, body


def request_bytes(spec: dict[str, Any]) -> bytes:
    body: dict[str, Any]
    if spec["path"] == "/stream":
        body = {"message": "Tell me slowly", "provider": "openai"}
    else:
        body = {"model": spec["model"], "messages": [{"role": "user", "content": "Hi there"}]}
        if spec["stream"]:
            body.update(stream=True, stream_options={"include_usage": True})
    data = json.dumps(body).encode()
    head = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{spec['port']}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {spec['auth']}\r\n"
        f"Content-Length: {len(data)}\r\n"
    )
    if spec.get("close"):
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + data


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured run: `closed` (each client back to back), `open` (Poisson arrivals at
    `rate` per second in all, for `seconds`) or `hold` (`clients` requests at once)."""
    data = request_bytes(spec)
    expect = b"[DONE]" if spec["stream"] or spec["path"] == "/stream" else b"Hello from the fake"
    firsts: list[float] = []
    totals: list[float] = []
    late: list[float] = []
    failures: list[str] = []
    rng = random.Random(spec.get("seed", 1))

    async def one(connection: Connection, due: float) -> None:
        try:
            first, total, status, body = await connection.request(data, due)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.close()
            failures.append(type(exc).__name__)
            return
        if status != 200 or expect not in body:
            failures.append(f"HTTP {status}: {body[-200:]!r}")
            return
        firsts.append(first)
        totals.append(total)

    async def closed(connection: Connection) -> None:
        for _ in range(spec["requests"]):
            await one(connection, time.perf_counter())

    async def opened(connection: Connection, start: float, end: float, each: float) -> None:
        due = start + rng.expovariate(each)
        while due < end:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            late.append(time.perf_counter() - due)
            await one(connection, due)
            due += rng.expovariate(each)
            # A request still running when the next is due: the next goes out late, and its
            # latency counts from when it was due (open loop: the server's backlog shows).

    connections = [Connection(spec["port"]) for _ in range(spec["clients"])]
    started = time.perf_counter()
    if spec["mode"] == "closed":
        await asyncio.gather(*(closed(c) for c in connections))
    elif spec["mode"] == "open":
        # Connect every client first: 100 clients connected, then sending.
        for c in connections:
            c.reader, c.writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        start = time.perf_counter() + 0.05
        end = start + spec["seconds"]
        each = spec["rate"] / spec["clients"]
        await asyncio.gather(*(opened(c, start, end, each) for c in connections))
        started = start
    else:
        await asyncio.gather(*(one(c, time.perf_counter()) for c in connections))
    wall = time.perf_counter() - started
    for c in connections:
        c.close()
    return {
        "first": firsts,
        "total": totals,
        "late": late,
        "errors": len(failures),
        "failures": failures[:3],
        "wall": wall,
    }


def run_load(target: Target, **spec: Any) -> dict[str, Any]:
    """`drive(spec)` in a fresh load-generator process; the target's CPU time it cost added."""
    spec = {"port": target.port, "model": target.model, "auth": PEER_KEY, **spec}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--drive", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    # The CPU window opens when the generator has started (its import is not the target's).
    line = proc.stdout.readline() if proc.stdout else b""
    if line.strip() != b"ready":
        raise RuntimeError("the load generator did not start")
    before = target.sched()
    out, _ = proc.communicate(timeout=600)
    result = json.loads(out)
    result["cpu"], result["waited"] = target.used(before)
    if proc.returncode:
        raise RuntimeError(f"the load generator exited {proc.returncode}")
    return result


def _drive_main(text: str) -> None:
    spec = json.loads(text)
    print("ready", flush=True)
    print(json.dumps(asyncio.run(drive(spec))))


# --- the table ------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "first": [],
        "total": [],
        "late": [],
        "errors": 0,
        "cpu": 0.0,
        "waited": 0.0,
    }
    for run in runs:
        for key in ("first", "total", "late"):
            found[key] += run[key]
        found["errors"] += run["errors"]
        found["cpu"] += run["cpu"]
        found["waited"] += run["waited"]
    found["wall"] = sum(run["wall"] for run in runs)
    found["failures"] = [f for run in runs for f in run["failures"]][:3]
    return found


def offered_rate(closed: dict[str, dict[str, Any]], direct: str, fraction: float) -> float:
    """The open loop's rate: `fraction` of the slowest server's own closed-loop throughput.

    A fixed share of the server's capacity, not of the fake's: the queueing a server's own cost
    causes grows with how busy it is (about fraction / (1 - fraction) of its service time), so
    tying the rate to the server keeps that share the same on any machine, while a share of the
    fake's throughput put serve anywhere from a tenth to half busy depending on how fast the fake
    happened to be (docs/performance.md, "serve")."""
    throughput = {name: len(run["total"]) / run["wall"] for name, run in closed.items()}
    slowest = min(v for name, v in throughput.items() if name != direct)
    return max(5.0, round(slowest * fraction))


def signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + m.ms(abs(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20, help="per client, closed loop")
    parser.add_argument("--rate", type=float, default=0, help="requests/s in all, open loop")
    parser.add_argument(
        "--fraction", type=float, default=0.25, help="of the slowest server's throughput"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per target per round")
    parser.add_argument("--workers", type=int, default=1, help="serve's (and the peer's)")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--litellm", help="LiteLLM's `litellm` executable, to run as the peer")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also the floors (bench/bare_proxy.py): the openai SDK's async client behind "
        "uvicorn, and a bare httpx2 client relaying the bytes",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:VAR=VALUE,...",
        help="one more serve, with these environment variables (PYTHONPATH=DIR runs the llmcli "
        "package in DIR: older code), measured in the same rounds; repeatable",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if args.litellm and not shutil.which(args.litellm):
        raise SystemExit(f"no such executable: {args.litellm}")
    load_before = m.warn_if_busy(lambda s: print(s, file=sys.stderr))
    began = time.monotonic()
    fake = m.ServerProcess()
    rows: list[list[str]] = []
    notes: list[str] = []
    lateness: list[float] = []
    with tempfile.TemporaryDirectory() as home:
        targets: list[Target] = [Target(int(fake.url.rsplit(":", 1)[1]))]
        try:
            targets.append(Serve(fake, Path(home), args.workers))
            for label, extra in variants(args.variant):
                targets.append(Serve(fake, Path(home), args.workers, label, extra))
            if args.bare:
                targets += [BareProxy(fake), BareProxy(fake, raw=True)]
            if args.litellm:
                targets.append(LiteLLM(fake, args.litellm, Path(home), args.workers))
            direct, served = targets[0], targets[1]
            for stream in (False, True):
                mode = "streamed" if stream else "whole"
                for target in targets:  # warm-up: connections, first requests, the log
                    run_load(
                        target, path=CHAT, stream=stream, mode="closed", clients=10, requests=5
                    )
                closed = {
                    t.name: run_load(
                        t,
                        path=CHAT,
                        stream=stream,
                        mode="closed",
                        clients=args.clients,
                        requests=args.requests,
                    )
                    for t in targets
                }
                rate = args.rate or offered_rate(closed, direct.name, args.fraction)
                runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
                for round_ in range(args.rounds):
                    for target in targets:
                        runs[target.name].append(
                            run_load(
                                target,
                                path=CHAT,
                                stream=stream,
                                mode="open",
                                clients=args.clients,
                                rate=rate,
                                seconds=args.seconds,
                                seed=round_ + 1,
                            )
                        )
                opened = {name: pooled(found) for name, found in runs.items()}
                lateness += [x for found in opened.values() for x in found["late"]]
                rows += table_rows(mode, stream, rate, closed, opened, direct.name)
                for name, found in opened.items():
                    if found["failures"]:
                        notes.append(f"{mode}, {name}: {found['failures']}")
            held: dict[str, Any] = {"total": [], "errors": 0, "wall": 0.0}
            if args.streams:
                fake.script("openai", args.streams, chunk_delay=0.5)
                held = run_load(
                    served,
                    path="/stream",
                    stream=True,
                    mode="hold",
                    clients=args.streams,
                    close=True,
                )
            peaks = {t.name: t.peak_rss() for t in targets[1:]}
            retried = retried_streams(Path(home), args.streams) if args.streams else 0
        finally:
            for target in targets:
                target.stop()
            fake.stop()
    headers = [
        "load",
        "closed loop: req/s",
        "open loop: rate",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "first token p50 ms",
        "errors",
        "CPU per request",
        "waited for a CPU per request",
        "share of a core",
    ]
    text = m.table(rows, headers)
    behind = pct(lateness, 99)
    done = len(held["total"])
    text += (
        f"\n\n{args.streams} streams held open at once through serve (a word every 0.5 s): "
        f"{done} complete, {held['errors']} failed ({retried} needed a retry), in "
        f"{held['wall']:.1f} s. Peak RSS: "
        + ", ".join(f"{name} {peak / 2**20:.0f} MiB" for name, peak in peaks.items())
        + "."
    )
    text += (
        f"\n\n{args.clients} clients; closed loop {args.requests} requests each; open loop "
        f"{args.rounds} rounds of {args.seconds:g} s per target, samples pooled; serve "
        f"--workers {args.workers}; "
    )
    text += f"load generator behind schedule p99 {m.ms(behind)} ms; "
    text += m.conditions(load_before, time.monotonic() - began)
    if notes:
        text += "\n\nFailures: " + "; ".join(notes)
    print(text)
    if args.write_docs:
        m.replace_block(ROOT / "docs" / "performance.md", "serve", text)


def variants(given: list[str]) -> list[tuple[str, dict[str, str]]]:
    """`--variant LABEL:VAR=VALUE,...` as (label, environment)."""
    found = []
    for text in given:
        label, _, pairs = text.partition(":")
        extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        found.append((label, extra))
    return found


def table_rows(
    mode: str,
    stream: bool,
    rate: float,
    closed: dict[str, dict[str, Any]],
    opened: dict[str, dict[str, Any]],
    direct: str,
) -> list[list[str]]:
    rows = []
    base = opened[direct]
    for name, found in opened.items():
        count = len(found["total"])
        saturated = closed[name]
        rows.append(
            [
                f"{mode}, {name}",
                f"{len(saturated['total']) / saturated['wall']:.0f}",
                f"{rate:.0f}/s",
                *(m.ms(pct(found["total"], p)) for p in (50, 95, 99)),
                m.ms(pct(found["first"], 50)) if stream else "",
                str(found["errors"] + saturated["errors"]),
                f"{found['cpu'] * 1000 / count:.2f} ms" if name != direct and count else "",
                f"{found['waited'] * 1000 / count:.2f} ms" if name != direct and count else "",
                f"{found['cpu'] / found['wall']:.0%}" if name != direct else "",
            ]
        )
        if name != direct:
            rows.append(
                [
                    f"{mode}, added by {name}",
                    "",
                    "",
                    *(signed(pct(found["total"], p) - pct(base["total"], p)) for p in (50, 95, 99)),
                    signed(pct(found["first"], 50) - pct(base["first"], 50)) if stream else "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    return rows


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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--drive"]:
        _drive_main(sys.argv[2])
    else:
        main()
