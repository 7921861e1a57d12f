"""The installed `llmcli ask` against the fake server, per provider: the answer on stdout,
one clear error line on stderr and the documented exit code for each failure class."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import KEYS, PROVIDERS
from tests.fakeserver import Reply


@pytest.mark.parametrize("provider", PROVIDERS)
def test_answer_on_stdout_usage_on_stderr(cli, fake, provider):
    fake.script(provider, Reply(text="The answer is 42.", input_tokens=9, output_tokens=6))
    result = cli("ask", "-p", provider, "-u", "What is the answer?")
    assert result.code == 0, result.err
    assert result.out == "The answer is 42.\n"
    assert result.err.startswith("tokens: 9 in, 6 out, 15 total · cost ")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_output(cli, fake, provider):
    fake.script(provider, Reply(text="ok", finish="length"))
    result = cli("ask", "-p", provider, "--json", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["content"], data["provider"], data["finish_reason"]) == ("ok", provider, "length")
    assert data["usage"]["input_tokens"] == 11 and data["usage"]["output_tokens"] == 7
    assert data["attempts"] == 1 and isinstance(data["duration_ms"], int)
    assert "truncated" in result.err


@pytest.mark.parametrize("provider", PROVIDERS)
def test_content_filtered_empty_answer_exits_8(cli, fake, provider):
    fake.script(provider, Reply(text="", finish="content_filter"))
    result = cli("ask", "-p", provider, "hi")
    assert result.code == 8
    assert result.out == ""
    assert "content filtered" in result.err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The mapping itself is covered per provider in-process (test_providers.py); here each exit code is
# checked once through the installed command, the providers taking turns.
FAULTS = [
    ("openai", "401", [Reply(status=401)], 4, "authentication failed"),
    ("anthropic", "403", [Reply(status=403)], 4, "authentication failed"),
    ("gemini", "429", [Reply(status=429)], 5, "rate limited"),
    ("openai", "500", [Reply(status=500)], 6, "server error"),
    ("anthropic", "529", [Reply(status=529)], 6, "overloaded"),
    ("gemini", "400", [Reply(status=400)], 9, "rejected the request (400)"),
    ("anthropic", "404", [Reply(status=404)], 9, "rejected the request (404)"),
]


@pytest.mark.parametrize(
    ("provider", "name", "script", "code", "needle"), FAULTS, ids=[f"{f[0]}-{f[1]}" for f in FAULTS]
)
def test_failures_exit_with_their_code_and_one_error_line(
    cli, fake, provider, name, script, code, needle
):
    fake.script(provider, *script)
    result = cli("ask", "-p", provider, "--retries", "0", "hi")
    assert result.code == code, result.err
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0].startswith("Error: ") and needle in lines[0]
    assert len(lines) <= 2
    assert "Traceback" not in result.err
    for key in KEYS.values():
        assert key not in result.err


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_model_exits_9_naming_it(cli, provider):
    result = cli("ask", "-p", provider, "-m", "no-such-model", "--retries", "0", "hi")
    assert result.code == 9
    assert "no-such-model" in result.err and "check the model name" in result.err


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused_exits_7(cli, provider):
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {"OPENAI_BASE_URL": url + "/v1", "ANTHROPIC_BASE_URL": url, "GOOGLE_GEMINI_BASE_URL": url}
    result = cli("ask", "-p", provider, "--retries", "0", "hi", extra_env=env)
    assert result.code == 7, result.err
    assert result.err.startswith(f"Error: could not reach {provider}")
    assert "Traceback" not in result.err


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_key_exits_4_and_never_shows_the_key(cli, provider):
    var = {
        "openai": "OPENAI_API_KEY",
        "anthropic": "ANTHROPIC_API_KEY",
        "gemini": "GEMINI_API_KEY",
    }[provider]
    secret = "bad-DISTINCTIVE-secret-7f3a9c"
    result = cli("ask", "-p", provider, "--retries", "0", "hi", extra_env={var: secret})
    assert result.code == 4
    assert secret not in result.out + result.err
    assert var in result.err


def test_retry_line_then_success(cli, fake):
    fake.script("openai", Reply(status=429, headers={"retry-after-ms": "10"}), Reply(text="fine"))
    result = cli("ask", "-p", "openai", "--retries", "2", "hi")
    assert (result.code, result.out) == (0, "fine\n")
    assert result.err.strip() == "rate limited (429); retrying in 0.0s (attempt 2 of 3)"
    assert len(fake.requests_for("openai")) == 2


REFUSAL = "I'm sorry, but I can't help with that."


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_openai_refusal_is_shown_on_stderr_and_exits_8(cli, fake, command):
    """OpenAI declines with a `refusal` text instead of content: the user reads why."""
    fake.script("openai", Reply(refusal=REFUSAL))
    result = cli(command, "-p", "openai", "hi")
    assert result.code == 8
    assert result.out == ""  # a refusal is not an answer: nothing for the pipe
    assert f"openai declined to answer: {REFUSAL}" in result.err
    assert len(result.err.strip().splitlines()) <= 2  # the error line and its hint


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_openai_refusal_in_json(cli, fake, command):
    fake.script("openai", Reply(refusal=REFUSAL))
    result = cli(command, "-p", "openai", "--json", "hi")
    assert result.code == 8
    data = json.loads(result.out)
    assert (data["content"], data["finish_reason"], data["raw_finish_reason"]) == (
        "",
        "content_filter",
        "refusal",
    )
    assert data["refusal"] == REFUSAL


def test_json_refusal_is_null_for_an_answer(cli, fake):
    fake.script("openai", Reply(text="fine"))
    data = json.loads(cli("ask", "-p", "openai", "--json", "hi").out)
    assert data["content"] == "fine" and data["refusal"] is None


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_openai_answer_in_part_then_refusal_prints_the_part_and_warns(cli, fake, command):
    """Text and a refusal in one reply: an answer (exit 0), the refusal as a warning; ask and
    stream agree."""
    fake.script("openai", Reply(chunks=["Part one."], refusal="I won't do the rest."))
    result = cli(command, "-p", "openai", "--json", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["content"], data["finish_reason"], data["refusal"]) == (
        "Part one.",
        "stop",
        "I won't do the rest.",
    )
    assert "openai declined part of it: I won't do the rest." in result.err


@pytest.mark.parametrize("command", ["ask", "stream"])
def test_openai_refusal_with_another_finish_reason_is_still_a_refusal(cli, fake, command):
    fake.script("openai", Reply(refusal="No.", finish="length"))
    result = cli(command, "-p", "openai", "hi")
    assert (result.code, result.out) == (8, "")
    assert "openai declined to answer: No." in result.err
