"""`llmcli cost` and `llmcli logs` on awkward input and awkward logs, and the tables' wording.

Logs are made the way users make them (`llmcli ask -p echo ...`), then damaged with sqlite3 or
chmod. Read-only files mean nothing to root, so when the tests run as root the command is run
without root's power to ignore file permissions (CAP_DAC_OVERRIDE), as an ordinary user would be.
"""

from __future__ import annotations

import ast
import csv
import ctypes
import errno
import io
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pexpect
import pytest

from tests.conftest import LLMCLI, Result, base_env, run_cli
from tests.fakeserver import Reply

PACKAGE = Path(__file__).resolve().parent.parent / "llmcli"


def home() -> Path:
    return Path(os.environ["LLMCLI_HOME"])


def log_path() -> Path:
    return home() / "logs.db"


def ask(*prompts: str) -> None:
    """A real log with one echo call per prompt."""
    for prompt in prompts:
        result = run_cli("ask", "-p", "echo", prompt)
        assert result.code == 0, result.err


def damage(sql: str, *params: object) -> None:
    """Change the log behind llmcli's back, as a stray tool or a bad disk would."""
    db = sqlite3.connect(log_path(), isolation_level=None)
    try:
        db.execute(sql, params)
    finally:
        db.close()


def no_crash(result: Result) -> None:
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err


# --- 1. dates out of range --------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("--since", "0001-01-01T00:00+01:00"),  # before year 1 once in UTC
    ("--until", "0001-01-01T00:00+01:00"),
    ("--until", "9999-12-31T23:59-01:00"),  # after year 9999 once in UTC
    ("--since", "99999999999w"),
    ("--until", "99999999999w"),
    ("--since", "9" * 5000 + "d"),  # more digits than int() takes
]


@pytest.mark.parametrize(("option", "value"), OUT_OF_RANGE, ids=lambda v: v[:24])
def test_dates_out_of_range_are_usage_errors(option, value):
    ask("hello")
    result = run_cli("cost", option, value)
    no_crash(result)
    assert (result.code, result.out) == (2, "")
    assert f"invalid value for {option}" in result.err and "out of range" in result.err


@pytest.mark.usefixtures("log_backend")
def test_a_year_before_1000_still_filters_in_order():
    ask("hello")
    data = json.loads(run_cli("cost", "--since", "0999-01-01", "--format", "json").out)
    assert data["total"]["calls"] == 1
    data = json.loads(run_cli("cost", "--until", "0999-01-01", "--format", "json").out)
    assert data["total"] is None


# --- 2. logs -n ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_logs_count_is_bounded():
    ask("hello")
    result = run_cli("logs", "-n", "99999999999999999999")
    no_crash(result)
    assert (result.code, result.out) == (2, "")
    assert "1<=x<=1000000000" in result.err
    assert run_cli("logs", "-n", "1000000000").code == 0


# --- 3. a damaged row ------------------------------------------------------------------------------------


def test_a_row_with_damaged_messages_does_not_hide_the_others():
    ask("alpha", "beta", "gamma", "delta")
    damage("UPDATE calls SET messages = '{broken' WHERE id = 2")
    damage("UPDATE calls SET messages = '\"just a string\"' WHERE id = 3")
    result = run_cli("logs")
    no_crash(result)
    assert result.code == 0, result.err
    lines = result.out.splitlines()[2:]
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert lines[0].endswith("alpha") and lines[3].endswith("delta")
    assert lines[1].endswith("(unreadable)") and lines[2].endswith("(unreadable)")
    assert " echo " in lines[1]  # the row's other fields are all there

    listed = run_cli("logs", "--json")
    assert listed.code == 0, listed.err
    calls = json.loads(listed.out)
    assert [c["answer"] for c in calls] == ["alpha", "beta", "gamma", "delta"]
    assert [c["messages"] is None for c in calls] == [False, True, True, False]
    assert calls[0]["messages"] == [{"role": "user", "content": "alpha"}]
    assert calls[0]["messages_error"] is None
    assert "not valid JSON" in calls[1]["messages_error"]
    assert calls[2]["messages_error"] == "not a list of messages"


def test_bytes_that_are_not_utf8_do_not_stop_the_report():
    ask("alpha", "beta")
    bad = '[{"role": "user", "content": "caf\xff"}]'.encode("latin-1")
    damage("UPDATE calls SET messages = CAST(? AS TEXT) WHERE id = 1", bad)
    damage("UPDATE calls SET answer = ? WHERE id = 2", b"\x00\xff")  # a BLOB
    result = run_cli("logs")
    no_crash(result)
    assert result.code == 0, result.err
    assert "caf\ufffd" in result.out and "beta" in result.out
    calls = json.loads(run_cli("logs", "--json").out)
    assert calls[0]["messages"] == [{"role": "user", "content": "caf\ufffd"}]
    assert calls[1]["answer"] == "\x00\ufffd"


# --- 4. empty filters ------------------------------------------------------------------------------------

EMPTY = [
    ("cost", "--since"),
    ("cost", "--until"),
    ("cost", "-m"),
    ("cost", "--tag"),
    ("cost", "-p"),  # Click's choice already refused it; kept here so it stays refused
    ("logs", "--cid"),
]


@pytest.mark.parametrize(("command", "option"), EMPTY, ids=[" ".join(e) for e in EMPTY])
def test_an_empty_filter_is_a_usage_error_not_no_filter(command, option):
    ask("hello")
    result = run_cli(command, option, "")
    no_crash(result)
    assert (result.code, result.out) == (2, ""), result.err


# --- 5. logs --cid with an unknown id ----------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_unknown_conversation_id_is_named_as_such():
    ask("hello", "again")
    result = run_cli("logs", "--cid", "nosuchid")
    assert (result.code, result.out) == (0, "")
    assert result.err.startswith("No conversation with id 'nosuchid' in the log")
    assert "No calls logged yet" not in result.err


# --- 6. control characters in tables ------------------------------------------------------------------

HOSTILE = "title\x1b]0;owned\x07 clear\x1b[2J\x9b1m end\u202eevil"


def test_logs_table_escapes_terminal_control_sequences():
    ask(HOSTILE)
    result = run_cli("logs")
    assert result.code == 0, result.err
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in result.out
    assert "title\\x1b]0;owned\\x07 clear\\x1b[2J\\x9b1m end\\u202eevil" in result.out
    # JSON keeps the text exactly.
    assert json.loads(run_cli("logs", "--json").out)[0]["answer"] == HOSTILE


@pytest.mark.parametrize("fmt", ["simple", "grid", "github", "psql", "plain"])
def test_cost_tables_escape_names_from_the_log(fmt):
    ask("hello")
    damage("UPDATE calls SET model = ?, tag = ?", "gpt\x1b[2J\tx\r", "a\x1b]0;t\x07")
    for by in ("model", "tag"):
        result = run_cli("cost", "--by", by, "--format", fmt)
        assert result.code == 0, result.err
        assert "\x1b" not in result.out and "\r" not in result.out and "\x07" not in result.out
        assert ("gpt\\x1b[2J\\tx\\r" if by == "model" else "a\\x1b]0;t\\x07") in result.out
    data = json.loads(run_cli("cost", "--by", "model", "--format", "json").out)
    assert data["rows"][0]["model"] == "gpt\x1b[2J\tx\r"


def test_config_tables_escape_values_too():
    env = {**base_env(), "LLM_MODEL": "gpt\x1b[2Jx"}
    for args in (["config", "show"], ["config", "validate", "-p", "echo"]):
        result = run_cli(*args, env=env)
        assert "\x1b" not in result.out and "gpt\\x1b[2Jx" in result.out, result.out


def test_printable_escapes_only_what_a_terminal_acts_on():
    from llmcli import render

    assert render.printable("plain, é 中文 👩‍💻 C:\\Users") == "plain, é 中文 👩‍💻 C:\\Users"
    assert render.printable("a\tb\r\nc\x00\x7f\x85\u2028\u2066") == (
        "a\\tb\\r\\nc\\x00\\x7f\\x85\\u2028\\u2066"
    )
    assert render.printable(render.printable("\x1b")) == "\\x1b"


# --- 7. costs in CSV --------------------------------------------------------------------------------


def test_csv_costs_are_plain_decimals():
    ask("one", "two", "three")
    damage("UPDATE calls SET cost_picousd = 22000000 WHERE id = 1")
    damage("UPDATE calls SET cost_picousd = 100000000000, provider = 'openai' WHERE id = 2")
    damage("UPDATE calls SET cost_picousd = 200000000000, provider = 'openai' WHERE id = 3")
    result = run_cli("cost", "--by", "provider", "--format", "csv")
    assert result.code == 0, result.err
    costs = {r["provider"]: r["cost_usd"] for r in csv.DictReader(io.StringIO(result.out))}
    assert costs == {"echo": "0.000022", "openai": "0.3", "TOTAL": "0.300022"}


@pytest.mark.parametrize(
    ("cost", "text"),
    [
        (2.2e-05, "0.000022"),
        (0.1 + 0.2, "0.3"),
        (1.5e-07, "0.00000015"),
        (0.75, "0.75"),
        (1234567.891, "1234567.891"),
        (1e15, "1000000000000000"),
        (0.0, "0"),
        (-0.0, "0"),
    ],
)
def test_cost_decimal(cost, text):
    from llmcli import render

    assert render.cost_decimal(cost) == text


# --- 8. one call, one token, one turn --------------------------------------------------------------------


def test_plural():
    from llmcli import wording

    assert wording.plural(1, "call") == "1 call"
    assert wording.plural(0, "call") == "0 calls"
    assert wording.plural(1500, "token") == "1,500 tokens"
    assert wording.plural(2, "entry", "entries") == "2 entries"


def test_one_unpriced_call_is_one_call():
    ask("hello", "again")
    damage("UPDATE calls SET cost_picousd = NULL WHERE id = 1")
    result = run_cli("cost")
    assert result.code == 0, result.err
    assert "$0.000000 + n/a (1 call)" in result.out
    assert "note: 1 call has no known price and is not in the cost total" in result.err


def test_truncated_at_one_token(cli, fake):
    fake.script("openai", Reply(text="A", finish="length", output_tokens=1))
    result = cli("ask", "-p", "openai", "--max-tokens", "1", "hi")
    assert result.code == 0, result.err
    assert "the answer was truncated at 1 token (finish reason: length)" in result.err


def test_chat_totals_say_one_turn():
    chat = pexpect.spawn(
        LLMCLI, ["chat", "-p", "echo"], env=base_env(), timeout=20, encoding="utf-8"
    )
    try:
        chat.expect_exact("> ")
        chat.sendline("hello")
        chat.expect_exact("> ")
        chat.sendline("/usage")
        chat.expect_exact("1 turn · tokens:")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect_exact("session: 1 turn · tokens:")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0


def test_wording_and_logtrouble_stay_out_of_the_presentation_layer():
    for name in ("wording.py", "logtrouble.py", "chat.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            f"{node.module}.{alias.name}" if node.module == "llmcli" else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        assert not {m for m in imported if m.split(".")[0] == "click" or m == "llmcli.render"}
        if name == "logtrouble.py":
            assert not {m for m in imported if m.split(".")[0] == "sqlite3"}


# --- 9. provider names in any case ------------------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_cost_takes_provider_names_in_any_case(cli, fake):
    assert cli("ask", "-p", "OpenAI", "hi").code == 0
    ask("hello")
    result = cli("cost", "-p", "OpenAI", "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [r["provider"] for r in data["rows"]] == ["openai"] and data["total"]["calls"] == 1
    assert json.loads(cli("cost", "-p", "ECHO", "--format", "json").out)["total"]["calls"] == 1


# --- 10. a log that cannot be read or written is not called damaged when it is not --------------------

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _as_a_user() -> None:
    """In the child: drop root's power to ignore permissions (a no-op for an ordinary user)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(99)


def run_as_user(*args: str) -> Result:
    proc = subprocess.run(
        [LLMCLI, *args],
        input=b"",
        capture_output=True,
        env=base_env(),
        timeout=60,
        preexec_fn=_as_a_user,
    )
    assert proc.returncode != 99, "could not drop CAP_DAC_OVERRIDE"
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture
def permissions_apply(tmp_path):
    """Skip when even the permission-less child can write a read-only file (odd file systems)."""
    probe = tmp_path / "probe"
    probe.write_text("")
    probe.chmod(0o444)
    code = subprocess.run(
        ["sh", "-c", f"echo x >> {probe}"], preexec_fn=_as_a_user, capture_output=True, timeout=10
    ).returncode
    if code == 0:
        pytest.skip("file permissions are not enforced here")


def read_only_log() -> None:
    """A log that llmcli must write to even to read it, made read-only.

    A log not in WAL mode (rolled back with `PRAGMA journal_mode = DELETE`, as some tools and
    copies leave it) is switched to WAL when opened; that needs write access.
    """
    ask("hello")
    damage("PRAGMA journal_mode = DELETE")
    log_path().chmod(0o444)


@pytest.mark.parametrize("args", [["cost"], ["logs"], ["ask", "-p", "echo", "-c", "again"]])
def test_a_read_only_log_is_called_read_only_not_damaged(permissions_apply, args):
    read_only_log()
    result = run_as_user(*args)
    assert (result.code, result.out) == (3, "")
    message, hint = result.err.splitlines()
    assert message == (
        f"Error: cannot read the call log at {log_path()}: the file is read-only"
        " (llmcli must write to the log to open it)"
    )
    assert hint == f"make it writable: chmod u+w {log_path()}"


@pytest.mark.parametrize("args", [["cost"], ["logs"], ["ask", "-p", "echo", "-c", "again"]])
def test_a_read_only_folder_is_called_read_only_not_damaged(permissions_apply, args):
    ask("hello")  # a healthy log, in a folder where SQLite cannot make its shared-memory file
    home().chmod(0o555)
    try:
        result = run_as_user(*args)
    finally:
        home().chmod(0o755)
    assert (result.code, result.out) == (3, "")
    message, hint = result.err.splitlines()
    assert message == (
        f"Error: cannot read the call log at {log_path()}: its folder is read-only"
        " (llmcli must write to the log to open it)"
    )
    assert hint == (
        f"make the folder writable (SQLite keeps its journal beside the log): chmod u+w {home()}"
    )


@pytest.mark.parametrize("what", ["file", "folder"])
def test_ask_on_a_read_only_log_still_answers_and_says_why(permissions_apply, what):
    ask("hello")
    if what == "file":
        log_path().chmod(0o444)
    else:
        home().chmod(0o555)
    try:
        result = run_as_user("ask", "-p", "echo", "still answered")
    finally:
        home().chmod(0o755)
    assert (result.code, result.out) == (0, "still answered\n")
    assert result.err.startswith(f"warning: could not write the call log at {log_path()}: ")
    if what == "file":
        assert f"the file is read-only; make it writable: chmod u+w {log_path()}" in result.err
        # A read-only log in WAL mode can still be read.
        assert run_as_user("cost").code == 0
    else:
        assert "its folder is read-only; make the folder writable" in result.err
        assert f"chmod u+w {home()}" in result.err
    assert result.err.rstrip().endswith("or turn the log off with --no-log (LLMCLI_LOG=0)")
    assert "damaged" not in result.err and len(result.err.splitlines()) == 1


def test_a_log_without_permission_is_permission_denied(permissions_apply):
    ask("hello")
    log_path().chmod(0o000)
    for args in (["cost"], ["logs"]):
        result = run_as_user(*args)
        assert result.code == 3
        assert f"cannot read the call log at {log_path()}: permission denied" in result.err
        assert "ls -ld" in result.err and "damaged" not in result.err
    result = run_as_user("ask", "-p", "echo", "answered")
    assert (result.code, result.out) == (0, "answered\n")
    assert "permission denied" in result.err


def test_a_damaged_log_is_still_called_damaged():
    home().mkdir(parents=True, exist_ok=True)
    log_path().write_text("this is not a database")
    result = run_cli("cost")
    assert result.code == 3
    assert "the file is damaged" in result.err
    assert f"mv {log_path()} {log_path()}.damaged" in result.err
    answered = run_cli("ask", "-p", "echo", "answered")
    assert (answered.code, answered.out) == (0, "answered\n")
    assert "the file is damaged" in answered.err


def _full_disk(tmp_path: Path, *args: str) -> Result:
    """Run llmcli with LLMCLI_HOME on a tiny tmpfs that is full, holding a copy of the log.

    The mount lives in a private mount namespace, gone when the command ends.
    """
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    script = (
        'disk="$1" log="$2" llmcli="$3"; shift 3\n'
        'mount -t tmpfs -o size=256k,mode=0700 tmpfs "$disk" && cp "$log" "$disk"/ || exit 97\n'
        'dd if=/dev/zero of="$disk/filler" bs=4k >/dev/null 2>&1\n'  # fails when full, as meant
        'LLMCLI_HOME="$disk" exec "$llmcli" "$@"'
    )
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(disk),
            str(log_path()),
            LLMCLI,
            *args,
        ],
        capture_output=True,
        env=base_env(),
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_a_full_disk_is_called_a_full_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a tiny tmpfs needs root and unshare")
    ask("hello")
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
        timeout=10,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    result = _full_disk(tmp_path, "ask", "-p", "echo", "answered")
    assert result.code != 97, result.err
    assert (result.code, result.out) == (0, "answered\n")
    assert ": no space left on the disk; free some space on that disk" in result.err
    result = _full_disk(tmp_path, "cost")
    assert result.code == 3
    assert "no space left on the disk" in result.err and "damaged" not in result.err


def _sqlite_error(name: str, text: str) -> sqlite3.Error:
    error = sqlite3.OperationalError(text)
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (_sqlite_error("SQLITE_FULL", "database or disk is full"), "no-space", "no space left"),
        (OSError(errno.ENOSPC, "No space left on device"), "no-space", "no space left"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "no-space", "no space left"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only", "mounted read-only"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission", "permission denied"),
        (_sqlite_error("SQLITE_NOTADB", "file is not a database"), "damaged", "damaged"),
        (_sqlite_error("SQLITE_CORRUPT_INDEX", "malformed"), "damaged", "damaged"),
        (_sqlite_error("SQLITE_BUSY", "database is locked"), "busy", "locked"),
        (_sqlite_error("SQLITE_CANTOPEN_ISDIR", "unable to open"), "folder", "a folder"),
        (ValueError("something else"), "other", "something else"),
    ],
    ids=[
        "full",
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EACCES",
        "notadb",
        "corrupt",
        "busy",
        "isdir",
        "other",
    ],
)
def test_describe_names_the_trouble(tmp_path, exc, kind, words):
    """Every kind, from a constructed error (a full disk cannot be made everywhere)."""
    from llmcli import logtrouble

    trouble = logtrouble.describe(exc, tmp_path / "logs.db", writing=False)
    assert trouble.kind == kind
    assert trouble.message.startswith(f"cannot read the call log at {tmp_path / 'logs.db'}: ")
    assert words in trouble.message
    written = logtrouble.describe(exc, tmp_path / "logs.db", writing=True)
    assert written.message.startswith("could not write the call log at ")
    assert "\n" not in str(written)
