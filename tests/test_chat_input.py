"""What reaches `llmcli chat` (and `ask`/`stream`) as input: unfinished blocks, a closed
standard input, a byte-order mark, and the history file that keeps what was typed."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.conftest import LLMCLI, Result, base_env, run_cli
from tests.fakeserver import Reply

BLOCK_OF_THREE = '"""\nline one\nline two\nline three\n'


def logged_calls() -> int:
    """Rows in the call log (0 when nothing ever created it)."""
    path = Path(os.environ["LLMCLI_HOME"]) / "logs.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        db.close()


def user_turns(request) -> list[str]:
    """The user messages of a recorded OpenAI request."""
    return [m["content"] for m in request.body["messages"] if m["role"] == "user"]


def spawn_chat(*args: str, env: dict[str, str]) -> pexpect.spawn:
    return pexpect.spawn(LLMCLI, ["chat", *args], env=env, timeout=20, encoding="utf-8")


# --- an unclosed """ block is discarded, never sent ------------------------------------------


@pytest.mark.parametrize("leave", ["sendeof", "sendintr"], ids=["ctrl-d", "ctrl-c"])
def test_leaving_inside_a_block_at_a_terminal_sends_nothing(fake, leave):
    fake.script("openai", Reply(text="Hi there."))
    chat = spawn_chat("-p", "openai", env=base_env(fake))
    try:
        chat.expect_exact("> ")
        chat.sendline("hello")
        chat.expect_exact("Hi there.")
        chat.expect_exact("> ")
        chat.sendline('"""')
        for line in ("line one", "line two", "line three"):
            chat.expect_exact("... ")
            chat.sendline(line)
        chat.expect_exact("... ")
        getattr(chat, leave)()  # at the empty `... ` prompt
        chat.expect_exact('unclosed """ block discarded (3 lines)')
        chat.expect_exact("session: 1 turn ")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
    assert [user_turns(r) for r in fake.requests_for("openai")] == [["hello"]]
    assert logged_calls() == 1


@pytest.mark.parametrize(
    ("first", "code"),
    [(Reply(text="Hi there."), 0), (Reply(status=429), 5)],
    ids=["after-a-good-turn", "after-a-failed-turn"],
)
def test_a_pipe_ending_inside_a_block_sends_nothing_for_it(cli, fake, first, code):
    fake.script("openai", first)
    result = cli("chat", "-p", "openai", "--retries", "0", stdin="hello\n\n" + BLOCK_OF_THREE)
    # The exit status is the one the input would have had without the block.
    assert result.code == code
    assert result.err.endswith('unclosed """ block discarded (3 lines)\n')
    assert "Traceback" not in result.err
    assert [user_turns(r) for r in fake.requests_for("openai")] == [["hello"]]
    assert logged_calls() == 1


@pytest.mark.parametrize(
    ("stdin", "out", "note"),
    [
        ('"""\n', "", "(0 lines)"),
        ('first\n"""\nonly\n', "first\n", "(1 line)"),
        ('"""\nclosed\n"""\n"""\n  \n\n', "closed\n", "(2 lines)"),
    ],
)
def test_an_unclosed_block_from_a_pipe_is_reported_in_one_line(stdin, out, note):
    result = run_cli("chat", "-p", "echo", stdin=stdin)
    assert (result.code, result.out, result.err) == (
        0,
        out,
        f'unclosed """ block discarded {note}\n',
    )


# --- a closed standard input reads as an empty one -------------------------------------------


def with_stdin_closed(*args: str) -> Result:
    """Run `args` with file descriptor 0 really closed (`<&-`), not /dev/null or an empty pipe."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=base_env(),
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_the_helper_really_closes_stdin():
    seen = with_stdin_closed(sys.executable, "-c", "import sys; print(sys.stdin)")
    assert seen.out == "None\n"


def test_chat_with_stdin_closed_is_chat_with_an_empty_pipe():
    empty = run_cli("chat", "-p", "echo", stdin=b"")
    closed = with_stdin_closed(LLMCLI, "chat", "-p", "echo")
    assert (closed.code, closed.out, closed.err) == (empty.code, empty.out, empty.err)
    assert (closed.code, closed.out, closed.err) == (0, "", "")


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_ask_and_stream_with_stdin_closed_use_the_words(command):
    result = with_stdin_closed(LLMCLI, command, "-p", "echo", "hi")
    assert (result.code, result.out, result.err) == (0, "hi\n", "")


# --- one leading byte-order mark is dropped --------------------------------------------------

BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_a_leading_bom_on_piped_input_is_not_sent(cli, fake, command):
    piped = BOM + "report\nsee \ufeff here\n".encode()
    result = cli(command, "-p", "openai", "Summarize", stdin=piped)
    assert result.code == 0, result.err
    (request,) = fake.requests_for("openai")
    # The leading mark is gone; one inside the text is the user's and stays.
    assert user_turns(request) == ["report\nsee \ufeff here\n\nSummarize"]


def test_piped_input_of_only_a_bom_is_no_prompt():
    result = run_cli("ask", "-p", "echo", stdin=BOM + b"\n")
    assert result.code == 2 and "no prompt given" in result.err


def test_a_leading_bom_on_piped_chat_is_dropped_from_the_first_line_only(cli, fake):
    fake.script("openai", Reply(text="One."), Reply(text="Two."))
    piped = BOM + b'"""\nblock\n"""\n' + BOM + b"second\n"
    result = cli("chat", "-p", "openai", stdin=piped)
    assert result.code == 0, result.err
    # With the mark dropped, the first line opens a block instead of being sent as text.
    assert user_turns(fake.requests_for("openai")[-1]) == ["block", "\ufeffsecond"]


# --- the history file is for its owner's eyes only -------------------------------------------


def history_file() -> Path:
    return Path(os.environ["LLMCLI_HOME"]) / "chat_history"


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-0644"])
def test_chat_history_is_readable_by_its_owner_only(existing):
    if existing:
        history_file().parent.mkdir(parents=True)
        history_file().write_text("an older line\n")
        history_file().chmod(0o644)
    chat = spawn_chat("-p", "echo", env=base_env())
    try:
        chat.expect_exact("> ")
        chat.sendline("my secret plans")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
    assert stat.S_IMODE(history_file().stat().st_mode) == 0o600
    assert "my secret plans" in history_file().read_text()
    assert ("an older line" in history_file().read_text()) is existing


def test_an_existing_history_is_tightened_even_if_readline_cannot_rewrite_it():
    # GNU readline rewrites its history through `<file>-<pid>.tmp` and a rename, which happens to
    # leave it 0600 (libedit writes in place and keeps 0644). A directory in the temporary file's
    # place makes that rewrite fail, as a full disk would: the file must still end up private.
    history_file().parent.mkdir(parents=True)
    history_file().write_text("an older line\n")
    history_file().chmod(0o644)
    chat = spawn_chat("-p", "echo", env=base_env())
    try:
        Path(f"{history_file()}-{chat.pid}.tmp").mkdir()
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
    assert stat.S_IMODE(history_file().stat().st_mode) == 0o600
    assert history_file().read_text() == "an older line\n"
