"""Anthropic Messages through the official `anthropic` SDK (imported only when used).

Differences from OpenAI that this module absorbs: the system prompt is a top-level `system`
field, `max_tokens` is required, and since anthropic 1.0 the sampling options are no longer
arguments of `messages.create()`, so they travel in `extra_body` (wire.md §0.2).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llmcli import errors
from llmcli.providers.base import (
    LIST_TIMEOUT,
    MB,
    AttachmentLimits,
    Provider,
    ProviderSpec,
    listed,
    malformed,
    translate_stainless,
)
from llmcli.types import Attachment, Chunk, FinishReason, Part, Request, Response, Usage

FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
    "tool_use": FinishReason.TOOL_CALLS,
}


def _finish(raw: str | None) -> FinishReason:
    return FINISH_REASONS.get(raw or "", FinishReason.OTHER)


def _usage(usage: Any, previous: Usage | None = None) -> Usage:
    """Anthropic's `input_tokens` leaves out cached tokens; ours counts every input token.

    Its `output_tokens` already includes the thinking, which
    `output_tokens_details.thinking_tokens` only breaks down: that becomes our reasoning count,
    never added to the output a second time.
    Stream deltas repeat cumulative counts and may omit the input side, so a missing field keeps
    the previous value (overwrite, never add: wire.md §6).
    """
    previous = previous or Usage()
    if usage is None:
        return previous
    fresh = getattr(usage, "input_tokens", None)
    cache_read = getattr(usage, "cache_read_input_tokens", None)
    cache_write = getattr(usage, "cache_creation_input_tokens", None)
    # Writes kept an hour are billed higher than five-minute ones: `cache_creation` splits them.
    hour = getattr(getattr(usage, "cache_creation", None), "ephemeral_1h_input_tokens", None)
    if fresh is None:
        input_tokens, cached, written = (
            previous.input_tokens,
            previous.cached_input_tokens,
            previous.cache_write_tokens,
        )
    else:
        # Field by field: a delta that repeats the input but not the cache counts keeps them.
        cached = cache_read if cache_read is not None else previous.cached_input_tokens
        written = cache_write if cache_write is not None else previous.cache_write_tokens
        input_tokens = fresh + (cached or 0) + (written or 0)
    if hour is None:
        hour = previous.cache_write_1h_tokens
    output = getattr(usage, "output_tokens", None)
    thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output if output is not None else previous.output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=thinking if thinking is not None else previous.reasoning_tokens,
        cache_write_1h_tokens=hour,
    )


SPEC = ProviderSpec(
    name="anthropic",
    protocol="anthropic",
    default_model="claude-haiku-4-5",
    key_env_vars=("ANTHROPIC_API_KEY",),
    base_url_env="ANTHROPIC_BASE_URL",
    pricing_id="anthropic",
)


def _reply(reply: Any, provider: str, model: str) -> Response:
    """Our Response from a Message; a reply of any other shape is a malformed reply."""
    blocks = getattr(reply, "content", None)
    if not isinstance(blocks, list) or getattr(reply, "type", "message") != "message":
        raise malformed(provider, "a reply that is not a message")
    text = "".join(block.text for block in blocks if getattr(block, "type", None) == "text")
    return Response(
        text=text,
        provider=provider,
        model=reply.model or model,
        usage=_usage(reply.usage),
        finish_reason=_finish(reply.stop_reason),
        raw_finish_reason=reply.stop_reason,
        request_id=reply.id,
    )


class _Events:
    """Message stream events to our chunks (one rule for the sync and async streams)."""

    def __init__(self) -> None:
        self.usage = Usage()

    def read(self, event: Any) -> Iterator[Chunk]:
        kind = event.type
        if kind == "content_block_delta":
            if event.delta.type == "text_delta" and event.delta.text:
                yield Chunk(text=event.delta.text)
        elif kind == "message_start":
            self.usage = _usage(event.message.usage, self.usage)
            yield Chunk(model=event.message.model, request_id=event.message.id, usage=self.usage)
        elif kind == "message_delta":
            self.usage = _usage(event.usage, self.usage)
            raw = event.delta.stop_reason
            yield Chunk(
                usage=self.usage,
                finish_reason=_finish(raw) if raw else None,
                raw_finish_reason=raw,
            )


class AnthropicProvider(Provider):
    """Anthropic Messages (and servers that speak it)."""

    supports = frozenset({"temperature", "top_p", "stop", "schema"})
    temperature_range = (0.0, 1.0)
    attachment_types = frozenset(
        {"image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf", "text/plain"}
    )
    # "Vision" (5 MB an image, 100 images a request on 200k-context models) and "PDF
    # support" (32 MB a request, which counts the base64 form).
    attachment_limits = AttachmentLimits(
        max_images=100, max_image_bytes=5 * MB, max_pdf_bytes=32 * MB, max_request_bytes=32 * MB
    )
    url_types = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf"})

    def _new_client(self, *, asynchronous: bool) -> Any:
        import anthropic

        from llmcli import transport

        # Retries are ours, so the SDK's are off. An explicit timeout (given with every call)
        # also skips the SDK's "streaming is required" guard for a big max_tokens.
        options = {"api_key": self._key(), "base_url": self.base_url, "max_retries": 0}
        if asynchronous:
            return anthropic.AsyncAnthropic(**options, http_client=transport.async_client())
        return anthropic.Anthropic(**options, http_client=transport.client())

    def part(self, part: Part) -> dict[str, Any]:
        if isinstance(part, Attachment) and part.media_type in self.attachment_types:
            # Anthropic fetches a URL itself, images and PDFs alike: the request stays small.
            source: dict[str, Any] = (
                {"type": "url", "url": part.url}
                if part.url and part.media_type in self.url_types
                else {"type": "base64", "media_type": part.media_type, "data": part.base64}
            )
            if part.media_type == "application/pdf":
                block = {"type": "document", "source": source}
                return {**block, "title": part.name} if part.name else block
            return {"type": "image", "source": source}
        return super().part(part)

    def image_tokens(self, width: int, height: int) -> int | None:
        # "Vision": about width * height / 750 tokens; a larger image is first scaled down to
        # about 1.15 megapixels, which is about 1,600 tokens.
        return min(math.ceil(width * height / 750), 1600)

    def params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": self.content(m)} for m in request.messages],
        }
        if request.system is not None:
            params["system"] = request.system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        sampling: dict[str, float] = {}
        # Sent only when the user sets them: newer Claude models reject non-default values.
        if request.temperature is not None:
            sampling["temperature"] = request.temperature
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
        if sampling:
            params["extra_body"] = sampling
        if request.schema is not None:
            from llmcli import schema

            # Structured output, GA: `output_config.format`, no beta header (wire-wave2.md §1.2).
            sent = schema.for_provider(request.schema)
            params["output_config"] = {"format": {"type": "json_schema", "schema": sent}}
        return params

    @classmethod
    def schema_refusal(cls, request: Request) -> errors.UsageError | None:
        from llmcli import schema

        return schema.model_refusal(
            "anthropic", request.provider, request.model
        ) or schema.anthropic_refusal(request.provider, request.schema or "{}")

    def complete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = self.client().messages.create(**self.params(request), timeout=request.timeout)
            return _reply(reply, self.name, request.model)

    def stream(self, request: Request) -> Iterator[Chunk]:
        from llmcli import transport

        events = _Events()
        with (
            transport.guard(self.name, request.timeout, "stream"),
            self.client().messages.create(
                stream=True, **self.params(request), timeout=request.timeout
            ) as stream,
        ):
            for event in stream:
                yield from events.read(event)

    async def acomplete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = await self.async_client().messages.create(
                **self.params(request), timeout=request.timeout
            )
            return _reply(reply, self.name, request.model)

    async def astream(self, request: Request) -> AsyncIterator[Chunk]:
        from llmcli import transport

        events = _Events()
        with transport.guard(self.name, request.timeout, "stream"):
            stream = await self.async_client().messages.create(
                stream=True, **self.params(request), timeout=request.timeout
            )
            async with stream:
                async for event in stream:
                    for chunk in events.read(event):
                        yield chunk

    def list_models(self, timeout: float = LIST_TIMEOUT) -> list[str]:
        from llmcli import transport

        # The largest page the API allows, so one request usually lists them all.
        with transport.guard(self.name, timeout):
            pager = self.client().models.list(limit=1000, timeout=timeout)
            return listed(self.name, [model.id for model in pager], "data")

    def translate_error(self, exc: BaseException) -> errors.LlmcliError | None:
        import anthropic

        return translate_stainless(anthropic, self.name, exc, self.key_hint())


PROVIDER = AnthropicProvider
