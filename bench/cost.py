"""`llmcli cost` on a big log: fill 1,000,000 synthetic rows, then time the reports.

    python bench/cost.py                 # 1,000,000 rows, 5 runs each after a warm-up
    python bench/cost.py --rows 200000 --runs 3
    python bench/cost.py --write-docs    # also replace the numbers in docs/performance.md
    python bench/cost.py --pg postgresql://me@127.0.0.1:5432/postgres   # PostgreSQL too

Goal (issue: cost): each report under 1.5 s of wall time on this 2-core machine, on SQLite and
on PostgreSQL (issue: team log); one logged call at most 5 ms slower on PostgreSQL on loopback
than on SQLite. `--pg` takes a URL to a server's `postgres` database (LLMCLI_TEST_PG by default,
as printed by tools/pg-test-server): a database is created for the run, and dropped after it.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import REPO, Sandbox, llmcli, machine, ms, replace_block, run_once, table

from llmcli.calllog import CallRecord
from llmcli.store import COLUMNS, Store, row_values

GOAL_S = 1.5
GOAL_CALL_MS = 5.0
MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"],
    "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-6"],
    "gemini": ["gemini-2.5-flash", "gemini-2.5-pro"],
    "echo": ["echo"],
}


def fill(path: Path, rows: int) -> None:
    """Write `rows` calls spread over the last 90 days, through the real schema and migrations."""
    Store(path).close()
    db = sqlite3.connect(path)
    placeholders = ", ".join("?" for _ in COLUMNS)
    with db:
        db.executemany(
            f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({placeholders})", records(rows)
        )
    db.close()


def fill_pg(url: str, rows: int) -> None:
    """The same rows in PostgreSQL (COPY), then VACUUM ANALYZE as autovacuum would in time:
    the covering indexes are read alone once the visibility map says the rows are settled."""
    import psycopg

    from llmcli.pgstore import PgStore

    PgStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY calls ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for values in records(rows):
                copy.write_row(values)
        conn.execute("VACUUM ANALYZE calls")


def records(rows: int):
    """`rows` synthetic calls, as the values of COLUMNS."""
    rng = random.Random(7)
    providers = list(MODELS)
    start = time.time() - 90 * 86400

    def record(i: int) -> list[object]:
        provider = rng.choice(providers)
        model = rng.choice(MODELS[provider])
        ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(start + i * 90 * 86400 / rows))
        failed = rng.random() < 0.03
        return row_values(
            CallRecord(
                provider,
                "error" if failed else "ok",
                ts=ts,
                requested_model=model,
                model=None if failed else model,
                conversation_id=f"{i:012x}",
                messages=[{"role": "user", "content": "synthetic"}],
                answer=None if failed else "synthetic answer",
                input_tokens=None if failed else rng.randint(10, 5000),
                output_tokens=None if failed else rng.randint(1, 2000),
                cost_usd=None if failed or rng.random() < 0.02 else rng.random() / 100,
                tag=rng.choice([None, "nightly", "ci", "adhoc"]),
                exit_code=6 if failed else 0,
                host=rng.choice(["ci-1", "ci-2", "web-1", "laptop"]),
                os_user=rng.choice(["ci", "ada", "bob"]),
            )
        )

    return (record(i) for i in range(rows))


def _database(admin: str, name: str, *, drop: bool = False) -> str:
    """Create (or drop) database `name` on the server of `admin`; its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop:
            conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(admin)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def _time(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> list[float]:
    run_once(argv, env, cwd=cwd).check()  # warm-up
    return sorted(run_once(argv, env, cwd=cwd).check().wall for _ in range(runs))


def logged_call(sandbox: Sandbox, pg_url: str | None, runs: int) -> list[list[str]]:
    """`ask -p echo` with the log on each backend: what a logged call costs on PostgreSQL."""
    argv = llmcli("ask", "-p", "echo", "hi")
    local = dict(sandbox.env)
    shared = {**local, "LLMCLI_DB": pg_url} if pg_url else None
    rows = []
    medians = {}
    # Interleaved, so that the machine's load drifts alike over both.
    walls: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for env in (local, shared):
        if env is not None:
            run_once(argv, env, cwd=sandbox.cwd).check()
    for _ in range(runs):
        walls["sqlite"].append(run_once(argv, local, cwd=sandbox.cwd).check().wall)
        if shared is not None:
            walls["postgresql"].append(run_once(argv, shared, cwd=sandbox.cwd).check().wall)
    for backend, values in walls.items():
        if values:
            values.sort()
            medians[backend] = values[len(values) // 2]
            rows.append([f"llmcli ask -p echo ({backend} log)", ms(medians[backend]),
                         f"{ms(values[0])} – {ms(values[-1])}", ""])  # fmt: skip
    if "postgresql" in medians:
        extra = (medians["postgresql"] - medians["sqlite"]) * 1000
        rows[-1][-1] = f"{extra:+.1f} ms (process, with the driver's import)"
    rows += logging_alone(Path(sandbox.env["LLMCLI_HOME"]) / "alone.db", pg_url, runs * 20)
    return rows


def logging_alone(path: Path, pg_url: str | None, runs: int) -> list[list[str]]:
    """What logging one call costs once the driver is loaded: open the log, add the row, close
    it, as `llmcli ask` does after the answer (median of `runs`)."""
    import psycopg  # noqa: F401 (loaded before timing, as a running llmcli has it)

    from llmcli.pgstore import PgStore

    opens = {"sqlite": lambda: Store(path)}
    if pg_url:
        opens["postgresql"] = lambda: PgStore(pg_url)
    medians = {}
    rows = []
    for backend, open_log in opens.items():
        open_log().close()  # created and migrated
        walls = []
        for i in range(runs):
            began = time.perf_counter()
            with open_log() as log:
                log.add(CallRecord("echo", "ok", answer=f"answer {i}", input_tokens=1))
            walls.append(time.perf_counter() - began)
        walls.sort()
        medians[backend] = walls[len(walls) // 2]
        rows.append([f"log one call, in process ({backend})", f"{medians[backend] * 1000:.2f}",
                     f"{walls[0] * 1000:.2f} – {walls[-1] * 1000:.2f}", ""])  # fmt: skip
    if "postgresql" in medians:
        extra = (medians["postgresql"] - medians["sqlite"]) * 1000
        rows[-1][-1] = f"{extra:+.2f} ms: " + ("met" if extra <= GOAL_CALL_MS else "MISSED")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--pg",
        default=os.environ.get("LLMCLI_TEST_PG"),
        metavar="URL",
        help="a PostgreSQL server's postgres database, to time the team log too",
    )
    args = parser.parse_args()

    with Sandbox() as sandbox:
        path = Path(sandbox.env["LLMCLI_HOME"]) / "logs.db"
        began = time.monotonic()
        fill(path, args.rows)
        print(
            f"filled {args.rows:,} rows in {time.monotonic() - began:.1f}s ({path.stat().st_size / 2**20:.0f} MiB)"
        )
        cases = {
            "llmcli cost": llmcli("cost"),
            "llmcli cost --by day": llmcli("cost", "--by", "day"),
            "llmcli cost --by tag --since 30d": llmcli("cost", "--by", "tag", "--since", "30d"),
            "llmcli logs": llmcli("logs"),
        }
        backends: dict[str, dict[str, str]] = {"sqlite": sandbox.env}
        pg_url = None
        if args.pg:
            pg_url = _database(args.pg, f"llmcli_bench_{os.getpid()}")
            began = time.monotonic()
            fill_pg(pg_url, args.rows)
            print(f"filled {args.rows:,} rows in PostgreSQL in {time.monotonic() - began:.1f}s")
            backends["postgresql"] = {**sandbox.env, "LLMCLI_DB": pg_url}
        results = []
        try:
            for backend, env in backends.items():
                for name, argv in cases.items():
                    walls = _time(argv, env, sandbox.cwd, args.runs)
                    median = walls[len(walls) // 2]
                    verdict = "met" if median <= GOAL_S else "MISSED"
                    label = f"{name} ({backend})" if args.pg else name
                    results.append(
                        [label, ms(median), f"{ms(walls[0])} – {ms(walls[-1])}", verdict]
                    )
            if pg_url:
                results += logged_call(sandbox, pg_url, max(args.runs, 15))
        finally:
            if pg_url:
                _database(args.pg, f"llmcli_bench_{os.getpid()}", drop=True)
    text = (
        f"{args.rows:,} rows, median of {args.runs} runs after a warm-up; goal: each under "
        f"{GOAL_S:g} s"
        + (
            f"; a logged call at most {GOAL_CALL_MS:g} ms slower on PostgreSQL (loopback)"
            if args.pg
            else ""
        )
        + f". {machine()}.\n\n"
        + table(results, ["command", "wall ms", "min – max ms", f"≤ {GOAL_S:g} s"])
    )
    print(text)
    if args.write_docs:
        replace_block(REPO / "docs" / "performance.md", "cost", text)
    return 0 if not any("MISSED" in r[-1] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
