"""The fault and bad-input matrix of issue 6: every failure, for openai, anthropic and gemini,
against the loopback fake server, ends in one class, one message and one exit code, retried by
the one policy exactly as often as it should be, and never shows the key.

Layout:

* `FAULTS`: one row per fault, run for each provider in-process through `llmcli.core` with the
  backoff `sleep` recorded instead of slept, and the outcome written to the call log as `ask`
  writes it. A new fault, or a new provider, is one line.
* `BAD_INPUT`: command lines and inputs that must be refused before any network call, run
  in-process through `llmcli.cli.run` (the same code path as the installed command).
* A handful of rows run the installed `llmcli` as a subprocess, to see stdout, stderr, the exit
  code and the call log exactly as a user does. Only the Retry-After row (once per provider)
  and the timeout rows really wait.
* `KEY` is set for every provider, and `assert_secret_kept` checks every text a row produced,
  plus every file under the test's home, work and LLMCLI_HOME folders (the call log database,
  its WAL, any config file), for any trace of it.

A row that hits a known bug elsewhere can be marked with `xfail={provider: reason}` (strict), so
the table records the bug until the fix lands and then fails, asking for the mark to go.
"""

from __future__ import annotations

import email.utils
import importlib
import io
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmcli import config, core, errors, retry
from llmcli.types import Message
from tests.conftest import PROVIDERS, base_env, run_cli
from tests.fakeserver import Reply

# A key nobody could mistake for anything else; no output, message or file may contain its body.
KEY = "sk-DISTINCTIVE-a1b2c3d4e5f6"
KEY_BODY = "DISTINCTIVE"
MASKED = "sk-...e5f6"
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
KEY_ENV = dict.fromkeys(KEY_VARS, KEY)
HINT_VAR = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}

SDK = {"openai": "openai", "anthropic": "anthropic", "gemini": "google.genai"}

OK = "All good."
CHUNKS = ["Once", " upon", " a", " time"]
# Tiny server-requested waits for rows that are not about timing (Gemini's 429 otherwise carries
# a RetryInfo of 20 s, which a subprocess would really wait).
FAST = {"retry-after-ms": "10"}
# What each provider calls "overloaded" inside a stream (Gemini's is the gRPC status).
OVERLOADED = {
    "openai": "overloaded_error",
    "anthropic": "overloaded_error",
    "gemini": "UNAVAILABLE",
}
# The per-provider 400 a real API sends when the input does not fit the context window.
CONTEXT_TOO_LONG = {
    "openai": Reply(
        status=400,
        error_code="context_length_exceeded",
        error_message="This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 2621450 tokens. Please reduce the length of the messages.",
    ),
    "anthropic": Reply(
        status=400, error_message="prompt is too long: 2621450 tokens > 200000 maximum"
    ),
    "gemini": Reply(
        status=400,
        error_message="The input token count (2621450) exceeds the maximum number of tokens "
        "allowed (1048576).",
    ),
}

RETRY_LINE = re.compile(
    r"^(?P<why>.+); retrying in \d+\.\ds \(attempt (?P<n>\d+) of (?P<of>\d+)\)$"
)


# ------------------------------------------------------------------------------------------------
# Keys: never in any output, message or file
# ------------------------------------------------------------------------------------------------


def assert_no_key(*texts: str | None) -> None:
    for text in texts:
        assert KEY_BODY not in (text or ""), f"the key leaked into: {text!r}"


def assert_no_key_in_files(*roots: Path) -> None:
    """Every file under these folders, byte for byte (the SQLite log and its WAL included)."""
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if path.is_file():
                assert KEY_BODY.encode() not in path.read_bytes(), f"the key is stored in {path}"


def llmcli_home() -> Path:
    return Path(os.environ["LLMCLI_HOME"])


def logged_calls() -> list[dict]:
    """The rows of the call log (DESIGN §6), read-only."""
    import sqlite3
    from contextlib import closing

    path = llmcli_home() / "logs.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY id")]


def assert_secret_kept(*texts: str | None) -> None:
    """No trace of KEY in these texts nor in any file llmcli may have written (log, config)."""
    assert_no_key(*texts)
    assert_no_key_in_files(llmcli_home(), Path(os.environ["HOME"]), Path.cwd())


# ------------------------------------------------------------------------------------------------
# The fault matrix
# ------------------------------------------------------------------------------------------------


def exactly(*delays: float) -> tuple[tuple[float, float], ...]:
    return tuple((d, d) for d in delays)


def backoff(n: int) -> tuple[tuple[float, float], ...]:
    """Full jitter from 1 s: retry k waits a random time in [0, 2**(k-1)) seconds."""
    return tuple((0.0, float(2**k)) for k in range(n))


def gemini_429(retry_delay: str) -> Reply:
    """Gemini's 429 with only a RetryInfo detail saying how long to wait (no header)."""
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
    error = {
        "code": 429,
        "message": "Quota exceeded.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [info],
    }
    return Reply(status=429, error_body=json.dumps({"error": error}).encode())


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


Replies = tuple[Reply, ...] | Callable[[str], tuple[Reply, ...]]


@dataclass(frozen=True)
class Fault:
    """One row: what the server does, and what llmcli must make of it.

    `attempts` is both what the server must have received (unless `refused`) and what the
    response or error reports; each retry before it gives one notice. `needle` (formatted with
    the provider) must be in the error message; `retry_line` in every retry notice.
    """

    name: str
    replies: Replies
    code: int
    attempts: int
    needle: str = ""
    retry_line: str = ""
    hint: str | None = ""  # must be in the (non-empty) hint; None: not checked by this row
    retries: int = 2
    stream: bool = False
    timeout: float = 10.0
    model: str | None = None
    delays: tuple[tuple[float, float], ...] | None = None  # (low, high) for each wait
    text: str | None = None  # the answer, or the partial text a broken stream keeps
    refused: bool = False  # nothing listens at the base URL
    only: tuple[str, ...] = PROVIDERS
    xfail: Mapping[str, str] = field(default_factory=dict)  # provider -> the known bug

    def script(self, provider: str) -> tuple[Reply, ...]:
        return self.replies(provider) if callable(self.replies) else self.replies


# Known bugs elsewhere (see the module docstring): each marks the rows it breaks as strict xfail.

# One row per fault; each runs for every provider in `only`. Columns: name, what the server
# sends, exit code, attempts, then the details the row is about.
# fmt: off
FAULTS = [
    # --- rate limits -----------------------------------------------------------------------------
    Fault("429-once", (Reply(status=429, headers=FAST), Reply(text=OK)), 0, 2, retry_line="rate limited (429)", delays=exactly(0.01), text=OK),
    Fault("429-no-header-backoff", (Reply(status=429), Reply(status=429), Reply(text=OK)), 0, 3, delays=backoff(2), only=("openai", "anthropic")),
    Fault("429-gemini-retryinfo", (Reply(status=429), Reply(text=OK)), 0, 2, delays=exactly(20.0), only=("gemini",)),
    Fault("429-gemini-retryinfo-negative", (gemini_429("-5s"), Reply(text=OK)), 0, 2, delays=backoff(1), only=("gemini",)),
    Fault("429-gemini-retryinfo-nan", (gemini_429("NaNs"), Reply(text=OK)), 0, 2, delays=backoff(1), only=("gemini",)),
    Fault("429-retry-after-2", (Reply(status=429, headers={"Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("429-retry-after-http-date", lambda p: (Reply(status=429, headers={"Retry-After": http_date(3)}), Reply(text=OK)), 0, 2, delays=((1.0, 3.0),)),
    Fault("429-retry-after-ms-wins", (Reply(status=429, headers={**FAST, "Retry-After": "30"}), Reply(text=OK)), 0, 2, delays=exactly(0.01)),
    Fault("429-retry-after-60-is-waited", (Reply(status=429, headers={"Retry-After": "60"}), Reply(text=OK)), 0, 2, delays=exactly(60.0)),
    Fault("429-retry-after-120", (Reply(status=429, headers={"Retry-After": "120"}),), 5, 1, needle="rate limited by {p} (429)", hint="try again after", retries=3),
    Fault("429-retry-after-61-no-retries-left", (Reply(status=429, headers={"Retry-After": "61"}),), 5, 1, hint="try again after", retries=0),
    Fault("429-retry-after-absurd", (Reply(status=429, headers={"Retry-After": "99999999999999"}),), 5, 1, hint="try again later"),
    Fault("429-persistent", (Reply(status=429, headers=FAST),) * 5, 5, 3, needle="rate limited by {p} (429)", retry_line="rate limited (429)"),
    # --- server errors and overload ----------------------------------------------------------------
    Fault("500-twice", (Reply(status=500), Reply(status=500), Reply(text=OK)), 0, 3, retry_line="server error (500)", delays=backoff(2), text=OK),
    Fault("503-persistent", (Reply(status=503),) * 5, 6, 4, needle="{p} server error (503)", retries=3),
    Fault("504-once", (Reply(status=504), Reply(text=OK)), 0, 2),
    Fault("529-once", (Reply(status=529), Reply(text=OK)), 0, 2, retry_line="overloaded (529)"),
    Fault("529-persistent", (Reply(status=529),) * 3, 6, 3, needle="anthropic is overloaded (529)", only=("anthropic",)),
    Fault("408-once", (Reply(status=408), Reply(text=OK)), 0, 2, retry_line="timed out"),
    Fault("409-once", (Reply(status=409), Reply(text=OK)), 0, 2, retry_line="conflict (409)"),
    Fault("409-persistent", (Reply(status=409),) * 2, 6, 2, needle="{p} refused the request as a conflict (409)", retries=1),
    Fault("stream-overloaded-before-output", lambda p: (Reply(stream_error_after=0, error_type=OVERLOADED[p]), Reply(text=OK)), 0, 2, retry_line="overloaded", stream=True, text=OK),
    Fault("stream-overloaded-persistent", lambda p: (Reply(stream_error_after=0, error_type=OVERLOADED[p]),) * 3, 6, 3, needle="mid-stream", stream=True),
    Fault("stream-overloaded-after-output", lambda p: (Reply(chunks=CHUNKS, stream_error_after=2, error_type=OVERLOADED[p]),), 6, 1, needle="stream broken off after 9 characters", stream=True, text="Once upon"),
    # --- network -----------------------------------------------------------------------------------
    Fault("timeout", (Reply(delay=4), Reply(delay=4)), 7, 2, needle="{p} did not answer in time", retry_line="timed out", retries=1, timeout=1.0),
    Fault("connection-refused", (), 7, 3, needle="could not reach {p}", retry_line="connection failed", refused=True),
    Fault("dropped-before-any-byte", (Reply(drop_after=0), Reply(text=OK)), 0, 2, retry_line="connection", text=OK),
    Fault("stream-dropped-before-any-byte", (Reply(drop_after=0), Reply(chunks=CHUNKS)), 0, 2, stream=True, text="Once upon a time"),
    Fault("dropped-before-any-byte-persistent", (Reply(drop_after=0),) * 3, 7, 3, retry_line="connection failed"),
    Fault("stream-dropped-after-output", (Reply(chunks=CHUNKS, drop_after=2),), 6, 1, needle="stream broken off after 9 characters", stream=True, text="Once upon"),
    # --- rejected: exactly one attempt, whatever --retries says ------------------------------------
    Fault("400", (Reply(status=400),), 9, 1, needle="{p} rejected the request (400)", hint=None, retries=3),
    Fault("400-says-what-to-do", (Reply(status=400),), 9, 1, retries=3),
    Fault("401", (Reply(status=401),), 4, 1, needle="authentication failed for {p} (401)", hint="{var}", retries=3),
    Fault("403", (Reply(status=403),), 4, 1, needle="authentication failed for {p} (403)", hint="{var}", retries=3),
    Fault("gemini-400-api-key-invalid", (Reply(status=400, error_type="API_KEY_INVALID"),), 4, 1, needle="authentication failed", hint="GEMINI_API_KEY", retries=3, only=("gemini",)),
    Fault("404", (Reply(status=404),), 9, 1, needle="{p} rejected the request (404)", hint="model name", retries=3),
    Fault("404-unknown-model", (), 9, 1, needle="no-such-model-42", hint="model name", retries=3, model="no-such-model-42"),
    Fault("413", (Reply(status=413),), 9, 1, needle="(413)", hint="context window", retries=3),
    Fault("422", (Reply(status=422),), 9, 1, needle="(422)", hint=None, retries=3),
    Fault("422-says-what-to-do", (Reply(status=422),), 9, 1, retries=3),
    Fault("400-context-length-exceeded", lambda p: (CONTEXT_TOO_LONG[p],), 9, 1, needle="(400)", hint="context window", retries=3),
    # --- malformed replies: exit 6 with a one-line message -----------------------------------------
    Fault("malformed-json-body", (Reply(malformed=True),) * 3, 6, 2, needle="{p}", retries=1),
    Fault("malformed-sse-line", (Reply(chunks=CHUNKS, malformed=True),), 6, 1, needle="stream broken off after 4 characters", hint="try again", stream=True, text="Once"),
    # --- a provider message that echoes the key is scrubbed ----------------------------------------
    Fault("error-message-echoes-key", (Reply(status=404, error_message=f"No model for key {KEY}"),), 9, 1, needle=MASKED),
    Fault("stream-error-echoes-key", lambda p: (Reply(stream_error_after=0, error_type=OVERLOADED[p], error_message=f"overloaded; key {KEY}"),), 6, 1, needle=MASKED, stream=True, retries=0),
    # --- nonsense waits: a bad retry-after-ms is skipped, a bad Retry-After means our backoff -------
    Fault("503-retry-after-negative", (Reply(status=503, headers={"Retry-After": "-5"}), Reply(text=OK)), 0, 2, delays=backoff(1), text=OK),
    Fault("503-retry-after-nan", (Reply(status=503, headers={"Retry-After": "NaN"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("503-retry-after-inf", (Reply(status=503, headers={"Retry-After": "inf"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("503-retry-after-garbage", (Reply(status=503, headers={"Retry-After": "abc"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("503-retry-after-exponent", (Reply(status=503, headers={"Retry-After": "1e1"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("503-retry-after-past-date-is-0", lambda p: (Reply(status=503, headers={"Retry-After": http_date(-3600)}), Reply(text=OK)), 0, 2, delays=exactly(0.0)),
    Fault("503-retry-after-ms-negative-alone", (Reply(status=503, headers={"retry-after-ms": "-100"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("503-retry-after-ms-negative-beside-2", (Reply(status=503, headers={"retry-after-ms": "-100", "Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("503-retry-after-ms-nan-beside-2", (Reply(status=503, headers={"retry-after-ms": "NaN", "Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("503-retry-after-ms-inf-beside-2", (Reply(status=503, headers={"retry-after-ms": "inf", "Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("503-retry-after-ms-garbage-beside-2", (Reply(status=503, headers={"retry-after-ms": "soon", "Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("503-retry-after-negative-persistent", (Reply(status=503, headers={"Retry-After": "-5"}),) * 4, 6, 4, needle="{p} server error (503)", retries=3, delays=backoff(3)),
    Fault("429-retry-after-negative", (Reply(status=429, headers={"Retry-After": "-5"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("429-retry-after-nan", (Reply(status=429, headers={"Retry-After": "NaN"}), Reply(text=OK)), 0, 2, delays=backoff(1)),
    Fault("429-retry-after-ms-negative-beside-2", (Reply(status=429, headers={"retry-after-ms": "-100", "Retry-After": "2"}), Reply(text=OK)), 0, 2, delays=exactly(2.0)),
    Fault("429-gemini-retryinfo-inf", (gemini_429("infs"), Reply(text=OK)), 0, 2, delays=backoff(1), only=("gemini",)),
    Fault("429-gemini-retryinfo-fraction", (gemini_429("1.5s"), Reply(text=OK)), 0, 2, delays=exactly(1.5), only=("gemini",)),
]
# fmt: on


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environ(fake, *, refused: bool = False, **extra: str) -> dict[str, str]:
    if refused:
        url = f"http://127.0.0.1:{_closed_port()}"
        urls = {
            "OPENAI_BASE_URL": url + "/v1",
            "ANTHROPIC_BASE_URL": url,
            "GOOGLE_GEMINI_BASE_URL": url,
        }
    else:
        urls = fake.env()
    return {**KEY_ENV, **urls, "LLMCLI_HOME": str(llmcli_home()), **extra}


@dataclass
class Outcome:
    code: int
    attempts: int
    text: str
    error: errors.LlmcliError | None
    notices: list[retry.RetryNotice] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    elapsed: float = 0.0


def run_core(
    fake,
    provider: str,
    *,
    stream: bool = False,
    sleep: Callable[[float], None] | None = None,
    refused: bool = False,
    **flags,
) -> Outcome:
    """One call through the same lifecycle `ask`/`stream` use (`llmcli.lifecycle.run`), waits
    recorded rather than slept, its outcome written to the call log by that lifecycle."""
    from llmcli import lifecycle
    from llmcli.journal import Journal

    importlib.import_module(SDK[provider])  # so an SDK's first import is not timed as a wait
    env = config.Environment(_environ(fake, refused=refused))
    call = core.prepare([Message("user", "Hello?")], {"provider": provider, **flags}, env)
    notices: list[retry.RetryNotice] = []
    waits: list[float] = []
    delivered: list[str] = []
    journal = Journal(env)
    started = time.monotonic()
    error = outcome = None
    try:
        outcome = lifecycle.run(
            call,
            journal,
            conversation_id="fault-matrix",
            stream=stream,
            deliver=delivered.append,
            on_retry=notices.append,
            sleep=sleep or waits.append,
        )
    except errors.LlmcliError as exc:
        error = exc
    finally:
        journal.close()
    elapsed = time.monotonic() - started
    assert journal.problem is None, journal.problem
    if outcome is not None:
        return Outcome(
            0, outcome.response.attempts, "".join(delivered), None, notices, waits, elapsed
        )
    assert error is not None
    return Outcome(
        int(error.exit_code), error.attempts, "".join(delivered), error, notices, waits, elapsed
    )


def _params(rows):
    for row in rows:
        for provider in PROVIDERS:
            if provider not in row.only:
                continue
            bug = row.xfail.get(provider)
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            yield pytest.param(row, provider, id=f"{row.name}-{provider}", marks=marks)


@pytest.mark.parametrize(("row", "provider"), list(_params(FAULTS)))
def test_fault_matrix(fake, row: Fault, provider: str):
    fake.script(provider, *row.script(provider))
    out = run_core(
        fake,
        provider,
        stream=row.stream,
        refused=row.refused,
        retries=row.retries,
        timeout=row.timeout,
        model=row.model,
    )
    context = (
        f"error: {out.error and out.error.message!r}; notices: {[str(n) for n in out.notices]}"
    )

    assert out.code == row.code, context
    assert out.attempts == row.attempts, context
    if not row.refused:
        assert len(fake.requests_for(provider)) == row.attempts
    for request in fake.requests_for(provider):  # the SDKs' own retries are off
        assert request.headers.get("x-stainless-retry-count", "0") == "0"
    # One notice, and one wait, per retry; numbered, and counting the right total.
    assert len(out.notices) == len(out.waits) == row.attempts - 1, context
    for number, notice in enumerate(out.notices, start=2):
        line = RETRY_LINE.match(str(notice))
        assert line, str(notice)
        assert (int(line["n"]), int(line["of"])) == (number, row.retries + 1)
        assert row.retry_line in line["why"]
        assert "\n" not in str(notice)
    assert [n.delay for n in out.notices] == out.waits
    if row.delays is not None:
        assert len(out.waits) == len(row.delays)
        for wait, (low, high) in zip(out.waits, row.delays, strict=True):
            assert low - 1e-9 <= wait <= high + 1e-9, (out.waits, row.delays)
    assert all(0 <= wait <= retry.MAX_RETRY_AFTER for wait in out.waits)
    if row.text is not None:
        assert out.text == row.text
    if row.timeout < 5:  # --timeout is per attempt: each one got the whole of it, and no more
        assert row.attempts * row.timeout - 0.1 <= out.elapsed < row.attempts * row.timeout + 2.5

    error = out.error
    if row.code == 0:
        assert error is None
    else:
        assert error is not None
        message = error.message
        assert message == str(error)
        assert "\n" not in message and message.strip() == message
        assert row.needle.format(p=provider) in message
        if row.hint is not None:  # every failure says what to do: a hint, and this one
            assert error.hint, "no hint: the error does not say what to do"
            assert row.hint.format(var=HINT_VAR[provider]) in error.hint
        assert "\n" not in (error.hint or "")
        assert "Traceback" not in message
    (logged,) = logged_calls()
    assert (logged["attempts"], logged["exit_code"]) == (row.attempts, row.code)
    assert fake.errors == []
    assert_secret_kept(
        out.text,
        error and error.message,
        error and error.hint,
        *(str(n) for n in out.notices),
    )


# ------------------------------------------------------------------------------------------------
# The rows that really wait
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_2_is_really_waited(fake, provider):
    fake.script(provider, Reply(status=429, headers={"Retry-After": "2"}), Reply(text=OK))
    out = run_core(fake, provider, retries=1, timeout=10, sleep=time.sleep)
    assert (out.code, out.attempts, out.text) == (0, 2, OK)
    first, second = fake.requests_for(provider)
    gap = second.started_at - first.started_at
    assert 2.0 <= gap < 4.0, gap
    assert 2.0 <= out.elapsed < 4.0, out.elapsed


# ------------------------------------------------------------------------------------------------
# The retry policy itself (no server)
# ------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_and_is_capped_at_30():
    policy = retry.RetryPolicy(retries=10, jitter=lambda: 1.0)
    error = errors.ProviderError("boom", status=500)
    assert [policy.delay(error, n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert retry.RetryPolicy(retries=3, jitter=lambda: 0.0).delay(error, 5) == 0.0


def test_defaults_are_three_retries_and_ten_minutes_per_attempt(fake):
    call = core.prepare(
        [Message("user", "hi")], {"provider": "gemini"}, config.Environment(_environ(fake))
    )
    assert (call.request.retries, call.request.timeout) == (3, 600.0)


def test_retry_after_wins_over_backoff():
    policy = retry.RetryPolicy(retries=3, jitter=lambda: 1.0)
    assert policy.delay(errors.RateLimitError("slow down", status=429, retry_after=7.5), 4) == 7.5


def _retrier(retries: int, waits: list[float], notices: list[retry.RetryNotice]) -> retry.Retrier:
    policy = retry.RetryPolicy(retries=retries, sleep=waits.append, jitter=lambda: 0.5)
    return retry.Retrier(
        policy, lambda exc: exc if isinstance(exc, errors.LlmcliError) else None, notices.append
    )


@pytest.mark.parametrize("wait", [61.0, 3600.0, 1e15, float("inf")])
@pytest.mark.parametrize("retries", [0, 3])
def test_too_long_a_wait_fails_at_once_saying_when(wait, retries):
    waits: list[float] = []
    notices: list[retry.RetryNotice] = []
    calls = []

    def attempt():
        calls.append(1)
        raise errors.RateLimitError("rate limited by x (429): slow", status=429, retry_after=wait)

    with pytest.raises(errors.RateLimitError) as info:
        _retrier(retries, waits, notices).run(attempt)
    assert (len(calls), waits, notices, info.value.attempts) == (1, [], [], 1)
    assert info.value.exit_code == 5
    assert re.search(
        r"try again (after (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d|later)", info.value.hint or ""
    ), info.value.hint


def test_retry_notice_reads_as_the_issue_shows():
    notice = retry.RetryNotice(errors.RateLimitError("x", status=429), 2.0, 2, 4)
    assert str(notice) == "rate limited (429); retrying in 2.0s (attempt 2 of 4)"


def test_a_bug_is_not_retried_and_propagates_untouched():
    waits: list[float] = []
    notices: list[retry.RetryNotice] = []

    def attempt():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _retrier(3, waits, notices).run(attempt)
    assert (waits, notices) == ([], [])


def test_our_own_error_raised_by_a_provider_is_not_chained_to_itself():
    waits: list[float] = []

    def attempt():
        raise errors.RequestRejected("rejected")

    with pytest.raises(errors.RequestRejected) as info:
        _retrier(3, waits, []).run(attempt)
    assert info.value.__cause__ is not info.value


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error before any network call, never a traceback
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """One refused input: `llmcli ask ARGS` with LLM_PROVIDER set to the provider (unless `env`
    says otherwise), LLM_MAX_RETRIES=0, every key set, and `stdin` piped in."""

    name: str
    args: tuple[str, ...]
    code: int
    needle: str
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)
    per_provider: bool = False  # rows that involve the key or the SDK run for every provider
    xfail: str | None = None


# fmt: off
BAD_INPUT = [
    BadInput("empty-prompt-and-stdin", (), 2, "no prompt given"),
    BadInput("whitespace-prompt-and-stdin", ("  ", "\t"), 2, "no prompt given", stdin=b" \n\t\n  "),
    BadInput("no-stdin-flag-leaves-nothing", ("--no-stdin",), 2, "no prompt given", stdin=b"text"),
    BadInput("stdin-not-utf8", (), 2, "not valid UTF-8 (byte 0xe9 at offset 3)", stdin=b"caf\xe9 au lait"),
    BadInput("stdin-nul-bytes", ("summarize",), 2, "NUL bytes", stdin=b"\x7fELF\x00\x00\x01"),
    BadInput("unknown-provider-flag", ("-p", "nosuch", "hi"), 2, "Invalid value for '-p'"),
    BadInput("unknown-provider-env", ("hi",), 3, "LLM_PROVIDER='nosuch'", env={"LLM_PROVIDER": "nosuch"}),
    BadInput("max-tokens-zero", ("--max-tokens", "0", "hi"), 2, "--max-tokens"),
    BadInput("max-tokens-negative", ("--max-tokens", "-5", "hi"), 2, "--max-tokens"),
    BadInput("max-tokens-not-a-number", ("--max-tokens", "lots", "hi"), 2, "--max-tokens"),
    BadInput("max-tokens-env-zero", ("hi",), 3, "LLM_MAX_TOKENS", env={"LLM_MAX_TOKENS": "0"}),
    BadInput("temperature-too-high", ("-t", "2.5", "hi"), 2, "--temperature"),
    BadInput("temperature-negative", ("-t", "-0.1", "hi"), 2, "--temperature"),
    BadInput("temperature-nan", ("-t", "nan", "hi"), 2, "--temperature"),
    BadInput("temperature-above-anthropic-range", ("-t", "1.5", "hi"), 2, "out of range for anthropic", env={"LLM_PROVIDER": "anthropic"}),
    BadInput("temperature-env", ("hi",), 3, "LLM_TEMPERATURE", env={"LLM_TEMPERATURE": "7"}),
    BadInput("timeout-negative", ("--timeout", "-1", "hi"), 2, "--timeout"),
    BadInput("timeout-env", ("hi",), 3, "LLM_TIMEOUT", env={"LLM_TIMEOUT": "soon"}),
    BadInput("retries-negative", ("--retries", "-1", "hi"), 2, "--retries"),
    BadInput("retries-env", ("hi",), 3, "LLM_MAX_RETRIES", env={"LLM_MAX_RETRIES": "many"}),
    BadInput("continue-and-cid-contradict", ("-c", "--cid", "0123456789ab", "hi"), 2, "use -c/--continue or --cid, not both"),
    BadInput("missing-key", ("hi",), 3, "Missing required environment variable", env=dict.fromkeys(KEY_VARS, ""), per_provider=True),
    BadInput("key-with-line-break", ("hi",), 3, "_API_KEY", env=dict.fromkeys(KEY_VARS, KEY + "\nx"), per_provider=True),
    BadInput("key-with-non-ascii", ("hi",), 3, "_API_KEY", env=dict.fromkeys(KEY_VARS, KEY + "é"), per_provider=True),
]
# fmt: on


def _bad_input_params():
    for row in BAD_INPUT:
        marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
        for provider in PROVIDERS if row.per_provider else ("openai",):
            yield pytest.param(row, provider, id=f"{row.name}-{provider}", marks=marks)


def run_inprocess(
    monkeypatch, capsys, fake, *args: str, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """`llmcli ARGS` through `llmcli.cli.run`, with stdin piped and a clean, keyed environment."""
    from llmcli import cli

    for name, value in _environ(fake, **(env or {})).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("row", "provider"), list(_bad_input_params()))
def test_bad_input(monkeypatch, capsys, fake, row: BadInput, provider: str):
    env = {"LLM_PROVIDER": provider, "LLM_MAX_RETRIES": "0", **row.env}
    code, out, err = run_inprocess(
        monkeypatch, capsys, fake, "ask", *row.args, stdin=row.stdin, env=env
    )
    assert code == row.code, err
    assert row.needle in err
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    assert fake.requests == []
    assert_secret_kept(out, err)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("command", ["ask", "stream"])
def test_dry_run_with_every_other_flag_is_not_contradictory_and_masks_the_key(
    monkeypatch, capsys, fake, provider, command
):
    """The only contradictory pair today is `-c` with `--cid` (a BAD_INPUT row). `--dry-run`
    wins over `--stream`, `--json`, `--usage` and `--strict` (it sends nothing), under `--debug`."""
    flags = ["--dry-run", "--json", "-u", "--strict"] + (["--stream"] if command == "ask" else [])
    code, out, err = run_inprocess(
        monkeypatch, capsys, fake, "--debug", command, "-p", provider, *flags, "hi"
    )
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert (shown["provider"], shown["api_key"]) == (provider, MASKED)
    assert fake.requests == []
    assert_secret_kept(out, err)


# ------------------------------------------------------------------------------------------------
# As a user sees it: the installed command in a subprocess
# ------------------------------------------------------------------------------------------------


def user_env(fake, **extra: str) -> dict[str, str]:
    env = base_env(fake)
    env.update(KEY_ENV)
    env["LLMCLI_HOME"] = str(llmcli_home())
    env.update(extra)
    return env


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cli_429_once_then_success_one_retry_line_and_attempts_in_json_and_log(fake, provider):
    fake.script(provider, Reply(status=429, headers=FAST), Reply(text=OK))
    result = run_cli("ask", "-p", provider, "--retries", "3", "--json", "hi", env=user_env(fake))
    assert result.code == 0, result.err
    assert result.err == "rate limited (429); retrying in 0.0s (attempt 2 of 4)\n"
    data = json.loads(result.out)
    assert (data["content"], data["attempts"]) == (OK, 2)
    assert len(fake.requests_for(provider)) == 2
    (logged,) = logged_calls()
    assert (logged["status"], logged["attempts"], logged["answer"]) == ("ok", 2, OK)
    assert_secret_kept(result.out, result.err)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cli_persistent_429_exits_5_after_retries_plus_one_attempts(fake, provider):
    # The provider's message echoes the key; the retry count comes from LLM_MAX_RETRIES; --debug.
    echo = f"Rate limit reached for key {KEY}. Please try again in 20s."
    fake.script(provider, *[Reply(status=429, headers=FAST, error_message=echo)] * 6)
    result = run_cli(
        "--debug", "ask", "-p", provider, "hi", env=user_env(fake, LLM_MAX_RETRIES="2")
    )
    assert result.code == 5, result.err
    assert result.out == ""
    assert result.err.splitlines() == [
        "rate limited (429); retrying in 0.0s (attempt 2 of 3)",
        "rate limited (429); retrying in 0.0s (attempt 3 of 3)",
        f"Error: rate limited by {provider} (429): {echo.replace(KEY, MASKED)}",
        "wait and try again, or check your plan's rate limits and quota",
    ]
    assert len(fake.requests_for(provider)) == 3
    (logged,) = logged_calls()
    assert (logged["status"], logged["attempts"], logged["exit_code"]) == ("error", 3, 5)
    assert MASKED in logged["error_message"]
    assert_secret_kept(result.out, result.err)


def test_cli_ten_megabytes_of_stdin_is_sent_and_answered(fake):
    big = ("lorem ipsum dolor sit amet " * 400_000)[: 10 * 1024 * 1024].encode()
    fake.script("openai", Reply(text=OK))
    result = run_cli("ask", "-p", "openai", "Summarize", env=user_env(fake), stdin=big, timeout=60)
    assert (result.code, result.out) == (0, OK + "\n"), result.err
    (request,) = fake.requests_for("openai")
    content = request.body["messages"][-1]["content"]
    assert len(content) == len(big) + len("\n\nSummarize")
    assert_secret_kept(result.out, result.err)


def test_cli_ten_megabytes_refused_by_the_provider_exits_9_with_a_context_hint(fake):
    big = b"x" * (10 * 1024 * 1024)
    fake.script("gemini", Reply(status=413))
    result = run_cli(
        "ask", "-p", "gemini", "--retries", "3", env=user_env(fake), stdin=big, timeout=60
    )
    assert result.code == 9, result.err
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0].startswith("Error: gemini rejected the request (413)")
    assert "context window" in lines[1] and len(lines) == 2
    assert len(fake.requests_for("gemini")) == 1
    assert_secret_kept(result.out, result.err)


# ------------------------------------------------------------------------------------------------
# Nonsense waits: one parser for Retry-After, retry-after-ms and Gemini's RetryInfo
# ------------------------------------------------------------------------------------------------

# Header sets whose wait must be ignored (None: our backoff) or read as the number given. The
# matrix rows above cannot tell "retry at once" (0) from a jittered backoff that happens to be
# small; what the error carries can.
# fmt: off
NONSENSE_WAITS = [
    ({"Retry-After": "-5"}, None),
    ({"Retry-After": "NaN"}, None),
    ({"Retry-After": "-0.5"}, None),
    ({"Retry-After": "inf"}, None),
    ({"Retry-After": "abc"}, None),
    ({"retry-after-ms": "-100"}, None),
    ({"retry-after-ms": "NaN"}, None),
    ({"retry-after-ms": "-100", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "nan", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "inf", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "-inf", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "1e400", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "later", "Retry-After": "2"}, 2.0),
    ({"retry-after-ms": "-100", "Retry-After": "-5"}, None),
]
# fmt: on


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("headers", "wait"), NONSENSE_WAITS, ids=lambda v: json.dumps(v))
def test_a_nonsense_wait_is_not_read_as_retry_at_once(fake, provider, headers, wait):
    fake.script(provider, Reply(status=503, headers=headers))
    out = run_core(fake, provider, retries=0)
    assert out.code == 6, out.error
    assert out.error.retry_after == wait, headers


# fmt: off
RETRY_AFTER_HEADERS = [
    ({}, None),
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": " 3 "}, 3.0),
    ({"retry-after": "0"}, 0.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"retry-after": "120"}, 120.0),
    ({"retry-after": "-5"}, None),
    ({"retry-after": "-0"}, None),
    ({"retry-after": "+5"}, None),
    ({"retry-after": "NaN"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "Infinity"}, None),
    ({"retry-after": "1e3"}, None),
    ({"retry-after": "abc"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "\u0662"}, None),  # a non-ASCII digit, which float() would accept
    ({"retry-after": "Mon, 99 Jan 2024 00:00:00 GMT"}, None),
    ({"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: retry now
    ({"retry-after-ms": "10"}, 0.01),
    ({"retry-after-ms": "10", "retry-after": "30"}, 0.01),
    ({"retry-after-ms": "0", "retry-after": "30"}, 0.0),
    ({"retry-after-ms": "-100"}, None),
    ({"retry-after-ms": "-100", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "NaN", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "garbage", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "-100", "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
]
# fmt: on


@pytest.mark.parametrize(("headers", "wait"), RETRY_AFTER_HEADERS, ids=lambda v: json.dumps(v))
def test_parse_retry_after(headers, wait):
    from llmcli.providers.base import parse_retry_after

    assert parse_retry_after(headers) == wait


def test_parse_retry_after_of_a_future_date_and_of_no_headers():
    from llmcli.providers.base import parse_retry_after

    assert 28.0 <= parse_retry_after({"retry-after": http_date(30)}) <= 30.0
    assert parse_retry_after({"retry-after": "1" + "0" * 400}) == float(
        "inf"
    )  # absurd, not nonsense
    assert parse_retry_after(None) is None
    assert parse_retry_after(object()) is None


# fmt: off
RETRY_DELAYS = [
    ([{"retryDelay": "20s"}], 20.0),
    ([{"retryDelay": "1.5s"}], 1.5),
    ([{"retryDelay": "0s"}], 0.0),
    ([{"@type": "QuotaFailure"}, {"retryDelay": "3s"}], 3.0),
    ([{"retryDelay": "-5s"}], None),
    ([{"retryDelay": "NaNs"}], None),
    ([{"retryDelay": "infs"}], None),
    ([{"retryDelay": "1e3s"}], None),
    ([{"retryDelay": "soon"}], None),
    ([{"retryDelay": 20}], None),
    (["retryDelay"], None),
    ([], None),
]
# fmt: on


@pytest.mark.parametrize(("infos", "wait"), RETRY_DELAYS, ids=lambda v: json.dumps(v))
def test_gemini_retry_info_is_read_by_the_same_parser(infos, wait):
    from llmcli.providers.gemini import _retry_delay

    assert _retry_delay(infos) == wait


@pytest.mark.parametrize("wait", [-5.0, float("nan"), float("-inf")])
def test_policy_backs_off_when_an_error_carries_a_nonsense_wait(wait):
    policy = retry.RetryPolicy(retries=3, jitter=lambda: 1.0)
    error = errors.ProviderError("boom", status=503, retry_after=wait)
    assert [policy.delay(error, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
