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
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

from llmcli import errors

BASE_DELAY = 1.0
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0

T = TypeVar("T")


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
    if isinstance(error, errors.Timeout):
        return "timed out"
    if isinstance(error, errors.NetworkError):
        return "connection failed"
    if isinstance(error, errors.Overloaded):
        return f"overloaded{status}"
    if isinstance(error, errors.StreamFailed):
        return "stream failed"
    if isinstance(error, errors.BrokenOff):
        return "connection broken off"
    if isinstance(error, errors.MalformedReply):
        return "malformed reply"
    if isinstance(error, errors.Conflict):
        return f"conflict{status}"
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


class Decision(NamedTuple):
    """What to do after a failed attempt: `delay` seconds, then try again."""

    error: errors.LlmcliError
    delay: float
    notice: RetryNotice


class Retrier:
    """Applies a policy to one call. It computes; the caller waits (`run` with `time.sleep`,
    `arun` with `asyncio.sleep`, or a stream's own loop), so sync and async share every rule."""

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

    def decide(self, exc: BaseException, number: int, *, may_retry: bool = True) -> Decision:
        """After attempt `number` failed with `exc`: the wait before the next, or raise.

        Provider failures are raised as our error classes with `.attempts` set, their cause a
        scrubbed stand-in for the SDK's exception (which holds the request and its key), and
        the SDK's exception itself emptied (`errors.defuse`): decide once per exception.
        Anything that is not a provider failure (a bug) propagates untouched, as an internal
        error. Call it outside an `except` block, so the SDK's exception is not the context.
        """
        error = self.translate(exc)
        if error is None:
            raise exc
        error.attempts = number
        cause = None
        if error is not exc:
            cause = errors.SdkFailure(exc)
            errors.defuse(exc)  # frames that still hold it show nothing of the key
        # Ours may have been raised inside an SDK (the guarded HTTP client): not its frames.
        error.__traceback__ = None
        if not error.retryable or not may_retry:
            raise error from cause
        # Checked before the attempts left, so the user hears when to come back even on the
        # last attempt or with --retries 0.
        if error.retry_after is not None and error.retry_after > MAX_RETRY_AFTER:
            raise too_long(error) from cause
        if number >= self.total:
            raise error from cause
        delay = self.policy.delay(error, number)
        notice = RetryNotice(error, delay, number + 1, self.total)
        if self.on_retry is not None:
            self.on_retry(notice)
        return Decision(error, delay, notice)

    def handle(self, exc: BaseException, number: int, *, may_retry: bool = True) -> None:
        """`decide`, then sleep: for sync callers that loop themselves."""
        self.policy.sleep(self.decide(exc, number, may_retry=may_retry).delay)

    def run(self, attempt: Callable[[], T]) -> tuple[T, int]:
        """Call `attempt` until it succeeds or the policy gives up; returns (result, attempts)."""
        number = 0
        while True:
            number += 1
            failure = _attempt(attempt)
            if not isinstance(failure, _Failed):
                return failure, number
            self.handle(failure.exc, number)

    async def arun(
        self,
        attempt: Callable[[], Awaitable[T]],
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> tuple[T, int]:
        """`run` for a coroutine: the same decisions, waited with `asyncio.sleep`."""
        import asyncio

        wait = sleep or asyncio.sleep
        number = 0
        while True:
            number += 1
            try:
                return await attempt(), number
            except (KeyboardInterrupt, GeneratorExit, asyncio.CancelledError):
                raise
            except Exception as exc:
                failure = exc
            await wait(self.decide(failure, number).delay)


class _Failed(NamedTuple):
    exc: BaseException


def _attempt(attempt: Callable[[], T]) -> T | _Failed:
    """Run one attempt; its exception is returned, so the caller handles it outside `except`."""
    try:
        return attempt()
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:
        return _Failed(exc)
