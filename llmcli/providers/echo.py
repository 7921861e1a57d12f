"""An offline provider that repeats the prompt: no key, no network, no cost.

It exists so a new user can try every command at once and so scripts can be tested in CI for
free. It goes through the same core path as the real providers, and honours `--max-tokens`
(counted in words, finish reason `length`) and `--stop`, so scripts can exercise those paths too.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llmcli.providers.base import LIST_TIMEOUT, Provider, ProviderSpec
from llmcli.types import Chunk, FinishReason, Request, Response, Usage

SPEC = ProviderSpec(name="echo", protocol="echo", default_model="echo", remote=False)

_WORDS = re.compile(r"\s*\S+")


def _count(text: str | None) -> int:
    return len(text.split()) if text else 0


class EchoProvider(Provider):
    """Repeats the last user message's text; attachments are counted, never read (no limits:
    nothing is sent anywhere)."""

    attachment_types = frozenset(
        {"image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf", "text/plain"}
    )

    def params(self, request: Request) -> dict[str, Any]:
        return {
            "model": request.model,
            "system": request.system,
            "messages": [m.to_dict() for m in request.messages],
            "max_tokens": request.max_tokens,
            "stop": list(request.stop),
        }

    def _answer(self, request: Request) -> tuple[list[str], FinishReason, str]:
        prompt = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        raw = "end_turn"
        for stop in request.stop:
            if stop and stop in prompt:
                prompt, raw = prompt[: prompt.index(stop)], "stop_sequence"
        words = _WORDS.findall(prompt)
        if len(words) > request.max_tokens:
            words, raw = words[: request.max_tokens], "max_tokens"
        finish = FinishReason.LENGTH if raw == "max_tokens" else FinishReason.STOP
        return words, finish, raw

    def _usage(self, request: Request, words: list[str]) -> Usage:
        prompt_words = _count(request.system) + sum(_count(m.text) for m in request.messages)
        return Usage(input_tokens=prompt_words, output_tokens=len(words))

    def complete(self, request: Request) -> Response:
        words, finish, raw = self._answer(request)
        return Response(
            text="".join(words).strip(),
            provider=self.name,
            model=request.model,
            usage=self._usage(request, words),
            finish_reason=finish,
            raw_finish_reason=raw,
        )

    def stream(self, request: Request) -> Iterator[Chunk]:
        words, finish, raw = self._answer(request)
        for index, word in enumerate(words):
            yield Chunk(text=word.lstrip() if index == 0 else word)
        yield Chunk(usage=self._usage(request, words), finish_reason=finish, raw_finish_reason=raw)

    async def acomplete(self, request: Request) -> Response:
        return self.complete(request)

    async def astream(self, request: Request) -> AsyncIterator[Chunk]:
        for chunk in self.stream(request):
            yield chunk

    def list_models(self, timeout: float = LIST_TIMEOUT) -> list[str]:
        return ["echo"]


PROVIDER = EchoProvider
