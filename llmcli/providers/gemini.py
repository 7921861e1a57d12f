"""Google Gemini through the official `google-genai` SDK (imported only when used).

`google-generativeai`, the older SDK, reached end of life on 2025-11-30 and is not used.
Differences this module absorbs: the assistant role is called `model`, the system prompt is
`system_instruction`, the timeout is in milliseconds, and the SDK raises raw `httpx2` errors
for timeouts and dropped connections (wire.md §0.4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from llmcli import errors
from llmcli.providers.base import (
    LIST_TIMEOUT,
    MB,
    AttachmentLimits,
    Provider,
    ProviderSpec,
    as_sent,
    error_for_status,
    listed,
    malformed,
    mid_stream,
    parse_retry_after,
    translate_common,
)
from llmcli.types import (
    Attachment,
    Chunk,
    FinishReason,
    Message,
    Part,
    Request,
    Response,
    Text,
    Usage,
)

FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "LANGUAGE",
}


def _finish(raw: str | None, has_tool_call: bool = False) -> FinishReason:
    if has_tool_call:
        return FinishReason.TOOL_CALLS
    if raw == "STOP":
        return FinishReason.STOP
    if raw == "MAX_TOKENS":
        return FinishReason.LENGTH
    if raw in FILTERED:
        return FinishReason.CONTENT_FILTER
    return FinishReason.OTHER


def _enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)


def _usage(meta: Any) -> Usage | None:
    if meta is None:
        return None
    candidates = meta.candidates_token_count
    thoughts = meta.thoughts_token_count
    output = None
    if candidates is not None or thoughts is not None:
        # Thinking tokens are billed as output, as OpenAI's completion_tokens include reasoning.
        output = (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=meta.prompt_token_count,
        output_tokens=output,
        cached_input_tokens=meta.cached_content_token_count,
        reasoning_tokens=thoughts,
    )


def _read(reply: Any) -> tuple[str, str | None, bool]:
    """Text, raw finish reason and whether a tool was called, from one GenerateContentResponse."""
    candidates = reply.candidates or []
    if not candidates:
        feedback = getattr(reply, "prompt_feedback", None)
        block = _enum_value(getattr(feedback, "block_reason", None))
        # A blocked prompt has no candidates at all; report it as the filter it is.
        return "", (f"PROMPT_BLOCKED:{block}" if block else None), False
    candidate = candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    tool = any(p.function_call for p in parts)
    return text, _enum_value(candidate.finish_reason), tool


def _normalize(raw: str | None, tool: bool) -> FinishReason:
    if raw and raw.startswith("PROMPT_BLOCKED:"):
        return FinishReason.CONTENT_FILTER
    return _finish(raw, tool)


def _retry_delay(infos: list[Any]) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail (`"retryDelay": "20s"`), Gemini's Retry-After.

    Read by the parser `Retry-After` uses, so nonsense (`"-5s"`, `"NaNs"`) is None here too.
    """
    from llmcli.providers.base import parse_seconds

    for info in infos:
        delay = info.get("retryDelay") if isinstance(info, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            return parse_seconds(delay[:-1])
    return None


SPEC = ProviderSpec(
    name="gemini",
    protocol="gemini",
    default_model="gemini-2.5-flash",
    # google-genai prefers GOOGLE_API_KEY when both are set; we follow it so both agree.
    key_env_vars=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    base_url_env="GOOGLE_GEMINI_BASE_URL",
    pricing_id="google",
)


def _reply(reply: Any, provider: str, model: str) -> Response:
    """Our Response from a GenerateContentResponse; anything else is a malformed reply."""
    if not reply.candidates and getattr(reply, "prompt_feedback", None) is None:
        raise malformed(provider, "a reply with no answer in it (no candidates)")
    text, raw, tool = _read(reply)
    return Response(
        text=text,
        provider=provider,
        model=reply.model_version or model,
        usage=_usage(reply.usage_metadata) or Usage(),
        finish_reason=_normalize(raw, tool),
        raw_finish_reason=raw,
        request_id=reply.response_id,
    )


class _Replies:
    """Streamed GenerateContentResponses to our chunks (one rule for sync and async)."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.raw: str | None = None
        self.tool = False

    def read(self, reply: Any) -> Iterator[Chunk]:
        text, raw, tool = _read(reply)
        self.raw = raw or self.raw
        self.tool = self.tool or tool
        self.usage = _usage(reply.usage_metadata) or self.usage
        if text:
            yield Chunk(text=text, model=reply.model_version, request_id=reply.response_id)

    def end(self) -> Chunk:
        """Usage and finish reason come with the last chunk; there is no end-of-stream event."""
        raw, tool = self.raw, self.tool
        return Chunk(
            usage=self.usage,
            finish_reason=_normalize(raw, tool) if raw or tool else None,
            raw_finish_reason=raw,
        )


def _milliseconds(seconds: float) -> int:
    """google-genai's timeouts are whole milliseconds, and 0 means none at all: never send 0."""
    import math

    return max(1, math.ceil(seconds * 1000))


class GeminiProvider(Provider):
    """Gemini's Developer API through google-genai."""

    temperature_range = (0.0, 2.0)
    max_stop_sequences = 5
    max_seed = 2**31 - 1  # an int32 field in the API
    # No GIF ("Image understanding"). URLs are downloaded and sent inline: `fileData` takes
    # only the Files API's own URIs (wire-wave2.md §2.3).
    attachment_types = frozenset(
        {"image/png", "image/jpeg", "image/webp", "application/pdf", "text/plain"}
    )
    # "File input methods": inline data up to 100 MB a request, PDFs up to 50 MB;
    # 3,600 images a request ("Image understanding").
    attachment_limits = AttachmentLimits(
        max_images=3600, max_pdf_bytes=50 * MB, max_request_bytes=100 * MB
    )
    # google-genai never closes an httpx client it was given, so the provider closes its own.
    _http: Any = None  # the httpx2 client of `_client`
    _async_owner: Any = None  # the Client whose `.aio` is `_async_client`
    _async_http: Any = None  # the httpx2 client of `_async_client`

    def _sdk_client(self) -> tuple[Any, Any, Any]:
        """A genai Client, and the sync and async httpx2 clients it was given (ours to close)."""
        from google import genai
        from google.genai import types

        from llmcli import transport

        http, async_http = transport.client(), transport.async_client()
        # No retry_options: google-genai then makes exactly one attempt; retries are ours.
        options = types.HttpOptions(
            base_url=self.base_url, httpx_client=http, httpx_async_client=async_http
        )
        client = genai.Client(api_key=self._key(), vertexai=False, http_options=options)
        return client, http, async_http

    def client(self) -> Any:
        # Keep the client (a dropped Client closes its transport, wire.md §0.7).
        if self._client is None:
            self._client, self._http, _ = self._sdk_client()
        return self._client

    def close(self) -> None:
        http, self._http = self._http, None
        super().close()
        if http is not None:
            http.close()

    def async_client(self) -> Any:
        # A Client of its own for each event loop (`_kept_async_client`), kept whole: a dropped
        # Client closes its transport, `.aio` with it.
        client = self._kept_async_client()
        if client is None:
            self._async_owner, _, self._async_http = self._sdk_client()
            client = self._keep_async_client(self._async_owner.aio)
        return client

    async def _close_async(self, client: Any) -> None:
        http, self._async_http, self._async_owner = self._async_http, None, None
        await client.aclose()
        if http is not None:
            await http.aclose()

    def content(self, message: Message) -> list[dict[str, Any]]:
        return [self.part(p) for p in as_sent(message.parts)]

    def part(self, part: Part) -> dict[str, Any]:
        if isinstance(part, Text):
            return {"text": part.text}
        if isinstance(part, Attachment) and part.media_type in self.attachment_types:
            return {"inline_data": {"mime_type": part.media_type, "data": part.base64}}
        return super().part(part)

    def image_tokens(self, width: int, height: int) -> int | None:
        # "Image understanding": 258 tokens when both sides are at most 384 pixels, else 258
        # for each 768x768 tile it is cut into.
        import math

        if width <= 384 and height <= 384:
            return 258
        return 258 * math.ceil(width / 768) * math.ceil(height / 768)

    def params(self, request: Request) -> dict[str, Any]:
        # Plain dicts (the SDK validates them into its types) keep --dry-run free of the SDK import.
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": self.content(m)}
            for m in request.messages
        ]
        config: dict[str, Any] = {"max_output_tokens": request.max_tokens}
        if request.system is not None:
            config["system_instruction"] = request.system
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["top_p"] = request.top_p
        if request.stop:
            config["stop_sequences"] = list(request.stop)
        if request.seed is not None:
            config["seed"] = request.seed
        if request.response_format == "json":
            config["response_mime_type"] = "application/json"
        if request.schema is not None:
            from llmcli import schema

            # JSON Schema goes in `response_json_schema`, sent verbatim; `response_schema` is
            # Google's own OpenAPI subset, rewritten by the SDK (wire-wave2.md §1.3).
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = schema.for_provider(request.schema)
        return {"model": request.model, "contents": contents, "config": config}

    @classmethod
    def schema_refusal(cls, request: Request) -> errors.UsageError | None:
        from llmcli import schema

        return schema.model_refusal("gemini", request.provider, request.model)

    def _call(self, request: Request) -> dict[str, Any]:
        params = self.params(request)
        params["config"] = {
            **params["config"],
            "http_options": {"timeout": _milliseconds(request.timeout)},
        }
        return params

    def complete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = self.client().models.generate_content(**self._call(request))
            return _reply(reply, self.name, request.model)

    def stream(self, request: Request) -> Iterator[Chunk]:
        from llmcli import transport

        replies = _Replies()
        with transport.guard(self.name, request.timeout, "stream"):
            for reply in self.client().models.generate_content_stream(**self._call(request)):
                yield from replies.read(reply)
        yield replies.end()

    async def acomplete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = await self.async_client().models.generate_content(**self._call(request))
            return _reply(reply, self.name, request.model)

    async def astream(self, request: Request) -> AsyncIterator[Chunk]:
        from llmcli import transport

        replies = _Replies()
        with transport.guard(self.name, request.timeout, "stream"):
            stream = await self.async_client().models.generate_content_stream(**self._call(request))
            async for reply in stream:
                for chunk in replies.read(reply):
                    yield chunk
        yield replies.end()

    def list_models(self, timeout: float = LIST_TIMEOUT) -> list[str]:
        from llmcli import transport

        # Names come as `models/gemini-2.5-flash`; LLM_MODEL is usually written without the prefix.
        config = {"page_size": 1000, "http_options": {"timeout": _milliseconds(timeout)}}
        with transport.guard(self.name, timeout):
            pager = self.client().models.list(config=config)
            names = [(model.name or "").removeprefix("models/") for model in pager if model.name]
            return listed(self.name, names, "models")

    def translate_error(self, exc: BaseException) -> errors.LlmcliError | None:
        from google.genai import errors as genai_errors

        if isinstance(exc, genai_errors.APIError):
            detail = exc.message or str(exc)
            status = exc.code or 500
            if exc.response is not None and getattr(exc.response, "status_code", status) == 200:
                # An `{"error": ...}` chunk inside a stream that had begun well.
                return mid_stream(self.name, detail, exc.status or str(exc.code))
            # Any shape a proxy may send: `{"error": "Bad gateway"}` has no details to read.
            details = exc.details if isinstance(exc.details, dict) else {}
            inner = details.get("error")
            infos = inner.get("details") if isinstance(inner, dict) else None
            infos = infos if isinstance(infos, list) else []
            reasons = {d.get("reason") for d in infos if isinstance(d, dict)}
            # Gemini says 400 INVALID_ARGUMENT for a wrong key (wire.md §0.6): the reason tells.
            kind = "API_KEY_INVALID" if "API_KEY_INVALID" in reasons else exc.status
            retry_after = parse_retry_after(getattr(exc.response, "headers", None))
            if retry_after is None:
                retry_after = _retry_delay(infos)
            return error_for_status(
                self.name,
                status,
                detail,
                key_hint=self.key_hint(),
                retry_after=retry_after,
                kind=kind,
            )
        if isinstance(exc, genai_errors.UnknownApiResponseError):
            return malformed(self.name, "a reply that could not be read")
        return translate_common(self.name, exc, self.key_hint())


PROVIDER = GeminiProvider
