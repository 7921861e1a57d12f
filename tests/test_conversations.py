"""The log as conversations and money use it: each message stored once, histories read back whole,
a conversation that outgrows the context window said so, and amounts that are exact."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import run_cli, table_rows
from tests.fakeserver import Reply


def log_path() -> Path:
    return Path(os.environ["LLMCLI_HOME"]) / "logs.db"


def column(sql: str) -> list:
    with closing(sqlite3.connect(f"file:{log_path()}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute(sql)]


# --- each message once ------------------------------------------------------------------------


TURNS = 200
LINE = "x" * 1190  # about 1.2 KB a message, as in the report that found the log growing


def test_a_long_piped_chat_stores_each_message_once():
    """200 turns of 1.2 KB made a 59 MB log when every row repeated the whole history."""
    lines = "".join(f"{n:04d} {LINE}\n" for n in range(TURNS))
    result = run_cli("chat", "-p", "echo", stdin=lines, timeout=120)
    assert result.code == 0, result.err
    assert result.out.count("\n") == TURNS
    stored = column("SELECT length(messages) FROM calls")
    assert len(stored) == TURNS
    # Each row keeps the one message its turn added, not the conversation so far.
    assert max(stored) < 1400
    assert sum(stored) < 2 * len(lines)
    size = sum(p.stat().st_size for p in log_path().parent.glob("logs.db*"))
    assert size < 3_000_000, size  # linear: about what was said and answered, not its square
    # Every turn after the first refers to the one it continued.
    parents = column("SELECT parent_uid FROM calls ORDER BY id")
    uids = column("SELECT uid FROM calls ORDER BY id")
    assert parents == [None, *uids[:-1]]


@pytest.mark.usefixtures("log_backend")
def test_histories_read_back_whole_from_rows_that_store_each_message_once(cli, fake):
    run_cli("chat", "-p", "echo", stdin="first\nsecond\nthird\n")
    # `logs --json` shows every message each call sent, as before.
    calls = json.loads(run_cli("logs", "--json").out)
    assert [len(c["messages"]) for c in calls] == [1, 3, 5]
    assert calls[-1]["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": "third"},
    ]
    assert [c["messages_error"] for c in calls] == [None, None, None]
    # `-c` sends the whole conversation, and its own row stores only the new message.
    fake.script("openai", Reply(text="Fourth."))
    result = cli("ask", "-p", "openai", "-c", "fourth")
    assert result.code == 0, result.err
    sent = [(m["role"], m["content"]) for m in fake.requests_for("openai")[-1].body["messages"]]
    assert sent == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second"),
        ("assistant", "second"),
        ("user", "third"),
        ("assistant", "third"),
        ("user", "fourth"),
    ]
    assert json.loads(table_rows("calls")[-1]["messages"]) == [
        {"role": "user", "content": "fourth"}
    ]
    # And the conversation goes on from there.
    again = run_cli("ask", "-p", "echo", "-c", "--dry-run", "fifth")
    messages = json.loads(again.out)["params"]["messages"]
    assert [m["content"] for m in messages][-3:] == ["fourth", "Fourth.", "fifth"]


@pytest.mark.usefixtures("log_backend")
def test_a_failed_turn_is_not_part_of_the_history_that_follows(cli, fake):
    fake.script("openai", Reply(text="One."), Reply(status=400), Reply(text="Three."))
    result = cli("chat", "-p", "openai", "--retries", "0", stdin="one\ntwo\nthree\n")
    assert result.code == 9, result.err
    calls = json.loads(run_cli("logs", "--json").out)
    assert [c["status"] for c in calls] == ["ok", "error", "ok"]
    assert [m["content"] for m in calls[-1]["messages"]] == ["one", "One.", "three"]


# --- the context window -----------------------------------------------------------------------


CONTEXT_FULL = Reply(
    status=400,
    error_code="context_length_exceeded",
    error_message="This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130000 tokens. Please reduce the length of the messages.",
)


def test_a_chat_past_the_context_window_says_so_and_how_to_start_again(cli, fake):
    fake.script("openai", Reply(text="Fine."), CONTEXT_FULL)
    result = cli("chat", "-p", "openai", "--retries", "0", stdin="one\ntwo\n")
    assert result.code == 9
    assert result.out == "Fine.\n"
    lines = result.err.splitlines()
    assert lines[0].startswith("Error: openai rejected the request (400)")
    assert lines[1] == (
        "this conversation (2 messages) no longer fits the model's context window: "
        "start a new one without -c/--cid"
    )


def test_at_a_terminal_the_hint_offers_clear(fake, tmp_path):
    import pexpect

    from tests.conftest import LLMCLI, base_env

    fake.script("openai", Reply(text="Fine."), CONTEXT_FULL, Reply(text="Fresh."))
    chat = pexpect.spawn(
        LLMCLI,
        ["chat", "-p", "openai", "--retries", "0"],
        env=base_env(fake),
        encoding="utf-8",
        timeout=20,
    )
    try:
        chat.expect_exact("> ")
        chat.sendline("one")
        chat.expect_exact("Fine.")
        chat.expect_exact("> ")
        chat.sendline("two")
        chat.expect_exact("no longer fits the model's context window: /clear starts a new one")
        chat.expect_exact("> ")
        chat.sendline("/clear")
        chat.expect_exact("new conversation")
        chat.sendline("three")
        chat.expect_exact("Fresh.")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    sent = [m["content"] for m in fake.requests_for("openai")[-1].body["messages"]]
    assert sent == ["three"]


# --- exact money ----------------------------------------------------------------------------


@pytest.fixture
def dime_prices():
    """A model priced so that binary floats cannot add it up: $0.1 in, $0.2 out per million."""
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text('[openai."ft:dimes"]\ninput = 0.1\noutput = 0.2\n')


def test_costs_are_exact_in_json_the_log_and_the_sums(cli, fake, dime_prices):
    fake.script("openai", *[Reply(input_tokens=1, output_tokens=1)] * 10)
    # Nine calls in one chat, then one ask: a process each for the ten cost 9 SDK imports more.
    chat = cli("chat", "-p", "openai", "-m", "ft:dimes", stdin="hi\n" * 9)
    assert chat.code == 0, chat.err
    assert len(fake.requests_for("openai")) == 9
    result = cli("ask", "-p", "openai", "-m", "ft:dimes", "--json", "hi")
    assert result.code == 0, result.err
    # 1 token at $0.1/M plus 1 at $0.2/M is $0.0000003 exactly; a float sum says 3.0000000000000004e-07.
    assert json.loads(result.out)["cost_usd"] == 3e-07
    assert '"cost_usd": 0.0000003,' in result.out  # written digit for digit
    assert column("SELECT DISTINCT cost_picousd FROM calls") == [300_000]
    # Ten of them are $0.000003, not 2.9999999999999997e-06.
    total = json.loads(run_cli("cost", "--format", "json").out)["total"]
    assert Decimal(str(total["cost_usd"])) == Decimal("0.000003")
    csv_total = run_cli("cost", "--format", "csv").out.splitlines()[-1]
    assert csv_total.split(",")[-2] == "0.000003"
    logged = json.loads(run_cli("logs", "--json", "-n", "1").out)[0]
    assert logged["cost_usd"] == 3e-07


def test_a_tiny_cost_never_reads_as_free(cli, fake, dime_prices):
    fake.script("openai", Reply(input_tokens=1, output_tokens=1))
    result = cli("ask", "-p", "openai", "-m", "ft:dimes", "-u", "hi")
    assert result.code == 0, result.err
    assert "cost $0.0000003 ·" in result.err
