"""The providers' Batch APIs: one adapter module per protocol, and the registry of them.

An adapter turns llmcli's requests into one provider job and its results back into llmcli's
`Response`s. It builds nothing of its own: each request is the provider's `params()` (what a
live call sends), each answer goes through the provider's own reply parser (`_reply`), and each
SDK failure through its `translate_error`. So a batch answer reads, prices and fails like a
live one.

`ADAPTERS` names modules rather than importing them, and each module imports its SDK inside its
methods only: `batch --help` and `batch list` of finished jobs load no SDK. The adapters live
outside `llmcli.providers` because each imports its own provider's module, and provider modules
never import each other.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from llmcli import errors

if TYPE_CHECKING:
    from llmcli.providers.base import Provider
    from llmcli.types import Response

# Keyed by protocol: a named endpoint that speaks OpenAI's wire has OpenAI's Batch API.
ADAPTERS: dict[str, str] = {
    "openai": "llmcli.batchapi.openai",
    "anthropic": "llmcli.batchapi.anthropic",
    "gemini": "llmcli.batchapi.gemini",
}
MB = 1024 * 1024
#: Seconds one request to a Batch API may take (an upload of 200 MB included).
TIMEOUT = 300.0
T = TypeVar("T")


def supported(protocol: str) -> bool:
    """Whether a provider of this protocol has a Batch API llmcli can use."""
    return protocol in ADAPTERS


def adapter(provider: Provider) -> Adapter:
    """The Batch API adapter for a connected provider (ValueError: it has none)."""
    if provider.spec.protocol not in ADAPTERS:
        raise ValueError(provider.spec.protocol)
    module = importlib.import_module(ADAPTERS[provider.spec.protocol])
    return module.ADAPTER(provider)  # type: ignore[no-any-return]


class Status(NamedTuple):
    """What the provider says of a job, in llmcli's words and its own."""

    state: str  # pending | running | cancelling | ended | failed | expired | cancelled
    provider_state: str  # the provider's own word for it
    counts: dict[str, int | None]  # succeeded, errored, canceled, expired, processing (known ones)
    error: str | None = None  # why the whole job failed


class Result(NamedTuple):
    """One request's result: an answer, or why there is none."""

    custom_id: str
    response: Response | None = None
    error: errors.LlmcliError | None = None


def expired(provider: str) -> errors.ProviderError:
    return errors.ProviderError(
        f"{provider} did not answer this request within the job's 24 h window (expired)",
        "submit it again (a new job), or send it live with `llmcli batch run`",
        provider=provider,
    )


def canceled(provider: str) -> errors.ProviderError:
    return errors.ProviderError(
        f"the job was cancelled before {provider} answered this request",
        "submit it again (a new job), or send it live with `llmcli batch run`",
        provider=provider,
    )


class Adapter:
    """One protocol's Batch API. Subclasses set the limits and implement the methods."""

    #: The most requests one job may hold, and the most bytes of requests (as sent).
    max_requests: ClassVar[int | None]
    max_bytes: ClassVar[int]
    #: The limit's words, for the error that names it ("OpenAI's Batch API takes at most ...").
    limits_doc: ClassVar[str]

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.name = provider.name

    def entry(self, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """One request of the job, from the provider's `params()` for it."""
        raise NotImplementedError

    def submit(self, entries: Path, model: str, label: str) -> tuple[str, Status]:
        """Create the job from a JSONL file of `entry()`s; its id and first status."""
        raise NotImplementedError

    def status(self, job_id: str) -> Status:
        raise NotImplementedError

    def cancel(self, job_id: str) -> Status:
        raise NotImplementedError

    def results(self, job_id: str) -> Iterator[Result]:
        """Every result the finished job holds (in the provider's order, not the input's)."""
        raise NotImplementedError

    def call(self, action: Callable[[], T], *, retries: int = 3, download: bool = False) -> T:
        """Run one SDK request under the one retry policy (reads are retried; a create is
        not, `retries=0`: a create that timed out may have made a job, and a second would be
        paid twice), its failure translated as a live call's would be.

        A `download` (a results file: JSONL under any content type) is not vetted as JSON by
        `transport.guard`, which knows only JSON and event streams; the SDK's own timeout
        bounds it."""
        import contextlib

        from llmcli import transport
        from llmcli.retry import Retrier, RetryPolicy

        def attempt() -> T:
            guard = contextlib.nullcontext() if download else transport.guard(self.name, TIMEOUT)
            with guard:
                return action()

        return Retrier(RetryPolicy(retries), self.provider.translate_error).run(attempt)[0]


def field(value: Any, name: str) -> Any:
    """`name` of an SDK object or of the same thing as plain JSON (a result line), or None."""
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The requests written by `submit`'s check, one per line."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def http_error(provider: Provider, status: int, body: Any) -> errors.LlmcliError:
    """A request's error inside a job (an HTTP status and the API's error body), as the same
    status would be for a live call."""
    from llmcli.providers.base import _error_detail, error_for_status

    detail, kind = _error_detail(body, f"HTTP {status}")
    return error_for_status(provider.name, status, detail, key_hint=provider.key_hint(), kind=kind)
