"""Gemini's batch mode through google-genai (wire-wave2.md §3.3). The SDK is imported inside
the methods only.

Jobs are named `batches/ID`, as the SDK requires (a bare ID raises ValueError). A job under
Gemini's 20 MB inline limit is sent inline and its results come in the job itself
(`dest.inlined_responses`, in request order, each with our custom id in `metadata.key`); a
bigger one is uploaded as a JSONL input file (`{"key", "request"}` lines, each request turned
into the wire form by the SDK's own converter, as it turns inline ones) and its results are a
JSONL file to download (`dest.file_name`).
"""

from __future__ import annotations

import json
import tempfile
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
    http_error,
    read_entries,
)
from llmcli.providers.base import malformed
from llmcli.providers.gemini import _reply

STATES = {
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_SUCCEEDED": "ended",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "ended",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}


def job_name(job_id: str) -> str:
    return job_id if job_id.startswith("batches/") else f"batches/{job_id}"


class GeminiBatches(Adapter):
    # "Batch API": inline requests must stay under 20 MB in all, a larger job goes as an input
    # file (up to 2 GB, the Files API's limit); no request count limit is documented.
    max_requests = None
    max_bytes = 2 * 1024 * MB
    inline_bytes = 20 * MB
    limits_doc = "a 2 GB input file (jobs over 20 MB are uploaded as one)"

    def entry(self, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        # `metadata` travels with the request and comes back with its answer: our custom id.
        return {
            "contents": params["contents"],
            "config": params["config"],
            "metadata": {"key": custom_id},
        }

    def submit(self, entries: Path, model: str, label: str) -> tuple[str, Status]:
        client = self.provider.client()
        src: Any
        if entries.stat().st_size < self.inline_bytes:
            src = list(read_entries(entries))
        else:
            src = self._upload(client, entries, label)
        job = self.call(
            lambda: client.batches.create(model=model, src=src, config={"display_name": label}),
            retries=0,
        )
        return job_name(job.name), self._status(job)

    def _upload(self, client: Any, entries: Path, label: str) -> str:
        """The job's requests as an uploaded JSONL file; its name (`files/...`)."""
        from google.genai import batches as sdk

        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, then uploaded
            "w", encoding="utf-8", suffix=".jsonl", prefix="llmcli-gemini-", delete=False
        )
        path = Path(handle.name)
        try:
            with handle:
                for entry in read_entries(entries):
                    # The SDK's converter for inline requests: the same wire form either way.
                    wire = sdk._InlinedRequest_to_mldev(client._api_client, entry)
                    line = {"key": entry["metadata"]["key"], "request": wire["request"]}
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            config = {"mime_type": "application/jsonl", "display_name": label}
            # The resumable upload's first answer has no JSON body: not vetted as one.
            uploaded = self.call(
                lambda: client.files.upload(file=str(path), config=config),
                retries=0,
                download=True,
            )
        finally:
            path.unlink(missing_ok=True)
        return str(uploaded.name)

    def _get(self, job_id: str) -> Any:
        import pydantic

        from llmcli import transport

        client = self.provider.client()

        def get() -> Any:
            try:
                return client.batches.get(name=job_name(job_id))
            except pydantic.ValidationError:
                # google-genai types a result's error details as strings, so the usual Google
                # error objects there (one errored request is enough) make it fail to read the
                # whole job (wire-wave2.md surprise 7). The job is read again from the same
                # reply with each such detail as its JSON text.
                job = _job_from(transport.reply_json())
                if job is None:
                    raise malformed(self.name, "a batch job the SDK could not read") from None
                return job

        return self.call(get)

    def _status(self, job: Any) -> Status:
        state = job.state
        raw = (getattr(state, "value", None) or str(state)) if state else "JOB_STATE_PENDING"
        counts: dict[str, int | None] = {}
        inlined = job.dest.inlined_responses if job.dest is not None else None
        if inlined:
            counts = {
                "succeeded": sum(1 for r in inlined if r.error is None and r.response is not None),
                "errored": sum(1 for r in inlined if r.error is not None),
            }
        error = None
        if raw == "JOB_STATE_FAILED":
            found = getattr(job, "error", None)
            error = getattr(found, "message", None) or "the job failed (Gemini gives no reason)"
        return Status(STATES.get(raw, raw.removeprefix("JOB_STATE_").lower()), raw, counts, error)

    def status(self, job_id: str) -> Status:
        return self._status(self._get(job_id))

    def cancel(self, job_id: str) -> Status:
        client = self.provider.client()
        self.call(lambda: client.batches.cancel(name=job_name(job_id)))
        return self.status(job_id)

    def results(self, job_id: str) -> Iterator[Result]:
        job = self._get(job_id)
        if job.dest is None:
            return
        state = self._status(job).state
        if job.dest.file_name and not job.dest.inlined_responses:
            yield from self._file_results(job.dest.file_name, state, job.model or "")
            return
        for position, answer in enumerate(job.dest.inlined_responses or ()):
            custom_id = (answer.metadata or {}).get("key") or f"#{position}"
            if answer.error is not None:
                yield Result(custom_id, error=self._error(answer.error, state))
            elif answer.response is not None:
                yield Result(custom_id, _reply(answer.response, self.name, job.model or ""))

    def _file_results(self, name: str, state: str, model: str) -> Iterator[Result]:
        """The results of a job whose input was a file: a JSONL file of `{"key", "response"}`
        or `{"key", "error"}` lines, in the wire's camelCase."""
        from google.genai import types

        client = self.provider.client()
        data = self.call(
            lambda: client.files.download(
                file=name, config={"http_options": {"timeout": int(TIMEOUT * 1000)}}
            ),
            download=True,
        )
        for position, raw in enumerate(bytes(data).splitlines()):
            if not raw.strip():
                continue
            line = json.loads(raw)
            custom_id = str(line.get("key") or f"#{position}")
            if isinstance(line.get("error"), dict):
                error = types.JobError.model_validate(_plain_details(line["error"]))
                yield Result(custom_id, error=self._error(error, state))
            elif line.get("response") is not None:
                response = types.GenerateContentResponse.model_validate(line["response"])
                yield Result(custom_id, _reply(response, self.name, model))

    def _error(self, error: Any, state: str) -> errors.LlmcliError:
        """A request's error in the job's output. A request cut off by the job's end stands in
        its place as an error too: gRPC's CANCELLED (499) in a cancelled job, and
        DEADLINE_EXCEEDED (504) in an expired one, are said as such."""
        code = error.code or 500
        if code == 499 and state == "cancelled":
            return canceled(self.name)
        if code == 504 and state == "expired":
            return expired(self.name)
        body = {"error": {"message": error.message or "", "code": None}}
        return http_error(self.provider, code, body)


def _plain_details(error: dict[str, Any]) -> dict[str, Any]:
    """A request's error with each of its `details` as a string, as google-genai types them:
    Google's own error objects (`google.rpc.ErrorInfo` and the like) become their JSON text."""
    details = error.get("details")
    if not isinstance(details, list):
        return error
    plain = [d if isinstance(d, str) else json.dumps(d, ensure_ascii=False) for d in details]
    return {**error, "details": plain}


def _job_from(raw: Any) -> Any:
    """The SDK's `BatchJob` from the operation's JSON, every request's error details made
    plain; None if that cannot be done (not an operation, or the SDK's converter changed)."""
    if not isinstance(raw, dict):
        return None
    try:
        from google.genai import batches as sdk
        from google.genai import types

        output = raw.get("metadata", {}).get("output", {})
        inlined = output.get("inlinedResponses", {}).get("inlinedResponses")
        for entry in inlined or ():
            if isinstance(entry, dict) and isinstance(entry.get("error"), dict):
                entry["error"] = _plain_details(entry["error"])
        # The same converter and model `batches.get` uses (private: if it goes, we say the
        # job could not be read, as before).
        return types.BatchJob._from_response(response=sdk._BatchJob_from_mldev(raw), kwargs={})
    except Exception:  # any failure here is the same "could not read"
        return None


ADAPTER = GeminiBatches
