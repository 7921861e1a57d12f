"""A team's log on PostgreSQL (docs/team.md), against a real server (tests/pg.py).

Every test runs the installed `llmcli` as a user would, with LLMCLI_DB pointing at a database of
its own. What is checked: the same answers as the local log, nothing lost when many processes
write at once or when the server goes away, migrations run once however many start at once,
copies that never duplicate a row, and a password that never appears anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmcli import migrations
from llmcli.store import Store
from tests import pg
from tests.conftest import LLMCLI, base_env, modules_loaded, run_cli
from tests.fakeserver import Reply

TOOLS = Path(__file__).resolve().parent.parent / "tools"


@pytest.fixture
def team(monkeypatch):
    """A fresh, migrated database for this test; LLMCLI_DB points at it. Yields its URL."""
    name, url = pg.create_database()
    monkeypatch.setenv("LLMCLI_DB", url)
    yield url
    pg.drop_database(name)


def home() -> Path:
    return Path(os.environ["LLMCLI_HOME"])


def psql_rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def _some_calls(fake, env: dict[str, str]) -> None:
    """The same calls, priced and not, tagged and not, failed and not, on either backend."""
    fake.script("openai", Reply(text="priced", input_tokens=1200, output_tokens=340))
    fake.script("anthropic", Reply(text="also", input_tokens=7, output_tokens=3))
    for args in (
        ["ask", "-p", "openai", "-m", "gpt-4o-mini", "one"],
        ["ask", "-p", "anthropic", "--tag", "ci", "two"],
        ["ask", "-p", "echo", "--tag", "ci", "three"],
        ["ask", "-p", "echo", "-m", "Zeta-model", "four"],
    ):
        assert run_cli(*args, env=env).code == 0
    fake.script("openai", Reply(status=400))
    assert run_cli("ask", "-p", "openai", "-m", "gpt-4o-mini", "five", env=env).code == 9


GROUPS = [[], ["--by", "provider"], ["--by", "model"], ["--by", "day"], ["--by", "tag"],
          ["--by", "host"], ["--by", "user"], ["-p", "echo"], ["--tag", "ci", "--by", "day"],
          ["--since", "7d", "--by", "model"]]  # fmt: skip


def test_cost_json_is_byte_identical_on_both_backends(fake, team, tmp_path):
    sqlite_env = {**base_env(fake), "LLMCLI_HOME": str(tmp_path / "local")}
    sqlite_env.pop("LLMCLI_DB", None)
    pg_env = base_env(fake)
    assert pg_env["LLMCLI_DB"] == team
    _some_calls(fake, sqlite_env)
    _some_calls(fake, pg_env)
    for args in GROUPS:
        local = run_cli("cost", "--format", "json", *args, env=sqlite_env)
        shared = run_cli("cost", "--format", "json", *args, env=pg_env)
        assert local.code == shared.code == 0, (args, local.err, shared.err)
        # The one difference is where the log is.
        where = f'"log": {json.dumps(str(tmp_path / "local" / "logs.db"))}'
        masked = f'"log": {json.dumps(team.replace("llmcli@", ""))}'
        assert where in local.out and masked in shared.out
        assert local.out.replace(where, "") == shared.out.replace(masked, ""), args
    data = json.loads(run_cli("cost", "--format", "json", "--by", "user", env=pg_env).out)
    assert data["total"]["calls"] == 5 and data["rows"][0]["user"]


def test_sixteen_processes_writing_at_once_lose_no_row(team):
    # 16 chats of 25 turns each, all at once: 400 calls, 400 rows.
    lines = "".join(f"turn {i}\n" for i in range(25))
    procs = [
        subprocess.Popen([LLMCLI, "chat", "-p", "echo"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env())
        for _ in range(16)
    ]  # fmt: skip
    outs = [p.communicate(lines.encode(), timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, [e.decode()[-300:] for _, e in outs]
    assert all(b"warning" not in err for _, err in outs)
    assert psql_rows(team, "SELECT COUNT(*), COUNT(DISTINCT uid) FROM calls") == [(400, 400)]
    assert json.loads(run_cli("cost", "--format", "json").out)["total"]["calls"] == 400
    assert not (home() / "spool.db").exists()


MIGRATOR = """
import sys, time
from pathlib import Path
from llmcli import config, logdb  # loaded before the start, so that all open at once

go = Path(sys.argv[1])
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
with logdb.open_log(logdb.target(config.Environment())) as log:
    print(log.version)
"""


def test_twenty_processes_migrate_a_fresh_database_once(monkeypatch, tmp_path):
    name, url = pg.create_database(migrated=False)
    monkeypatch.setenv("LLMCLI_DB", url)
    go = tmp_path / "go"
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", MIGRATOR, str(go)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=base_env())
            for _ in range(20)
        ]  # fmt: skip
        time.sleep(0.1)  # not a wait for a result: the processes start meanwhile, then wait for go
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        from llmcli.pgstore import MIGRATIONS

        assert [p.returncode for p in procs] == [0] * 20, [e for _, e in outs if e][:1]
        assert [out.strip() for out, _ in outs] == [str(len(MIGRATIONS))] * 20
        applied = psql_rows(url, "SELECT version FROM llmcli_schema ORDER BY version")
        assert applied == [(n,) for n in range(1, len(MIGRATIONS) + 1)]
        # And the command line on it, all at once too.
        asks = [
            subprocess.Popen([LLMCLI, "ask", "-p", "echo", f"hello {i}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=base_env())
            for i in range(8)
        ]  # fmt: skip
        said = [p.communicate(timeout=120) for p in asks]
        assert [p.returncode for p in asks] == [0] * 8
        assert all(err == b"" for _, err in said)
        assert psql_rows(url, "SELECT COUNT(*) FROM calls") == [(8,)]
    finally:
        pg.drop_database(name)


def test_log_migrate_copies_the_local_log_once_however_often_it_runs(team):
    local = {k: v for k, v in base_env().items() if k != "LLMCLI_DB"}
    for word in ("alpha", "beta", "gamma"):
        assert run_cli("ask", "-p", "echo", "--tag", "t", word, env=local).code == 0
    first = run_cli("log", "migrate", "--to", team, env=local)
    assert first.code == 0, first.err
    assert "Copied 3 calls" in first.out and "3 new" in first.out
    assert "copying the local log: 3 of 3 calls" in first.err
    again = run_cli("log", "migrate", "--to", team, env=local)
    assert again.code == 0 and "0 new; 3 were there already" in again.out
    assert psql_rows(team, "SELECT COUNT(*) FROM calls") == [(3,)]
    # The copied rows read back the same as the local ones.
    assert json.loads(run_cli("logs", "--json").out) == json.loads(
        run_cli("logs", "--json", env=local).out
    ) or _same_but_ids(team, local)
    shared = json.loads(run_cli("cost", "--format", "json", "--by", "tag").out)
    mine = json.loads(run_cli("cost", "--format", "json", "--by", "tag", env=local).out)
    assert shared["rows"] == mine["rows"]


def _same_but_ids(team: str, local: dict[str, str]) -> bool:
    shared = json.loads(run_cli("logs", "--json").out)
    mine = json.loads(run_cli("logs", "--json", env=local).out)
    for row in shared + mine:
        row.pop("id")
    return shared == mine


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SECRET = "hunter2-Secret-Pw"


def test_a_malformed_url_is_refused_before_the_call_and_never_shows_the_password(fake):
    env = {**base_env(fake), "LLMCLI_DB": f"mysql://me:{SECRET}@db.example.com/llm"}
    result = run_cli("ask", "-p", "openai", "hi", env=env)
    assert result.code == 3 and result.out == ""
    assert result.err.startswith("Error: LLMCLI_DB is not a PostgreSQL URL")
    assert fake.requests == []
    for args in (["cost"], ["logs"], ["log", "sync"], ["config", "validate", "-p", "echo"],
                 ["config", "show"]):  # fmt: skip
        shown = run_cli(*args, env=env)
        assert SECRET not in shown.out + shown.err, args
        assert shown.code in (0, 3), args


def test_a_refused_connection_spools_the_call_and_reads_fail_with_exit_3():
    url = f"postgresql://me:{SECRET}@127.0.0.1:{_closed_port()}/llm"
    env = {**base_env(), "LLMCLI_DB": url}
    result = run_cli("ask", "-p", "echo", "still answered", env=env)
    assert result.code == 0 and result.out == "still answered\n"
    (warning,) = result.err.splitlines()
    assert warning.startswith("warning: could not write the team log at postgresql://127.0.0.1:")
    assert "kept in" in warning and "spool.db" in warning and "llmcli log sync" in warning
    report = run_cli("cost", env=env)
    assert report.code == 3 and report.out == ""
    assert report.err.startswith("Error: cannot read the team log at postgresql://127.0.0.1:")
    assert "the server cannot be reached" in report.err
    sync = run_cli("log", "sync", env=env)
    assert sync.code == 3
    for text in (result.err, report.err, sync.err):
        assert SECRET not in text and "me:" not in text


@pytest.fixture
def password_database():
    """A database of the password user's own (tools/pg-test-server creates the user)."""
    name, _ = pg.create_database(migrated=False, owner=pg.PASSWORD_USER)
    yield name
    pg.drop_database(name)


def test_a_wrong_password_is_named_and_never_shown(password_database):
    url = pg.url_for(password_database, user=pg.PASSWORD_USER, password=SECRET)
    env = {**base_env(), "LLMCLI_DB": url}
    result = run_cli("ask", "-p", "echo", "hi", env=env)
    assert result.code == 0 and result.out == "hi\n"
    assert "the server refused the user or password" in result.err
    report = run_cli("cost", env=env)
    assert report.code == 3 and "refused the user or password" in report.err
    live = run_cli("config", "validate", "-p", "echo", "--live", env=env)
    assert live.code == 3
    for text in (result.out, result.err, report.err, live.out, live.err):
        assert SECRET not in text
    # The right password: the spooled call arrives, once.
    right = pg.url_for(password_database, user=pg.PASSWORD_USER, password=pg.PASSWORD)
    listed = run_cli("logs", "--json", env={**env, "LLMCLI_DB": right})
    assert [c["answer"] for c in json.loads(listed.out)] == ["hi"]
    assert pg.PASSWORD not in listed.out + listed.err


def test_a_server_that_never_answers_costs_at_most_the_connect_timeout():
    with socket.socket() as hole:  # accepts connections (the kernel does) and says nothing
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        url = f"postgresql://me@127.0.0.1:{hole.getsockname()[1]}/llm"
        start = time.monotonic()
        result = run_cli("ask", "-p", "echo", "quick", env={**base_env(), "LLMCLI_DB": url},
                         timeout=30)  # fmt: skip
        took = time.monotonic() - start
    assert result.code == 0 and result.out == "quick\n"
    assert "the server cannot be reached" in result.err
    assert took < 8, took  # 2 s to give up, plus start-up


def test_config_validate_live_reports_the_server_and_schema_versions(team):
    result = run_cli("config", "validate", "-p", "echo", "--live")
    assert result.code == 0, result.err
    (row,) = [line for line in result.out.splitlines() if line.startswith("log live")]
    assert "PostgreSQL 15" in row or "PostgreSQL 1" in row
    assert f"schema version {len(migrations.migrations('postgresql'))}" in row


def test_the_sqlite_log_never_imports_psycopg():
    loaded = modules_loaded("ask", "-p", "echo", "hi")
    assert not [m for m in loaded if m == "psycopg" or m.startswith("psycopg")]
    assert "llmcli.pgstore" not in loaded


BLOCKER = """
import sys

class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPsycopg())
"""


def test_without_psycopg_a_team_log_is_exit_3_naming_the_extra(fake, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**base_env(fake), "PYTHONPATH": str(site), "LLMCLI_DB": "postgresql://me@db/llm"}
    for args in (["ask", "-p", "openai", "hi"], ["cost"]):
        result = run_cli(*args, env=env)
        assert result.code == 3, (args, result.err)
        assert "psycopg" in result.err and "pip install 'llmcli[postgres]'" in result.err
    assert fake.requests == []


def test_cost_by_host_and_user_on_the_local_log():
    run_cli("ask", "-p", "echo", "hi")
    data = json.loads(run_cli("cost", "--by", "host", "--format", "json").out)
    assert data["rows"][0]["host"] == socket.gethostname()
    data = json.loads(run_cli("cost", "--by", "user", "--format", "json").out)
    import getpass

    assert data["rows"][0]["user"] == getpass.getuser()


# --- the database going away in the middle of a run --------------------------------------------


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, which it may pause and resume (`pg.own_server`)."""
    with pg.own_server() as held:
        yield held


def test_a_database_stopped_mid_chat_loses_no_turn_and_syncs_each_once(own_server):
    folder, url = own_server
    env = {**base_env(), "LLMCLI_DB": url}
    chat = subprocess.Popen([LLMCLI, "chat", "-p", "echo"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    answers: list[str] = []
    errs: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: answers.extend(chat.stdout.read().decode().split("\n"))),
        threading.Thread(target=lambda: errs.append(chat.stderr.read())),
    ]
    for reader in readers:
        reader.start()

    def say(text: str, rows: int) -> None:
        chat.stdin.write(f"{text}\n".encode())
        chat.stdin.flush()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait for the row, not for a guess of time
            if _rows(url) >= rows:
                return
            time.sleep(0.05)
        raise AssertionError(f"no row for {text!r}")

    say("one", 1)
    say("two", 2)
    pg.server(folder, "pause")
    for word in ("three", "four", "five"):
        chat.stdin.write(f"{word}\n".encode())
        chat.stdin.flush()
    chat.stdin.close()
    assert chat.wait(timeout=60) == 0
    for reader in readers:
        reader.join(10)
    chat.stdout.close()
    chat.stderr.close()
    assert [a for a in answers if a] == ["one", "two", "three", "four", "five"]
    warnings = errs[0].decode().splitlines()
    assert len(warnings) == 1 and "3 calls are kept in" in warnings[0], warnings
    pg.server(folder, "resume")
    report = run_cli("cost", "--format", "json", env=env)  # reaches it: sends the spool first
    assert report.code == 0, report.err
    assert json.loads(report.out)["total"]["calls"] == 5
    sync = run_cli("log", "sync", env=env)
    assert sync.code == 0 and sync.out.startswith("Nothing to send")
    assert _rows(url) == 5
    assert psql_rows(url, "SELECT COUNT(DISTINCT uid) FROM calls") == [(5,)]


def _rows(url: str) -> int:
    try:
        return psql_rows(url, "SELECT COUNT(*) FROM calls")[0][0]
    except Exception:
        return 0


def test_log_sync_sends_the_spool_and_says_how_many(own_server):
    folder, url = own_server
    env = {**base_env(), "LLMCLI_DB": url}
    pg.server(folder, "pause")
    for word in ("a", "b"):
        assert run_cli("ask", "-p", "echo", word, env=env).code == 0
    pg.server(folder, "resume")
    sync = run_cli("log", "sync", env=env)
    assert sync.code == 0, sync.err
    assert sync.out.startswith("Sent 2 calls from ") and "spool.db" in sync.out
    again = run_cli("log", "sync", env=env)
    assert again.out.startswith("Nothing to send")
    assert _rows(url) == 2


def test_only_the_postgresql_backend_imports_psycopg():
    """The driver stays behind one module, which only a PostgreSQL URL loads (llmcli.logdb)."""
    import ast

    package = Path(__file__).resolve().parent.parent / "llmcli"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "psycopg" or n.startswith("psycopg.") for n in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"pgstore.py"}


# --- the log opened while the provider answers (logdb.open_early) -------------------------------


class Relay:
    """A TCP relay in front of the test PostgreSQL: `reached` is set when llmcli connects
    through it, so a test can tell when the log was opened, not only that it was."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.reached = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.reached.set()
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            for a, b in ((client, server), (server, client)):
                pump = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                pump.start()
                self.threads.append(pump)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(10)


def _stream_held(fake, env: dict[str, str], held: Callable[[], bool]) -> tuple[bool, int, str, str]:
    """`llmcli stream -p openai` whose answer the fake server holds back before its last
    chunk until `held()` is true (at most 10 s): whether it became true while the answer
    was held, then the exit code, stdout and stderr."""
    gate = threading.Event()
    fake.script("openai", Reply(chunks=["Hello", " world"], gate=gate))
    proc = subprocess.Popen([LLMCLI, "stream", "-p", "openai", "hi"], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (during := held()) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        gate.set()
    out, err = proc.communicate(timeout=30)
    return during, proc.returncode, out, err


def _sessions(url: str) -> list[float]:
    """When each of llmcli's connections to the database of `url` now began (Unix time)."""
    rows = psql_rows(url, "SELECT extract(epoch FROM backend_start) FROM pg_stat_activity "
                          "WHERE application_name = 'llmcli' AND datname = current_database()")  # fmt: skip
    return [float(began) for (began,) in rows]


def test_the_team_log_is_opened_while_the_provider_is_still_answering(fake, team):
    """Opening the log (importing psycopg, connecting) overlaps the wait for the answer,
    instead of coming after it: the connection is there before the answer is complete, but
    not before the request was out (until then llmcli is busy importing the SDK, and our import
    would only delay the request)."""
    began: list[float] = []

    def connected() -> bool:
        began.extend(_sessions(team))
        return bool(began)

    during, code, out, err = _stream_held(fake, base_env(fake), connected)
    assert during, "llmcli did not connect to the team log before the answer was complete"
    assert (code, out, err) == (0, "Hello world\n", "")
    assert psql_rows(team, "SELECT answer, source FROM calls") == [("Hello world", "stream")]
    (request,) = fake.requests
    sent = request.started_at + (time.time() - time.monotonic())  # the same clock as the server's
    assert min(began) > sent, "the log was opened before the request was sent"


def test_a_team_log_away_while_the_provider_answers_spools_the_call_with_one_warning(fake):
    """A database that never answers, found by the background opening: the answer is out,
    the call is spooled, stderr says so once, without the password: as when the log is opened
    after the answer."""
    with socket.create_server(("127.0.0.1", 0)) as hole:
        url = f"postgresql://me:{SECRET}@127.0.0.1:{hole.getsockname()[1]}/llm"
        env = {**base_env(fake), "LLMCLI_DB": url}
        hole.settimeout(0)
        knocks: list[socket.socket] = []  # accepted, never answered

        def knocked() -> bool:
            with contextlib.suppress(BlockingIOError):
                knocks.append(hole.accept()[0])
            return bool(knocks)

        try:
            during, code, out, err = _stream_held(fake, env, knocked)
        finally:
            for knock in knocks:
                knock.close()
    assert during, "llmcli did not try the team log before the answer was complete"
    assert code == 0 and out == "Hello world\n", err
    (warning,) = err.splitlines()
    assert warning.startswith("warning: could not write the team log at postgresql://127.0.0.1:")
    assert "the server cannot be reached" in warning and "spool.db" in warning
    assert SECRET not in err and "me:" not in err
    with Store(home() / "spool.db") as spool:
        assert [r.answer for r in spool.export()] == ["Hello world"]


def test_a_wrong_password_found_while_the_provider_answers_is_named_and_never_shown(
    fake, password_database
):
    relay = Relay(pg.port())
    try:
        url = pg.url_for(password_database, user=pg.PASSWORD_USER, password=SECRET)
        url = url.replace(f":{pg.port()}/", f":{relay.port}/")
        env = {**base_env(fake), "LLMCLI_DB": url}
        during, code, out, err = _stream_held(fake, env, relay.reached.is_set)
    finally:
        relay.close()
    assert during, "llmcli did not try the team log before the answer was complete"
    assert code == 0 and out == "Hello world\n", err
    (warning,) = err.splitlines()
    assert "the server refused the user or password" in warning and "spool.db" in warning
    assert SECRET not in err


def test_a_call_not_logged_never_loads_psycopg_even_with_a_team_log_set(fake, team):
    """--no-log: no row, so no early opening either (the driver is not even imported)."""
    fake.script("openai", Reply(text="quiet", delay=0.5))
    env = base_env(fake)
    assert env["LLMCLI_DB"] == team
    loaded = modules_loaded("ask", "-p", "openai", "--no-log", "hi", env=env, expect_out="quiet\n")
    assert not [m for m in loaded if m == "psycopg" or m.startswith("psycopg")]
    assert "llmcli.pgstore" not in loaded
    assert psql_rows(team, "SELECT COUNT(*) FROM calls") == [(0,)]
