"""serve's log written off the event loop (`llmcli.serve.writer`), as its users see it: every
row is there once serve has stopped, budgets still hold, a log that cannot be written costs a
warning and never an answer (nor other requests' time), and a team's log on PostgreSQL is still
written, or spooled while the database is away.

Each answer names its row by `llmcli.request_id` (the row's `request_uid`), known before the row
is written; the tests find the rows by it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.conftest import base_env, run_cli
from tests.fakeserver import Reply
from tests.test_serve import Served, start_server, stop_server

pytestmark = pytest.mark.xdist_group("serve")

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def wait_for(condition: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


def ask(served: Served, text: str, **body: Any) -> tuple[int, dict[str, Any]]:
    """One whole chat completion: (status, the answer as JSON)."""
    request = {"model": "echo/echo", "messages": [{"role": "user", "content": text}], **body}
    status, _, raw = served.http("POST", "/v1/chat/completions", json.dumps(request))
    return status, json.loads(raw)


def burst(served: Served, texts: list[str]) -> list[tuple[int, dict[str, Any]]]:
    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(lambda text: ask(served, text), texts))


def unbudgeted(fake: Any, home: Path, **extra: str) -> Served:
    """serve without tests/test_serve.py's tag budget: with a budget, a log that cannot be
    written refuses every call (it cannot vouch for the budget), which is not what these test."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "empty.toml").write_text("")
    return start_server(fake, home, LLMCLI_CONFIG=str(home / "empty.toml"), **extra)


def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0, served.stderr


def test_every_row_is_written_when_sigterm_follows_a_burst(fake, tmp_path):
    served = start_server(fake, tmp_path / "home")
    try:
        texts = [f"call {n}" for n in range(60)]
        answers = burst(served, texts)
        stop(served)  # at once: rows may still be queued
        assert [status for status, _ in answers] == [200] * 60
        ids = {a["llmcli"]["request_id"]: a["choices"][0]["message"]["content"] for _, a in answers}
        rows = served.rows()
        assert len(rows) == 60
        assert {r["request_uid"]: r["answer"] for r in rows} == ids
        assert set(ids.values()) == set(texts)
        assert "Traceback" not in served.stderr and "warning" not in served.stderr
    finally:
        stop_server(served)


def test_a_locked_log_costs_a_warning_not_an_answer_nor_other_requests_time(fake, tmp_path):
    """Another process holds the log's write lock: serve's row waits SQLite's busy timeout
    (10 s) and is then given up with a warning; meanwhile serve answers at once."""
    served = unbudgeted(fake, tmp_path / "home")
    lock = None
    try:
        assert ask(served, "before")[0] == 200
        served.row_where(lambda r: r["answer"] == "before")
        lock = sqlite3.connect(served.home / "logs.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        status, answer = ask(served, "while locked")
        assert status == 200 and answer["choices"][0]["message"]["content"] == "while locked", (
            answer,
            served.stderr,
        )
        assert served.http("GET", "/health")[0] == 200
        assert ask(served, "still serving")[0] == 200
        assert time.monotonic() - started < 5  # not the busy timeout
        wait_for(lambda: "warning:" in served.stderr, "the warning", timeout=30)
        assert "another program keeps it locked" in served.stderr
        lock.execute("ROLLBACK")
        assert ask(served, "after")[0] == 200
        served.row_where(lambda r: r["answer"] == "after")
        stop(served)
        assert "Traceback" not in served.stderr
    finally:
        if lock is not None:
            lock.close()
        stop_server(served)


PRICES = '[openai."budget-mini"]\ninput = 0\noutput = 1000\n'  # max_tokens 10: at most $0.01


def test_a_budget_still_stops_the_call_that_would_pass_it(fake, tmp_path):
    home = tmp_path / "served"
    home.mkdir()
    (home / "prices.toml").write_text(PRICES)
    served = start_server(fake, home, LLMCLI_BUDGET_DAILY_USD="0.035")
    try:
        gate = threading.Event()
        cent = Reply(text="fine", input_tokens=5, output_tokens=10, gate=gate)  # $0.01
        fake.script("openai", *[cent] * 3)
        body = {
            "model": "openai/budget-mini",
            "max_tokens": 10,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        results: list[tuple[int, bytes]] = []

        def streamed(n: int) -> None:
            request = {**body, "messages": [{"role": "user", "content": f"{n}"}]}
            status, _, raw = served.http("POST", "/v1/chat/completions", json.dumps(request))
            results.append((status, raw))

        threads = [threading.Thread(target=streamed, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        # Three holds of $0.01 fit in $0.035: three calls are sent, three refused.
        wait_for(lambda: len(results) == 3, "three refusals")
        assert [status for status, _ in results] == [429] * 3
        wait_for(lambda: len(fake.requests_for("openai")) == 3, "three calls sent")
        gate.set()
        for thread in threads:
            thread.join(15)
        done = [raw for status, raw in results if status == 200]
        assert len(done) == 3
        # $0.03 spent: the next call's $0.01 would pass the limit, queued rows or not.
        status, answer = ask(served, "one more", model="openai/budget-mini", max_tokens=10)
        assert status == 429 and answer["error"]["type"] == "budget_exceeded"
        assert len(fake.requests_for("openai")) == 3
        stop(served)
        rows = served.rows()
        assert sorted(r["cost_usd"] for r in rows) == [0.01] * 3
        ids = {
            json.loads(line[6:])["llmcli"]["request_id"]
            for raw in done
            for line in raw.decode().splitlines()
            if line.startswith("data: {") and '"llmcli"' in line
        }
        assert ids == {r["request_uid"] for r in rows}
        left = sqlite3.connect(home / "logs.db").execute("SELECT COUNT(*) FROM reservations")
        assert left.fetchone()[0] == 0
    finally:
        stop_server(served)


# --- a team's log on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, which it may pause and resume (`pg.own_server`)."""
    with pg.own_server() as held:
        yield held


def _pg_uids(url: str) -> set[str]:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT request_uid FROM calls").fetchall()}
    except psycopg.Error:  # no table yet: serve creates it with its first row
        return set()


def test_a_team_log_gets_every_row_and_the_spool_those_it_could_not(fake, tmp_path, own_server):
    folder, url = own_server
    served = unbudgeted(fake, tmp_path / "home", LLMCLI_DB=url)
    try:
        answers = burst(served, [f"call {n}" for n in range(20)])
        first = {a["llmcli"]["request_id"] for _, a in answers}
        wait_for(lambda: _pg_uids(url) == first, "the burst's rows in PostgreSQL")
        pg.server(folder, "pause")
        started = time.monotonic()
        away = burst(served, [f"away {n}" for n in range(3)])
        assert [status for status, _ in away] == [200] * 3
        assert time.monotonic() - started < 5  # the answers do not wait for the database
        stop(served)  # the drain waits for the queued rows: spooled
        assert "kept in" in served.stderr and "log sync" in served.stderr
        pg.server(folder, "resume")
        env = {**base_env(), "LLMCLI_HOME": str(served.home), "LLMCLI_DB": url}
        assert run_cli("log", "sync", env=env).code == 0
        assert _pg_uids(url) == first | {a["llmcli"]["request_id"] for _, a in away}
    finally:
        stop_server(served)


def test_a_row_the_log_refuses_does_not_take_the_rest_of_its_group(log_backend):
    """Rows that arrive together are written in one transaction. One whose text the log
    refuses (half a surrogate pair from a provider, for SQLite; a NUL, for PostgreSQL) once
    failed the whole group: the other requests' rows, and their spend, were lost with it."""
    from llmcli import config
    from llmcli.calllog import CallRecord
    from llmcli.serve.writer import QueuedJournal
    from tests.conftest import table_rows

    warnings: list[str] = []
    journal = QueuedJournal(config.Environment(env_file=None), source="serve", warn=warnings.append)
    refused = "half \ud800 a pair" if log_backend == "sqlite" else "a \x00 NUL"
    group = [CallRecord("echo", "ok", answer=f"fine {n}") for n in range(3)]
    group.insert(1, CallRecord("echo", "ok", answer=refused))
    try:
        journal._work(group)  # one group, as the writer's thread takes it from its queue
    finally:
        journal.close()
    assert {row["answer"] for row in table_rows()} >= {"fine 0", "fine 1", "fine 2"}
    assert len(warnings) == 1  # the refused row is named, once
