"""`--fallback` (and LLM_FALLBACK) as a user meets it: the installed `llmcli` against the fake
provider server, with stdout, stderr, the exit code and the call log checked separately.

When the first provider fails after its retries with a rate limit, a 5xx or 529, a timeout or a
refused connection, the same request goes to the next provider of the chain, in order; never
after a refused request (400, 401, 403, 404), a content filter or a usage or configuration
error, and never once a stream has printed something. Each attempt is its own log row, all of
one request linked by `request_uid`.

Nothing here really waits: servers ask for a 10 ms `retry-after-ms`, `--retries` is 0 or 1, and
the timeout and refused-connection rows cost at most one short deadline and one backoff (under a
second of full jitter) per attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import textwrap
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEYS, LLMCLI, base_env, run_cli
from tests.fakeserver import Reply

FAST = {"retry-after-ms": "10"}  # a server's wait, so a retry costs nothing
DEFAULT_MODEL = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
}
BASE_URL_VAR = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "gemini": "GOOGLE_GEMINI_BASE_URL",
}
TIMEOUT = "1"  # --timeout for the rows with a reply that never comes in time
RETRY_LINE = re.compile(
    r"^(?P<why>.+); retrying in \d+\.\ds \(attempt (?P<n>\d+) of (?P<of>\d+)\)$"
)
FALLBACK_LINE = re.compile(r"^falling back to (?P<to>\S+) after (?P<why>.+) from (?P<frm>\S+)$")


def closed_port() -> int:
    """A port nothing listens on (bound, then released): a connection there is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_rows() -> list[dict[str, Any]]:
    """The call log's rows, oldest first, read-only (none when nothing created the log)."""
    path = Path(os.environ["LLMCLI_HOME"]) / "logs.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY id")]


def asked(fake) -> list[str]:
    """The providers the fake server heard from, in arrival order."""
    return [r.provider for r in fake.requests]


def write_config(text: str) -> Path:
    """`$LLMCLI_HOME/config.toml`, where llmcli looks without being told."""
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


# --- a fault, as the fake server (or a closed port) produces it ---------------------------------

# name -> (the reply each attempt gets, what the retry and fallback lines call it, exit code)
FAULTS: dict[str, tuple[Reply | None, str, int]] = {
    "429": (Reply(status=429, headers=FAST), "rate limited (429)", 5),
    "500": (Reply(status=500, headers=FAST), "server error (500)", 6),
    "529": (Reply(status=529, headers=FAST), "overloaded (529)", 6),
    "timeout": (Reply(delay=4, text="too late"), "timed out", 7),
    "refused": (None, "connection failed", 7),  # the provider's base URL is a closed port
}


def arrange(fake, provider: str, fault: str, attempts: int) -> dict[str, str]:
    """Script `fault` for every attempt `provider` will make; the environment it needs."""
    reply, _, _ = FAULTS[fault]
    if reply is None:
        url = f"http://127.0.0.1:{closed_port()}"
        return {BASE_URL_VAR[provider]: url + "/v1" if provider == "openai" else url}
    fake.script(provider, *[reply] * attempts)
    return {}


def expected_lines(
    chain: list[tuple[str, str]], retries: int, answered_by: str | None
) -> list[str]:
    """The stderr lines before any `Error:`: one per retry, one per switch of provider."""
    lines = []
    names = [p for p, _ in chain] + ([answered_by] if answered_by else [])
    for index, (provider, fault) in enumerate(chain):
        why = FAULTS[fault][1]
        lines += [f"{why}; retrying in *" for _ in range(retries)]
        if index + 1 < len(names):
            to = names[index + 1]
            lines.append(f"falling back to {to}/{DEFAULT_MODEL[to]} after {why} from {provider}")
    return lines


def assert_lines(actual: list[str], expected: list[str]) -> None:
    assert len(actual) == len(expected), actual
    for line, want in zip(actual, expected, strict=True):
        if want.endswith("*"):
            assert line.startswith(want[:-1]) and RETRY_LINE.match(line), (line, want)
        else:
            assert line == want


# --- chains across the three providers ----------------------------------------------------------

CHAINS = [
    # (providers that fail, in order, with their fault), the one that answers
    ([("openai", "429"), ("anthropic", "529")], "gemini"),
    ([("gemini", "500"), ("openai", "timeout")], "anthropic"),
    ([("anthropic", "refused"), ("gemini", "429")], "openai"),
    ([("openai", "refused"), ("gemini", "timeout")], "anthropic"),
    ([("anthropic", "500")], "openai"),
]


@pytest.mark.parametrize(
    ("failing", "answering"),
    CHAINS,
    ids=["-".join(f"{p}:{f}" for p, f in c) + f"-{a}" for c, a in CHAINS],
)
def test_a_chain_answers_from_the_first_provider_that_can(cli, fake, failing, answering):
    retries = 1
    env: dict[str, str] = {}
    for provider, fault in failing:
        env.update(arrange(fake, provider, fault, retries + 1))
    fake.script(answering, Reply(text=f"answered by {answering}"))
    primary = failing[0][0]
    chain = [arg for p, _ in failing[1:] for arg in ("--fallback", p)]
    args = ["ask", "-p", primary, *chain, "--fallback", answering]
    timing = ["--retries", str(retries), "--timeout", TIMEOUT]
    result = cli(*args, *timing, "hi", extra_env=env, timeout=30)

    assert (result.code, result.out) == (0, f"answered by {answering}\n"), result.err
    assert_lines(result.err.splitlines(), expected_lines(failing, retries, answering))
    # Each provider was asked as often as its retries allow, one after the other.
    order = [p for p, f in failing if f != "refused" for _ in range(retries + 1)]
    assert asked(fake) == [*order, answering]
    rows = log_rows()
    assert [r["provider"] for r in rows] == [*(p for p, _ in failing), answering]
    assert [r["status"] for r in rows] == ["error"] * len(failing) + ["ok"]
    assert [r["exit_code"] for r in rows] == [FAULTS[f][2] for _, f in failing] + [0]
    assert [r["attempts"] for r in rows] == [retries + 1] * len(failing) + [1]
    assert len({r["request_uid"] for r in rows}) == 1 and rows[0]["request_uid"]
    assert len({r["uid"] for r in rows}) == len(rows)
    assert rows[-1]["answer"] == f"answered by {answering}"


def test_the_issue_s_example_line_and_json_saying_who_answered(cli, fake):
    fake.script("openai", Reply(status=429, headers=FAST))
    fake.script("anthropic", Reply(text="from haiku"))
    args = ("ask", "-p", "openai", "--retries", "0", "--json")
    result = cli(*args, "--fallback", "anthropic/claude-haiku-4-5", "hi")
    assert result.code == 0, result.err
    assert result.err == (
        "falling back to anthropic/claude-haiku-4-5 after rate limited (429) from openai\n"
    )
    data = json.loads(result.out)
    assert (data["content"], data["provider"], data["model"]) == (
        "from haiku",
        "anthropic",
        "claude-haiku-4-5",
    )
    assert data["fell_back_from"] == [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "error": data["fell_back_from"][0]["error"],
            "exit_code": 5,
        }
    ]
    assert "rate limited" in data["fell_back_from"][0]["error"]
    assert data["log_id"] == log_rows()[-1]["id"]


def test_json_without_a_fallback_lists_none(cli, fake):
    result = cli("ask", "-p", "openai", "--json", "--fallback", "anthropic", "hi")
    assert result.code == 0, result.err
    assert json.loads(result.out)["fell_back_from"] == []
    assert asked(fake) == ["openai"]
    assert result.err == ""


ALL_FAIL = [
    [("openai", "429"), ("anthropic", "500"), ("gemini", "timeout")],
    [("gemini", "refused"), ("anthropic", "429"), ("openai", "500")],
    [("anthropic", "529"), ("openai", "timeout"), ("gemini", "429")],
]


@pytest.mark.parametrize(
    "failing", ALL_FAIL, ids=["-".join(f"{p}:{f}" for p, f in c) for c in ALL_FAIL]
)
def test_when_every_provider_fails_the_exit_code_is_the_last_failure_s(cli, fake, failing):
    retries = 1
    env: dict[str, str] = {}
    for provider, fault in failing:
        env.update(arrange(fake, provider, fault, retries + 1))
    chain = [arg for p, _ in failing[1:] for arg in ("--fallback", p)]
    timing = ["--retries", str(retries), "--timeout", TIMEOUT]
    result = cli("ask", "-p", failing[0][0], *chain, *timing, "hi", extra_env=env, timeout=30)

    last, last_fault = failing[-1]
    assert result.code == FAULTS[last_fault][2], result.err
    assert result.out == ""
    lines = result.err.splitlines()
    errors_at = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors_at) == 1, lines  # one error: the last provider's
    assert last in lines[errors_at[0]]
    assert_lines(lines[: errors_at[0]], expected_lines(failing, retries, None))
    assert len(lines) - errors_at[0] <= 2  # the error, and a hint at most
    order = [p for p, f in failing if f != "refused" for _ in range(retries + 1)]
    assert asked(fake) == order
    rows = log_rows()
    assert [r["provider"] for r in rows] == [p for p, _ in failing]
    assert [r["status"] for r in rows] == ["error"] * 3
    assert [r["exit_code"] for r in rows] == [FAULTS[f][2] for _, f in failing]
    assert len({r["request_uid"] for r in rows}) == 1 and rows[0]["request_uid"]
    assert len({r["uid"] for r in rows}) == 3


def test_each_request_has_its_own_request_uid(cli, fake):
    for _ in range(2):
        fake.script("openai", Reply(status=500, headers=FAST))
        result = cli("ask", "-p", "openai", "--retries", "0", "--fallback", "gemini", "hi")
        assert result.code == 0, result.err
    rows = log_rows()
    assert [r["provider"] for r in rows] == ["openai", "gemini"] * 2
    assert rows[0]["request_uid"] == rows[1]["request_uid"]
    assert rows[2]["request_uid"] == rows[3]["request_uid"]
    assert rows[0]["request_uid"] != rows[2]["request_uid"]


# --- what never falls back ----------------------------------------------------------------------

REFUSED = [
    ("openai", Reply(status=400), 9),
    ("anthropic", Reply(status=401), 4),
    ("gemini", Reply(status=403), 4),
    ("openai", Reply(status=404), 9),
    ("anthropic", Reply(status=403), 4),
    ("gemini", Reply(status=400, error_type="API_KEY_INVALID"), 4),
    ("openai", Reply(text="", finish="content_filter"), 8),
    ("gemini", Reply(text="", finish="content_filter"), 8),
]


@pytest.mark.parametrize(
    ("provider", "reply", "code"),
    REFUSED,
    ids=[f"{p}-{r.status}-{r.finish}-{r.error_type}" for p, r, _ in REFUSED],
)
@pytest.mark.parametrize("command", ["ask", "stream"])
def test_a_refused_request_or_a_filter_never_falls_back(cli, fake, command, provider, reply, code):
    fallback = "anthropic" if provider != "anthropic" else "openai"
    fake.script(provider, reply)
    result = cli(command, "-p", provider, "--retries", "2", "--fallback", fallback, "hi")
    assert result.code == code, result.err
    assert result.out == ""
    assert "falling back" not in result.err and "retrying" not in result.err
    assert result.err.startswith("Error: ")
    assert asked(fake) == [provider]
    rows = log_rows()
    assert [(r["provider"], r["exit_code"]) for r in rows] == [(provider, code)]


def test_a_failure_mid_chain_that_no_provider_could_fix_ends_it(cli, fake):
    """openai is rate limited, anthropic refuses the key: exit 4, gemini is never asked."""
    fake.script("openai", Reply(status=429, headers=FAST))
    fake.script("anthropic", Reply(status=401))
    args = ("ask", "-p", "openai", "--retries", "0", "--fallback", "anthropic")
    result = cli(*args, "--fallback", "gemini", "hi")
    assert result.code == 4, result.err
    assert asked(fake) == ["openai", "anthropic"]
    lines = result.err.splitlines()
    assert lines[0] == (
        "falling back to anthropic/claude-haiku-4-5 after rate limited (429) from openai"
    )
    assert lines[1].startswith("Error: ") and "gemini" not in result.err
    assert [r["status"] for r in log_rows()] == ["error", "error"]


@pytest.mark.parametrize(
    "quota",
    [Reply(status=402, headers=FAST), Reply(status=429, error_type="insufficient_quota")],
    ids=["402", "insufficient_quota"],
)
def test_an_exhausted_quota_falls_back_at_once(cli, fake, quota):
    """Waiting does not refill a quota: no retry, but another provider may well answer."""
    fake.script("openai", quota)
    fake.script("gemini", Reply(text="gemini here"))
    result = cli("ask", "-p", "openai", "--retries", "3", "--fallback", "gemini", "hi")
    assert (result.code, result.out) == (0, "gemini here\n"), result.err
    assert asked(fake) == ["openai", "gemini"]
    lines = result.err.splitlines()
    assert len(lines) == 1 and FALLBACK_LINE.match(lines[0])
    assert lines[0].startswith("falling back to gemini/gemini-2.5-flash after quota exhausted (")
    assert lines[0].endswith(") from openai")
    assert [(r["provider"], r["status"], r["exit_code"]) for r in log_rows()] == [
        ("openai", "error", 5),
        ("gemini", "ok", 0),
    ]


def test_a_usage_error_is_not_a_reason_to_fall_back(cli, fake):
    """anthropic cannot honour --seed: exit 2 before anything is sent, openai not tried."""
    result = cli("ask", "-p", "anthropic", "--seed", "1", "--fallback", "openai", "hi")
    assert result.code == 2, result.err
    assert result.err.startswith("Error: anthropic cannot honour --seed")
    assert asked(fake) == [] and log_rows() == []


def test_a_missing_key_for_the_first_provider_is_not_a_reason_to_fall_back(cli, fake):
    env = base_env(fake)
    del env["OPENAI_API_KEY"]
    result = run_cli("ask", "-p", "openai", "--fallback", "anthropic", "hi", env=env)
    assert result.code == 3, result.err
    assert "OPENAI_API_KEY" in result.err and "falling back" not in result.err
    assert asked(fake) == [] and log_rows() == []


# --- streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=503, headers=FAST),
        Reply(text="never seen", drop_after=0),  # cut after the headers, before any text
        Reply(text="never seen", stream_error_after=0, error_type="overloaded_error"),
    ],
    ids=["503", "cut-before-text", "error-event-before-text"],
)
def test_a_stream_that_fails_before_its_first_byte_falls_back(cli, fake, failure):
    fake.script("openai", failure)
    fake.script("anthropic", Reply(text="the whole answer, once"))
    result = cli("stream", "-p", "openai", "--retries", "0", "--fallback", "anthropic", "hi")
    assert (result.code, result.out) == (0, "the whole answer, once\n"), result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and FALLBACK_LINE.match(lines[0]), lines
    assert lines[0].startswith("falling back to anthropic/claude-haiku-4-5 after ")
    assert asked(fake) == ["openai", "anthropic"]
    rows = log_rows()
    assert [(r["provider"], r["status"]) for r in rows] == [
        ("openai", "error"),
        ("anthropic", "ok"),
    ]
    assert rows[0]["answer"] in (None, "")  # nothing had arrived from openai
    assert rows[0]["request_uid"] == rows[1]["request_uid"]


@pytest.mark.parametrize("command", [("stream",), ("ask", "--stream")], ids=["stream", "ask"])
def test_a_stream_that_fails_after_its_first_byte_keeps_it_and_does_not_fall_back(
    cli, fake, command
):
    fake.script("openai", Reply(chunks=["Once", " upon", " a", " time"], drop_after=2))
    args = (*command, "-p", "openai", "--retries", "2", "--fallback", "anthropic", "hi")
    result = cli(*args)
    assert result.code == 6, result.err
    assert result.out == "Once upon\n"  # what was printed stays; the line is ended
    assert "falling back" not in result.err
    assert result.err.startswith("Error: ")
    assert asked(fake) == ["openai"]  # not retried either: text was out
    rows = log_rows()
    assert [(r["provider"], r["status"], r["answer"]) for r in rows] == [
        ("openai", "error", "Once upon")
    ]


def test_a_stream_that_falls_back_retries_first_and_then_streams_the_next(cli, fake):
    fake.script("gemini", Reply(status=429, headers=FAST), Reply(status=429, headers=FAST))
    fake.script("openai", Reply(chunks=["a", "b", "c"]))
    result = cli("stream", "-p", "gemini", "--retries", "1", "--fallback", "openai", "hi")
    assert (result.code, result.out) == (0, "abc\n"), result.err
    assert_lines(
        result.err.splitlines(),
        expected_lines([("gemini", "429")], 1, "openai"),
    )
    assert asked(fake) == ["gemini", "gemini", "openai"]


# --- how the chain is named ----------------------------------------------------------------------


def test_an_alias_as_the_fallback_and_as_the_model(cli, fake):
    write_config(
        """
        [aliases]
        fast = "anthropic/claude-haiku-4-5"
        big = "gemini/gemini-2.5-pro"
        """
    )
    fake.script("gemini", Reply(status=500, headers=FAST))
    fake.script("anthropic", Reply(text="fast answer"))
    result = cli("ask", "-m", "big", "--retries", "0", "--fallback", "fast", "hi")
    assert (result.code, result.out) == (0, "fast answer\n"), result.err
    assert result.err == (
        "falling back to anthropic/claude-haiku-4-5 after server error (500) from gemini\n"
    )
    gemini, anthropic = fake.requests
    assert "gemini-2.5-pro" in gemini.path
    assert anthropic.model == "claude-haiku-4-5"
    assert [(r["provider"], r["requested_model"]) for r in log_rows()] == [
        ("gemini", "gemini-2.5-pro"),
        ("anthropic", "claude-haiku-4-5"),
    ]


def test_provider_slash_model_names_the_fallback_model(cli, fake):
    fake.script("openai", Reply(status=429, headers=FAST))
    fake.script("gemini", Reply(text="pro answer"))
    args = ("ask", "-p", "openai", "-m", "gpt-4o", "--retries", "0")
    result = cli(*args, "--fallback", "gemini/gemini-2.5-pro", "hi")
    assert (result.code, result.out) == (0, "pro answer\n"), result.err
    assert fake.requests[0].model == "gpt-4o"
    assert "/models/gemini-2.5-pro:" in fake.requests[1].path
    assert "falling back to gemini/gemini-2.5-pro after" in result.err


def test_a_fallback_without_a_model_uses_its_provider_s_default_not_the_first_s_model(cli, fake):
    fake.script("openai", Reply(status=500, headers=FAST))
    args = ("ask", "-p", "openai", "-m", "gpt-4o", "--retries", "0", "--fallback", "anthropic")
    result = cli(*args, "hi")
    assert result.code == 0, result.err
    assert [r.model for r in fake.requests] == ["gpt-4o", "claude-haiku-4-5"]


def test_llm_fallback_is_a_comma_list(cli, fake):
    fake.script("openai", Reply(status=429, headers=FAST))
    fake.script("anthropic", Reply(status=529, headers=FAST))
    fake.script("gemini", Reply(text="third time lucky"))
    env = {"LLM_FALLBACK": "anthropic/claude-haiku-4-5, gemini"}
    result = cli("ask", "-p", "openai", "--retries", "0", "hi", extra_env=env)
    assert (result.code, result.out) == (0, "third time lucky\n"), result.err
    assert result.err.splitlines() == [
        "falling back to anthropic/claude-haiku-4-5 after rate limited (429) from openai",
        "falling back to gemini/gemini-2.5-flash after overloaded (529) from anthropic",
    ]
    assert asked(fake) == ["openai", "anthropic", "gemini"]


def test_the_flag_replaces_llm_fallback(cli, fake):
    fake.script("openai", Reply(status=500, headers=FAST))
    env = {"LLM_FALLBACK": "anthropic"}
    result = cli(
        "ask", "-p", "openai", "--retries", "0", "--fallback", "gemini", "hi", extra_env=env
    )
    assert result.code == 0, result.err
    assert asked(fake) == ["openai", "gemini"]


def test_the_first_provider_is_not_asked_again_when_the_chain_names_it(cli, fake):
    """LLM_FALLBACK=anthropic,gemini set once for every script: `-p anthropic` must not make
    anthropic its own fallback (its retries were already spent), but go on to gemini."""
    fake.script("anthropic", *[Reply(status=529, headers=FAST)] * 4)
    fake.script("gemini", Reply(text="gemini"))
    env = {"LLM_FALLBACK": "anthropic,gemini"}
    result = cli("ask", "-p", "anthropic", "--retries", "1", "hi", extra_env=env)
    assert (result.code, result.out) == (0, "gemini\n"), result.err
    assert asked(fake) == ["anthropic", "anthropic", "gemini"]
    assert [line for line in result.err.splitlines() if "falling back" in line] == [
        "falling back to gemini/gemini-2.5-flash after overloaded (529) from anthropic"
    ]
    assert [r["provider"] for r in log_rows()] == ["anthropic", "gemini"]


@pytest.mark.parametrize(
    ("how", "code", "needle"),
    [
        ({"args": ("--fallback", "nosuch")}, 2, "invalid value for --fallback"),
        ({"args": ("--fallback", "gemini", "--fallback", "")}, 2, "--fallback"),
        ({"env": {"LLM_FALLBACK": "anthropic,nosuch"}}, 3, "LLM_FALLBACK"),
        ({"env": {"LLM_FALLBACK": "anthropic,,gemini"}}, 3, "LLM_FALLBACK"),
    ],
    ids=["flag-unknown", "flag-empty", "env-unknown", "env-empty-entry"],
)
def test_a_chain_that_names_nothing_known_is_refused_before_anything_is_sent(
    cli, fake, how, code, needle
):
    args = ("ask", "-p", "openai", *how.get("args", ()), "hi")
    result = cli(*args, extra_env=how.get("env"))
    assert result.code == code, result.err
    assert result.out == ""
    assert result.err.startswith("Error: ") and needle in result.err.splitlines()[0]
    assert asked(fake) == [] and log_rows() == []


def test_a_fallback_whose_key_is_missing_fails_fast(cli, fake):
    env = base_env(fake)
    del env["ANTHROPIC_API_KEY"]
    fake.script("openai", Reply(status=429, headers=FAST))
    result = run_cli("ask", "-p", "openai", "--fallback", "anthropic", "hi", env=env)
    assert result.code == 3, result.err
    assert result.out == ""
    first = result.err.splitlines()[0]
    assert first.startswith("Error: Missing required environment variable: ANTHROPIC_API_KEY")
    assert "--fallback anthropic" in first  # why a key for another provider is wanted
    assert "export ANTHROPIC_API_KEY=" in result.err  # the usual fix is still given
    assert asked(fake) == [] and log_rows() == []  # the outage never had to happen to find it


def test_a_setting_the_fallback_cannot_honour_names_the_fallback(cli, fake):
    """`--temperature 1.5` suits openai, not anthropic: refused at once, saying which entry of
    the chain it is about (LLM_FALLBACK may have been set long ago, in a profile)."""
    env = {"LLM_FALLBACK": "anthropic"}
    result = cli("ask", "-p", "openai", "--temperature", "1.5", "hi", extra_env=env)
    assert result.code == 2, result.err
    first = result.err.splitlines()[0]
    assert "out of range for anthropic" in first and "LLM_FALLBACK" in first
    assert asked(fake) == [] and log_rows() == []


def test_dry_run_shows_the_chain_and_sends_nothing(cli, fake):
    args = ("ask", "--dry-run", "-p", "openai", "--fallback", "anthropic/claude-haiku-4-5")
    result = cli(*args, "--fallback", "gemini", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["provider"], data["model"]) == ("openai", "gpt-4o-mini")
    assert [(f["provider"], f["model"]) for f in data["fallbacks"]] == [
        ("anthropic", "claude-haiku-4-5"),
        ("gemini", "gemini-2.5-flash"),
    ]
    assert [f["api_key_variable"] for f in data["fallbacks"]] == [
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
    ]
    for key in KEYS.values():
        assert key not in result.out
    assert asked(fake) == [] and log_rows() == []


def test_dry_run_without_a_chain_has_no_fallbacks(cli, fake):
    result = cli("ask", "--dry-run", "-p", "openai", "hi")
    assert result.code == 0, result.err
    assert "fallbacks" not in json.loads(result.out)


def test_config_validate_checks_every_provider_of_llm_fallback(cli, fake):
    env = base_env(fake)
    del env["GEMINI_API_KEY"]
    env["LLM_FALLBACK"] = "anthropic,gemini/gemini-2.5-pro"
    result = run_cli("config", "validate", "--json", env=env)
    assert result.code == 3, result.err
    report = json.loads(result.out)
    rows = report["checks"]
    missing = [c for c in rows if c["status"] != "ok"]
    assert missing and all("gemini" in json.dumps(c).lower() for c in missing), missing
    assert any("GEMINI_API_KEY" in json.dumps(c) for c in missing)
    assert any(c.get("provider") == "anthropic" and c["status"] == "ok" for c in rows), rows
    assert asked(fake) == []

    text = run_cli("config", "validate", env=env)
    assert text.code == 3
    assert "gemini" in text.out and "GEMINI_API_KEY" in text.err


def test_config_validate_passes_when_the_chain_has_its_keys(cli, fake):
    result = cli("config", "validate", extra_env={"LLM_FALLBACK": "anthropic,gemini"})
    assert result.code == 0, result.out + result.err
    assert "anthropic" in result.out and "gemini" in result.out


def test_config_validate_follows_an_alias_in_llm_fallback(cli, fake):
    write_config(
        """
        [aliases]
        spare = "gemini/gemini-2.5-pro"
        """
    )
    env = base_env(fake)
    del env["GEMINI_API_KEY"]
    env["LLM_FALLBACK"] = "spare"
    result = run_cli("config", "validate", "--json", env=env)
    assert result.code == 3, result.err
    assert any(
        c["status"] != "ok" and "GEMINI_API_KEY" in json.dumps(c)
        for c in json.loads(result.out)["checks"]
    )


def test_config_validate_reports_an_unknown_entry_in_llm_fallback(cli, fake):
    result = cli("config", "validate", "--json", extra_env={"LLM_FALLBACK": "anthropic,nosuch"})
    assert result.code == 3, result.err
    bad = [c for c in json.loads(result.out)["checks"] if c["status"] != "ok"]
    assert [c["variable"] for c in bad] == ["LLM_FALLBACK"], bad
    assert "nosuch" in result.err


# --- a continued conversation, and a terminal ----------------------------------------------------


def test_a_continued_conversation_falls_back_with_its_history(cli, fake):
    fake.script("openai", Reply(text="first answer"))
    assert cli("ask", "-p", "openai", "hello").code == 0
    fake.script("openai", Reply(status=503, headers=FAST))
    fake.script("anthropic", Reply(text="second answer"))
    args = ("ask", "-c", "-p", "openai", "--retries", "0", "--fallback", "anthropic", "more")
    result = cli(*args)
    assert (result.code, result.out) == (0, "second answer\n"), result.err
    sent = fake.requests_for("anthropic")[0].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "hello"),
        ("assistant", "first answer"),
        ("user", "more"),
    ]
    fake.script("openai", Reply(text="third answer"))
    assert cli("ask", "-c", "-p", "openai", "and then").code == 0
    third = [(m["role"], m["content"]) for m in fake.requests_for("openai")[-1].body["messages"]]
    assert third == [
        ("user", "hello"),
        ("assistant", "first answer"),
        ("user", "more"),
        ("assistant", "second answer"),
        ("user", "and then"),
    ]
    rows = log_rows()
    assert len({r["conversation_id"] for r in rows}) == 1
    assert rows[-1]["parent_uid"] == rows[-2]["uid"]  # continues the answer, not the failure


def test_the_waiting_indicator_names_the_provider_being_waited_for(fake):
    """On a terminal, after `falling back to ...` the indicator says whom it waits for now."""
    import pexpect

    gate = threading.Event()
    fake.script("openai", Reply(status=429, headers=FAST, delay=0.5))
    fake.script("anthropic", Reply(chunks=["Hi", " there"], delay=1.0, gate=gate))
    args = ["stream", "-p", "openai", "--retries", "0", "--fallback", "anthropic", "hi"]
    child = pexpect.spawn(LLMCLI, args, env=base_env(fake), timeout=10)
    try:
        child.expect_exact("waiting for openai gpt-4o-mini")
        child.expect_exact(
            "falling back to anthropic/claude-haiku-4-5 after rate limited (429) from openai"
        )
        child.expect_exact("waiting for anthropic claude-haiku-4-5")
        gate.set()
        child.expect_exact("Hi there")
        child.expect(pexpect.EOF)
    finally:
        gate.set()
        child.close()
    assert child.exitstatus == 0


# --- chat ----------------------------------------------------------------------------------------


def test_piped_chat_falls_back_per_turn_and_the_conversation_carries_over(cli, fake):
    fake.script("openai", Reply(status=429, headers=FAST), Reply(text="second from openai"))
    fake.script("anthropic", Reply(text="first from anthropic"))
    args = ("chat", "-p", "openai", "--retries", "0", "--fallback", "anthropic")
    result = cli(*args, stdin="hello\nand again\n")
    assert result.code == 0, result.err
    assert result.out == "first from anthropic\nsecond from openai\n"
    assert result.err.splitlines() == [
        "falling back to anthropic/claude-haiku-4-5 after rate limited (429) from openai"
    ]
    assert asked(fake) == ["openai", "anthropic", "openai"]
    # Turn 2 goes to the first provider again, with turn 1's answer in its history.
    last = fake.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in last] == [
        ("user", "hello"),
        ("assistant", "first from anthropic"),
        ("user", "and again"),
    ]
    rows = log_rows()
    assert [(r["provider"], r["status"]) for r in rows] == [
        ("openai", "error"),
        ("anthropic", "ok"),
        ("openai", "ok"),
    ]
    assert len({r["conversation_id"] for r in rows}) == 1
    assert rows[0]["request_uid"] == rows[1]["request_uid"] != rows[2]["request_uid"]
    # The second turn continues the row that answered, not the failed attempt.
    assert rows[2]["parent_uid"] == rows[1]["uid"]


def test_piped_chat_exits_with_the_chain_s_last_failure(cli, fake):
    fake.script("openai", Reply(status=500, headers=FAST))
    fake.script("gemini", Reply(status=429, headers=FAST))
    args = ("chat", "-p", "openai", "--retries", "0", "--fallback", "gemini")
    result = cli(*args, stdin="hello\n")
    assert result.code == 5, result.err
    assert result.out == ""
    assert asked(fake) == ["openai", "gemini"]


# --- the library ---------------------------------------------------------------------------------


def test_arun_falls_back_on_the_async_clients(fake):
    from llmcli import config, core, lifecycle
    from llmcli.journal import Journal
    from llmcli.types import Message

    fake.script("anthropic", Reply(status=529, headers=FAST), Reply(status=529, headers=FAST))
    fake.script("gemini", Reply(status=503, headers=FAST), Reply(status=503, headers=FAST))
    fake.script("openai", Reply(chunks=["as", "ync"]))
    env = config.Environment(environ=base_env(fake))
    flags = {"provider": "anthropic", "retries": 1, "fallback": ("gemini", "openai/gpt-4o")}
    call = core.prepare([Message("user", "hi")], flags, env)
    chain = core.fallbacks(call, flags, env)
    journal = Journal(env)
    pieces: list[str] = []
    notices: list[str] = []
    waits: list[float] = []

    async def deliver(text: str) -> None:
        pieces.append(text)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> lifecycle.Outcome:
        return await asyncio.wait_for(
            lifecycle.arun(
                call,
                journal,
                conversation_id=None,
                stream=True,
                deliver=deliver,
                sleep=sleep,
                fallbacks=chain,
                on_retry=lambda n: notices.append(str(n)),
                on_fallback=lambda n: notices.append(str(n)),
            ),
            timeout=20,
        )

    try:
        outcome = asyncio.run(main())
    finally:
        journal.close()
    assert "".join(pieces) == "async"
    assert (outcome.response.provider, outcome.response.model) == ("openai", "gpt-4o")
    assert [(f.provider, f.model, int(f.error.exit_code)) for f in outcome.fell_back_from] == [
        ("anthropic", "claude-haiku-4-5", 6),
        ("gemini", "gemini-2.5-flash", 6),
    ]
    assert [n for n in notices if n.startswith("falling back")] == [
        "falling back to gemini/gemini-2.5-flash after overloaded (529) from anthropic",
        "falling back to openai/gpt-4o after server error (503) from gemini",
    ]
    assert len(waits) == 2 and len(notices) == 4  # one retry each for the two that failed
    assert asked(fake) == ["anthropic", "anthropic", "gemini", "gemini", "openai"]
    rows = log_rows()
    assert [(r["provider"], r["status"]) for r in rows] == [
        ("anthropic", "error"),
        ("gemini", "error"),
        ("openai", "ok"),
    ]
    assert len({r["request_uid"] for r in rows}) == 1 and rows[0]["request_uid"]
    assert outcome.logged is not None and outcome.logged.uid == rows[-1]["uid"]
