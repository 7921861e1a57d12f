"""What every provider module implements, and the error mapping they share.

A provider is one small class: declarative attributes (which key it needs, which options it can
honour, its default model) plus three methods. Importing a provider module must stay cheap, so
SDKs are imported inside the methods, never at module level.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from llmcli import errors
from llmcli.types import Chunk, Request, Response

# Names used in `Request.options_set()`; a provider lists the ones it can honour.
ALL_OPTIONS = frozenset({"temperature", "top_p", "stop", "seed", "response_format"})


class Provider:
    """Base class for a provider. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    #: Environment variables that may hold the key, in order of preference; empty = no key needed.
    key_env_vars: ClassVar[tuple[str, ...]] = ()
    #: Environment variable that overrides the endpoint (proxies, gateways, tests).
    base_url_env: ClassVar[str | None] = None
    default_model: ClassVar[str]
    #: Options from `Request.options_set()` this provider can send; anything else is a usage error.
    supports: ClassVar[frozenset[str]] = ALL_OPTIONS
    temperature_range: ClassVar[tuple[float, float]] = (0.0, 2.0)
    #: The most `--stop` sequences the API accepts (None = no documented limit).
    max_stop_sequences: ClassVar[int | None] = None
    #: The provider id genai-prices knows it by; None = free (echo).
    pricing_id: ClassVar[str | None] = None
    #: Whether it needs the network (echo does not).
    remote: ClassVar[bool] = True

    def __init__(self, api_key: str | None = None, base_url: str | None = None) -> None:
        self.api_key = api_key
        self.base_url = base_url

    def params(self, request: Request) -> dict[str, Any]:
        """The arguments this provider's SDK call receives (shown by `--dry-run`; no SDK import)."""
        raise NotImplementedError

    def complete(self, request: Request) -> Response:
        """One attempt at a complete answer. Raise SDK exceptions freely: `translate_error` maps them."""
        raise NotImplementedError

    def stream(self, request: Request) -> Iterator[Chunk]:
        """One attempt at a streamed answer: yield text chunks, then usage and finish reason."""
        raise NotImplementedError

    def list_models(self, timeout: float) -> list[str]:
        """The model names this key may use, from one request that costs no tokens.

        `config validate --live` calls it to prove the key and endpoint work before anything
        spends money. One attempt, no retries: a deploy check should fail fast. Exceptions are
        the SDK's own; callers map them with `translate_error`.
        """
        raise NotImplementedError

    def translate_error(self, exc: BaseException) -> errors.LlmcliError | None:
        """Map an exception raised by this provider's SDK to ours; None if it is not an SDK error."""
        return translate_common(self.name, exc, self.key_hint())

    def key_hint(self) -> str:
        if not self.key_env_vars:
            return "check the provider's configuration"
        return f"check {self.key_env_vars[0]} (run `llmcli config validate --live`)"


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# How the providers say "the input does not fit the context window" in a 400 (no 413 for that).
_TOO_LONG = re.compile(
    r"context_length_exceeded|context length|context window|prompt is too long|too many tokens"
    r"|input token count|exceeds the maximum",
    re.IGNORECASE,
)


def error_for_status(
    provider: str,
    status: int,
    detail: str,
    *,
    key_hint: str,
    retry_after: float | None = None,
    kind: str | None = None,
) -> errors.LlmcliError:
    """The one table from an HTTP status (and provider error type) to our error classes."""
    detail = short(detail) or "no details given"
    where = f"{provider} ({status})"
    # Gemini answers a wrong key with 400 INVALID_ARGUMENT + reason API_KEY_INVALID (wire.md §0.6).
    if status in (401, 403) or kind == "API_KEY_INVALID":
        return errors.AuthError(
            f"authentication failed for {where}: {detail}",
            key_hint,
            provider=provider,
            status=status,
        )
    if status == 402 or kind in ("insufficient_quota", "billing_error"):
        return errors.QuotaExhausted(
            f"{provider} says the account is out of credit or quota ({status}): {detail}",
            "add credit or raise the quota in the provider's console; retrying will not help",
            provider=provider,
            status=status,
        )
    if status == 429:
        hint = "wait and try again, or check your plan's rate limits and quota"
        return errors.RateLimitError(
            f"rate limited by {where}: {detail}",
            hint,
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 408:
        return errors.NetworkError(
            f"{provider} timed out on the request ({status}): {detail}",
            "try again, or raise --timeout",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 529 or kind == "overloaded_error":
        return errors.ProviderError(
            f"{provider} is overloaded ({status}): {detail}",
            "try again in a little while",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status >= 500 or status == 409 or status < 400:
        return errors.ProviderError(
            f"{provider} server error ({status}): {detail}",
            "the provider is having trouble; try again later",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 404:
        hint = "check the model name (-m/--model or LLM_MODEL) and the base URL"
    elif status == 413 or _TOO_LONG.search(f"{detail} {kind or ''}"):
        hint = "the input is too large for the model: shorten it, or use a model with a larger context window"
    else:
        hint = (
            "the provider refused the request as sent: check the options (see them with --dry-run)"
        )
    return errors.RequestRejected(
        f"{provider} rejected the request ({status}): {detail}",
        hint,
        provider=provider,
        status=status,
    )


# A wait as servers write it: decimal digits, perhaps a fraction. HTTP's delay-seconds is only
# digits; fractions are tolerated (`retry-after-ms`, Gemini's `"1.5s"`). A sign, NaN, inf or an
# exponent is not a wait anyone meant, and reading it as 0 would retry at once, hammering a
# server that asked for patience.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def parse_seconds(text: object) -> float | None:
    """A server's wait in seconds from `text` (`"2"`, `"0.5"`), or None when it is nonsense.

    The one parser behind `Retry-After`, `retry-after-ms` and Gemini's RetryInfo, so every
    provider falls back to our own backoff on the same inputs. A value too big for a float comes
    back as inf: a real (absurd) wait, which the retry policy refuses at once.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    return float(text) if _SECONDS.fullmatch(text) else None


def _seconds_until(http_date: str) -> float | None:
    """Seconds from now until an HTTP date; 0 for a date in the past (retry now: valid)."""
    import datetime as dt
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def parse_retry_after(headers: object) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date).

    None when neither holds a sensible wait: the caller then uses its own backoff. A nonsense
    `retry-after-ms` is skipped, not trusted, so a valid `Retry-After` beside it still counts.
    """
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = parse_seconds(get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = get("retry-after")
    if not isinstance(value, str):
        return None
    seconds = parse_seconds(value)
    return seconds if seconds is not None else _seconds_until(value)


def translate_common(provider: str, exc: BaseException, key_hint: str) -> errors.LlmcliError | None:
    """Failures that look the same whatever the SDK: raw transport errors and unparsable replies.

    anthropic and google-genai let raw `httpx2` exceptions escape (wire.md §0.4-0.5), and all
    three SDKs raise a bare `json.JSONDecodeError` on a malformed body.
    """
    if isinstance(exc, errors.LlmcliError):
        return exc
    module = type(exc).__module__.split(".")[0]
    if module in ("httpx2", "httpx", "httpcore", "httpcore2"):
        name = type(exc).__name__
        if "Timeout" in name:
            return errors.NetworkError(
                f"{provider} did not answer in time ({name})",
                "try again, or raise --timeout / LLM_TIMEOUT",
                provider=provider,
            )
        if "without sending a response" in str(exc):
            # Dropped before any byte of a reply: a connection failure, like a reset (exit 7).
            return errors.NetworkError(
                f"{provider} closed the connection without answering",
                "try again; check your network connection and the provider's base URL",
                provider=provider,
            )
        if name in ("RemoteProtocolError", "ReadError") or "Protocol" in name:
            return errors.ProviderError(
                f"connection to {provider} broken off: {short(str(exc)) or name}",
                "try again",
                provider=provider,
            )
        return errors.NetworkError(
            f"could not reach {provider}: {short(str(exc)) or name}",
            "check your network connection and the provider's base URL",
            provider=provider,
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return errors.ProviderError(
            f"{provider} sent a reply that is not valid JSON: {short(str(exc))}",
            "try again; if it persists, check the base URL points at the real API",
            provider=provider,
        )
    if isinstance(exc, ConnectionError | TimeoutError):
        return errors.NetworkError(f"could not reach {provider}: {exc}", provider=provider)
    return None


def _error_detail(body: object, fallback: str) -> tuple[str, str | None]:
    """The provider's own message and error type from a JSON error body, whatever its envelope."""
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or fallback
        # `code` says most (context_length_exceeded); type/status are the coarser fallbacks.
        kind = inner.get("code") or inner.get("type") or inner.get("status")
        if kind == "overloaded_error" or inner.get("type") == "overloaded_error":
            kind = "overloaded_error"
        return str(message), (str(kind) if kind else None)
    return fallback, None


def translate_stainless(
    sdk: object, provider: str, exc: BaseException, key_hint: str
) -> errors.LlmcliError | None:
    """Map exceptions of the Stainless-generated SDKs (`openai`, `anthropic`), which share a shape."""
    if isinstance(exc, sdk.APIStatusError):  # type: ignore[attr-defined]
        detail, kind = _error_detail(exc.body, exc.message)
        status = exc.status_code
        if status < 400:
            # An error event inside a 200 stream (Anthropic `event: error`): not an HTTP status.
            mapped = error_for_status(
                provider,
                529 if kind == "overloaded_error" else 500,
                detail,
                key_hint=key_hint,
                kind=kind,
            )
            mapped.message = (
                f"{provider} reported an error mid-stream ({kind or 'error'}): {short(detail)}"
            )
            return mapped
        return error_for_status(
            provider,
            status,
            detail,
            key_hint=key_hint,
            retry_after=parse_retry_after(exc.response.headers),
            kind=kind,
        )
    if isinstance(exc, sdk.APITimeoutError):  # type: ignore[attr-defined]
        return errors.NetworkError(
            f"{provider} did not answer in time",
            "try again, or raise --timeout / LLM_TIMEOUT",
            provider=provider,
        )
    if isinstance(exc, sdk.APIConnectionError):  # type: ignore[attr-defined]
        cause = exc.__cause__
        if cause is not None and type(cause).__name__ in ("RemoteProtocolError", "ReadError"):
            return translate_common(provider, cause, key_hint)
        reason = short(str(cause)) if cause is not None and str(cause) else "connection error"
        return errors.NetworkError(
            f"could not reach {provider}: {reason}",
            "check your network connection and the provider's base URL",
            provider=provider,
        )
    if isinstance(exc, sdk.APIError):  # type: ignore[attr-defined]
        # An `{"error": ...}` payload inside an OpenAI stream.
        detail, kind = _error_detail(exc.body, exc.message)
        return errors.ProviderError(
            f"{provider} reported an error mid-stream ({kind or 'error'}): {short(detail)}",
            "try again",
            provider=provider,
        )
    return translate_common(provider, exc, key_hint)
