"""The response cache: an answer already paid for, given again for the same request.

Off unless asked for (`--cache [TTL]`, `LLMCLI_CACHE`), because a model asked twice may rightly
answer differently. When on, a request is identified by a SHA-256 of everything that decides
its answer (`key`); a complete answer (`cacheable`) is kept in the log database under that key,
and an identical request later gets it back with no network call, no SDK loaded, and no cost.
The entries live behind the log's interface (`CallLog.cache_get` and friends), so a second
backend keeps them too.

A TTL is how old a reused answer may be, judged by the command that reads it: `--cache 1h`
never gets an answer stored two hours ago, whatever TTL stored it, and a stale entry is simply
replaced by the next answer paid for.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from llmcli.calllog import CacheEntry
    from llmcli.config import Environment
    from llmcli.core import Call
    from llmcli.types import Response

ENV = "LLMCLI_CACHE"
# Bumped when the key's ingredients change, so an old entry can never answer a new kind of key.
KEY_VERSION = 2  # 2: the structured-output schema joined the key
_TTL = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_TTL_S = 100 * 365 * 86400  # a longer one is a typo; `on` means no expiry
_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")
TTL_HELP = "a TTL such as 30s, 10m, 1h, 7d or 2w, or on (no expiry) or off"


class Policy(NamedTuple):
    """Caching is on: answers are stored, and reused while younger than `max_age_s`."""

    max_age_s: int | None = None  # None: an answer of any age is reused


def looks_like_ttl(text: str) -> bool:
    """Whether a word after a bare `--cache` is its TTL (`1h`) rather than the prompt."""
    return _TTL.match(text) is not None


def parse(raw: str) -> Policy | None:
    """`1h`, `7d`... (reuse answers up to that age), `on`/`1` (any age), `off`/`0` (None).

    ValueError says what is wrong, for the caller to word as a usage or configuration error.
    """
    text = str(raw).strip().lower()
    if text in _ON:
        return Policy()
    if text in _OFF:
        return None
    match = _TTL.match(text)
    if match is None:
        raise ValueError(f"must be {TTL_HELP}")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be a TTL above zero (off turns the cache off)")
    if seconds > MAX_TTL_S:
        raise ValueError("must be at most 100 years (on keeps answers with no expiry)")
    return Policy(seconds)


def resolve(flag: str | None, no_cache: bool, env: Environment) -> Policy | None:
    """The cache policy for this command: `--no-cache` wins, then `--cache`, then LLMCLI_CACHE.

    `--no-cache` wins rather than clashing, so a script or alias that always passes `--cache`
    (or a shell that exports LLMCLI_CACHE) can still be overridden for one call.
    """
    from llmcli import errors, redact

    if no_cache:
        return None
    if flag is not None:
        try:
            return parse(flag)
        except ValueError as exc:
            shown = redact.mask_keys(flag)
            raise errors.UsageError(f"invalid value for --cache: {shown!r} {exc}") from None
    found = env.lookup(ENV)
    if found is None:
        return None
    raw, source, _ = found
    try:
        return parse(raw)
    except ValueError as exc:
        where = f" (from {source})" if source.kind == ".env" else ""
        raise errors.ConfigError(
            f"invalid {ENV}={redact.mask_keys(raw)!r}{where}: {exc}",
            f"Set it with: export {ENV}=1h",
        ) from None


def key(call: Call) -> str:
    """The SHA-256 (hex) of the exact request, as canonical JSON. Never the key: the endpoint
    is the base URL as `--dry-run` shows it, without credentials or query string.

    Every option that changes the answer is in it; those that only change how it is fetched
    (timeout, retries, tag, fallbacks) are not, so a retry-happy script still hits.
    """
    import hashlib
    import json

    from llmcli import redact

    request = call.request
    endpoint = call.provider.base_url
    options: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "seed": request.seed,
        "response_format": request.response_format,
        # The schema's compact JSON text, as one string: its properties' order is part of it
        # (models write them in that order), so the outer sort_keys must not reorder them.
        "schema": request.schema,
    }
    data = {
        "version": KEY_VERSION,
        "provider": request.provider,
        "endpoint": redact.display_url(endpoint) if endpoint else None,
        "model": request.model,
        "system": request.system,
        # Attachments appear by their SHA-256, type and name (what is sent), not by where they
        # were read from: the same file copied elsewhere is the same request.
        "messages": [_as_sent(m.to_dict()) for m in request.messages],
        "options": options,
    }
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _as_sent(message: dict[str, Any]) -> dict[str, Any]:
    content = message["content"]
    if isinstance(content, list):
        content = [{k: v for k, v in part.items() if k != "source"} for part in content]
    return {**message, "content": content}


def cacheable(response: Response, problem: object) -> bool:
    """Only a complete answer is kept: finished with `stop`, not judged a problem, not a
    refusal, not empty. A truncated, filtered, failed or interrupted one never is."""
    from llmcli.types import FinishReason

    return (
        problem is None
        and response.finish_reason is FinishReason.STOP
        and not response.refusal
        and bool(response.text)
    )


def entry(cache_key: str, response: Response) -> CacheEntry:
    """What is stored for an answer: enough to give it back, and what it cost."""
    from llmcli.calllog import CacheEntry, utc_now

    stored = {
        "text": response.text,
        "model": response.model,
        "requested_model": response.requested_model,
        "finish_reason": response.finish_reason.value,
        "raw_finish_reason": response.raw_finish_reason,
        "usage": response.usage._asdict(),
        "request_id": response.request_id,
    }
    if response.parsed is not None:  # a schema's answer, checked when it was stored
        stored["parsed"] = response.parsed
    return CacheEntry(
        cache_key, utc_now(), response.provider, response.model, stored, response.cost_usd
    )


def answer(found: CacheEntry) -> Response:
    """The stored answer as this call's response: no tokens used and nothing paid (cost $0),
    the stored call's cost as `saved_usd` (None when its price was unknown)."""
    from decimal import Decimal

    from llmcli.types import FinishReason, Response, Usage

    stored = found.response
    return Response(
        text=str(stored["text"]),
        provider=found.provider,
        model=str(stored.get("model") or found.model or ""),
        usage=Usage(input_tokens=0, output_tokens=0),
        finish_reason=FinishReason(stored.get("finish_reason", "stop")),
        raw_finish_reason=stored.get("raw_finish_reason"),
        requested_model=stored.get("requested_model"),
        cost_usd=Decimal(0),
        price_source="cache",
        attempts=0,
        request_id=stored.get("request_id"),
        cached=True,
        saved_usd=found.cost_usd,
        parsed=stored.get("parsed"),
    )
