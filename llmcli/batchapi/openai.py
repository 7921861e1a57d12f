"""OpenAI's Batch API (Files + Batches; wire-wave2.md §3.1), for OpenAI and the servers that
speak its wire. The SDK is imported inside the methods only."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
)
from llmcli.providers.openai import _reply

ENDPOINT = "/v1/chat/completions"
STATES = {
    "validating": "pending",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "cancelling",
    "completed": "ended",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}


class OpenAIBatches(Adapter):
    # "Batch API": 50,000 requests and 200 MB per input file (`batch_create_params.py`).
    max_requests = 50_000
    max_bytes = 200 * MB
    limits_doc = "50,000 requests and a 200 MB input file"

    def entry(self, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": params}

    def submit(self, entries: Path, model: str, label: str) -> tuple[str, Status]:
        client = self.provider.client()

        def upload() -> Any:
            with entries.open("rb") as handle:
                return client.files.create(
                    file=(f"{label}.jsonl", handle, "application/jsonl"), purpose="batch"
                )

        uploaded = self.call(upload)
        batch = self.call(
            lambda: client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"llmcli": label},
            ),
            retries=0,
        )
        return batch.id, self._status(batch)

    def _status(self, batch: Any) -> Status:
        raw = batch.status or "validating"
        counts = batch.request_counts
        found: dict[str, int | None] = {}
        if counts is not None:
            found = {
                "total": counts.total,
                "succeeded": counts.completed,
                "errored": counts.failed,
            }
        error = None
        data = field(batch.errors, "data") or []
        if raw == "failed" and data:
            first = data[0]
            line = field(first, "line")
            where = f" (input line {line})" if line else ""
            error = f"{field(first, 'message') or field(first, 'code')}{where}"
        return Status(STATES.get(raw, raw), raw, found, error)

    def status(self, job_id: str) -> Status:
        client = self.provider.client()
        return self._status(self.call(lambda: client.batches.retrieve(job_id)))

    def cancel(self, job_id: str) -> Status:
        client = self.provider.client()
        return self._status(self.call(lambda: client.batches.cancel(job_id)))

    def results(self, job_id: str) -> Iterator[Result]:
        client = self.provider.client()
        batch = self.call(lambda: client.batches.retrieve(job_id))
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            # Streamed to a temporary file, then read line by line: an output file of a job of
            # 50,000 answers is hundreds of MB, never held in memory whole.
            with tempfile.TemporaryDirectory(prefix="llmcli-batch-") as folder:
                path = Path(folder) / "results.jsonl"
                self.call(lambda f=file_id, p=path: self._download(client, f, p), download=True)
                with path.open(encoding="utf-8") as lines:
                    for line in lines:
                        if line.strip():
                            yield self._result(json.loads(line), batch.model)

    @staticmethod
    def _download(client: Any, file_id: str, path: Path) -> None:
        with client.files.with_streaming_response.content(file_id, timeout=TIMEOUT) as response:
            response.stream_to_file(path)

    def _result(self, line: dict[str, Any], model: str | None) -> Result:
        import openai.types.chat

        custom_id = str(line.get("custom_id"))
        error = line.get("error")
        response = line.get("response") or {}
        status = response.get("status_code")
        if isinstance(error, dict):
            code = error.get("code") or ""
            if code == "batch_expired":
                return Result(custom_id, error=expired(self.name))
            if code == "batch_cancelled":
                return Result(custom_id, error=canceled(self.name))
            return Result(custom_id, error=http_error(self.provider, status or 500, error))
        if status != 200:
            return Result(
                custom_id, error=http_error(self.provider, status or 500, response.get("body"))
            )
        body = response.get("body") or {}
        reply = openai.types.chat.ChatCompletion.construct(**body)
        return Result(custom_id, _reply(reply, self.name, body.get("model") or model or ""))


ADAPTER = OpenAIBatches
