"""Anthropic's Message Batches (wire-wave2.md §3.2). The SDK is imported inside the methods only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmcli import errors
from llmcli.batchapi import (
    MB,
    TIMEOUT,
    Adapter,
    Result,
    Status,
    canceled,
    expired,
    field,
    http_error,
    read_entries,
)
from llmcli.providers.anthropic import _reply

# The HTTP status each error type has on a live call (Anthropic's "Errors" page), so an errored
# request in a batch maps to the same error class and exit code as it would live.
STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatches(Adapter):
    # "Batch processing": at most 100,000 requests or 256 MB per batch.
    max_requests = 100_000
    max_bytes = 256 * MB
    limits_doc = "100,000 requests and 256 MB per batch"

    def entry(self, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        # `params` goes to the API untouched (no SDK keywords): what `messages.create()` sends
        # as `extra_body` (temperature, top_p) belongs in the body itself.
        body = {k: v for k, v in params.items() if k != "extra_body"}
        body.update(params.get("extra_body") or {})
        return {"custom_id": custom_id, "params": body}

    def submit(self, entries: Path, model: str, label: str) -> tuple[str, Status]:
        client = self.provider.client()
        requests = list(read_entries(entries))
        batch = self.call(lambda: client.messages.batches.create(requests=requests), retries=0)
        return batch.id, self._status(batch)

    def _status(self, batch: Any) -> Status:
        raw = batch.processing_status or "in_progress"
        state = {"in_progress": "running", "canceling": "cancelling", "ended": "ended"}.get(
            raw, raw
        )
        if raw == "ended" and getattr(batch, "cancel_initiated_at", None):
            state = "cancelled"
        counts = batch.request_counts
        found: dict[str, int | None] = {}
        if counts is not None:
            found = {
                name: field(counts, name)
                for name in ("processing", "succeeded", "errored", "canceled", "expired")
            }
        return Status(state, raw, found)

    def status(self, job_id: str) -> Status:
        client = self.provider.client()
        return self._status(self.call(lambda: client.messages.batches.retrieve(job_id)))

    def cancel(self, job_id: str) -> Status:
        client = self.provider.client()
        return self._status(self.call(lambda: client.messages.batches.cancel(job_id)))

    def results(self, job_id: str) -> Iterator[Result]:
        client = self.provider.client()
        # The SDK decodes the results JSONL as it arrives: read one line at a time (100,000
        # answers are never held at once), a failure midway translated as any other.
        lines = self.call(
            lambda: client.messages.batches.results(job_id, timeout=TIMEOUT), download=True
        )
        try:
            for line in lines:
                yield self._result(line)
        except errors.LlmcliError:
            raise
        except Exception as exc:
            translated = self.provider.translate_error(exc)
            if translated is None:
                raise
            errors.defuse(exc)
            raise translated from None

    def _result(self, line: Any) -> Result:
        custom_id = str(line.custom_id)
        result = line.result
        kind = field(result, "type")
        if kind == "succeeded":
            message = field(result, "message")
            return Result(custom_id, _reply(message, self.name, field(message, "model") or ""))
        if kind == "expired":
            return Result(custom_id, error=expired(self.name))
        if kind == "canceled":
            return Result(custom_id, error=canceled(self.name))
        outer = field(result, "error")
        inner = field(outer, "error") or outer
        error_type = field(inner, "type") or "api_error"
        body = {"error": {"type": error_type, "message": field(inner, "message") or error_type}}
        return Result(
            custom_id, error=http_error(self.provider, STATUS_OF.get(error_type, 500), body)
        )


ADAPTER = AnthropicBatches
