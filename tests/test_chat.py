"""`llmcli chat`: scripted through a pipe, and typed at a real pseudo-terminal."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pexpect
import pytest

from llmcli.commands.chat import messages
from tests.conftest import LLMCLI, PROVIDERS, base_env, run_cli
from tests.fakeserver import Reply


def said(provider, body):
    """(role, text) pairs of a recorded request, in the provider's own format."""
    if provider == "gemini":
        system = body.get("systemInstruction", {}).get("parts", [{}])[0].get("text")
        turns = [(c["role"], c["parts"][0]["text"]) for c in body["contents"]]
    elif provider == "anthropic":
        system = body.get("system")
        turns = [(m["role"], m["content"]) for m in body["messages"]]
    else:
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else None
        turns = [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]
    return system, turns


@pytest.mark.parametrize("provider", PROVIDERS)
def test_piped_chat_sends_the_whole_conversation_each_turn(cli, fake, provider):
    fake.script(provider, Reply(text="One."), Reply(text="Two."), Reply(text="Three."))
    result = cli("chat", "-p", provider, "-s", "Count.", stdin="first\n\nsecond\nthird\n")
    assert result.code == 0, result.err
    assert result.out == "One.\nTwo.\nThree.\n"
    system, turns = said(provider, fake.requests_for(provider)[-1].body)
    assistant = "model" if provider == "gemini" else "assistant"
    assert system == "Count."
    assert turns == [
        ("user", "first"),
        (assistant, "One."),
        ("user", "second"),
        (assistant, "Two."),
        ("user", "third"),
    ]


def test_piped_chat_with_echo_works_in_scripts():
    result = run_cli("chat", "-p", "echo", stdin="hi\nand again\n")
    assert (result.code, result.out, result.err) == (0, "hi\nand again\n", "")


def test_a_failed_turn_keeps_the_session_and_leaves_no_orphan(cli, fake):
    fake.script(
        "openai",
        Reply(text="Fine."),
        Reply(status=429),
        Reply(status=429),
        Reply(text="Still here."),
    )
    result = cli("chat", "-p", "openai", "--retries", "1", stdin="one\ntwo\nthree\n")
    assert result.out == "Fine.\nStill here.\n"
    assert "rate limited" in result.err and "retrying" in result.err
    assert result.code == 5  # the first failed turn's code, after the session went on
    _, turns = said("openai", fake.requests_for("openai")[-1].body)
    assert turns == [("user", "one"), ("assistant", "Fine."), ("user", "three")]


def test_chat_resume_sends_the_earlier_history(cli, fake):
    cli("chat", "-p", "echo", stdin="remember the word kiwi\n")
    result = cli("chat", "-p", "anthropic", "-c", stdin="what word?\n")
    assert result.code == 0, result.err
    _, turns = said("anthropic", fake.requests_for("anthropic")[-1].body)
    assert turns == [
        ("user", "remember the word kiwi"),
        ("assistant", "remember the word kiwi"),
        ("user", "what word?"),
    ]


def test_multi_line_blocks_and_blank_lines():
    lines = ["\n", "a\n", '"""\n', "b\n", "\n", "c\n", '"""\n', "  \n", "d\n"]
    assert list(messages(lines)) == ["a", "b\n\nc", "d"]


def test_bad_utf8_line_is_a_usage_error():
    result = run_cli("chat", "-p", "echo", stdin=b"ok\n\xff\n")
    assert result.code == 2 and "line 2" in result.err and "Traceback" not in result.err


class Session:
    """`llmcli chat` in a pseudo-terminal, with bounded waits."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.child = pexpect.spawn(LLMCLI, ["chat", *args], env=env, timeout=20, encoding="utf-8")

    def __getattr__(self, name):
        return getattr(self.child, name)


def test_typing_at_a_terminal(fake):
    gate = threading.Event()
    fake.script(
        "openai",
        Reply(chunks=["Hello", " Ada"]),
        Reply(chunks=["This", " is", " cut"], gate=gate),
        Reply(chunks=["Block", " answered"]),
    )
    chat = Session("-p", "openai", env=base_env(fake))
    try:
        chat.expect_exact("llmcli chat · openai gpt-4o-mini")
        chat.expect_exact("> ")
        chat.sendline("My name is Ada")
        chat.expect_exact("Hello Ada")
        chat.expect_exact("> ")
        # Ctrl-C while a reply streams cancels the reply, not the session.
        chat.sendline("Tell me more")
        chat.expect_exact("This is")
        chat.sendintr()
        chat.expect_exact("(reply cancelled)")
        gate.set()
        chat.expect_exact("> ")
        chat.sendline("/model gpt-4.1-mini")
        chat.expect_exact("model gpt-4.1-mini")
        chat.expect_exact("> ")
        chat.sendline('"""')
        chat.expect_exact("... ")
        chat.sendline("line one")
        chat.expect_exact("... ")
        chat.sendline('"""')
        chat.expect_exact("Block answered")
        chat.expect_exact("> ")
        chat.sendline("/usage")
        chat.expect_exact("2 turns · tokens:")
        chat.expect_exact("> ")
        chat.sendline("/clear")
        chat.expect_exact("new conversation")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect_exact("session: 2 turns")
        chat.expect(pexpect.EOF)
    finally:
        gate.set()
        chat.close()
    assert chat.exitstatus == 0
    third = fake.requests_for("openai")[2].body
    assert third["model"] == "gpt-4.1-mini"
    # The cancelled turn left nothing behind; the block arrived as one message.
    assert [m["content"] for m in third["messages"]] == ["My name is Ada", "Hello Ada", "line one"]


def test_ctrl_c_at_an_empty_prompt_leaves_with_totals():
    chat = Session("-p", "echo", env=base_env())
    try:
        chat.expect_exact("> ")
        chat.sendline("hello")
        chat.expect_exact("> ")
        chat.send("half typed")
        chat.expect_exact("half typed")  # echoed by readline: the keys are in its buffer
        chat.sendintr()
        chat.expect_exact("> ")  # Ctrl-C with text typed: a fresh prompt
        chat.sendintr()
        chat.expect_exact("session: 1 turn")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
    # Input history persists in LLMCLI_HOME for the next session's arrow keys.
    assert "hello" in (Path(os.environ["LLMCLI_HOME"]) / "chat_history").read_text()


def test_provider_switch_retry_system_and_resume_at_a_terminal(fake):
    fake.script("anthropic", Reply(text="Bonjour."), Reply(text="Salut."))
    chat = Session("-p", "echo", env=base_env(fake))
    try:
        chat.expect_exact("> ")
        chat.sendline("hello from echo")
        chat.expect_exact("> ")
        chat.sendline("/system Answer in French.")
        chat.expect_exact("system prompt: 'Answer in French.'")
        chat.expect_exact("> ")
        chat.sendline("/provider anthropic")
        chat.expect_exact("provider anthropic, model claude-haiku-4-5")
        chat.expect_exact("> ")
        chat.sendline("and now?")
        chat.expect_exact("Bonjour.")
        chat.expect_exact("> ")
        chat.sendline("/retry")
        chat.expect_exact("Salut.")
        chat.expect_exact("> ")
        chat.sendline("/provider nosuch")
        chat.expect_exact("Error: ")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    first, retried = fake.requests_for("anthropic")
    # The echo turn carried over to the new provider; /retry sent the same history again.
    assert first.body["system"] == "Answer in French."
    assert [m["content"] for m in first.body["messages"]] == [
        "hello from echo",
        "hello from echo",
        "and now?",
    ]
    assert retried.body["messages"] == first.body["messages"]

    resumed = Session("-p", "echo", "-c", env=base_env(fake))
    try:
        resumed.expect_exact("continuing conversation")
        resumed.expect_exact("you: and now?")
        resumed.expect_exact("assistant: Salut.")
        resumed.expect_exact("> ")
        resumed.sendeof()
        resumed.expect(pexpect.EOF)
    finally:
        resumed.close()
