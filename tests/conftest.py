"""Shared fixtures: one fake provider server per session, and a runner for the installed CLI.

Every test runs with HOME, the working directory and LLMCLI_HOME in a temporary folder and with
no provider keys or base URLs inherited from the developer's shell, so nothing here can reach a
real provider or read a real profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pg  # reads LLMCLI_TEST_PG now, before `isolated` clears LLMCLI_ variables

LLMCLI = str(Path(sys.executable).with_name("llmcli"))
PROVIDERS = ("openai", "anthropic", "gemini")
KEYS = {
    "OPENAI_API_KEY": "sk-test-openai-KEY-0001",
    "ANTHROPIC_API_KEY": "sk-ant-test-anthropic-KEY-0002",
    "GEMINI_API_KEY": "AIza-test-gemini-KEY-0003",
}
# Variables that must never leak in from the developer's environment.
SCRUBBED_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "LLM_", "LLMCLI_", "NO_COLOR")


# Longest first: xdist (`--dist loadgroup`, pyproject.toml) hands tests out in collection order,
# so a slow test or a grouped module collected last keeps one worker busy while the other has
# nothing left to do. These go out first, the slowest (measured, single worker) at the top; every
# other test keeps its place. Node-id prefixes: a file, or one test of it (all its parameters).
SLOW_FIRST = (
    "tests/test_serve.py",  # a group: about 90 tests on one worker
    "tests/test_budget.py::test_eight_racing_processes_never_pass_the_limit",
    "tests/test_team.py::test_cost_json_is_byte_identical_on_both_backends",
    "tests/test_batch_jobs.py::test_fetching_twice_adds_no_line_and_no_log_row_twice",
    "tests/test_log.py::test_concurrent_processes_all_land_their_rows",
    "tests/test_batch_jobs.py::test_submit_status_fetch_maps_answers_back_to_the_input_ids",
    "tests/test_cache.py::test_an_option_that_changes_the_answer_changes_the_key",
    "tests/test_batch.py::test_retry_failed_sends_only_the_failed_lines_again",
    "tests/test_batch_jobs.py::test_cancel_then_fetch_lists_the_unanswered_requests_as_cancelled",
    "tests/test_batch.py::test_memory_stays_flat_however_many_lines",
    "tests/test_batch_jobs.py::test_list_shows_jobs_newest_first_and_refreshes_only_unfinished_ones",
    "tests/test_batch.py::test_a_job_killed_outright_leaves_no_line_without_its_logged_call",
    "tests/test_batch_jobs.py::test_fetch_wait_shows_its_progress_on_a_terminal_only",
    "tests/test_serve_browser.py",  # a group: a browser and a server of its own
    "tests/test_hardening.py::test_a_key_for_another_provider_echoed_back_is_masked",
    "tests/test_team.py::test_sixteen_processes_writing_at_once_lose_no_row",
    "tests/test_team.py::test_twenty_processes_migrate_a_fresh_database_once",
    "tests/test_cache.py::test_a_fallback_s_answer_is_not_looked_up_in_its_place",
    "tests/test_batch_jobs.py::test_the_provider_limits_are_checked_before_anything_is_sent",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put SLOW_FIRST's tests at the front, in its order (stable: the same order on every worker,
    as xdist requires)."""

    def rank(item: pytest.Item) -> int:
        for n, prefix in enumerate(SLOW_FIRST):
            if item.nodeid == prefix or item.nodeid.startswith((prefix + "[", prefix + "::")):
                return n
        return len(SLOW_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def server():
    from tests.fakeserver import FakeServer

    fake = FakeServer()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server):
    """The session's fake server, cleared of scripts and records for this test."""
    server.reset()
    yield server
    server.reset()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keep every test (and the SDKs in-process) away from real keys, profiles and folders."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LLMCLI_HOME", str(home / "llmcli"))
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(home / "anthropic"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@dataclass
class Result:
    code: int
    out: str
    err: str


def base_env(server=None, *, keys: bool = True) -> dict[str, str]:
    """The environment an `llmcli` subprocess gets: clean, pointed at the fake server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["PYTHONWARNINGS"] = "error::DeprecationWarning:llmcli"
    if "LLMCLI_HOME" in os.environ:  # the test's own temporary folder, set by `isolated`
        env["LLMCLI_HOME"] = os.environ["LLMCLI_HOME"]
    if "LLMCLI_DB" in os.environ:  # the test's own PostgreSQL database, set by `log_backend`
        env["LLMCLI_DB"] = os.environ["LLMCLI_DB"]
    if keys:
        env.update(KEYS)
    if server is not None:
        env.update(server.env())
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | str | None = None,
    timeout: float = 60,
    cwd: str | Path | None = None,
) -> Result:
    """Run the installed `llmcli` with pipes; stdin closed (empty) unless given."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [LLMCLI, *args],
        input=data if data is not None else b"",
        capture_output=True,
        env=env if env is not None else base_env(),
        timeout=timeout,
        cwd=cwd,
    )
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def cli(fake):
    """`cli("ask", "-p", "openai", "hi")` against the fake server with test keys set."""

    def invoke(*args: str, extra_env: dict[str, str] | None = None, **kwargs) -> Result:
        env = base_env(fake)
        env.update(extra_env or {})
        return run_cli(*args, env=env, **kwargs)

    return invoke


@pytest.fixture(scope="session", autouse=True)
def _pg_templates():
    """Drop this worker's template database (tests/pg.py) when the session ends."""
    yield
    pg.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_backend(request, monkeypatch):
    """Run a test on each backend of the log: the local SQLite file, then a PostgreSQL database
    of its own (LLMCLI_DB, which every `llmcli` subprocess of the test inherits). Yields the
    backend's name."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    name, url = pg.create_database()
    monkeypatch.setenv("LLMCLI_DB", url)
    try:
        yield "postgresql"
    finally:
        pg.drop_database(name)


def open_test_log():
    """The log the current test's commands use (either backend), opened in-process."""
    from llmcli import config, logdb

    return logdb.open_log(logdb.target(config.Environment(env_file=None)))


def table_rows(table: str = "calls", order: str = "id") -> list[dict]:
    """A table of the current test's log as stored, in either backend (none before the log
    exists); read-only."""
    url = os.environ.get("LLMCLI_DB")
    if url:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, row_factory=dict_row, connect_timeout=5) as conn:
            return list(conn.execute(f"SELECT * FROM {table} ORDER BY {order}"))
    import sqlite3
    from contextlib import closing

    path = Path(os.environ["LLMCLI_HOME"]) / "logs.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY {order}")]


def modules_loaded(
    *args: str, env: dict[str, str] | None = None, expect_out: str | None = None
) -> set[str]:
    """Run the CLI with `args` in a fresh interpreter (exit 0, and printing `expect_out` when
    given) and list the modules it had loaded when it finished."""
    code = (
        "import sys, json, atexit\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES=' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
        f"sys.argv = ['llmcli', *{list(args)!r}]\n"
        "from llmcli.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env if env is not None else base_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    if expect_out is not None:
        assert proc.stdout == expect_out
    line = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))
