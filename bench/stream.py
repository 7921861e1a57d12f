"""Streaming benchmark: `llmcli stream` against a bare SDK loop, per provider, in the same run.

    python bench/stream.py                    # 20,000 chunks, 1 warm-up + 3 runs per program
    python bench/stream.py --runs 5 --providers openai
    python bench/stream.py --write-docs       # also replace the numbers in docs/performance.md

Each provider's fake server (tests/fakeserver.py, in its own process on 127.0.0.1) streams the
same long answer of short words to `llmcli stream -p PROVIDER` and to `bench/bare_PROVIDER.py`,
which prints each delta with the official SDK and nothing else. Both write to a pipe that this
script drains; a run counts only if the whole answer came out. Goals (docs/performance.md):
llmcli's CPU time at most 1.25 x the bare SDK's, and its first printed token at most 5 ms later.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as m

CPU_GOAL = 1.25
TTFT_GOAL_MS = 5.0
PAUSED = "bare SDK, GC paused"  # bench/paused.py: the same pause of the collector as llmcli's
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven"]


def answer_chunks(count: int) -> list[str]:
    """`count` short words, each with its leading space (the first without)."""
    words = itertools.islice(itertools.cycle(WORDS), count)
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def server_alone(srv: m.ServerProcess, provider: str, chunks: list[str]) -> dict[str, float]:
    """How fast the fake server serves this stream to a raw socket that only reads.

    First byte and last byte after the request (seconds), and the server's own CPU time.
    """
    host, port = srv.url.removeprefix("http://").split(":")
    prompt = [{"role": "user", "content": "Tell me a long story"}]
    path, headers, body = {
        "openai": (
            "/v1/chat/completions",
            {"Authorization": "Bearer sk-bench"},
            {
                "model": "gpt-4o-mini",
                "messages": prompt,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        "anthropic": (
            "/v1/messages",
            {"Authorization": "Bearer sk-bench", "anthropic-version": "2023-06-01"},
            {"model": "claude-haiku-4-5", "max_tokens": 1000, "messages": prompt, "stream": True},
        ),
        "gemini": (
            "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            {"x-goog-api-key": "AIza-bench"},
            {"contents": [{"role": "user", "parts": [{"text": "Tell me a long story"}]}]},
        ),
    }[provider]
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{head}\r\n"
    ).encode() + data
    srv.reset()
    srv.script(provider, chunks=chunks)
    cpu_before = srv.cpu()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(request)
        first = None
        while True:
            block = sock.recv(1 << 20)
            if not block:
                break
            if first is None:
                first = time.monotonic() - started
        last = time.monotonic() - started
    record = srv.requests(provider)[-1]
    if record["chunks_sent"] != len(chunks):
        raise RuntimeError(f"fake server sent {record['chunks_sent']} of {len(chunks)} chunks")
    return {"first": first or last, "last": last, "cpu": srv.cpu() - cpu_before}


def cases_for(
    provider: str, srv: m.ServerProcess, chunks: list[str], warm_chunks: list[str]
) -> list[m.Case]:
    prompt = "Tell me a long story"
    expected = {
        False: ("".join(chunks) + "\n").encode(),
        True: ("".join(warm_chunks) + "\n").encode(),
    }

    def before(warmup: bool) -> None:
        srv.reset()
        srv.script(provider, chunks=warm_chunks if warmup else chunks)

    def after(run: m.Run, warmup: bool) -> None:
        if run.out != expected[warmup]:
            raise RuntimeError(
                f"`{' '.join(run.argv)}` printed {len(run.out)} bytes, "
                f"expected {len(expected[warmup])}"
            )
        requests = srv.requests(provider)
        if len(requests) != 1:
            raise RuntimeError(f"expected 1 request to the fake server, saw {len(requests)}")
        # Both clocks are CLOCK_MONOTONIC: comparable across processes on Linux.
        run.extra["request_at"] = requests[0]["started_at"] - run.started
        run.extra["server_done_at"] = requests[0]["finished_at"] - run.started
        if run.ttfb is not None:
            run.extra["after_request"] = run.ttfb - run.extra["request_at"]

    return [
        m.Case("llmcli", m.llmcli("stream", "-p", provider, prompt), before=before, after=after),
        m.Case("bare SDK", m.bare(provider, "stream", prompt), before=before, after=after),
        m.Case(PAUSED, m.paused(provider, "stream", prompt), before=before, after=after),
    ]


def s(value: float) -> str:
    return f"{value:.2f}"


def signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0f} ms"


def report(results: dict[str, list[m.Case]]) -> tuple[str, str, bool]:
    """The figures table, the goals table, and whether every goal was met."""
    rows, goals = [], []
    all_met = True
    for provider, (tool, ref, paused) in results.items():
        for case in (tool, ref, paused):
            if case.error:
                rows.append([provider, case.name, f"failed: {case.error}", *[""] * 6])
                continue
            rows.append(
                [
                    provider,
                    case.name,
                    m.spread(case.figure("wall"), s),
                    m.spread(case.figure("cpu"), s),
                    m.spread(case.figure("max_rss"), m.mib),
                    m.spread(case.figure("ttfb"), m.ms),
                    m.spread(case.figure("ttfb_cpu"), m.ms),
                    m.spread(case.figure("request_at"), m.ms),
                    m.spread(case.figure("tail"), m.ms),
                ]
            )
        if tool.error or ref.error:
            all_met = False
            goals.append([provider, "–", "–", "–", "–", "–", "–", "not measured", "–", "–"])
            continue

        def diff_ms(figure: str, tool: m.Case = tool, ref: m.Case = ref) -> float | None:
            if ref.error:
                return None
            a, b = tool.figure(figure), ref.figure(figure)
            return None if a is None or b is None else (a.median - b.median) * 1000

        cpu_ratio = m.ratio(tool.figure("cpu"), ref.figure("cpu"))
        ttft_diff = diff_ms("ttfb")
        rows.append(
            [
                provider,
                "llmcli vs bare",
                f"{m.ratio(tool.figure('wall'), ref.figure('wall')):.2f} x",
                f"{cpu_ratio:.2f} x",
                f"{m.ratio(tool.figure('max_rss'), ref.figure('max_rss')):.2f} x",
                signed(ttft_diff),
                signed(diff_ms("ttfb_cpu")),
                signed(diff_ms("request_at")),
                signed(diff_ms("tail")),
            ]
        )
        cpu_ok = cpu_ratio is not None and cpu_ratio <= CPU_GOAL
        ttft_ok = ttft_diff is not None and ttft_diff <= TTFT_GOAL_MS
        all_met = all_met and cpu_ok and ttft_ok
        goals.append(
            [
                provider,
                f"{cpu_ratio:.2f}",
                "met" if cpu_ok else "MISSED",
                signed(ttft_diff),
                signed(diff_ms("request_at")),
                signed(diff_ms("after_request")),
                signed(diff_ms("ttfb_cpu")),
                "met" if ttft_ok else "MISSED",
                signed(diff_ms("request_at", ref=paused)),
                signed(diff_ms("ttfb_cpu", ref=paused)),
            ]
        )
    figures = m.table(
        rows,
        [
            "provider",
            "program",
            "wall s",
            "CPU s",
            "peak RSS MiB",
            "first token ms",
            "CPU by first token ms",
            "request sent ms",
            "exit after last token ms",
        ],
    )
    goal_table = m.table(
        goals,
        [
            "provider",
            "CPU llmcli / bare",
            f"≤ {CPU_GOAL}",
            "first token: llmcli − bare",
            "request sent: llmcli − bare",
            "first token after the request: llmcli − bare",
            "CPU by first token: llmcli − bare",
            f"≤ {TTFT_GOAL_MS:.0f} ms",
            "own start-up: request sent, llmcli − bare with GC paused",
            "own start-up: CPU by first token, llmcli − bare with GC paused",
        ],
    )
    return figures, goal_table, all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per program (3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs, short answer (1)")
    parser.add_argument("--chunks", type=int, default=20_000, help="chunks per answer (20000)")
    parser.add_argument(
        "--providers", default=",".join(m.PROVIDERS), help="comma-separated (all three)"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="replace the numbers in docs/performance.md"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the first run fills the byte-code cache")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = [p for p in providers if p not in m.PROVIDERS]
    if unknown or not providers:
        parser.error(f"--providers: choose among {', '.join(m.PROVIDERS)}")
    chunks, warm_chunks = answer_chunks(args.chunks), answer_chunks(100)
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"  [{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    load_before = m.warn_if_busy(progress)

    results: dict[str, list[m.Case]] = {}
    alone: dict[str, dict[str, float]] = {}
    with m.ServerProcess() as srv, m.Sandbox(srv.env) as sandbox:
        for provider in providers:
            progress(f"{provider}: fake server alone")
            alone[provider] = server_alone(srv, provider, chunks)
            cases = cases_for(provider, srv, chunks, warm_chunks)
            m.measure(
                cases,
                sandbox,
                runs=args.runs,
                warmup=args.warmup,
                timeout=300,
                progress=lambda text, p=provider: progress(f"{p}: {text}"),
            )
            results[provider] = cases
    elapsed = time.monotonic() - started

    figures, goals, met = report(results)
    server_rows = []
    for provider, cases in results.items():

        def each(figure: str, cases: list[m.Case] = cases) -> str:
            """One median per program, in the header's order; `–` for a program that failed."""
            values = [None if c.error else c.figure(figure) for c in cases]
            return " / ".join("–" if v is None else s(v.median) for v in values)

        server_rows.append(
            [
                provider,
                m.ms(alone[provider]["first"]),
                m.ms(alone[provider]["last"]),
                m.ms(alone[provider]["cpu"]),
                each("server_done_at"),
                each("wall"),
            ]
        )
    server_table = m.table(
        server_rows,
        [
            "provider",
            "alone: first byte ms",
            "alone: last byte ms",
            "server CPU ms",
            "last byte sent, s (llmcli / bare / paused)",
            "client exit, s (llmcli / bare / paused)",
        ],
    )
    text = "\n".join(
        [
            f"{args.chunks:,} chunks per answer; median (min–max) of {args.runs} runs after "
            f"{args.warmup} warm-up; {m.conditions(load_before, elapsed)}",
            "",
            figures,
            "",
            goals,
            "",
            "Fake server (a raw socket client that only reads, then the measured runs):",
            "",
            server_table,
        ]
    )
    print(text)
    print("\nall goals met" if met else "\nsome goals MISSED (see docs/performance.md)")
    if args.write_docs:
        m.replace_block(m.REPO / "docs" / "performance.md", "stream", text)
        print("docs/performance.md updated", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
