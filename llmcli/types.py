"""The provider-neutral vocabulary every part of llmcli speaks.

They are immutable named tuples so a request or an answer can be logged, compared and printed
as JSON without knowing which vendor produced it. Named tuples rather than frozen dataclasses:
a frozen dataclass writes and compiles its methods when its class is created (about 1 ms a
class here, a fifth of that for a named tuple), and these classes, with those of `config`,
`retry`, `pricing` and `core`, are created on every command's way to its first token.
This module imports nothing of ours.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from decimal import Decimal

Role = Literal["user", "assistant"]


class Text(NamedTuple):
    """A piece of text in a message."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


class Attachment(NamedTuple):
    """A file sent with a message: an image, a PDF or a text file, as bytes with their media type.

    The log keeps it by reference (`to_dict`: type, name, size, SHA-256 and where it came
    from), never the bytes: `-c` reads it again from `source` and checks the hash.
    """

    media_type: str
    data: bytes
    name: str | None = None
    #: Where it was read from: a path, an http(s) URL, or "-" (standard input); None = given
    #: as bytes by library code. A provider that fetches URLs itself is sent the URL.
    source: str | None = None

    @property
    def url(self) -> str | None:
        """The URL it was fetched from, if it came from one."""
        source = self.source or ""
        return source if source.startswith(("http://", "https://")) else None

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.data).hexdigest()

    @property
    def base64(self) -> str:
        import base64

        return base64.b64encode(self.data).decode("ascii")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "attachment",
            "media_type": self.media_type,
            "name": self.name,
            "bytes": len(self.data),
            "sha256": self.sha256,
            # Only when known, so a reference made without one keeps its old shape.
            **({"source": self.source} if self.source is not None else {}),
        }


Part = Text | Attachment


class Message(NamedTuple):
    """One turn of a conversation. The system prompt is not a message: see `Request.system`.

    `content` is plain text, or a tuple of parts (text and attachments) in the order given.
    """

    role: Role
    content: str | tuple[Part, ...]

    @property
    def parts(self) -> tuple[Part, ...]:
        return (Text(self.content),) if isinstance(self.content, str) else self.content

    @property
    def text(self) -> str:
        """The message's text, without its attachments."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, Text))

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(p for p in self.parts if isinstance(p, Attachment))

    def to_dict(self) -> dict[str, Any]:
        """`{"role": ..., "content": ...}`: plain text as a string, parts as a list of dicts.

        The shape the log stores; attachments appear by reference (`Attachment.to_dict`).
        """
        if isinstance(self.content, str):
            return {"role": self.role, "content": self.content}
        return {"role": self.role, "content": [p.to_dict() for p in self.content]}


class FinishReason(str, enum.Enum):  # noqa: UP042 (StrEnum would change its str(), which is printed)
    """Why the model stopped, normalized across providers (the raw value is kept beside it)."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"
    OTHER = "other"

    def __str__(self) -> str:  # so f-strings and JSON show "length", not "FinishReason.LENGTH"
        return self.value


class Request(NamedTuple):
    """Everything needed to ask one provider for one completion.

    `None` means "not set by the user": the provider's own default applies and nothing is sent.
    """

    provider: str
    model: str
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int = 1000
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: Literal["text", "json"] = "text"
    timeout: float = 60.0
    retries: int = 3
    #: The JSON Schema the answer must match (`--schema`), as compact JSON text: hashable, and
    #: exactly what the response cache keys on. None = free text.
    schema: str | None = None

    def options_set(self) -> list[str]:
        """Names of the optional sampling/format options the user asked for (for capability checks)."""
        names = []
        if self.temperature is not None:
            names.append("temperature")
        if self.top_p is not None:
            names.append("top_p")
        if self.stop:
            names.append("stop")
        if self.seed is not None:
            names.append("seed")
        if self.response_format == "json":
            names.append("response_format")
        if self.schema is not None:
            names.append("schema")
        return names


class Usage(NamedTuple):
    """Token counts as the provider reported them. `None` means not reported, never zero."""

    input_tokens: int | None = None  # every input token, cached or not
    output_tokens: int | None = None  # every output token, reasoning included
    cached_input_tokens: int | None = None  # of input_tokens, read from the prompt cache
    cache_write_tokens: int | None = None  # of input_tokens, written to it (billed higher)
    reasoning_tokens: int | None = None  # of output_tokens, spent thinking
    #: Of cache_write_tokens, those kept an hour rather than five minutes (Anthropic bills them
    #: higher still). Last, so that positional construction keeps its meaning.
    cache_write_1h_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def to_dict(self) -> dict[str, int | None]:
        data: dict[str, int | None] = self._asdict()
        data["total_tokens"] = self.total_tokens
        return data


class Chunk(NamedTuple):
    """A piece of a streamed answer. The last chunks may carry only usage or a finish reason."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    model: str | None = None
    request_id: str | None = None
    refusal: str = ""  # a piece of the model's refusal (OpenAI), sent instead of answer text


class Response(NamedTuple):
    """A complete answer, assembled by the core whether it came in one piece or streamed."""

    text: str
    provider: str
    model: str
    usage: Usage = Usage()
    finish_reason: FinishReason = FinishReason.STOP
    raw_finish_reason: str | None = None
    requested_model: str | None = None
    cost_usd: Decimal | None = None  # exact (llmcli.money); None = the price is unknown
    price_source: str | None = None
    duration_ms: int | None = None
    ttft_ms: int | None = None
    attempts: int = 1
    request_id: str | None = None
    refusal: str | None = None  # why the model declined, in its words (OpenAI), when it did
    cached: bool = False  # given again from the response cache: nothing was sent or paid
    saved_usd: Decimal | None = None  # what a cached answer first cost (None: unknown)
    #: Under a schema: the answer parsed, once it has been checked against the schema.
    parsed: Any = None
    #: Under a schema: why the answer is no answer (not JSON, not matching, truncated), or None.
    schema_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape: stable field names that scripts can rely on."""
        return {
            "content": self.text,
            "provider": self.provider,
            "model": self.model,
            "requested_model": self.requested_model,
            "finish_reason": self.finish_reason.value,
            "raw_finish_reason": self.raw_finish_reason,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "ttft_ms": self.ttft_ms,
            "attempts": self.attempts,
            "id": self.request_id,
            "refusal": self.refusal,
            "cached": self.cached,
            "saved_usd": self.saved_usd,
        }
