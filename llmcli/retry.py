"""One retry policy for every provider (DESIGN §5).

The SDKs retry differently (google-genai not at all, openai refusing a Retry-After over 120 s),
so their own retries are switched off and this loop decides for all of them: retry rate limits,
server errors, overload, timeouts and connection failures; never a rejected request. Backoff is
exponential with full jitter from 1 s, capped at 30 s; a server's Retry-After wins up to 60 s,
and beyond that the call fails at once, saying when to try again.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable
from typing import NamedTuple

from llmcli import errors

BASE_DELAY = 1.0
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0


class RetryNotice(NamedTuple):
    """What the caller is told before each wait, to print one stderr line."""

    error: errors.LlmcliError
    delay: float
    attempt: int  # the attempt about to be made, counting from 1
    attempts: int  # the most there will be

    def __str__(self) -> str:
        return f"{reason(self.error)}; retrying in {self.delay:.1f}s (attempt {self.attempt} of {self.attempts})"


def reason(error: errors.LlmcliError) -> str:
    """A few words for a retry line: `rate limited (429)`, `timed out`, `server error (503)`."""
    status = f" ({error.status})" if error.status else ""
    if isinstance(error, errors.RateLimitError):
        return f"rate limited{status}"
    if isinstance(error, errors.NetworkError):
        return (
            "timed out"
            if "in time" in error.message or error.status == 408
            else "connection failed"
        )
    if "overloaded" in error.message:
        return f"overloaded{status}"
    if "mid-stream" in error.message:
        return "stream failed"
    if "broken off" in error.message:
        return "connection broken off"
    if error.status == 409:
        return "conflict (409)"
    return f"server error{status}" if error.status else "provider error"


class RetryPolicy(NamedTuple):
    retries: int
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random

    def delay(self, error: errors.LlmcliError, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        wait = error.retry_after
        # A server's wait wins, unless it is nonsense (negative, NaN): then our own backoff.
        if wait is not None and 0 <= wait < math.inf:
            return wait
        return self.jitter() * min(MAX_BACKOFF, BASE_DELAY * 2 ** (retry_number - 1))


def too_long(error: errors.LlmcliError) -> errors.LlmcliError:
    """The error to raise at once when the server asks us to wait longer than we will."""
    wait = error.retry_after or 0.0
    try:
        when = dt.datetime.now().astimezone() + dt.timedelta(seconds=wait)
    except (OverflowError, ValueError):  # `Retry-After: inf` or a date centuries away
        error.hint = "the provider asks to wait longer than llmcli ever will: try again later"
        return error
    day = "" if when.date() == dt.date.today() else f"{when:%Y-%m-%d} "
    error.hint = f"the provider asks to wait {wait:.0f}s: try again after {day}{when:%H:%M:%S}"
    return error


class Retrier:
    """Applies a policy to one call: `run` for a whole call, `handle` for a stream's own loop."""

    def __init__(
        self,
        policy: RetryPolicy,
        translate: Callable[[BaseException], errors.LlmcliError | None],
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self.policy = policy
        self.translate = translate
        self.on_retry = on_retry
        self.total = policy.retries + 1

    def handle(self, exc: BaseException, number: int, *, may_retry: bool = True) -> None:
        """After attempt `number` failed with `exc`: wait and return to retry, or raise.

        Provider failures are raised as our error classes with `.attempts` set; anything that is
        not a provider failure (a bug) propagates untouched, to be shown as an internal error.
        """
        error = self.translate(exc)
        if error is None:
            raise exc
        error.attempts = number
        cause = None if error is exc else exc  # a provider may raise our own errors directly
        if not error.retryable or not may_retry:
            raise error from cause
        # Checked before the attempts left, so the user hears when to come back even on the
        # last attempt or with --retries 0.
        if error.retry_after is not None and error.retry_after > MAX_RETRY_AFTER:
            raise too_long(error) from cause
        if number >= self.total:
            raise error from cause
        delay = self.policy.delay(error, number)
        if self.on_retry is not None:
            self.on_retry(RetryNotice(error, delay, number + 1, self.total))
        self.policy.sleep(delay)

    def run(self, attempt: Callable[[], object]) -> tuple[object, int]:
        """Call `attempt` until it succeeds or the policy gives up; returns (result, attempts)."""
        number = 0
        while True:
            number += 1
            try:
                return attempt(), number
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                self.handle(exc, number)
