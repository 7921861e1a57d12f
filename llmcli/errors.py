"""One error hierarchy for the whole tool; each class knows its exit code.

The core raises these; only `cli.py` turns them into a stderr line and a process exit status,
so a script can tell a bad key (4) from a rate limit (5) from a network failure (7) without
parsing text. Errors are classified by type, never by words in their message: a retry line, a
chat hint or an HTTP status is chosen with `isinstance`.

Every message and hint is scrubbed of the keys in use as it is set, and an SDK exception is never
kept as a cause (`SdkFailure` stands in for it, scrubbed), so `str`, `repr`, `args` and the cause
of any error we raise are safe to print. This module imports only `llmcli.secret`, a leaf.
"""

from __future__ import annotations

import enum

from llmcli.secret import scrub


class ExitCode(enum.IntEnum):
    """Process exit statuses: the contract scripts rely on (docs/exit-codes.md)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    AUTH = 4
    RATE_LIMIT = 5
    PROVIDER = 6
    NETWORK = 7
    INCOMPLETE = 8
    REJECTED = 9
    BUDGET = 10  # a spending limit would be passed: nothing was sent
    PENDING = 11  # a provider batch job has not finished yet (`batch fetch` without --wait)
    HANGUP = 129  # SIGHUP: the terminal closed (128 + 1)
    INTERRUPTED = 130  # Ctrl-C, SIGINT (128 + 2)
    TERMINATED = 143  # SIGTERM: `timeout`, CI cancellation, `docker stop` (128 + 15)


class LlmcliError(Exception):
    """Base class: a message for humans, an optional hint saying what to do, and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL
    retryable: bool = False
    attempts: int = 1

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        provider: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, text: str) -> None:
        self._message = scrub(str(text))
        self.args = (self._message,)

    @property
    def hint(self) -> str | None:
        return self._hint

    @hint.setter
    def hint(self, text: str | None) -> None:
        self._hint = None if text is None else scrub(str(text))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def defuse(exc: BaseException) -> None:
    """Empty an SDK's exception (and its causes) of anything that could hold a key, in place.

    Once translated to ours it is used no more, but a traceback's frames may still hold it,
    and an error reporter that records local variables would print it: its request carries the
    key in its headers, its body may echo it. What is left is its type and scrubbed words.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, LlmcliError):
            current.__traceback__ = None  # its frames hold the request's headers
            text = scrub(str(current))
            try:
                current.args = (text,)
                for name, value in list(vars(current).items()):
                    if isinstance(value, str):
                        setattr(current, name, scrub(value))
                    elif not isinstance(value, int | float | bool | type(None)):
                        setattr(current, name, None)
            except (AttributeError, TypeError):  # a read-only attribute: what it holds stays
                pass
        current = current.__cause__ or current.__context__


class SdkFailure(Exception):
    """What an SDK raised, as text only: the cause kept on our error instead of the SDK's object.

    The SDK's exception holds the request, and the request holds the key in its headers; this
    keeps the exception's type and (scrubbed) message for `--debug`, and nothing else.
    """

    def __init__(self, exc: BaseException) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        super().__init__(scrub(f"{kind}: {exc}"))


class UsageError(LlmcliError):
    """The command line or a value in it is wrong (bad flag, no prompt, unsupported option)."""

    exit_code = ExitCode.USAGE


class ConfigError(LlmcliError):
    """A required setting is missing or malformed; detected before any network call."""

    exit_code = ExitCode.CONFIG


class AuthError(LlmcliError):
    """The provider refused the credentials (401, 403, Gemini's API_KEY_INVALID)."""

    exit_code = ExitCode.AUTH


class RateLimitError(LlmcliError):
    """429 or out of quota."""

    exit_code = ExitCode.RATE_LIMIT
    retryable = True


class QuotaExhausted(RateLimitError):
    """Out of credit or quota (402, OpenAI's `insufficient_quota`): waiting will not help."""

    retryable = False


class ProviderError(LlmcliError):
    """The provider failed: 5xx, overloaded, a malformed reply, or a stream broken off."""

    exit_code = ExitCode.PROVIDER
    retryable = True


class ServerError(ProviderError):
    """A 5xx (or an unexpected status) from the provider."""


class Conflict(ServerError):
    """409: the request collided with another; trying again usually works."""


class Overloaded(ProviderError):
    """The provider says it is overloaded (Anthropic's 529, an `overloaded_error` event)."""


class StreamFailed(ProviderError):
    """The provider sent an error event inside a stream that had begun well."""


class BrokenOff(ProviderError):
    """The connection was cut in the middle of a reply, or a stream ended without finishing."""


class MalformedReply(ProviderError):
    """A reply that is not the provider's API: not JSON, the wrong shape, an HTML page, a 204."""


class NetworkError(LlmcliError):
    """Could not talk to the provider: refused, reset, DNS, timeout."""

    exit_code = ExitCode.NETWORK
    retryable = True


class Timeout(NetworkError):
    """An attempt did not finish within its deadline (`--timeout`), or the server said 408."""


class IncompleteAnswer(LlmcliError):
    """The answer was filtered, or truncated while `--strict` was asked for."""

    exit_code = ExitCode.INCOMPLETE


class RequestRejected(LlmcliError):
    """The provider rejected the request itself (400, 404 unknown model, 413, 422): never retried."""

    exit_code = ExitCode.REJECTED


class BudgetExceeded(LlmcliError):
    """The call could cost more than a budget has left (or its price is unknown): not sent."""

    exit_code = ExitCode.BUDGET


class JobPending(LlmcliError):
    """A provider batch job is not finished yet: nothing failed, its results are not there yet
    (`batch fetch` without `--wait`, or `--wait` past its `--timeout`)."""

    exit_code = ExitCode.PENDING


class ContextTooLong(RequestRejected):
    """The input does not fit the model's context window (a 400 the providers word differently)."""


class Interrupted(LlmcliError):
    """The user pressed Ctrl-C, or a signal stopped the command: what was done is kept."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop as Ctrl-C does (the call is logged, the line ended).

    A KeyboardInterrupt, so every place that already keeps a cut-short answer on Ctrl-C keeps it
    on these too; `exit_code` is 128 + the signal's number, as a shell reports a killed command.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interruption(exc: KeyboardInterrupt) -> Interrupted:
    """The error to log and report for Ctrl-C or a stopping signal, with its exit code."""
    if isinstance(exc, Terminated):
        error = Interrupted("terminated by a signal" if exc.signum != 1 else "the terminal hung up")
        error.exit_code = exc.exit_code  # type: ignore[misc]
        return error
    return Interrupted("interrupted")
