"""Anthropic Messages through the official `anthropic` SDK (imported only when used).

Differences from OpenAI that this module absorbs: the system prompt is a top-level `system`
field, `max_tokens` is required, and since anthropic 1.0 the sampling options are no longer
arguments of `messages.create()`, so they travel in `extra_body` (wire.md §0.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmcli.providers.base import Provider, translate_stainless
from llmcli.types import Chunk, FinishReason, Request, Response, Usage

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
    if fresh is None:
        input_tokens, cached, written = (
            previous.input_tokens,
            previous.cached_input_tokens,
            previous.cache_write_tokens,
        )
    else:
        input_tokens = fresh + (cache_read or 0) + (cache_write or 0)
        cached, written = cache_read, cache_write
    output = getattr(usage, "output_tokens", None)
    thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output if output is not None else previous.output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=thinking if thinking is not None else previous.reasoning_tokens,
    )


class AnthropicProvider(Provider):
    name = "anthropic"
    key_env_vars = ("ANTHROPIC_API_KEY",)
    base_url_env = "ANTHROPIC_BASE_URL"
    default_model = "claude-haiku-4-5"
    pricing_id = "anthropic"
    supports = frozenset({"temperature", "top_p", "stop"})
    temperature_range = (0.0, 1.0)

    def _client(self, timeout: float) -> Any:
        import anthropic

        # An explicit timeout also skips the SDK's "streaming is required" guard for big max_tokens.
        return anthropic.Anthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            max_retries=0,
        )

    def params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [m.to_dict() for m in request.messages],
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
        return params

    def complete(self, request: Request) -> Response:
        with self._client(request.timeout) as client:
            reply = client.messages.create(**self.params(request))
        text = "".join(block.text for block in reply.content if block.type == "text")
        return Response(
            text=text,
            provider=self.name,
            model=reply.model or request.model,
            usage=_usage(reply.usage),
            finish_reason=_finish(reply.stop_reason),
            raw_finish_reason=reply.stop_reason,
            request_id=reply.id,
        )

    def stream(self, request: Request) -> Iterator[Chunk]:
        usage = Usage()
        with (
            self._client(request.timeout) as client,
            client.messages.create(stream=True, **self.params(request)) as events,
        ):
            for event in events:
                kind = event.type
                if kind == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield Chunk(text=event.delta.text)
                elif kind == "message_start":
                    usage = _usage(event.message.usage, usage)
                    yield Chunk(model=event.message.model, request_id=event.message.id, usage=usage)
                elif kind == "message_delta":
                    usage = _usage(event.usage, usage)
                    raw = event.delta.stop_reason
                    yield Chunk(
                        usage=usage,
                        finish_reason=_finish(raw) if raw else None,
                        raw_finish_reason=raw,
                    )

    def list_models(self, timeout: float) -> list[str]:

        # The largest page the API allows, so one request usually lists them all.
        with self._client(timeout) as client:
            return [model.id for model in client.models.list(limit=1000)]

    def translate_error(self, exc: BaseException):
        import anthropic

        return translate_stainless(anthropic, self.name, exc, self.key_hint())


PROVIDER = AnthropicProvider
