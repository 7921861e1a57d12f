"""Whole-process benchmark of llmcli's commands, each beside a reference measured in the same run.

    python bench/run.py                  # 1 warm-up + 5 runs of everything, one table
    python bench/run.py --runs 9
    python bench/run.py --write-docs     # also replace the numbers in docs/performance.md

Rows (reference in brackets):
  llmcli --help, llmcli ask --help, llmcli config validate, llmcli cost on an empty log,
  llmcli ask -p echo                                   [python -c pass]
  llmcli ask -p openai|anthropic|gemini against the loopback fake server
                                                       [bench/bare_PROVIDER.py: that SDK, one call]
                                                       [bench/paused.py bench/bare_PROVIDER.py: the same,
                                                        the collector paused as llmcli pauses it]
  llmcli stream -p openai|anthropic|gemini, a 20,000-chunk answer (as bench/stream.py)
                                                       [bench/bare_PROVIDER.py stream]
  llmcli cost on a 1,000,000-row log (as bench/cost.py)
                                                       [python + sqlite3: the same query alone]
  llmcli ask -p openai with budgets, on that log          [the same call, no budget]
  llmcli ask -p openai --cache, a hit (log on)            [python -c pass]
  llmcli ask -p bench, an endpoint named in config.toml [llmcli ask -p openai, no config file]
  llmcli --help with that config.toml present           [python -c pass]
  llmcli ask -p openai --schema, 30 concise fields      [the same ask without --schema]
and, below the table, what reading config.toml itself costs (`endpoints.load`, timed inside
fresh interpreters): goal 3 ms at most; what one budget check (reserve and release) costs on
the 1,000,000-row log, timed the same way: goal 2 ms at most; and what `--schema` adds (median
with it minus without, in CPU time): goal 10 ms at most.
`config validate` and `cost` are measured only where `llmcli config validate --help` and
`llmcli cost --help` exit 0 at run time; otherwise their rows say "not available".
`--quick` leaves out the stream and big-log rows (about 1 minute instead of 4).
bench/stream.py and bench/cost.py give those two in more detail (time to first token, goals).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as m

PROMPT = "Say hello"
ANSWER = "Hello from the fake server."
CONFIG_GOAL_MS = 3.0
SCHEMA_GOAL_MS = 10.0
SCHEMA_FIELDS = [f"field{i}" for i in range(30)]
# Thirty fields of every concise type, and an answer that matches them, written compactly so
# that the ask without --schema prints exactly what the ask with it prints.
SCHEMA = ", ".join(f"{name} {('str', 'int', 'float', 'bool', 'list')[i % 5]}"
                   for i, name in enumerate(SCHEMA_FIELDS))  # fmt: skip
SCHEMA_ANSWER = (
    "{"
    + ",".join(
        f'"{name}":' + ('"x"', "1", "1.5", "true", '["a"]')[i % 5]
        for i, name in enumerate(SCHEMA_FIELDS)
    )
    + "}"
)
CONFIG_TOML = """\
[providers.bench]
protocol = "openai"
base_url = "{base_url}"
key_env = "OPENAI_API_KEY"
default_model = "gpt-4o-mini"
prices = "free"

[aliases]
fast = "bench/gpt-4o-mini"
"""
# Times `endpoints.load` alone in a fresh interpreter: what config.toml adds to a command that
# needs provider names (the modules around it are loaded by every such command anyway).
CONFIG_READ = """\
import time
from llmcli import config, endpoints, providers
env = config.Environment()
started = time.perf_counter()
endpoints.load(env)
took = time.perf_counter() - started
assert providers.known("bench")
print(took * 1000)
"""
BUDGET_GOAL_MS = 2.0
# Limits no call here comes near: the check is measured, not a refusal.
BUDGETS = [
    "LLMCLI_BUDGET_DAILY_USD=1000000",
    "LLMCLI_BUDGET_MONTHLY_USD=1000000",
]
# One budget check as `ask` makes it, timed alone: open the log (as every logged call does),
# then reserve against the windows and release.
BUDGET_CHECK = """\
import sys, time
from decimal import Decimal
from pathlib import Path
from llmcli import budget
from llmcli.store import Store
store = Store(Path(sys.argv[1]))
limits = budget.Budget(daily_usd=Decimal(10**6), monthly_usd=Decimal(10**6),
                       tags={"ci": Decimal(10**6)})
windows = limits.windows()
started = time.perf_counter()
held = store.reserve(Decimal("0.01"), windows, 60, tag="ci")
store.release(held)
print((time.perf_counter() - started) * 1000)
"""
STREAM_CHUNKS = [f" w{i}" for i in range(20_000)]
BIG_LOG_ROWS = 1_000_000
# What `llmcli cost` asks SQLite by default, for the bare reference (the floor of any design
# that keeps the log in SQLite).
COST_QUERY = (
    "SELECT provider, COALESCE(model, requested_model) AS model, COUNT(*), SUM(input_tokens), "
    "SUM(output_tokens), SUM(cost_picousd), SUM(unpriced) FROM calls GROUP BY 1, 2 ORDER BY 1, 2"
)


def available(sandbox: m.Sandbox, *command: str) -> bool:
    """Whether `llmcli COMMAND --help` exits 0 (the command exists in this build)."""
    proc = subprocess.run(
        m.llmcli(*command, "--help"),
        env=sandbox.env,
        cwd=sandbox.cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    return proc.returncode == 0


def printed(text: str):
    """An `after` check: the run must print exactly `text` and a newline."""
    expected = (text + "\n").encode()

    def check(run: m.Run, warmup: bool) -> None:
        if run.out != expected:
            raise RuntimeError(f"`{' '.join(run.argv)}` printed {run.out[:200]!r}")

    return check


def scripted(srv: m.ServerProcess, provider: str):
    def before(warmup: bool) -> None:
        srv.reset()
        srv.script(provider, text=ANSWER)

    return before


def streamed(srv: m.ServerProcess, provider: str):
    def before(warmup: bool) -> None:
        srv.reset()
        srv.script(provider, chunks=STREAM_CHUNKS)

    return before


def whole_stream(run: m.Run, warmup: bool) -> None:
    if not run.out.rstrip().endswith(STREAM_CHUNKS[-1].encode()):
        raise RuntimeError(f"`{' '.join(run.argv)}` did not print the whole answer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command (5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs (1)")
    parser.add_argument(
        "--write-docs", action="store_true", help="replace the numbers in docs/performance.md"
    )
    parser.add_argument(
        "--quick", action="store_true", help="leave out the stream and big-log rows"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the first run fills the byte-code cache")
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"  [{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    load_before = m.warn_if_busy(progress)

    with m.ServerProcess() as srv, m.Sandbox(srv.env) as sandbox:
        python_pass = m.Case("python -c pass", [m.PYTHON, "-c", "pass"])
        # (row label, case or None when not available, reference case)
        rows: list[tuple[str, m.Case | None, m.Case]] = []

        def add(label: str, argv: list[str] | None, ref: m.Case, **checks) -> None:
            rows.append((label, m.Case(label, argv, **checks) if argv else None, ref))

        add("llmcli --help", m.llmcli("--help"), python_pass)
        add("llmcli ask --help", m.llmcli("ask", "--help"), python_pass)
        config_ok = available(sandbox, "config", "validate")
        add(
            "llmcli config validate",
            m.llmcli("config", "validate") if config_ok else None,
            python_pass,
        )
        cost_ok = available(sandbox, "cost")
        # LLMCLI_HOME is a fresh folder and LLMCLI_LOG=0: the log is empty.
        add("llmcli cost (empty log)", m.llmcli("cost") if cost_ok else None, python_pass)
        add(
            "llmcli ask -p echo",
            m.llmcli("ask", "-p", "echo", PROMPT),
            python_pass,
            after=printed(PROMPT),
        )
        for provider in m.PROVIDERS:
            ref = m.Case(
                f"bare {provider} SDK",
                m.bare(provider, "ask", PROMPT),
                before=scripted(srv, provider),
                after=printed(ANSWER),
            )
            add(
                f"llmcli ask -p {provider}",
                m.llmcli("ask", "-p", provider, PROMPT),
                ref,
                before=scripted(srv, provider),
                after=printed(ANSWER),
            )
            # The same llmcli runs beside the bare script with the collector paused as llmcli
            # pauses it (bench/paused.py): what llmcli's own code costs.
            like_for_like = m.Case(
                f"bare {provider} SDK, GC paused",
                m.paused(provider, "ask", PROMPT),
                before=scripted(srv, provider),
                after=printed(ANSWER),
            )
            rows.append((rows[-1][0], rows[-1][1], like_for_like))
        big_log = False
        if not args.quick:
            for provider in m.PROVIDERS:
                ref = m.Case(
                    f"bare {provider} SDK stream",
                    m.bare(provider, "stream", PROMPT),
                    before=streamed(srv, provider),
                    after=whole_stream,
                )
                add(
                    f"llmcli stream -p {provider} (20,000 chunks)",
                    m.llmcli("stream", "-p", provider, PROMPT),
                    ref,
                    before=streamed(srv, provider),
                    after=whole_stream,
                )
            if cost_ok:
                from cost import fill

                big_log = True

                log = Path(sandbox.env["LLMCLI_HOME"]) / "big" / "logs.db"
                progress(f"filling a {BIG_LOG_ROWS:,}-row log for the cost row")
                fill(log, BIG_LOG_ROWS)
                # Both sides go through /usr/bin/env (one extra exec each) so that only this
                # row sees the big log.
                home = f"LLMCLI_HOME={log.parent}"
                query = f"import sqlite3; sqlite3.connect({str(log)!r}).execute({COST_QUERY!r}).fetchall()"
                ref = m.Case(
                    "python + sqlite3, same query", ["/usr/bin/env", home, m.PYTHON, "-c", query]
                )
                add(
                    f"llmcli cost ({BIG_LOG_ROWS:,} rows)",
                    ["/usr/bin/env", home, *m.llmcli("cost")],
                    ref,
                )
                # The same logged call on the big log, without and with budgets: the check and
                # the reservation are all the second one adds.
                logged = ["/usr/bin/env", home, "LLMCLI_LOG=1"]
                unbudgeted = m.Case(
                    "the same, no budget",
                    [*logged, *m.llmcli("ask", "-p", "openai", PROMPT)],
                    before=scripted(srv, "openai"),
                    after=printed(ANSWER),
                )
                add(
                    f"llmcli ask -p openai, budgets ({BIG_LOG_ROWS:,}-row log)",
                    [*logged, *BUDGETS, *m.llmcli("ask", "-p", "openai", PROMPT)],
                    unbudgeted,
                    before=scripted(srv, "openai"),
                    after=printed(ANSWER),
                )
        # A cache hit: the warm-up stores the answer, every measured run must be answered from
        # it without a request (log on, in a home of its own).
        cache_home = sandbox.root / "cache-home"
        add(
            "llmcli ask -p openai --cache (a hit)",
            ["/usr/bin/env", f"LLMCLI_HOME={cache_home}", "LLMCLI_LOG=1",
             *m.llmcli("ask", "-p", "openai", "--cache", PROMPT)],
            python_pass,
            before=scripted(srv, "openai"),
            after=answered_from_cache(srv),
        )  # fmt: skip
        conf = sandbox.root / "conf" / "config.toml"
        conf.parent.mkdir()
        conf.write_text(CONFIG_TOML.format(base_url=srv.env["OPENAI_BASE_URL"]))
        with_config = f"LLMCLI_CONFIG={conf}"
        # Both through /usr/bin/env (one extra exec each), so that only the config differs.
        plain = m.Case(
            "llmcli ask -p openai, no config",
            ["/usr/bin/env", "LLMCLI_CONFIG=", *m.llmcli("ask", "-p", "openai", PROMPT)],
            before=scripted(srv, "openai"),
            after=printed(ANSWER),
        )
        add(
            "llmcli ask -p bench (config.toml endpoint)",
            ["/usr/bin/env", with_config, *m.llmcli("ask", "-p", "bench", PROMPT)],
            plain,
            before=scripted(srv, "openai"),
            after=printed(ANSWER),
        )
        add(
            "llmcli --help, config.toml present",
            ["/usr/bin/env", with_config, *m.llmcli("--help")],
            python_pass,
        )
        unstructured = m.Case(
            "the same ask without --schema",
            m.llmcli("ask", "-p", "openai", PROMPT),
            before=structured_reply(srv),
            after=printed(SCHEMA_ANSWER),
        )
        add(
            "llmcli ask -p openai --schema (30 fields)",
            m.llmcli("ask", "-p", "openai", "--schema", SCHEMA, PROMPT),
            unstructured,
            before=structured_reply(srv),
            after=printed(SCHEMA_ANSWER),
        )
        schema_row = rows[-1]
        cases: list[m.Case] = []
        for _, case, ref in rows:
            for c in (case, ref):
                if c is not None and c not in cases:
                    cases.append(c)
        m.measure(cases, sandbox, runs=args.runs, warmup=args.warmup, progress=progress)
        reads = config_reads(sandbox, conf, runs=max(args.runs, 5))
        checks = budget_checks(sandbox, log, runs=max(args.runs, 5)) if big_log else []
    elapsed = time.monotonic() - started

    def ms(s: float) -> str:
        return m.ms(s)

    table_rows = []
    for label, case, ref in rows:
        if case is None:
            table_rows.append([label, "not available", "", "", "", "", "", "", "", "", ""])
            continue
        if case.error or ref.error:
            table_rows.append(
                [label, f"failed: {case.error or ref.error}", "", "", "", "", "", "", "", "", ""]
            )
            continue
        cells = [label, ref.name]
        for figure, unit in (("wall", ms), ("cpu", ms), ("max_rss", m.mib)):
            a, b = case.figure(figure), ref.figure(figure)
            cells += [m.spread(a, unit), m.spread(b, unit), f"{m.ratio(a, b):.2f}"]
        table_rows.append(cells)
    table = m.table(
        table_rows,
        [
            "command",
            "reference",
            "wall ms",
            "ref wall ms",
            "×",
            "CPU ms",
            "ref CPU ms",
            "×",
            "peak RSS MiB",
            "ref RSS MiB",
            "×",
        ],
    )
    reads.sort()
    verdict = "met" if reads[len(reads) // 2] <= CONFIG_GOAL_MS else "MISSED"
    schema_line, schema_verdict = schema_cost(*schema_row)
    text = "\n".join(
        [
            f"Median (min–max) of {args.runs} runs after {args.warmup} warm-up; × = llmcli "
            f"median / reference median; {m.conditions(load_before, elapsed)}",
            "",
            table,
            "",
            f"Reading config.toml (`endpoints.load`, in {len(reads)} fresh interpreters): "
            f"median {reads[len(reads) // 2]:.2f} ms ({reads[0]:.2f}–{reads[-1]:.2f}); "
            f"goal ≤ {CONFIG_GOAL_MS:g} ms: {verdict}.",
            schema_line,
        ]
    )
    if checks:
        checks.sort()
        budget_verdict = "met" if checks[len(checks) // 2] <= BUDGET_GOAL_MS else "MISSED"
        text += (
            f"\nThe budget check on the {BIG_LOG_ROWS:,}-row log (reserve and release against a daily,"
            f" a monthly and a tag window, in {len(checks)} fresh interpreters): median "
            f"{checks[len(checks) // 2]:.2f} ms ({checks[0]:.2f}–{checks[-1]:.2f}); "
            f"goal ≤ {BUDGET_GOAL_MS:g} ms: {budget_verdict}."
        )
        verdict = verdict if budget_verdict == "met" else "MISSED"
    print(text)
    if args.write_docs:
        m.replace_block(m.REPO / "docs" / "performance.md", "run", text)
        print("docs/performance.md updated", file=sys.stderr)
    failed = any(case is not None and (case.error or ref.error) for _, case, ref in rows)
    return 1 if failed or verdict != "met" or schema_verdict != "met" else 0


def structured_reply(srv: m.ServerProcess):
    def before(warmup: bool) -> None:
        srv.reset()
        srv.script("openai", text=SCHEMA_ANSWER)

    return before


def schema_cost(label: str, case: m.Case | None, ref: m.Case) -> tuple[str, str]:
    """What `--schema` adds to an ask (its median minus the same ask's without), and the
    verdict. Judged on CPU time: on a shared machine wall time swings by hundreds of
    milliseconds between runs of one command, CPU time by a few."""
    if case is None or case.error or ref.error:
        return f"--schema: not measured ({case.error if case else 'not available'})", "MISSED"
    wall = (case.figure("wall").median - ref.figure("wall").median) * 1000
    cpu = (case.figure("cpu").median - ref.figure("cpu").median) * 1000
    verdict = "met" if cpu <= SCHEMA_GOAL_MS else "MISSED"
    return (
        f"What --schema adds to an ask (30 concise fields; median with it minus without): "
        f"{cpu:+.1f} ms CPU, {wall:+.1f} ms wall; goal ≤ {SCHEMA_GOAL_MS:g} ms CPU: {verdict}.",
        verdict,
    )


def answered_from_cache(srv: m.ServerProcess):
    """An `after` check: the answer printed, and (after the warm-up) no request sent for it."""
    check_text = printed(ANSWER)

    def check(run: m.Run, warmup: bool) -> None:
        check_text(run, warmup)
        if not warmup and srv.requests("openai"):
            raise RuntimeError("a --cache run after the warm-up reached the server")

    return check


def budget_checks(sandbox: m.Sandbox, log: Path, runs: int) -> list[float]:
    """Milliseconds one budget check (reserve, then release) took on `log`, in fresh interpreters."""
    return fresh_timings(sandbox, [BUDGET_CHECK, str(log)], sandbox.env, runs)


def config_reads(sandbox: m.Sandbox, conf: Path, runs: int) -> list[float]:
    """Milliseconds `endpoints.load` took in each of `runs` fresh interpreters."""
    env = {**sandbox.env, "LLMCLI_CONFIG": str(conf)}
    # A user with a config file has used llmcli: its folder exists, and holds the parsed file
    # (config.cache.json) after the first run, which is not counted.
    Path(env["LLMCLI_HOME"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    return fresh_timings(sandbox, [CONFIG_READ], env, runs)


def fresh_timings(
    sandbox: m.Sandbox, script: list[str], env: dict[str, str], runs: int
) -> list[float]:
    """What `python -c SCRIPT ARGS...` printed (milliseconds) in each of `runs` fresh
    interpreters, after one more that fills the byte-code cache and is not counted."""
    took = []
    for _ in range(runs + 1):
        proc = subprocess.run(
            [m.PYTHON, "-c", *script],
            env=env,
            cwd=sandbox.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        took.append(float(proc.stdout.strip()))
    return took[1:]


if __name__ == "__main__":
    sys.exit(main())
