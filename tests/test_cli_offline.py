"""The installed command with the offline echo provider: input rules, output streams, exit codes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


def test_prompt_words_are_joined():
    result = run_cli("ask", "-p", "echo", "hello", "there", "world")
    assert (result.code, result.out, result.err) == (0, "hello there world\n", "")


def test_stdin_alone_is_the_prompt():
    result = run_cli("ask", "-p", "echo", stdin="from a pipe\n")
    assert (result.code, result.out) == (0, "from a pipe\n")


def test_stdin_then_blank_line_then_prompt(fake):
    from tests.conftest import base_env

    result = run_cli(
        "ask",
        "-p",
        "openai",
        "--retries",
        "0",
        "Summarize",
        stdin="line one\nline two\n",
        env=base_env(fake),
    )
    assert result.code == 0, result.err
    sent = fake.requests[-1].body["messages"][-1]["content"]
    assert sent == "line one\nline two\n\nSummarize"


@pytest.mark.parametrize("stdin", ["", "   \n\t\n"])
def test_no_prompt_is_a_usage_error(stdin):
    result = run_cli("ask", "-p", "echo", stdin=stdin)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("Error: no prompt given")


def test_whitespace_prompt_words_are_a_usage_error():
    assert run_cli("ask", "-p", "echo", "   ").code == 2


def test_bad_utf8_on_stdin_says_where():
    result = run_cli("ask", "-p", "echo", stdin=b"caf\xe9 au lait")
    assert result.code == 2
    assert "not valid UTF-8 (byte 0xe9 at offset 3)" in result.err
    assert "Traceback" not in result.err


def test_nul_bytes_are_refused():
    result = run_cli("ask", "-p", "echo", stdin=b"abc\x00def")
    assert result.code == 2 and "NUL" in result.err


def test_no_stdin_flag_ignores_piped_input():
    result = run_cli("ask", "-p", "echo", "--no-stdin", "just this", stdin="not this")
    assert result.out == "just this\n"


def test_json_output_holds_the_documented_fields():
    result = run_cli("ask", "-p", "echo", "--json", "one two")
    assert result.code == 0 and result.err == ""
    data = json.loads(result.out)
    for key in (
        "content",
        "provider",
        "model",
        "finish_reason",
        "usage",
        "cost_usd",
        "duration_ms",
        "id",
    ):
        assert key in data
    assert data["content"] == "one two"
    assert data["finish_reason"] == "stop"
    assert data["usage"] == {
        "input_tokens": 2,
        "output_tokens": 2,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "cache_write_1h_tokens": None,
        "total_tokens": 4,
    }


def test_truncation_warns_on_stderr_and_strict_exits_8():
    result = run_cli("ask", "-p", "echo", "--max-tokens", "2", "one two three")
    assert (result.code, result.out) == (0, "one two\n")
    assert "truncated at 2 tokens" in result.err
    strict = run_cli("ask", "-p", "echo", "--max-tokens", "2", "--strict", "one two three")
    assert strict.code == 8 and strict.out == "one two\n"


def test_usage_line_goes_to_stderr_only():
    result = run_cli("ask", "-p", "echo", "-u", "a b c")
    assert result.out == "a b c\n"
    assert result.err.startswith("tokens: 3 in, 3 out, 6 total · cost ")


def test_dry_run_sends_nothing_and_masks_the_key(fake):
    from tests.conftest import KEYS, base_env

    result = run_cli("ask", "-p", "openai", "-s", "Be brief", "--dry-run", "hi", env=base_env(fake))
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["params"]["messages"][0] == {"role": "system", "content": "Be brief"}
    assert data["api_key"] == "sk-...0001"
    assert KEYS["OPENAI_API_KEY"] not in result.out + result.err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-p", "anthropic", "--seed", "1"], "anthropic cannot honour --seed"),
        (
            ["-p", "anthropic", "--response-format", "json"],
            "anthropic cannot honour --response-format json",
        ),
        (["-p", "anthropic", "-t", "1.5"], "out of range for anthropic"),
        (["-p", "openai", "--top-p", "2"], "--top-p"),
        (["-p", "openai", *["--stop", "x"] * 5], "at most 4 --stop"),
        (["-p", "nosuch"], "Invalid value for '-p'"),
        (["--max-tokens", "-3", "-p", "echo"], "--max-tokens"),
        (["--timeout", "0", "-p", "echo"], "--timeout"),
        (["--retries", "99", "-p", "echo"], "--retries"),
    ],
)
def test_out_of_range_and_unsupported_options_are_usage_errors(fake, args, needle):
    from tests.conftest import base_env

    result = run_cli("ask", *args, "hi", env=base_env(fake))
    assert result.code == 2, result.err
    assert needle in result.err
    assert "Traceback" not in result.err
    assert fake.requests == []


def test_unknown_provider_in_environment_is_a_config_error():
    from tests.conftest import base_env

    result = run_cli("ask", "hi", env={**base_env(), "LLM_PROVIDER": "foo"})
    assert result.code == 3
    assert "LLM_PROVIDER='foo'" in result.err and "openai, anthropic, gemini, echo" in result.err


def test_version_and_help_examples():
    assert run_cli("--version").out.startswith("llmcli, version ")
    help_text = run_cli("ask", "--help").out
    assert "Examples:" in help_text and "llmcli ask -p echo" in help_text
