"""One error hierarchy for the whole tool; each class knows its exit code.

The core raises these; only `cli.py` turns them into a stderr line and a process exit status,
so a script can tell a bad key (4) from a rate limit (5) from a network failure (7) without
parsing text. This module imports nothing of ours.
"""

from __future__ import annotations

import enum


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
    INTERRUPTED = 130


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

    def __str__(self) -> str:
        return self.message


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


class NetworkError(LlmcliError):
    """Could not talk to the provider: refused, reset, DNS, timeout."""

    exit_code = ExitCode.NETWORK
    retryable = True


class IncompleteAnswer(LlmcliError):
    """The answer was filtered, or truncated while `--strict` was asked for."""

    exit_code = ExitCode.INCOMPLETE


class RequestRejected(LlmcliError):
    """The provider rejected the request itself (400, 404 unknown model, 413, 422): never retried."""

    exit_code = ExitCode.REJECTED


class Interrupted(LlmcliError):
    """The user pressed Ctrl-C."""

    exit_code = ExitCode.INTERRUPTED
