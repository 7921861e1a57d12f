"""What every provider module implements, and the error mapping they share.

A provider is an instance: a `ProviderSpec` (its name, the wire protocol it speaks, where its key
and endpoint come from, how it is priced) bound to a key and an endpoint, with the behaviour of
its protocol's class. `openai`, `anthropic`, `gemini` and `echo` are built-in specs; an endpoint
named in a config file is one more spec that reuses a protocol's class. Capabilities (which
options a protocol can honour) are class attributes, because they belong to the wire.

A provider keeps one SDK client (and one async client) for its lifetime, so attempts and chat
turns reuse its connections, and hands the SDK an httpx2 client from `llmcli.transport` that
enforces each attempt's deadline and vets replies. Importing a provider module must stay cheap:
SDKs are imported inside the methods, never at module level.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, NamedTuple

from llmcli import errors
from llmcli.secret import Secret, mask, scrub
from llmcli.types import Attachment, Chunk, Message, Part, Request, Response, Text

# Names used in `Request.options_set()`; a provider lists the ones it can honour.
ALL_OPTIONS = frozenset({"temperature", "top_p", "stop", "seed", "response_format", "schema"})
#: Seconds `list_models` waits when no timeout is given.
LIST_TIMEOUT = 10.0
#: What an endpoint that needs no key is sent instead (servers without auth ignore it).
NO_KEY = "no-key"


class ProviderSpec(NamedTuple):
    """Who a provider is: everything but its key, which is read when a call is prepared."""

    name: str
    protocol: str  # the module that speaks its wire: openai | anthropic | gemini | echo
    default_model: str
    #: Environment variables that may hold the key, in order of preference; empty = no key needed.
    key_env_vars: tuple[str, ...] = ()
    #: Environment variable that overrides the endpoint (proxies, gateways, tests).
    base_url_env: str | None = None
    #: A fixed endpoint (an endpoint named in a config file); None = the SDK's default.
    base_url: str | None = None
    #: The provider id genai-prices knows it by; None = prices unknown unless prices.toml has them.
    pricing_id: str | None = None
    #: False for a provider that never touches the network and costs nothing (echo).
    remote: bool = True
    #: True for an endpoint that costs nothing though it is remote (a local model server).
    free: bool = False

    def __repr__(self) -> str:
        from llmcli.redact import display_url

        shown = self._replace(base_url=display_url(self.base_url) if self.base_url else None)
        fields = ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, shown, strict=True))
        return f"ProviderSpec({fields})"


MB = 1024 * 1024


class AttachmentLimits(NamedTuple):
    """What one request may carry, as the provider documents it; checked before anything is
    sent (`llmcli.attach.check`), because a refusal after an upload of 30 MB costs the user
    the wait and says less. None = no documented limit."""

    max_images: int | None = None  # images in one request, the whole conversation's
    max_image_bytes: int | None = None  # the largest image file
    max_pdf_bytes: int | None = None  # the largest PDF file
    #: Attachments sent inline, base64-encoded as they travel, in one request (a URL is not).
    max_request_bytes: int | None = None


class Provider:
    """Base class for a protocol. Subclasses set the class attributes and implement the methods."""

    #: Options from `Request.options_set()` this protocol can send; anything else is a usage error.
    supports: ClassVar[frozenset[str]] = ALL_OPTIONS
    temperature_range: ClassVar[tuple[float, float]] = (0.0, 2.0)
    #: The most `--stop` sequences the API accepts (None = no documented limit).
    max_stop_sequences: ClassVar[int | None] = None
    #: The largest `--seed` the API takes (Gemini's is a 32-bit integer).
    max_seed: ClassVar[int] = 2**63 - 1
    #: Whether every complete answer ends with a finish reason: a stream without one was cut.
    always_finishes: ClassVar[bool] = True
    #: Attachment media types the protocol can send (none until a serializer handles them).
    attachment_types: ClassVar[frozenset[str]] = frozenset()
    #: The size and count limits of those attachments (docs/usage.md has the table).
    attachment_limits: ClassVar[AttachmentLimits] = AttachmentLimits()
    #: Attachment types sent as their URL when they came from one: the provider fetches them.
    url_types: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def schema_refusal(cls, request: Request) -> errors.UsageError | None:
        """Why this protocol cannot honour `request.schema` for its model, or None (checked
        before anything is sent; `llmcli.schema` holds the rules)."""
        return None

    def __init__(
        self, spec: ProviderSpec, api_key: Secret | str | None = None, base_url: str | None = None
    ) -> None:
        self.spec = spec
        self.api_key = Secret(api_key) if isinstance(api_key, str) else api_key
        self.base_url = base_url or spec.base_url
        self._client: Any = None
        self._async_client: Any = None
        self._async_loop: Any = None  # a weak reference to the event loop `_async_client` is for
        self._async_closer: Any = None  # closes `_async_client` when its loop shuts down

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        from llmcli.redact import display_url

        key = mask(self.api_key.reveal()) if self.api_key else None
        endpoint = display_url(self.base_url) if self.base_url else None
        return f"<{type(self).__name__} {self.name!r} endpoint={endpoint!r} key={key!r}>"

    def _key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.reveal()
        if not self.spec.key_env_vars and self.spec.base_url:
            # A named endpoint that needs no key (a local server): a placeholder, or the SDK
            # reaches for its own variable (OPENAI_API_KEY...) and sends that key to this host.
            return NO_KEY
        return None

    def _kept_async_client(self) -> Any:
        """The async SDK client if it was made in the running event loop, else None.

        An async client's connections belong to the loop that opened them. Reused under a later
        `asyncio.run`, it writes the request to a socket no loop serves any more: the request
        goes out (and is paid for) and the answer is lost to "Event loop is closed". So each
        loop gets its own client (`_keep_async_client`).
        """
        import asyncio
        import weakref

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop library (trio): one client, as it is
            return self._async_client
        if self._async_loop is None or self._async_loop() is not loop:
            # A loop that ended without closing its async generators (not `asyncio.run`) left
            # its client open: forget it, and finish its closer here, as that loop cannot.
            self._async_client = None
            closer, self._async_closer = self._async_closer, None
            if closer is not None:
                with contextlib.suppress(StopIteration, RuntimeError):
                    closer.aclose().send(None)
            self._async_loop = weakref.ref(loop)
        return self._async_client

    def _keep_async_client(self, client: Any) -> Any:
        """Keep `client` for the running loop, and close it when that loop shuts down.

        `asyncio.run` ends by closing every async generator its loop has started: one started
        here, paused at its `yield`, closes the client then, while the loop still runs, so its
        connections end cleanly rather than as sockets left open by a closed loop.
        """
        self._async_client = client
        closer = self._close_at_loop_end(client)
        with contextlib.suppress(StopIteration):
            closer.__anext__().send(None)  # run it to its `yield` (nothing before it awaits)
        self._async_closer = closer  # the loop holds only a weak reference to it
        return client

    async def _close_at_loop_end(self, client: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._async_client is client:
                self._async_client = None
                await self._close_async(client)

    async def _close_async(self, client: Any) -> None:
        await client.close()

    def client(self) -> Any:
        """The SDK client, made on first use and kept: attempts and turns share its connections."""
        if self._client is None:
            self._client = self._new_client(asynchronous=False)
        return self._client

    def async_client(self) -> Any:
        """The async SDK client for the running event loop (one for each loop)."""
        client = self._kept_async_client()
        if client is None:
            client = self._keep_async_client(self._new_client(asynchronous=True))
        return client

    def _new_client(self, *, asynchronous: bool) -> Any:
        """A new SDK client (or async client) given llmcli's guarded HTTP client."""
        raise NotImplementedError

    # --- what each protocol implements -----------------------------------------------------------

    def params(self, request: Request) -> dict[str, Any]:
        """The arguments this provider's SDK call receives (shown by `--dry-run`; no SDK import)."""
        raise NotImplementedError

    def complete(self, request: Request) -> Response:
        """One attempt at a complete answer. Raise SDK exceptions freely: `translate_error` maps them."""
        raise NotImplementedError

    def stream(self, request: Request) -> Iterator[Chunk]:
        """One attempt at a streamed answer: yield text chunks, then usage and finish reason."""
        raise NotImplementedError

    async def acomplete(self, request: Request) -> Response:
        """`complete` on the SDK's async client (for the server and batch jobs)."""
        raise NotImplementedError

    def astream(self, request: Request) -> AsyncIterator[Chunk]:
        """`stream` on the SDK's async client."""
        raise NotImplementedError

    def list_models(self, timeout: float = LIST_TIMEOUT) -> list[str]:
        """The model names this key may use, from one request that costs no tokens.

        `config validate --live` calls it to prove the key and endpoint work before anything
        spends money. One attempt, no retries: a deadline check should fail fast. Exceptions are
        the SDK's own; callers map them with `translate_error`.
        """
        raise NotImplementedError

    def image_tokens(self, width: int, height: int) -> int | None:
        """Input tokens an image of this size costs at most, by the provider's published
        formula; None when it has none that holds for every model (`--dry-run` says so)."""
        return None

    def translate_error(self, exc: BaseException) -> errors.LlmcliError | None:
        """Map an exception raised by this provider's SDK to ours; None if it is not an SDK error."""
        return translate_common(self.name, exc, self.key_hint())

    def key_hint(self) -> str:
        if not self.spec.key_env_vars:
            return "check the provider's configuration"
        names = " or ".join(reversed(self.spec.key_env_vars))
        return f"check {names} (run `llmcli config validate --live`)"

    def close(self) -> None:
        """Close the SDK clients (their connections); the provider builds new ones if used again."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        client, self._async_client = self._async_client, None
        if client is not None:
            await self._close_async(client)

    # --- message serialization: one place per protocol ----------------------------------------

    def content(self, message: Message) -> Any:
        """The message's content in this protocol's wire shape (a string when it is all text)."""
        if isinstance(message.content, str):
            return message.content
        return [self.part(part) for part in as_sent(message.content)]

    def part(self, part: Part) -> dict[str, Any]:
        """One part in this protocol's wire shape."""
        if isinstance(part, Text):
            return {"type": "text", "text": part.text}
        raise unsupported_attachment(self.name, part)


TEXT_TYPE = "text/plain"


def as_sent(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """The parts as every protocol sends them: a text file becomes a text part.

    Text goes as text, not as a binary document: every provider reads it then, and the name
    around it lets the model tell files apart, and apart from the prompt.
    """
    return tuple(
        Text(f'<file name="{p.name or "attachment"}">\n{p.data.decode("utf-8")}\n</file>')
        if isinstance(p, Attachment) and p.media_type == TEXT_TYPE
        else p
        for p in parts
    )


#: Short names of the media types llmcli attaches, as `--attach-type` spells them.
TYPE_NAMES = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
    TEXT_TYPE: "text",
}


def unsupported_attachment(
    provider: str, part: Attachment, accepted: frozenset[str] = frozenset()
) -> errors.UsageError:
    """The usage error for a type the provider cannot take: never dropped without a word."""
    order = list(TYPE_NAMES)
    ranked = sorted(accepted, key=lambda t: (order.index(t) if t in order else len(order), t))
    takes = ", ".join(TYPE_NAMES.get(t, t) for t in ranked)
    return errors.UsageError(
        f"{provider} cannot take a {part.media_type} attachment{f' ({part.name})' if part.name else ''}",
        f"{provider} takes {takes}; convert the file, or choose another provider"
        if takes
        else "attach images (png, jpeg, webp, gif), PDFs or text files, or choose another provider",
    )


def short(text: str, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters. Keys are masked before the cut: a key the
    cut went through would otherwise show its first characters (a provider's message can echo it)."""
    text = scrub(" ".join(str(text).split()))
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
        return errors.Timeout(
            f"{provider} timed out on the request ({status}): {detail}",
            "try again, or raise --timeout",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 529 or kind == "overloaded_error":
        return errors.Overloaded(
            f"{provider} is overloaded ({status}): {detail}",
            "try again in a little while",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status == 409:
        return errors.Conflict(
            f"{provider} refused the request as a conflict ({status}): {detail}",
            "it collided with another request or a change of state; try again",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    if status >= 500 or status < 400:
        return errors.ServerError(
            f"{provider} server error ({status}): {detail}",
            "the provider is having trouble; try again later",
            provider=provider,
            status=status,
            retry_after=retry_after,
        )
    rejected: type[errors.RequestRejected] = errors.RequestRejected
    if status == 404:
        hint = "check the model name (-m/--model or LLM_MODEL) and the base URL"
    elif status == 413 or _TOO_LONG.search(f"{detail} {kind or ''}"):
        hint = "the input is too large for the model: shorten it, or use a model with a larger context window"
        rejected = errors.ContextTooLong
    else:
        hint = (
            "the provider refused the request as sent: check the options (see them with --dry-run)"
        )
    return rejected(
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
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


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


def _ours(exc: BaseException) -> errors.LlmcliError | None:
    """Our own error, raised by the guarded HTTP client and wrapped by an SDK on its way out."""
    import sys

    if isinstance(exc, errors.LlmcliError):
        return exc
    if "httpx2" not in sys.modules:  # no SDK has run: nothing of the transport's to find
        return None
    from llmcli import transport

    found = transport.find(exc, errors.LlmcliError)
    return found if isinstance(found, errors.LlmcliError) else None


def listed(provider: str, names: list[str], field: str) -> list[str]:
    """A model list, unless it came from a reply without its list at all (`{}`: a proxy, a
    wrong endpoint), which the SDKs take for an empty one: then a malformed reply."""
    from llmcli import transport

    if not names:
        reply = transport.reply_json()
        if not (isinstance(reply, dict) and isinstance(reply.get(field), list)):
            raise malformed(provider, f"a model list without its `{field}`")
    return names


def malformed(provider: str, what: str) -> errors.MalformedReply:
    """A reply that is not the provider's API, with what came back (content type, first bytes)."""
    from llmcli import transport

    return errors.MalformedReply(
        f"{provider} sent {what} ({transport.describe()})",
        "try again; if it persists, check the base URL points at the real API",
        provider=provider,
    )


def translate_common(provider: str, exc: BaseException, key_hint: str) -> errors.LlmcliError | None:
    """Failures that look the same whatever the SDK: raw transport errors and unparsable replies.

    anthropic and google-genai let raw `httpx2` exceptions escape (wire.md §0.4-0.5), and all
    three SDKs raise a bare `json.JSONDecodeError` on a malformed body.
    """
    ours = _ours(exc)
    if ours is not None:
        return ours
    module = type(exc).__module__.split(".")[0]
    if module in ("httpx2", "httpx", "httpcore", "httpcore2"):
        name = type(exc).__name__
        if "Timeout" in name:
            return errors.Timeout(
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
            return errors.BrokenOff(
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
        return malformed(provider, "a reply that is not valid JSON")
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
    ours = _ours(exc)
    if ours is not None:
        return ours
    if isinstance(exc, sdk.APIStatusError):  # type: ignore[attr-defined]
        detail, kind = _error_detail(exc.body, exc.message)
        status = exc.status_code
        if status < 400:
            # An error event inside a 200 stream (Anthropic `event: error`): not an HTTP status.
            return mid_stream(provider, detail, kind)
        return error_for_status(
            provider,
            status,
            detail,
            key_hint=key_hint,
            retry_after=parse_retry_after(exc.response.headers),
            kind=kind,
        )
    if isinstance(exc, sdk.APITimeoutError):  # type: ignore[attr-defined]
        return errors.Timeout(
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
        return mid_stream(provider, detail, kind)
    return translate_common(provider, exc, key_hint)


def mid_stream(provider: str, detail: str, kind: str | None) -> errors.LlmcliError:
    """An error event inside a stream: overloaded, or another failure of the provider's."""
    message = f"{provider} reported an error mid-stream ({kind or 'error'}): {short(detail)}"
    if kind in ("overloaded_error", "UNAVAILABLE"):
        return errors.Overloaded(message, "try again in a little while", provider=provider)
    return errors.StreamFailed(message, "try again", provider=provider)
