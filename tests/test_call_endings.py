"""How a call ends, as a user meets it: a stream cut without a finish reason, a 200 that is not
the API, a deadline, a stopping signal, a value that can never work, and the library's keywords.

Each end is checked where the user sees it: stdout, stderr, the exit code and the log row, apart.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.conftest import KEYS, LLMCLI, PROVIDERS, base_env, run_cli
from tests.fakeserver import Reply

WORDS = ["Once", " upon", " a", " time"]
ANSWER = "".join(WORDS)
# What a gated stream has sent when it is held: every chunk but the last.
HELD = "".join(WORDS[:-1])


def rows() -> list[dict[str, Any]]:
    """The call log, oldest first, read without writing to it."""
    path = Path(os.environ["LLMCLI_HOME"]) / "logs.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY id")]


def error_line(err: str) -> str:
    """The one `Error:` line of a failure (a hint line may follow it, nothing else)."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) <= 2, err
    return errors[0]


def sent_texts(provider: str, body: dict[str, Any]) -> list[str]:
    """The conversation a request carried, as plain texts, whatever the wire."""
    if provider == "gemini":
        return [c["parts"][0]["text"] for c in body["contents"]]
    return [m["content"] for m in body["messages"]]


class Running:
    """An `llmcli` subprocess whose stdout is read as it arrives, every wait bounded."""

    def __init__(self, *args: str, env: dict[str, str], stdin: bytes | None = None):
        self.proc = subprocess.Popen(
            [LLMCLI, *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        self.out = b""

    def read_until(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while needle.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen within {timeout}s; got {self.out!r}")
            if select.select([fd], [], [], left)[0]:
                data = os.read(fd, 65536)
                if not data:
                    raise AssertionError(f"stdout closed before {needle!r}; got {self.out!r}")
                self.out += data

    def finish(self, timeout: float = 15) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out += self.proc.stdout.read()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, self.out.decode(), err.decode()


def wait_for_request(fake, provider: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not fake.requests_for(provider):
        assert time.monotonic() < deadline, f"no request reached the fake {provider} in {timeout}s"
        time.sleep(0.02)


# --- 1. a stream that ends cleanly without a finish reason ----------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_cut_without_a_finish_reason_exits_6_and_stays_out_of_the_conversation(
    cli, fake, provider
):
    fake.script(
        provider,
        Reply(text="First answer."),
        Reply(chunks=WORDS, finish=None),
        Reply(text="Third answer."),
    )
    assert cli("ask", "-p", provider, "first").code == 0
    cut = cli("stream", "-p", provider, "-c", "--retries", "2", "second")
    assert cut.code == 6  # without --strict: a cut answer is not a complete one
    assert cut.out == ANSWER + "\n"
    assert "cut off" in error_line(cut.err)
    assert len(fake.requests_for(provider)) == 2  # text was printed: never retried
    row = rows()[-1]
    assert (row["status"], row["answer"], row["exit_code"]) == ("error", ANSWER, 6)

    third = cli("ask", "-p", provider, "-c", "third")
    assert (third.code, third.out) == (0, "Third answer.\n"), third.err
    body = fake.requests_for(provider)[-1].body
    assert sent_texts(provider, body) == ["first", "First answer.", "third"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_cut_before_any_text_is_retried(cli, fake, provider):
    fake.script(provider, Reply(chunks=[], finish=None), Reply(chunks=["fine"]))
    result = cli("stream", "-p", provider, "--retries", "1", "hi")
    assert (result.code, result.out) == (0, "fine\n"), result.err
    assert "retrying in" in result.err and "Error" not in result.err
    assert len(fake.requests_for(provider)) == 2
    (row,) = rows()
    assert (row["status"], row["answer"], row["attempts"]) == ("ok", "fine", 2)


def test_a_chat_reply_cut_without_a_finish_reason_is_not_kept(cli, fake):
    provider = "openai"  # the cut is found the same way for each (above); chat is the same
    fake.script(provider, Reply(chunks=WORDS, finish=None), Reply(text="Second."))
    result = cli("chat", "-p", provider, "--retries", "0", stdin="one\ntwo\n")
    assert result.code == 6  # the first failed turn's status
    assert result.out == ANSWER + "\nSecond.\n"
    assert "cut off" in error_line(result.err)
    assert sent_texts(provider, fake.requests_for(provider)[-1].body) == ["two"]
    assert [r["status"] for r in rows()] == ["error", "ok"]


# --- 2. a 200 that is not the API ------------------------------------------------------------------

HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Wi-Fi login</body></html>"
# kind -> (the reply, what the error line must quote of it)
NOT_THE_API: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "html": (
        {"body": HTML, "content_type": "text/html; charset=utf-8"},
        ("200", "text/html", "<!DOCTYPE html>"),
    ),
    "empty-json": ({"body": b"{}"}, ("200", "application/json", "'{}'")),
    "204": ({"status": 204}, ("204",)),
}


@pytest.mark.parametrize("kind", NOT_THE_API)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_2xx_that_is_not_the_api_is_a_provider_error_saying_what_came_back(
    cli, fake, provider, kind
):
    reply, quoted = NOT_THE_API[kind]
    for command in ("ask", "stream"):
        fake.script(provider, Reply(**reply))
        result = cli(command, "-p", provider, "--retries", "0", "hi")
        assert (result.code, result.out) == (6, ""), (command, result.err)
        line = error_line(result.err)
        assert all(text in line for text in quoted), (command, line)
    assert [(r["status"], r["exit_code"]) for r in rows()] == [("error", 6), ("error", 6)]


@pytest.mark.parametrize(
    "kind",
    [
        "html",
        "empty-json",
        "204",
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_config_validate_live_refuses_a_2xx_that_is_not_the_api(cli, fake, provider, kind):
    reply, quoted = NOT_THE_API[kind]
    fake.script(provider, Reply(**reply))
    result = cli("config", "validate", "--live", "-p", provider)
    assert result.code == 6, result.out + result.err
    line = error_line(result.err)
    assert all(text in line for text in quoted), line
    assert f"{provider} live" in result.out and "failed" in result.out


# --- 3. --timeout is a deadline for each attempt ------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_trickling_stream_ends_at_its_deadline_keeping_the_partial_text(fake, provider):
    chunks = [f"w{i} " for i in range(8)]
    fake.script(provider, Reply(chunks=chunks, chunk_delay=0.8))  # 5.6 s in all
    args = ("stream", "-p", provider, "--timeout", "1.5", "--retries", "0", "hi")
    result = run_cli(*args, env=base_env(fake), timeout=20)
    ended = time.monotonic()
    (request,) = fake.requests_for(provider)
    assert ended - request.started_at < 3.0  # about 1.5 s after the request, not 5.6
    assert result.code == 7, result.err
    assert "time" in error_line(result.err)
    partial = result.out.removesuffix("\n")
    assert result.out.endswith("\n") and partial
    assert "".join(chunks).startswith(partial) and len(partial) < len("".join(chunks))
    assert fake.wait_idle(10)
    assert request.chunks_sent < len(chunks)
    (row,) = rows()
    assert (row["status"], row["answer"], row["exit_code"]) == ("error", partial, 7)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_server_silent_after_a_chunk_is_cut_at_the_deadline_not_a_read_timeout_later(
    fake, provider
):
    gate = threading.Event()
    # "a" at once, "b" at 1.8 s, then silence: each read may wait 2 s, the attempt may not.
    fake.script(provider, Reply(chunks=["a", "b", "c"], chunk_delay=1.8, gate=gate))
    args = ("stream", "-p", provider, "--timeout", "2", "--retries", "0", "hi")
    try:
        result = run_cli(*args, env=base_env(fake), timeout=20)
        ended = time.monotonic()
    finally:
        gate.set()
    (request,) = fake.requests_for(provider)
    assert ended - request.started_at < 3.0  # 2 s, not 1.8 + 2
    assert (result.code, result.out) == (7, "ab\n"), result.err
    assert "time" in error_line(result.err)
    assert rows()[0]["answer"] == "ab"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_whose_reply_comes_late_ends_at_its_deadline(fake, provider):
    fake.script(provider, Reply(text="too late", delay=8))
    args = ("ask", "-p", provider, "--timeout", "1.5", "--retries", "0", "hi")
    result = run_cli(*args, env=base_env(fake), timeout=20)
    ended = time.monotonic()
    (request,) = fake.requests_for(provider)
    # Well under the reply's 8 s, with room for a loaded machine to log the call and exit.
    assert ended - request.started_at < 5.0
    assert (result.code, result.out) == (7, ""), result.err
    assert "time" in error_line(result.err)
    (row,) = rows()
    assert (row["status"], row["exit_code"]) == ("error", 7)


# --- 4. SIGTERM and SIGHUP stop a command as Ctrl-C does ------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stopping_signal_mid_stream_keeps_the_text_and_logs_it_interrupted(
    fake, provider, sig, status
):
    gate = threading.Event()
    fake.script(provider, Reply(chunks=WORDS, gate=gate))  # held before its last chunk
    running = Running("stream", "-p", provider, "hi", env=base_env(fake))
    try:
        running.read_until(HELD)
        running.proc.send_signal(sig)
        code, out, err = running.finish()
    finally:
        gate.set()
    assert code == status, err
    assert out == HELD + "\n"
    assert len(err.splitlines()) == 1 and err.strip() and "Traceback" not in err, err
    (row,) = rows()
    assert (row["status"], row["answer"], row["exit_code"]) == ("interrupted", HELD, status)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sigterm_while_an_answer_is_awaited_exits_143_and_logs_it_interrupted(fake, provider):
    fake.script(provider, Reply(text="never seen", delay=8))
    running = Running("ask", "-p", provider, "hi", env=base_env(fake))
    wait_for_request(fake, provider)
    running.proc.send_signal(signal.SIGTERM)
    code, out, err = running.finish()
    assert (code, out) == (143, ""), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    (row,) = rows()
    assert (row["status"], row["exit_code"]) == ("interrupted", 143)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sigterm_stops_a_piped_chat_without_going_on_to_the_next_line(fake, provider):
    gate = threading.Event()
    fake.script(provider, Reply(chunks=WORDS, gate=gate), Reply(text="never asked"))
    running = Running("chat", "-p", provider, env=base_env(fake), stdin=b"one\ntwo\n")
    try:
        running.read_until(HELD)
        running.proc.send_signal(signal.SIGTERM)
        code, out, err = running.finish()
    finally:
        gate.set()
    assert code == 143, err
    assert out == HELD + "\n"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert len(fake.requests_for(provider)) == 1  # "two" was never sent
    (row,) = rows()
    assert (row["status"], row["answer"], row["exit_code"]) == ("interrupted", HELD, 143)


@pytest.mark.parametrize("typed", ["", "half a question"])
def test_sigterm_at_an_idle_chat_prompt_stops_the_session_with_143(typed):
    chat = pexpect.spawn(LLMCLI, ["chat", "-p", "echo"], env=base_env(), timeout=3)
    try:
        chat.expect_exact(b"> ")
        if typed:
            chat.send(typed.encode())
            chat.expect_exact(typed.encode())
        chat.kill(signal.SIGTERM)
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)
    assert chat.exitstatus == 143


# --- 5. values that can never work fail before anything is sent ----------------------------------

NEVER = [
    ("--timeout", "1e10"),
    ("--timeout", "0.0000001"),
    ("--max-tokens", "99999999999999999999"),
    ("--seed", "99999999999999999999"),
    ("--model", ""),
    ("--model", "../x"),
    ("--model", "a b"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_flags_that_can_never_work_are_usage_errors_and_nothing_is_sent(cli, fake, provider):
    for flag, value in NEVER:
        short = "-m" if flag == "--model" else flag
        result = cli("ask", "-p", provider, short, value, "hi")
        assert (result.code, result.out) == (2, ""), (flag, value, result.err)
        assert flag in error_line(result.err), (flag, value)
    assert fake.requests == [] and rows() == []


def test_seed_limits_are_each_providers_own(cli, fake):
    gemini = cli("ask", "-p", "gemini", "--seed", str(2**31), "hi")
    assert gemini.code == 2 and "2147483647" in error_line(gemini.err)
    openai = cli("ask", "-p", "openai", "--seed", str(2**63), "hi")
    assert openai.code == 2 and "9223372036854775807" in error_line(openai.err)
    assert fake.requests == []
    fine = cli("ask", "-p", "openai", "--seed", str(2**31), "hi")
    assert fine.code == 0, fine.err
    assert fake.requests_for("openai")[0].body["seed"] == 2**31


# variable -> (values that can never work, a value at the edge of what works)
SETTINGS = {
    "LLM_TIMEOUT": (["1e10", "0.0000001", "1e308"], "3600"),
    "LLM_MAX_TOKENS": (["99999999999999999999", "0"], "10000000"),
    "LLM_MODEL": (["../x", "a b", "m" * 257], "ft:gpt-4o-mini:org::id-1"),
}


@pytest.mark.parametrize("variable", SETTINGS)
def test_the_same_values_in_the_environment_are_config_errors_in_ask_and_validate(
    cli, fake, variable
):
    bad_values, good = SETTINGS[variable]
    for provider in PROVIDERS:
        for value in bad_values:
            env = {"LLM_PROVIDER": provider, variable: value}
            asked = cli("ask", "hi", extra_env=env)
            assert (asked.code, asked.out) == (3, ""), (provider, value, asked.err)
            assert variable in error_line(asked.err)
            validated = cli("config", "validate", extra_env=env)
            assert validated.code == 3, (provider, value, validated.out)
            assert variable in error_line(validated.err)
        # What ask takes, validate takes too (ask itself is tried offline, below).
        validated = cli("config", "validate", extra_env={"LLM_PROVIDER": provider, variable: good})
        assert validated.code == 0, validated.out + validated.err
    assert fake.requests == []
    asked = cli("ask", "hi", extra_env={"LLM_PROVIDER": "echo", variable: good})
    assert (asked.code, asked.out) == (0, "hi\n"), asked.err
    # Unlike `-m ""`, an empty variable is an unset one, as every empty setting is.
    unset = cli("ask", "hi", extra_env={"LLM_PROVIDER": "echo", variable: ""})
    assert (unset.code, unset.out) == (0, "hi\n"), unset.err


def test_an_empty_tag_leaves_the_call_untagged():
    env = base_env()
    for args in (["--tag", ""], [], ["--tag", "  "], ["--tag", "nightly"]):
        assert run_cli("ask", "-p", "echo", *args, "hi", env=env).code == 0
    assert [r["tag"] for r in rows()] == [None, None, None, "nightly"]
    report = run_cli("cost", "--by", "tag", "--format", "json", env=env)
    assert report.code == 0, report.err
    groups = {row["tag"]: row["calls"] for row in json.loads(report.out)["rows"]}
    assert groups == {None: 3, "nightly": 1}


def test_chat_names_its_own_command_in_a_bad_value():
    chat = pexpect.spawn(LLMCLI, ["chat", "-p", "echo"], env=base_env(), timeout=15)
    try:
        chat.expect_exact(b"> ")
        chat.sendline(b"/provider nope")
        chat.expect_exact(b"> ")
        said = chat.before.decode()
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert "invalid value for /provider" in said and "--provider" not in said, said
    assert chat.exitstatus == 0


# --- 6. the library: explicit keywords -------------------------------------------------------


def _stops(provider: str, body: dict[str, Any]) -> Any:
    if provider == "openai":
        return body["stop"]
    if provider == "anthropic":
        return body["stop_sequences"]
    return body["generationConfig"]["stopSequences"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_library_stop_string_is_one_sequence(fake, monkeypatch, provider):
    import llmcli

    for name, value in {**KEYS, **fake.env()}.items():
        monkeypatch.setenv(name, value)
    assert llmcli.ask("x", provider="echo", stop="END").text == "x"
    llmcli.ask("x", provider=provider, stop="END", retries=0)
    assert _stops(provider, fake.requests_for(provider)[-1].body) == ["END"]
    list(llmcli.stream("x", provider=provider, stop="END", retries=0))
    assert _stops(provider, fake.requests_for(provider)[-1].body) == ["END"]


@pytest.mark.parametrize("misspelt", [{"max_token": 5}, {"temprature": 1}])
def test_library_misspelt_keywords_are_type_errors(misspelt):
    import llmcli

    with pytest.raises(TypeError, match=next(iter(misspelt))):
        llmcli.ask("x", provider="echo", **misspelt)
    with pytest.raises(TypeError, match=next(iter(misspelt))):
        llmcli.stream("x", provider="echo", **misspelt)
