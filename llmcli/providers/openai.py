"""OpenAI Chat Completions through the official `openai` SDK (imported only when used)."""

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
    listed,
    malformed,
    translate_stainless,
)
from llmcli.types import Attachment, Chunk, FinishReason, Part, Request, Response, Usage

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


SPEC = ProviderSpec(
    name="openai",
    protocol="openai",
    default_model="gpt-4o-mini",
    key_env_vars=("OPENAI_API_KEY",),
    base_url_env="OPENAI_BASE_URL",
    pricing_id="openai",
)


def _reply(reply: Any, provider: str, model: str) -> Response:
    """Our Response from a ChatCompletion; a reply of any other shape is a malformed reply."""
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
        raise malformed(provider, "a reply with no answer in it (no choices)")
    choice = choices[0]
    message = choice.message
    text = message.content or ""
    refusal = (getattr(message, "refusal", None) or "").strip() or None
    finish, raw = _finish(choice.finish_reason), choice.finish_reason
    if not text and refusal:
        # The model declined (a `refusal` instead of content): a filtered answer.
        finish, raw = FinishReason.CONTENT_FILTER, "refusal"
    return Response(
        text=text,
        provider=provider,
        model=reply.model or model,
        usage=_usage(reply.usage),
        finish_reason=finish,
        raw_finish_reason=raw,
        request_id=reply.id,
        refusal=refusal,
    )


def _json_schema(schema_text: str) -> dict[str, Any]:
    """`response_format` for a schema: strict when strict mode takes it (wire-wave2.md §1.1),
    otherwise the schema still guides the model and llmcli's own check decides."""
    from llmcli import schema

    sent = schema.for_provider(schema_text)
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema.openai_name(sent),
            "schema": sent,
            "strict": not schema.openai_strict_problems(sent),
        },
    }


class _Fields:
    """A JSON object read like the SDK's models: `obj.field`, None when the field is absent
    (the models' default), nested objects likewise. Anything but an object stays as it is, so
    `_reply` still calls a reply of another shape malformed."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @staticmethod
    def of(value: Any) -> Any:
        if isinstance(value, dict):
            return _Fields(value)
        if isinstance(value, list):
            return [_Fields.of(item) for item in value]
        return value

    def __getattr__(self, name: str) -> Any:
        return _Fields.of(self._data.get(name))


class _Chunks:
    """Chat completion chunks to our chunks (one rule for the sync and async streams).

    A refusal with no text is a filtered answer, whatever the finish reason; text with a
    refusal beside it is an answer (render warns).
    """

    def __init__(self) -> None:
        self.refused = self.answered = False

    def read(self, event: Any) -> Iterator[Chunk]:
        for choice in event.choices or ():
            content = getattr(choice.delta, "content", None)
            refusal = getattr(choice.delta, "refusal", None)
            if refusal:
                self.refused = self.refused or bool(refusal.strip())
                yield Chunk(refusal=refusal, model=event.model, request_id=event.id)
            if content:
                self.answered = True
                yield Chunk(text=content, model=event.model, request_id=event.id)
            if choice.finish_reason:
                filtered = self.refused and not self.answered
                yield Chunk(
                    finish_reason=FinishReason.CONTENT_FILTER
                    if filtered
                    else _finish(choice.finish_reason),
                    raw_finish_reason="refusal" if filtered else choice.finish_reason,
                )
        if event.usage is not None:
            yield Chunk(usage=_usage(event.usage), model=event.model)


def _text_of(event: Any) -> str | None:
    """The text of a streamed chunk of the usual shape (one choice with a text delta, no refusal,
    no finish reason, no usage), read straight from its JSON; None for any other shape, which
    `_Chunks.read` reads. Nearly every event of a stream is of this shape, and wrapping each in
    `_Fields` cost more than the rest of llmcli's work on it (docs/performance.md, "serve")."""
    if type(event) is not dict or event.get("usage") is not None:
        return None
    choices = event.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason"):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or delta.get("refusal"):
        return None
    content = delta.get("content")
    if content is None:
        return ""
    return content if type(content) is str else None


class OpenAIProvider(Provider):
    """OpenAI Chat Completions, and any server that speaks it (a named endpoint reuses this)."""

    temperature_range = (0.0, 2.0)
    max_stop_sequences = 4
    attachment_types = frozenset(
        {"image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf", "text/plain"}
    )
    # "Images and vision" (20 MB an image, 500 images and 50 MB of them a request); "File
    # inputs" (PDFs: 32 MB of files a request).
    attachment_limits = AttachmentLimits(
        max_images=500, max_image_bytes=20 * MB, max_pdf_bytes=32 * MB, max_request_bytes=50 * MB
    )
    # It fetches image URLs itself; Chat Completions takes no PDF by URL (wire-wave2.md §2.1).
    url_types = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})

    def _new_client(self, *, asynchronous: bool) -> Any:
        import openai

        from llmcli import transport

        # Retries are ours (one policy for every provider), so the SDK's are off.
        options = {"api_key": self._key(), "base_url": self.base_url, "max_retries": 0}
        if asynchronous:
            return openai.AsyncOpenAI(**options, http_client=transport.async_client())
        return openai.OpenAI(**options, http_client=transport.client())

    def part(self, part: Part) -> dict[str, Any]:
        if isinstance(part, Attachment):
            url = f"data:{part.media_type};base64,{part.base64}"
            if part.media_type.startswith("image/") and part.media_type in self.attachment_types:
                if part.url and part.media_type in self.url_types:
                    url = part.url  # fetched by OpenAI: the request stays small
                return {"type": "image_url", "image_url": {"url": url}}
            if part.media_type == "application/pdf":
                return {
                    "type": "file",
                    "file": {"filename": part.name or "file.pdf", "file_data": url},
                }
        return super().part(part)

    def params(self, request: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": self.content(m)} for m in request.messages)
        # OpenAI's max_completion_tokens replaces the deprecated max_tokens, which o-series
        # models reject; the servers that speak OpenAI's wire (Ollama, LM Studio, vLLM) read
        # max_tokens, and some ignore the newer name, so a named endpoint is sent that.
        limit = "max_completion_tokens" if self.spec.name == "openai" else "max_tokens"
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            limit: request.max_tokens,
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
        if request.schema is not None:
            params["response_format"] = _json_schema(request.schema)
        return params

    @classmethod
    def schema_refusal(cls, request: Request) -> errors.UsageError | None:
        from llmcli import schema

        # Only OpenAI's own models are known by name; a named endpoint is sent the schema as
        # OpenAI would be, and its server decides.
        if request.provider != "openai":
            return None
        return schema.model_refusal("openai", request.provider, request.model)

    def _stream_params(self, request: Request) -> dict[str, Any]:
        # Without include_usage no chunk carries token counts (wire.md §5).
        return {**self.params(request), "stream": True, "stream_options": {"include_usage": True}}

    def complete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = self.client().chat.completions.create(
                **self.params(request), timeout=request.timeout
            )
            return _reply(reply, self.name, request.model)

    def stream(self, request: Request) -> Iterator[Chunk]:
        from llmcli import transport

        chunks = _Chunks()
        with (
            transport.guard(self.name, request.timeout, "stream"),
            self.client().chat.completions.create(
                **self._stream_params(request), timeout=request.timeout
            ) as events,
        ):
            for event in events:
                yield from chunks.read(event)

    # The async path (serve, batch) posts the same body through the same client, but as plain
    # JSON: `chat.completions.create` walks every parameter against its TypedDicts and builds a
    # pydantic model of the reply and of every streamed event, about a third of the SDK's CPU
    # time per call (docs/performance.md, "serve"). Auth, headers, timeouts, the status-to-error
    # mapping and the SSE decoding (error events included) are still the SDK's; `_Fields` lets
    # `_reply` and `_Chunks` read the JSON as they read the models.

    async def acomplete(self, request: Request) -> Response:
        from llmcli import transport

        with transport.guard(self.name, request.timeout):
            reply = await self.async_client().post(
                "/chat/completions",
                body=self.params(request),
                cast_to=object,
                options={"timeout": request.timeout, "security": {"bearer_auth": True}},
            )
            return _reply(_Fields.of(reply), self.name, request.model)

    async def astream(self, request: Request) -> AsyncIterator[Chunk]:
        import openai

        from llmcli import transport

        chunks = _Chunks()
        with transport.guard(self.name, request.timeout, "stream"):
            events = await self.async_client().post(
                "/chat/completions",
                body=self._stream_params(request),
                cast_to=object,
                options={"timeout": request.timeout, "security": {"bearer_auth": True}},
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async with events:
                async for event in events:
                    text = _text_of(event)
                    if text is None:
                        for chunk in chunks.read(_Fields.of(event)):
                            yield chunk
                    elif text:
                        chunks.answered = True
                        yield Chunk(text=text, model=event.get("model"), request_id=event.get("id"))

    def list_models(self, timeout: float = LIST_TIMEOUT) -> list[str]:
        from llmcli import transport

        with transport.guard(self.name, timeout):
            names = [model.id for model in self.client().models.list(timeout=timeout)]
            return listed(self.name, names, "data")

    def translate_error(self, exc: BaseException) -> errors.LlmcliError | None:
        import openai

        return translate_stainless(openai, self.name, exc, self.key_hint())


PROVIDER = OpenAIProvider
