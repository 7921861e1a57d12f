"""OpenAI Chat Completions through the official `openai` SDK (imported only when used)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmcli.providers.base import Provider, translate_stainless
from llmcli.types import Chunk, FinishReason, Request, Response, Usage

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}


def _finish(raw: str | None) -> FinishReason:
    return FINISH_REASONS.get(raw or "", FinishReason.OTHER)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cached_input_tokens=getattr(prompt_details, "cached_tokens", None),
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None),
    )


class OpenAIProvider(Provider):
    name = "openai"
    key_env_vars = ("OPENAI_API_KEY",)
    base_url_env = "OPENAI_BASE_URL"
    default_model = "gpt-4o-mini"
    pricing_id = "openai"
    temperature_range = (0.0, 2.0)
    max_stop_sequences = 4

    def _client(self, timeout: float) -> Any:
        import openai

        # Retries are ours (one policy for every provider), so the SDK's are off.
        return openai.OpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=timeout,
            max_retries=0,
        )

    def params(self, request: Request) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.extend(m.to_dict() for m in request.messages)
        # max_completion_tokens replaces the deprecated max_tokens, which o-series models reject.
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_completion_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        if request.response_format == "json":
            params["response_format"] = {"type": "json_object"}
        return params

    def complete(self, request: Request) -> Response:
        from llmcli import errors

        with self._client(request.timeout) as client:
            reply = client.chat.completions.create(**self.params(request))
        if not reply.choices:
            raise errors.ProviderError("openai sent a reply with no choices", provider=self.name)
        choice = reply.choices[0]
        message = choice.message
        text = message.content or ""
        refusal = (getattr(message, "refusal", None) or "").strip() or None
        finish, raw = _finish(choice.finish_reason), choice.finish_reason
        if not text and refusal:
            # The model declined (a `refusal` instead of content): a filtered answer.
            finish, raw = FinishReason.CONTENT_FILTER, "refusal"
        return Response(
            text=text,
            provider=self.name,
            model=reply.model or request.model,
            usage=_usage(reply.usage),
            finish_reason=finish,
            raw_finish_reason=raw,
            request_id=reply.id,
            refusal=refusal,
        )

    def stream(self, request: Request) -> Iterator[Chunk]:
        params = self.params(request)
        # Without include_usage no chunk carries token counts (wire.md §5).
        params["stream_options"] = {"include_usage": True}
        with (
            self._client(request.timeout) as client,
            client.chat.completions.create(stream=True, **params) as events,
        ):
            # One rule with `complete`: a refusal with no text is a filtered answer, whatever
            # the finish reason; text with a refusal beside it is an answer (render warns).
            refused = answered = False
            for event in events:
                for choice in event.choices:
                    content = getattr(choice.delta, "content", None)
                    refusal = getattr(choice.delta, "refusal", None)
                    if refusal:
                        refused = refused or bool(refusal.strip())
                        yield Chunk(refusal=refusal, model=event.model, request_id=event.id)
                    if content:
                        answered = True
                        yield Chunk(text=content, model=event.model, request_id=event.id)
                    if choice.finish_reason:
                        filtered = refused and not answered
                        yield Chunk(
                            finish_reason=FinishReason.CONTENT_FILTER
                            if filtered
                            else _finish(choice.finish_reason),
                            raw_finish_reason="refusal" if filtered else choice.finish_reason,
                        )
                if event.usage is not None:
                    yield Chunk(usage=_usage(event.usage), model=event.model)

    def list_models(self, timeout: float) -> list[str]:

        with self._client(timeout) as client:
            return [model.id for model in client.models.list()]

    def translate_error(self, exc: BaseException):
        import openai

        return translate_stainless(openai, self.name, exc, self.key_hint())


PROVIDER = OpenAIProvider
