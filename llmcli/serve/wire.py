"""What `llmcli serve` reads and writes on the wire: request bodies in, OpenAI shapes out, and
our errors as HTTP statuses, all in one place.

Bodies are parsed here by hand rather than by FastAPI's pydantic models, so that every bad input
(a byte that is not UTF-8, JSON that does not parse, a field of the wrong type, an unknown role)
gets one OpenAI-style 400 that names the field, instead of a framework's 422 list.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from llmcli import errors, providers
from llmcli.types import FinishReason, Message, Response, Usage

MAX_BODY = 10 * 1024 * 1024  # bytes; a chat request is kilobytes, this is room for long prompts


class ApiError(Exception):
    """An HTTP error answer: status, OpenAI's error body, and any headers (`Retry-After`)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_error(exc: BaseException) -> ApiError:
    """Our error as the HTTP status that tells a client what to do (docs/serve.md#errors).

    Messages are our own one-line messages, already scrubbed of keys (`llmcli.errors`); an
    unexpected exception is never described beyond its type, so no traceback or value leaks.
    """
    if isinstance(exc, ApiError):
        return exc
    if not isinstance(exc, errors.LlmcliError):
        return ApiError(500, f"internal error ({type(exc).__name__})", "server_error")
    text = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    if isinstance(exc, errors.BudgetExceeded):
        return ApiError(429, text, "budget_exceeded", "budget_exceeded")
    if isinstance(exc, errors.UsageError):
        return bad(text)
    if isinstance(exc, errors.ConfigError):
        if exc.provider is not None:  # that provider has no usable key on this server
            return ApiError(
                404,
                f"provider {exc.provider} is not configured on this server: {exc.message}",
                "invalid_request_error",
                "provider_not_configured",
            )
        return ApiError(500, text, "server_error", "server_misconfigured")
    if isinstance(exc, errors.RateLimitError):
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        code = "insufficient_quota" if isinstance(exc, errors.QuotaExhausted) else "rate_limited"
        return ApiError(429, text, "rate_limit_error", code, headers=headers)
    if isinstance(exc, errors.AuthError):
        return ApiError(502, text, "upstream_error", "upstream_auth_refused")
    if isinstance(exc, errors.Timeout):
        return ApiError(504, text, "upstream_error", "upstream_timeout")
    if isinstance(exc, errors.NetworkError | errors.ProviderError):
        return ApiError(502, text, "upstream_error", "upstream_error")
    if isinstance(exc, errors.RequestRejected):
        if exc.status == 404:
            return ApiError(404, text, "invalid_request_error", "model_not_found")
        if exc.status == 413:
            return ApiError(413, text, "invalid_request_error", "request_too_large")
        code = "context_length_exceeded" if isinstance(exc, errors.ContextTooLong) else None
        return bad(text, code=code)
    return ApiError(500, text, "server_error")


# --- reading bodies ------------------------------------------------------------------------------


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or the 400 that says what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        raise bad(f"the body is not valid UTF-8 ({where})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise bad(f"the body is not valid JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise bad("the body is not valid JSON: nested too deeply") from None
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(data):
        raise bad(
            "the body is not valid text: a \\u escape names half of a UTF-16 surrogate pair "
            "(\\ud800-\\udfff) without the other half"
        )
    if not isinstance(data, dict):
        raise bad("the body must be a JSON object")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    """Whether a string in `data` holds half a surrogate pair: valid JSON (`"\\ud800"`), but no
    character, which no log, provider or client can encode. Only an escape makes one: UTF-8
    bytes cannot, and `parse_json` looks here only when the body has such an escape."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _typed(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """`data[name]` if present and not null, checked against `kind` (a bool is no number)."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise bad(f"'{name}' must be {what}", name)
    if not isinstance(value, kind):
        raise bad(f"'{name}' must be {what}, not {_json_type(value)}", name)
    return value


def _json_type(value: Any) -> str:
    for kind, name in (
        (bool, "a boolean"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
        (int, "a number"),
        (float, "a number"),
    ):
        if isinstance(value, kind):
            return name
    return "null"


def _positive_int(data: Mapping[str, Any], name: str) -> int | None:
    value = _typed(data, name, int, "an integer")
    if value is not None and value < 1:
        raise bad(f"'{name}' must be at least 1", name)
    return value


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = _typed(data, name, (int, float), "a number")
    return float(value) if value is not None else None


def _text(data: Mapping[str, Any], name: str) -> str | None:
    return _typed(data, name, str, "a string")


class Target(NamedTuple):
    """Which provider and model a request asked for (None: the server's default)."""

    provider: str | None
    model: str | None


_FAMILIES = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
    ("models/gemini-", "gemini"),
)


def target(model: str | None) -> Target:
    """`provider/model`, a bare name resolved by its family, or the default provider's model.

    A name no family claims goes to the default provider as given, so an alias from config.toml
    or an aggregator's `meta-llama/...` still works; its provider says 404 if it has no such model.
    """
    if model is None:
        return Target(None, None)
    prefix, slash, rest = model.partition("/")
    if slash and rest and providers.known(prefix.lower()):
        return Target(prefix.lower(), rest)
    lowered = model.lower()
    for start, provider in _FAMILIES:
        if lowered.startswith(start):
            return Target(provider, model)
    if lowered[:2] in ("o1", "o3", "o4") and (len(lowered) == 2 or lowered[2] == "-"):
        return Target("openai", model)
    if providers.known(lowered):  # a provider's name alone: its default model
        return Target(lowered, None)
    return Target(None, model)


def _content(value: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        pieces = []
        for number, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad(f"{where}.content[{number}]: only text parts are supported", where)
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"{where}.content[{number}].text must be a string", where)
            pieces.append(text)
        return "".join(pieces)
    raise bad(f"{where}.content must be a string or an array of text parts", where)


class Chat(NamedTuple):
    """A chat request, checked: what `core.prepare` needs, and how to answer."""

    messages: tuple[Message, ...]
    flags: dict[str, Any]
    stream: bool
    include_usage: bool
    target: Target


def chat_request(data: Mapping[str, Any]) -> Chat:
    """OpenAI Chat Completions' body as our messages and `prepare` flags."""
    raw = data.get("messages")
    if not isinstance(raw, list):
        raise bad("'messages' must be an array of messages", "messages")
    if not raw:
        raise bad("'messages' must not be empty", "messages")
    system: list[str] = []
    messages: list[Message] = []
    for number, item in enumerate(raw):
        where = f"messages[{number}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object", "messages")
        role = item.get("role")
        if role in ("system", "developer"):
            system.append(_content(item.get("content"), where))
        elif role in ("user", "assistant"):
            messages.append(Message(role, _content(item.get("content"), where)))
        else:
            raise bad(
                f"{where}.role {role!r} is not supported: use system, user or assistant", "messages"
            )
    if not messages:
        raise bad("'messages' needs at least one user or assistant message", "messages")
    if _positive_int(data, "n") not in (None, 1):
        raise bad("'n' must be 1: one answer per request", "n")
    if data.get("tools") or data.get("functions"):
        raise bad("tools and functions are not supported", "tools")
    stop = data.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad("'stop' must be a string or an array of strings", "stop")
    flags: dict[str, Any] = {
        "system": "\n\n".join(system) if system else None,
        "max_tokens": _positive_int(data, "max_completion_tokens")
        or _positive_int(data, "max_tokens"),
        "temperature": _number(data, "temperature"),
        "top_p": _number(data, "top_p"),
        "stop": tuple(stop) if stop else None,
        "seed": _typed(data, "seed", int, "an integer"),
        "tag": _text(data, "user"),
    }
    flags.update(_response_format(data.get("response_format")))
    stream = _typed(data, "stream", bool, "a boolean") or False
    options = _typed(data, "stream_options", dict, "an object") or {}
    include_usage = bool(_typed(options, "include_usage", bool, "a boolean"))
    model = _text(data, "model")
    return Chat(tuple(messages), flags, stream, include_usage, target(model))


def _response_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": "json"}
    if kind == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise bad("'response_format.json_schema.schema' must be an object", "response_format")
        return {"schema": schema}
    raise bad("'response_format.type' must be text, json_object or json_schema", "response_format")


class Prompt(NamedTuple):
    """A `POST /stream` request: the tutorial's one message, and a few options."""

    messages: tuple[Message, ...]
    flags: dict[str, Any]
    target: Target


def stream_request(data: Mapping[str, Any]) -> Prompt:
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise bad("'message' must be a non-empty string", "message")
    provider = _text(data, "provider")
    model = _text(data, "model")
    found = target(model) if provider is None else Target(provider.strip().lower(), model)
    if found.provider is not None and not providers.known(found.provider):
        raise ApiError(404, f"unknown provider {provider!r}", code="provider_not_found")
    flags = {
        "system": _text(data, "system"),
        "max_tokens": _positive_int(data, "max_tokens"),
        "temperature": _number(data, "temperature"),
        "tag": _text(data, "tag"),
    }
    return Prompt((Message("user", message),), flags, found)


# --- writing answers -----------------------------------------------------------------------------

_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.TOOL_CALLS: "tool_calls",
}


def finish_reason(response: Response) -> str:
    """OpenAI's vocabulary has no `error` or `other`: the answer ended, so `stop`."""
    return _FINISH.get(response.finish_reason, "stop")


def usage(found: Usage) -> dict[str, int] | None:
    """OpenAI's usage object; None (sent as null) when the provider did not report tokens:
    never zeros that would look like a free call."""
    if found.input_tokens is None or found.output_tokens is None:
        return None
    shaped: dict[str, Any] = {
        "prompt_tokens": found.input_tokens,
        "completion_tokens": found.output_tokens,
        "total_tokens": found.input_tokens + found.output_tokens,
    }
    if found.cached_input_tokens is not None:
        shaped["prompt_tokens_details"] = {"cached_tokens": found.cached_input_tokens}
    if found.reasoning_tokens is not None:
        shaped["completion_tokens_details"] = {"reasoning_tokens": found.reasoning_tokens}
    return shaped


def cost(response: Response) -> float | None:
    return float(response.cost_usd) if response.cost_usd is not None else None


def extra(response: Response, request_id: str | None) -> dict[str, Any]:
    """What llmcli adds to OpenAI's shape (clients ignore unknown fields): who answered, the
    cost, and the log's `request_uid` of the call (None when it is not logged). Not the row's
    id: that is known only once the row is written, which the answer does not wait for."""
    return {
        "provider": response.provider,
        "cost_usd": cost(response),
        "request_id": request_id,
        "attempts": response.attempts,
    }


def completion(
    cid: str, created: int, response: Response, request_id: str | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": response.text,
                    "refusal": response.refusal,
                },
                "logprobs": None,
                "finish_reason": finish_reason(response),
            }
        ],
        "usage": usage(response.usage),
        "llmcli": extra(response, request_id),
    }


def chunk(
    cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def sse(data: Any) -> bytes:
    """One Server-Sent Event; `[DONE]` as the bare word, as OpenAI ends its streams."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def sse_of_text(data: dict[str, Any], field: str) -> Callable[[str], bytes]:
    """`text -> sse(data)` with `data`'s `field` (an empty string, the last so named) set to the
    text: for the event sent once per token, whose JSON is built once; only the text is encoded
    per token (a dict built and dumped per token cost 4.3 us, this 0.8)."""
    whole = sse(data)
    cut = whole.rindex(b'"%s": ""' % field.encode()) + len(field) + 4
    head, tail = whole[:cut], whole[cut + 2 :]

    def event(text: str) -> bytes:
        return head + json.dumps(text, ensure_ascii=False).encode() + tail

    return event


def now() -> int:
    return int(time.time())
