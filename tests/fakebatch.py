"""The Batch APIs of the fake provider server (tests/fakeserver.py): OpenAI, Anthropic, Gemini.

Why it exists: ``llmcli batch submit/status/list/cancel/fetch`` drives each provider's own
Batch API through the official SDKs, so the fake speaks those protocols (wire-wave2.md §3, §4)
at the providers' own paths, under any named-endpoint prefix like the live routes, with the
OpenAI/Gemini collisions on ``/v1/batches`` and ``/v1/files`` told apart by headers.

Each request inside a batch is answered when the batch is created, exactly as the live
non-stream endpoint would answer it: it pops ONE scripted ``Reply`` from the provider's queue
(same queue and prefix rules as a live request, one per item in submission order, whatever
becomes of the item), runs the same built-in checks (unknown model, Anthropic ``max_tokens``
missing, schema checks...) and yields the same body. A scripted error status (or a built-in
error) becomes that item's per-request error in the provider's batch format. The transport
faults of a ``Reply`` (``delay``, ``drop_after``, ``malformed``, ``gate``, an exact ``body``)
do not apply to batch items. The Batch API's own calls (create, get, list...) pop nothing.

Test-facing interface (on ``FakeServer``)::

    fake.batch_plan("openai", polls=2, order="reverse", expire=(1,), cancelled=(2,), fail=None)
    fake.script_batch_api("openai", Reply(status=500))  # the next batch/file call fails
    fake.batches("openai")   # [{"provider", "id", "state", "requests", "custom_ids", "model", ...}]
    fake.requests_for("openai")  # every call, each with .kind; one "batch_item" per prompt
    fake.reset()             # also forgets batches, files and plans

``batch_plan(provider, *, polls=0, order="input", expire=(), cancelled=(), fail=None)``: how
the NEXT batch created for ``provider`` behaves (calls queue up: one plan per later create;
with no plan, a batch is done at its first status read).

* ``polls=N``: create answers the not-done state (OpenAI ``validating``, Anthropic
  ``in_progress``, Gemini ``BATCH_STATE_PENDING``); the first N status reads (GET of that batch)
  say in progress (``in_progress`` / ``in_progress`` / ``BATCH_STATE_RUNNING``); read N+1 and
  every later one say done. List calls show the state without counting as a read.
* ``order``: ``"input"``, ``"reverse"`` or ``"shuffle"`` (fixed seed; never the input order when
  there are 2+ lines): the order of OpenAI's output/error file lines and Anthropic's result
  lines. Gemini output stays in request order, as the real API.
* ``expire=(i, ...)``: 0-based positions in submission order that come back expired. OpenAI: an
  error-file line ``error: {"code": "batch_expired", ...}`` (``response`` null) and job status
  ``expired``. Anthropic: result ``{"type": "expired"}``. Gemini: the job ends
  ``BATCH_STATE_EXPIRED``; its output still holds every answered item, and each expired item
  is an error entry ``{"code": 504, "message": "...expired...", "details": []}`` in its place
  (so inline answers stay aligned with the requests).
* ``fail="message"``: the whole job fails once done: OpenAI status ``failed`` with
  ``errors.data[0].message``; Gemini ``BATCH_STATE_FAILED`` with an ``error`` (the SDK drops
  it, wire-wave2.md surprise 6) and no output. Anthropic has no failed state: ignored there.
* Cancel (``POST .../cancel`` or Gemini ``:cancel``) on a job not yet reported done: OpenAI
  answers ``cancelling``, Anthropic ``canceling``, Gemini ``{}``; the next status read says
  ``cancelled`` / ``ended`` (``cancel_initiated_at`` set) / ``BATCH_STATE_CANCELLED``. The items
  at the positions in ``cancelled=(i, ...)`` (empty, the default: all of them) come back
  canceled: OpenAI
  error lines with code ``batch_cancelled``, Anthropic ``{"type": "canceled"}``, Gemini error
  entries with code 499 in their place; the others keep their answers. Cancelling a job already
  reported done: OpenAI 409 ``invalid_request_error``; Anthropic the batch unchanged; Gemini
  ``{}`` and no change.

``script_batch_api(provider, *replies, prefix="")``: replies for the Batch API's own calls
(which pop nothing from ``script``): a ``status >= 400`` one is that call's error, ``delay`` and
``drop_after`` apply; any other reply lets the call through.

``batches(provider=None)``: every job, oldest first, as a dict: ``provider``, ``id`` (the wire
id: ``batch_…``, ``msgbatch_…``, ``batches/…``), ``state`` (the provider's own current state
string, or ``"deleted"``), ``requests`` (the request bodies as submitted: OpenAI line ``body``,
Anthropic ``params``, Gemini ``request``), ``custom_ids`` (OpenAI/Anthropic ``custom_id``,
Gemini ``metadata.key`` inline or ``key`` in a file; None where absent), ``model`` (OpenAI the
first line's, Anthropic the first request's, Gemini the URL's), ``prefix``, ``reads`` (status
reads so far), ``input`` (``"file"`` or ``"inline"``), ``endpoint`` (OpenAI), ``metadata``
(OpenAI) and ``display_name`` (Gemini).

Recorded kinds: ``batch_create``, ``batch_get``, ``batch_list``, ``batch_cancel``,
``batch_delete``, ``batch_results`` (Anthropic's results_url), ``file_upload`` (OpenAI
multipart; Gemini's upload of the bytes), ``file_upload_start`` (Gemini's resumable start),
``file_content`` (OpenAI ``/content``, Gemini ``:download``), ``file_get``, ``file_delete``,
``file_list``, and ``batch_item`` (one per prompt inside a batch, path = the live endpoint's,
``status`` = its answer's status, headers = the create call's).

Provider details:

* OpenAI: ``POST /v1/files`` (multipart, ``purpose`` required); ``POST /v1/batches`` needs a
  known ``input_file_id`` (else 404), ``completion_window: "24h"`` and
  ``endpoint: "/v1/chat/completions"`` (the only one the fake can answer; the other real
  endpoints get a 400 saying so). Bad input lines (not JSON, no ``custom_id``, a duplicate
  one, ``method`` not POST, ``url`` not the endpoint, no ``body``, a second model) make the job
  ``failed`` with one ``errors.data`` entry per line (``code``, ``message``, ``line``, 1-based)
  and nothing answered. Done: ``output_file_id`` holds the 2xx lines, ``error_file_id`` the
  rest; each is null when it would be empty. ``request_counts``: ``completed`` 2xx answers,
  ``failed`` error answers (expired and cancelled items count in neither); ``usage`` sums the
  answers' tokens. Lists are newest first with ``limit`` (1-100, default 20) and ``after``.
* Anthropic: ``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$`` and be unique, else the whole
  create is a 400 ``invalid_request_error``. ``results_url`` is the RELATIVE path
  ``/v1/messages/batches/{id}/results`` (the SDK joins it to its base URL, prefix included),
  set once ended; the results are JSONL without blank lines; before the end they are a 400.
  ``request_counts`` say ``processing`` until ended. ``DELETE`` works only once ended (400
  before). Lists: newest first, ``limit`` (1-1000, default 20), ``after_id`` / ``before_id``.
* Gemini: ``models/{m}:batchGenerateContent`` with ``inputConfig.requests.requests`` (inline;
  the answers in ``metadata.output.inlinedResponses.inlinedResponses``) or
  ``inputConfig.fileName`` (a JSONL of ``{"key", "request"}`` lines uploaded by the resumable
  protocol; the answers in the file ``metadata.output.responsesFile`` as ``{"key",
  "response"}`` / ``{"key", "error"}`` lines); camelCase and snake_case keys both work. A
  request's error carries its live error's ``details`` (Google's error objects when the reply
  is scripted with an ``error_code``: what google-genai refuses, surprise 7); an expired or
  cancelled request's, ``details: []``. ``batchStats`` counts are strings. Lists:
  ``operations``, ``pageSize`` (default 50), ``pageToken``; no ``nextPageToken`` on the last
  page. ``DELETE`` answers ``{}``. The upload URL (``x-goog-upload-url``) points back at the fake
  and needs no key, as a real signed upload URL.

Deleted jobs answer 404 but stay in ``batches()`` with state ``"deleted"``, so a test can still
check what was sent. Jobs and files belong to the path prefix they were created under: a
named endpoint does not see the provider's own batches, nor they its.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.fakeserver import (
    PROVIDERS,
    Recorded,
    _anthropic_error,
    _dumps,
    _Exchange,
    _gemini_error,
    _openai_error,
    _Route,
)

if TYPE_CHECKING:
    from tests.fakeserver import FakeServer

__all__ = ["BatchPlan", "BatchStore"]

_ORDERS = ("input", "reverse", "shuffle")
_SHUFFLE_SEED = 17
_ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OPENAI_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
_DAY = 24 * 3600
_GEMINI_EXPIRED = 504  # DEADLINE_EXCEEDED
_GEMINI_CANCELLED = 499  # CANCELLED


@dataclass(frozen=True)
class BatchPlan:
    """How one batch behaves (see the module docstring)."""

    polls: int = 0
    order: str = "input"
    expire: frozenset[int] = frozenset()
    cancelled: frozenset[int] | None = None  # None: every item
    fail: str | None = None


@dataclass
class _Item:
    """One request of a batch and the answer the live endpoint gave it."""

    custom_id: str | None
    body: Any
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    metadata: Any = None  # Gemini inline `metadata`, sent back beside the answer


@dataclass
class _Job:
    """One batch: its items (answered at create), its plan and where it is in its life."""

    provider: str
    id: str
    prefix: str
    model: str | None
    plan: BatchPlan
    items: list[_Item]
    created: float = field(default_factory=time.time)
    phase: str = "created"  # created | running | cancelling | ended
    reads: int = 0
    cancelled: bool = False
    cancel_at: float | None = None
    ended_at: float | None = None
    deleted: bool = False
    input: str = "inline"
    endpoint: str = ""
    input_file_id: str = ""
    metadata: Any = None
    display_name: str | None = None
    api_version: str = "v1"
    line_errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    # item index -> "answered" | "expired" | "canceled", fixed when the job ends
    fates: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.phase == "ended"

    @property
    def failed(self) -> bool:
        return self.done and not self.cancelled and self._fails()

    def _fails(self) -> bool:
        return bool(self.line_errors) or (
            self.plan.fail is not None and self.provider != "anthropic"
        )

    def read(self) -> None:
        """One status read: the plan's polls, then done; a requested cancel ends it."""
        if self.phase == "ended":
            return
        if self.phase == "cancelling":
            self.cancelled = True
            self._end()
            return
        self.reads += 1
        if self.reads > self.plan.polls:
            self._end()
        else:
            self.phase = "running"

    def cancel(self) -> bool:
        """Ask to cancel; False if the job has already been reported done."""
        if self.phase == "ended":
            return False
        if self.phase != "cancelling":
            self.phase = "cancelling"
            self.cancel_at = time.time()
        return True

    def _end(self) -> None:
        self.phase = "ended"
        self.ended_at = time.time()
        stopped = self.plan.cancelled
        fates = []
        for i in range(len(self.items)):
            if self.cancelled and (stopped is None or i in stopped):
                fates.append("canceled")
            elif i in self.plan.expire:
                fates.append("expired")
            else:
                fates.append("answered")
        self.fates = fates

    def ordered(self) -> list[int]:
        """Item positions in the plan's result order."""
        positions = list(range(len(self.items)))
        if self.plan.order == "reverse":
            positions.reverse()
        elif self.plan.order == "shuffle" and len(positions) > 1:
            random.Random(_SHUFFLE_SEED).shuffle(positions)
            if positions == sorted(positions):
                positions = positions[1:] + positions[:1]
        return positions

    def count(self, fate: str, ok: bool | None = None) -> int:
        return sum(
            1
            for item, f in zip(self.items, self.fates, strict=True)
            if f == fate and (ok is None or (item.status < 400) == ok)
        )


@dataclass
class _File:
    id: str
    provider: str
    prefix: str
    data: bytes
    filename: str
    purpose: str
    mime_type: str = "application/octet-stream"
    created: float = field(default_factory=time.time)
    deleted: bool = False


@dataclass
class _Upload:
    """A Gemini resumable upload between its start and its finalize."""

    id: str
    prefix: str
    display_name: str | None
    mime_type: str
    data: bytearray = field(default_factory=bytearray)


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _get(obj: Any, camel: str, snake: str | None = None, default: Any = None) -> Any:
    """A field in camelCase or snake_case (Gemini's JSON reader takes both, surprise 1)."""
    if not isinstance(obj, dict):
        return default
    if camel in obj:
        return obj[camel]
    snake = snake or re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(snake, default)


class BatchStore:
    """The batch jobs, files and plans of one ``FakeServer``; thread-safe."""

    def __init__(self, fake: FakeServer) -> None:
        self._fake = fake
        self._lock = threading.RLock()
        self._jobs: list[_Job] = []
        self._files: dict[tuple[str, str], _File] = {}
        self._uploads: dict[str, _Upload] = {}
        self._plans: dict[str, deque[BatchPlan]] = {p: deque() for p in PROVIDERS}

    # test-facing -----------------------------------------------------------------------------

    def plan(
        self,
        provider: str,
        *,
        polls: int = 0,
        order: str = "input",
        expire: Iterable[int] = (),
        cancelled: Iterable[int] = (),
        fail: str | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
        if polls < 0:
            raise ValueError(f"polls must be >= 0, got {polls}")
        plan = BatchPlan(
            polls=polls,
            order=order,
            expire=frozenset(expire),
            cancelled=frozenset(cancelled) or None,
            fail=fail,
        )
        with self._lock:
            self._plans[provider].append(plan)

    def snapshot(self, provider: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "provider": job.provider,
                    "id": job.id,
                    "state": "deleted" if job.deleted else self._state(job),
                    "requests": [item.body for item in job.items],
                    "custom_ids": [item.custom_id for item in job.items],
                    "model": job.model,
                    "prefix": job.prefix,
                    "reads": job.reads,
                    "input": job.input,
                    "endpoint": job.endpoint,
                    "metadata": job.metadata,
                    "display_name": job.display_name,
                }
                for job in self._jobs
                if provider in (None, job.provider)
            ]

    def reset(self) -> None:
        with self._lock:
            self._jobs = []
            self._files = {}
            self._uploads = {}
            self._plans = {p: deque() for p in PROVIDERS}

    # serving ---------------------------------------------------------------------------------

    def serve(self, ex: _Exchange) -> None:
        """Answer one Batch API or file call (the route's kind names it)."""
        route = ex.route
        handler = getattr(self, f"_{route.provider}_{route.kind}", None)
        if handler is None:
            self._not_found(ex, f"{ex.rec.method} {ex.rec.path} is not served by the fake")
            return
        with self._lock:
            handler(ex)

    def _state(self, job: _Job) -> str:
        return getattr(self, f"_{job.provider}_state")(job)

    def _take_plan(self, provider: str) -> BatchPlan:
        queue = self._plans[provider]
        return queue.popleft() if queue else BatchPlan()

    def _job(self, ex: _Exchange, job_id: str) -> _Job | None:
        for job in self._jobs:
            if (
                job.provider == ex.route.provider
                and job.id == job_id
                and job.prefix == ex.route.prefix
                and not job.deleted
            ):
                return job
        return None

    def _listed(self, ex: _Exchange) -> list[_Job]:
        """The prefix's live jobs of this provider, newest first."""
        return [
            job
            for job in reversed(self._jobs)
            if job.provider == ex.route.provider
            and job.prefix == ex.route.prefix
            and not job.deleted
        ]

    def _file(self, ex: _Exchange, file_id: str) -> _File | None:
        file = self._files.get((ex.route.provider, file_id))
        if file is None or file.deleted or file.prefix != ex.route.prefix:
            return None
        return file

    def _add_file(
        self,
        ex: _Exchange,
        file_id: str,
        data: bytes,
        filename: str,
        purpose: str,
        mime_type: str = "application/octet-stream",
    ) -> _File:
        file = _File(
            file_id, ex.route.provider, ex.route.prefix, data, filename, purpose, mime_type
        )
        self._files[(file.provider, file_id)] = file
        return file

    def _error(self, ex: _Exchange, status: int, message: str, etype: str | None = None) -> None:
        provider = ex.route.provider
        if provider == "openai":
            body = _openai_error(status, message=message, etype=etype, code=None)
        elif provider == "anthropic":
            body = _anthropic_error(status, message=message, etype=etype, request_id=ex.request_id)
        else:
            body = _gemini_error(status, message=message, etype=etype)
        ex._send_json(status, body)

    def _not_found(self, ex: _Exchange, message: str) -> None:
        self._error(ex, 404, message)

    def _answer_items(
        self, ex: _Exchange, kind: str, path: str, items: list[_Item], model: str | None = None
    ) -> None:
        """Answer each item as the live endpoint ``kind`` at ``path`` would, in order.

        Each item is recorded as a ``batch_item`` request and pops one scripted reply, with
        the create call's headers (key, anthropic-version) as if it came on its own.
        """
        rec0, route0 = ex.rec, ex.route
        for item in items:
            body = item.body
            item_model = model or (body.get("model") if isinstance(body, dict) else None)
            rec = Recorded(
                provider=route0.provider,
                method="POST",
                path=route0.prefix + path,
                query={},
                headers=dict(rec0.headers),
                body=body,
                raw_body=_dumps(body),
                stream=False,
                model=item_model if isinstance(item_model, str) else None,
                api_key=rec0.api_key,
                client_port=rec0.client_port,
                prefix=route0.prefix,
                kind="batch_item",
            )
            reply = self._fake._record(rec)
            route = _Route(
                route0.provider,
                kind,
                model=model,
                api_version=route0.api_version,
                action="generateContent" if kind == "generate" else "",
                prefix=route0.prefix,
            )
            item_ex = _Exchange(None, rec, reply, route, self._fake)
            item.status, item.answer = item_ex.answer()
            item.request_id = item_ex.request_id
            rec.status = item.status
            rec.finished_at = time.monotonic()
            rec.done.set()

    # --- OpenAI -------------------------------------------------------------------------------

    def _openai_file_object(self, file: _File) -> dict[str, Any]:
        return {
            "id": file.id,
            "object": "file",
            "bytes": len(file.data),
            "created_at": int(file.created),
            "filename": file.filename,
            "purpose": file.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }

    def _openai_file_upload(self, ex: _Exchange) -> None:
        fields = _multipart(ex.rec.headers.get("content-type", ""), ex.rec.raw_body)
        if fields is None:
            self._error(ex, 400, "Invalid multipart/form-data body.")
            return
        purpose = fields.get("purpose")
        upload = fields.get("file")
        if upload is None:
            self._error(ex, 400, "Missing required parameter: 'file'.")
            return
        if purpose is None:
            self._error(ex, 400, "Missing required parameter: 'purpose'.")
            return
        file = self._add_file(
            ex, _new("file-", 22), upload[1], upload[0] or "upload", purpose[1].decode()
        )
        ex._send_json(200, self._openai_file_object(file))

    def _openai_file_get(self, ex: _Exchange) -> None:
        file = self._file(ex, ex.route.resource)
        if file is None:
            self._not_found(ex, f"No such File object: {ex.route.resource}")
            return
        ex._send_json(200, self._openai_file_object(file))

    def _openai_file_content(self, ex: _Exchange) -> None:
        file = self._file(ex, ex.route.resource)
        if file is None:
            self._not_found(ex, f"No such File object: {ex.route.resource}")
            return
        ex._send_raw(200, file.data, "application/octet-stream")

    def _openai_file_delete(self, ex: _Exchange) -> None:
        file = self._file(ex, ex.route.resource)
        if file is None:
            self._not_found(ex, f"No such File object: {ex.route.resource}")
            return
        file.deleted = True
        ex._send_json(200, {"id": file.id, "object": "file", "deleted": True})

    def _openai_file_list(self, ex: _Exchange) -> None:
        files = [
            self._openai_file_object(f)
            for f in reversed(self._files.values())
            if f.provider == "openai" and f.prefix == ex.route.prefix and not f.deleted
        ]
        ex._send_json(200, {"object": "list", "data": files, "has_more": False})

    def _openai_batch_create(self, ex: _Exchange) -> None:
        body = ex.body
        endpoint = body.get("endpoint")
        if body.get("completion_window") != "24h":
            self._error(
                ex,
                400,
                f"Invalid value: {body.get('completion_window')!r}. Supported values are: '24h'.",
            )
            return
        if endpoint not in _OPENAI_ENDPOINTS:
            self._error(ex, 400, f"Invalid value for 'endpoint': {endpoint!r}.")
            return
        if endpoint != "/v1/chat/completions":
            self._error(ex, 400, f"The fake answers only /v1/chat/completions batches: {endpoint}")
            return
        source = self._file(ex, str(body.get("input_file_id")))
        if source is None:
            self._not_found(ex, f"No such File object: {body.get('input_file_id')}")
            return
        if source.purpose != "batch":
            self._error(ex, 400, f"File {source.id} was not uploaded with purpose 'batch'.")
            return
        items, line_errors, model = _openai_lines(source.data, endpoint)
        job = _Job(
            provider="openai",
            id=_new("batch_", 32),
            prefix=ex.route.prefix,
            model=model,
            plan=self._take_plan("openai"),
            items=items,
            input="file",
            endpoint=endpoint,
            input_file_id=source.id,
            metadata=body.get("metadata"),
            line_errors=line_errors,
        )
        if not line_errors:
            self._answer_items(ex, "chat", endpoint, items)
        self._jobs.append(job)
        ex._send_json(200, self._openai_batch(job))

    def _openai_state(self, job: _Job) -> str:
        if job.phase == "created":
            return "validating"
        if job.phase == "running":
            return "in_progress"
        if job.phase == "cancelling":
            return "cancelling"
        if job.cancelled:
            return "cancelled"
        if job.failed:
            return "failed"
        if job.plan.expire & set(range(len(job.items))):
            return "expired"
        return "completed"

    def _openai_batch(self, job: _Job) -> dict[str, Any]:
        state = self._openai_state(job)
        created = int(job.created)
        ended = int(job.ended_at) if job.ended_at else None
        counts = {"total": len(job.items), "completed": 0, "failed": 0}
        usage = None
        errors = None
        if job.done and not job.failed:
            self._openai_result_files(job)
            counts["completed"] = job.count("answered", ok=True)
            counts["failed"] = job.count("answered", ok=False)
            usage = _openai_usage(
                [it for it, f in zip(job.items, job.fates, strict=True) if f == "answered"]
            )
        if job.failed:
            data = job.line_errors or [
                {"code": "batch_failed", "message": job.plan.fail, "param": None, "line": None}
            ]
            errors = {"object": "list", "data": data}
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.endpoint,
            "model": job.model,
            "errors": errors,
            "input_file_id": job.input_file_id,
            "completion_window": "24h",
            "status": state,
            "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id,
            "created_at": created,
            "in_progress_at": created if job.phase != "created" and not job.failed else None,
            "expires_at": created + _DAY,
            "finalizing_at": ended if state in ("completed", "expired") else None,
            "completed_at": ended if state == "completed" else None,
            "failed_at": ended if state == "failed" else None,
            "expired_at": ended if state == "expired" else None,
            "cancelling_at": int(job.cancel_at) if job.cancel_at else None,
            "cancelled_at": ended if state == "cancelled" else None,
            "request_counts": counts,
            "usage": usage,
            "metadata": job.metadata,
        }

    def _openai_result_files(self, job: _Job) -> None:
        """Write the output and error files once, when the job is first seen done."""
        if job.output_file_id or job.error_file_id:
            return
        out: list[bytes] = []
        err: list[bytes] = []
        for i in job.ordered():
            item, fate = job.items[i], job.fates[i]
            line: dict[str, Any] = {"id": _new("batch_req_", 32), "custom_id": item.custom_id}
            if fate == "answered":
                line["response"] = {
                    "status_code": item.status,
                    "request_id": item.request_id,
                    "body": item.answer,
                }
                line["error"] = None
            elif fate == "expired":
                line["response"] = None
                line["error"] = {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion "
                    "window expired.",
                }
            else:
                line["response"] = None
                line["error"] = {
                    "code": "batch_cancelled",
                    "message": "This request was not executed because the batch was cancelled.",
                }
            (out if fate == "answered" and item.status < 400 else err).append(_dumps(line))
        fake_ex = _Owner(job)
        if out:
            job.output_file_id = self._add_file(
                fake_ex, _new("file-", 22), _jsonl(out), "batch_output.jsonl", "batch_output"
            ).id
        if err:
            job.error_file_id = self._add_file(
                fake_ex, _new("file-", 22), _jsonl(err), "batch_error.jsonl", "batch_output"
            ).id

    def _openai_batch_get(self, ex: _Exchange) -> None:
        job = self._job(ex, ex.route.resource)
        if job is None:
            self._not_found(ex, f"No batch found with id '{ex.route.resource}'.")
            return
        job.read()
        ex._send_json(200, self._openai_batch(job))

    def _openai_batch_cancel(self, ex: _Exchange) -> None:
        job = self._job(ex, ex.route.resource)
        if job is None:
            self._not_found(ex, f"No batch found with id '{ex.route.resource}'.")
            return
        if not job.cancel():
            self._error(
                ex,
                409,
                f"Cannot cancel a batch with status '{self._openai_state(job)}'.",
                "invalid_request_error",
            )
            return
        ex._send_json(200, self._openai_batch(job))

    def _openai_batch_list(self, ex: _Exchange) -> None:
        query = ex.rec.query
        limit = _int(query.get("limit"), 20)
        if limit is None or not 1 <= limit <= 100:
            self._error(ex, 400, "Invalid 'limit': must be between 1 and 100.")
            return
        jobs = self._listed(ex)
        after = query.get("after")
        if after:
            ids = [job.id for job in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        page = jobs[:limit]
        data = [self._openai_batch(job) for job in page]
        ex._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(jobs) > limit,
            },
        )

    # --- Anthropic ----------------------------------------------------------------------------

    def _anthropic_batch_create(self, ex: _Exchange) -> None:
        requests = ex.body.get("requests")
        if not isinstance(requests, list) or not requests:
            self._error(ex, 400, "requests: List should have at least 1 item after validation")
            return
        seen: set[str] = set()
        items: list[_Item] = []
        for i, entry in enumerate(requests):
            entry = entry if isinstance(entry, dict) else {}
            custom_id = entry.get("custom_id")
            if not isinstance(custom_id, str) or not _ANTHROPIC_CUSTOM_ID.match(custom_id):
                self._error(
                    ex,
                    400,
                    f"requests.{i}.custom_id: String should match pattern "
                    f"'{_ANTHROPIC_CUSTOM_ID.pattern}'",
                )
                return
            if custom_id in seen:
                self._error(
                    ex, 400, f"Duplicate custom_id '{custom_id}': each request needs its own."
                )
                return
            if not isinstance(entry.get("params"), dict):
                self._error(ex, 400, f"requests.{i}.params: Field required")
                return
            seen.add(custom_id)
            items.append(_Item(custom_id=custom_id, body=entry["params"]))
        model = items[0].body.get("model")
        job = _Job(
            provider="anthropic",
            id=_new("msgbatch_01", 22),
            prefix=ex.route.prefix,
            model=model if isinstance(model, str) else None,
            plan=self._take_plan("anthropic"),
            items=items,
        )
        self._answer_items(ex, "messages", "/v1/messages", items)
        self._jobs.append(job)
        ex._send_json(200, self._anthropic_batch(job))

    def _anthropic_state(self, job: _Job) -> str:
        if job.phase == "cancelling":
            return "canceling"
        return "ended" if job.done else "in_progress"

    def _anthropic_batch(self, job: _Job) -> dict[str, Any]:
        # The counts other than `processing` stay 0 until the whole batch ends, as the real API.
        counts = dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)
        counts["processing"] = len(job.items)
        if job.done:
            counts = {
                "processing": 0,
                "succeeded": job.count("answered", ok=True),
                "errored": job.count("answered", ok=False),
                "canceled": job.count("canceled"),
                "expired": job.count("expired"),
            }
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": self._anthropic_state(job),
            "request_counts": counts,
            "ended_at": _rfc3339(job.ended_at),
            "created_at": _rfc3339(job.created),
            "expires_at": _rfc3339(job.created + _DAY),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(job.cancel_at),
            # Relative: the SDK joins it to its base URL, named-endpoint prefix included
            # (wire-wave2.md surprise 4); an absolute real host would leave the test machine.
            "results_url": f"/v1/messages/batches/{job.id}/results" if job.done else None,
        }

    def _anthropic_found(self, ex: _Exchange) -> _Job | None:
        job = self._job(ex, ex.route.resource)
        if job is None:
            self._error(ex, 404, f"Message batch {ex.route.resource} not found.", "not_found_error")
        return job

    def _anthropic_batch_get(self, ex: _Exchange) -> None:
        job = self._anthropic_found(ex)
        if job is not None:
            job.read()
            ex._send_json(200, self._anthropic_batch(job))

    def _anthropic_batch_cancel(self, ex: _Exchange) -> None:
        job = self._anthropic_found(ex)
        if job is not None:
            job.cancel()
            ex._send_json(200, self._anthropic_batch(job))

    def _anthropic_batch_delete(self, ex: _Exchange) -> None:
        job = self._anthropic_found(ex)
        if job is None:
            return
        if not job.done:
            self._error(
                ex,
                400,
                f"Message batch {job.id} cannot be deleted while it is still in progress; "
                "cancel it first.",
            )
            return
        job.deleted = True
        ex._send_json(200, {"id": job.id, "type": "message_batch_deleted"})

    def _anthropic_batch_results(self, ex: _Exchange) -> None:
        job = self._anthropic_found(ex)
        if job is None:
            return
        if not job.done:
            self._error(ex, 400, f"Message batch {job.id} has not ended; results are not ready.")
            return
        lines = []
        for i in job.ordered():
            item, fate = job.items[i], job.fates[i]
            if fate != "answered":
                result: dict[str, Any] = {"type": fate}
            elif item.status < 400:
                result = {"type": "succeeded", "message": item.answer}
            else:
                result = {"type": "errored", "error": item.answer}
            lines.append(_dumps({"custom_id": item.custom_id, "result": result}))
        ex._send_raw(200, _jsonl(lines), "application/x-jsonl")

    def _anthropic_batch_list(self, ex: _Exchange) -> None:
        query = ex.rec.query
        limit = _int(query.get("limit"), 20)
        if limit is None or not 1 <= limit <= 1000:
            self._error(ex, 400, "limit: Input should be between 1 and 1000")
            return
        jobs = self._listed(ex)
        ids = [job.id for job in jobs]
        after, before = query.get("after_id"), query.get("before_id")
        if after:
            rest = jobs[ids.index(after) + 1 :] if after in ids else []
            page, more = rest[:limit], len(rest) > limit
        elif before:
            rest = jobs[: ids.index(before)] if before in ids else []
            page, more = rest[-limit:], len(rest) > limit
        else:
            page, more = jobs[:limit], len(jobs) > limit
        ex._send_json(
            200,
            {
                "data": [self._anthropic_batch(job) for job in page],
                "has_more": more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            },
        )

    # --- Gemini -------------------------------------------------------------------------------

    def _gemini_file_object(self, file: _File, version: str = "v1beta") -> dict[str, Any]:
        created = _rfc3339(file.created)
        return {
            "name": file.id,
            "displayName": file.filename,
            "mimeType": file.mime_type,
            "sizeBytes": str(len(file.data)),
            "createTime": created,
            "updateTime": created,
            "expirationTime": _rfc3339(file.created + 2 * _DAY),
            "sha256Hash": base64.b64encode(hashlib.sha256(file.data).hexdigest().encode()).decode(),
            "uri": f"{self._fake.url}{file.prefix}/{version}/{file.id}",
            "state": "ACTIVE",
            "source": "GENERATED" if file.purpose == "batch_output" else "UPLOADED",
        }

    def _gemini_found_file(self, ex: _Exchange) -> _File | None:
        file = self._file(ex, "files/" + ex.route.resource)
        if file is None:
            self._error(ex, 404, f"File files/{ex.route.resource} not found.")
        return file

    def _gemini_file_upload_start(self, ex: _Exchange) -> None:
        meta = _get(ex.body, "file") or {}
        if ex.rec.headers.get("x-goog-upload-protocol") != "resumable":
            self._error(ex, 400, "The fake takes only resumable uploads.")
            return
        mime = _get(meta, "mimeType") or ex.rec.headers.get("x-goog-upload-header-content-type")
        upload = _Upload(
            id=_new("", 32),
            prefix=ex.route.prefix,
            display_name=_get(meta, "displayName"),
            mime_type=mime or "application/octet-stream",
        )
        self._uploads[upload.id] = upload
        url = (
            f"{self._fake.url}{ex.route.prefix}/upload/{ex.route.api_version}/files"
            f"?upload_id={upload.id}&upload_protocol=resumable"
        )
        ex._send_raw(
            200, b"", None, [("x-goog-upload-url", url), ("x-goog-upload-status", "active")]
        )

    def _gemini_file_upload(self, ex: _Exchange) -> None:
        upload = self._uploads.get(ex.route.resource)
        if upload is None or upload.prefix != ex.route.prefix:
            self._error(ex, 404, "No such upload.")
            return
        headers = ex.rec.headers
        if _int(headers.get("x-goog-upload-offset"), 0) != len(upload.data):
            self._error(ex, 400, "The upload offset does not match the bytes received.")
            return
        upload.data += ex.rec.raw_body
        if "finalize" not in headers.get("x-goog-upload-command", ""):
            ex._send_raw(200, b"", None, [("x-goog-upload-status", "active")])
            return
        del self._uploads[upload.id]
        file_id = "files/" + _new("", 12)
        file = self._add_file(
            ex, file_id, bytes(upload.data), upload.display_name or "", "upload", upload.mime_type
        )
        body = _dumps({"file": self._gemini_file_object(file, ex.route.api_version)})
        ex._send_raw(
            200, body, "application/json; charset=UTF-8", [("x-goog-upload-status", "final")]
        )

    def _gemini_file_get(self, ex: _Exchange) -> None:
        file = self._gemini_found_file(ex)
        if file is not None:
            ex._send_json(200, self._gemini_file_object(file, ex.route.api_version))

    def _gemini_file_content(self, ex: _Exchange) -> None:
        file = self._gemini_found_file(ex)
        if file is not None:
            ex._send_raw(200, file.data, "application/octet-stream")

    def _gemini_file_delete(self, ex: _Exchange) -> None:
        file = self._gemini_found_file(ex)
        if file is not None:
            file.deleted = True
            ex._send_json(200, {})

    def _gemini_file_list(self, ex: _Exchange) -> None:
        files = [
            self._gemini_file_object(f, ex.route.api_version)
            for f in reversed(self._files.values())
            if f.provider == "gemini" and f.prefix == ex.route.prefix and not f.deleted
        ]
        ex._send_json(200, {"files": files})

    def _gemini_batch_create(self, ex: _Exchange) -> None:
        batch = _get(ex.body, "batch")
        config = _get(batch, "inputConfig")
        inline = _get(_get(config, "requests"), "requests")
        file_name = _get(config, "fileName")
        model = ex.route.model or ""
        if isinstance(inline, list) and inline:
            items = []
            for entry in inline:
                metadata = _get(entry, "metadata")
                key = metadata.get("key") if isinstance(metadata, dict) else None
                items.append(_Item(custom_id=key, body=_get(entry, "request"), metadata=metadata))
            source = "inline"
        elif isinstance(file_name, str):
            file = self._file(ex, file_name)
            if file is None:
                self._error(ex, 404, f"File {file_name} not found.")
                return
            items, problem = _gemini_lines(file.data)
            if problem is not None:
                self._error(ex, 400, problem)
                return
            source = "file"
        else:
            self._error(ex, 400, "batch.input_config: either requests or file_name is required.")
            return
        job = _Job(
            provider="gemini",
            id="batches/" + _new("", 24),
            prefix=ex.route.prefix,
            model=model,
            plan=self._take_plan("gemini"),
            items=items,
            input=source,
            display_name=_get(batch, "displayName"),
            api_version=ex.route.api_version,
        )
        path = f"/{ex.route.api_version}/models/{model}:generateContent"
        self._answer_items(ex, "generate", path, items, model=model)
        self._jobs.append(job)
        ex._send_json(200, self._gemini_operation(job))

    def _gemini_state(self, job: _Job) -> str:
        if job.phase == "created":
            return "BATCH_STATE_PENDING"
        if not job.done:
            return "BATCH_STATE_RUNNING"
        if job.cancelled:
            return "BATCH_STATE_CANCELLED"
        if job.failed:
            return "BATCH_STATE_FAILED"
        if job.plan.expire & set(range(len(job.items))):
            return "BATCH_STATE_EXPIRED"
        return "BATCH_STATE_SUCCEEDED"

    def _gemini_entries(self, job: _Job) -> list[dict[str, Any]]:
        """One output entry per request, in request order: its response, or its error."""
        entries = []
        for item, fate in zip(job.items, job.fates, strict=True):
            entry: dict[str, Any] = {}
            if fate == "expired":
                message = "The request expired before it could be processed."
                entry["error"] = {"code": _GEMINI_EXPIRED, "message": message, "details": []}
            elif fate == "canceled":
                message = "The request was cancelled with its batch."
                entry["error"] = {"code": _GEMINI_CANCELLED, "message": message, "details": []}
            elif item.status >= 400:
                error = item.answer.get("error") or {}
                entry["error"] = {
                    "code": error.get("code", item.status),
                    "message": error.get("message", ""),
                    # As the live error's: Google's error objects where it has them, which
                    # google-genai's typed `details: list[str]` refuses (surprise 7).
                    "details": error.get("details", []),
                }
            else:
                entry["response"] = item.answer
            entries.append(entry)
        return entries

    def _gemini_output(self, job: _Job) -> dict[str, Any]:
        entries = self._gemini_entries(job)
        if job.input == "inline":
            for item, entry in zip(job.items, entries, strict=True):
                if item.metadata is not None:
                    entry["metadata"] = item.metadata
            return {"inlinedResponses": {"inlinedResponses": entries}}
        if job.output_file_id is None:
            lines = []
            for item, entry in zip(job.items, entries, strict=True):
                line = {"key": item.custom_id} if item.custom_id is not None else {}
                lines.append(_dumps(line | entry))
            file_id = "files/batch-" + _new("", 16)
            self._add_file(
                _Owner(job),
                file_id,
                _jsonl(lines),
                "batch output",
                "batch_output",
                "application/jsonl",
            )
            job.output_file_id = file_id
        return {"responsesFile": job.output_file_id}

    def _gemini_operation(self, job: _Job) -> dict[str, Any]:
        state = self._gemini_state(job)
        n = len(job.items)
        stats = {"requestCount": str(n), "pendingRequestCount": str(n)}
        if job.done and not job.failed:
            ok = job.count("answered", ok=True)
            stats = {
                "requestCount": str(n),
                "successfulRequestCount": str(ok),
                "failedRequestCount": str(n - ok),
            }
        updated = job.ended_at or job.cancel_at or job.created
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{job.model}",
            "displayName": job.display_name,
            "state": state,
            "createTime": _rfc3339(job.created),
            "updateTime": _rfc3339(updated),
            "batchStats": stats,
        }
        if job.display_name is None:
            del metadata["displayName"]
        operation: dict[str, Any] = {"name": job.id, "metadata": metadata}
        if job.done:
            metadata["endTime"] = _rfc3339(job.ended_at)
            operation["done"] = True
            if job.failed:
                # The SDK drops this (surprise 6); it is here for completeness.
                operation["error"] = {"code": 13, "message": job.plan.fail, "details": []}
            else:
                metadata["output"] = self._gemini_output(job)
                operation["response"] = {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1main."
                    "GenerateContentBatchOutput",
                    **metadata["output"],
                }
        return operation

    def _gemini_found(self, ex: _Exchange) -> _Job | None:
        job = self._job(ex, "batches/" + ex.route.resource)
        if job is None:
            self._error(ex, 404, f"Batch batches/{ex.route.resource} not found.")
        return job

    def _gemini_batch_get(self, ex: _Exchange) -> None:
        job = self._gemini_found(ex)
        if job is not None:
            job.read()
            ex._send_json(200, self._gemini_operation(job))

    def _gemini_batch_cancel(self, ex: _Exchange) -> None:
        job = self._gemini_found(ex)
        if job is not None:
            job.cancel()
            ex._send_json(200, {})

    def _gemini_batch_delete(self, ex: _Exchange) -> None:
        job = self._gemini_found(ex)
        if job is not None:
            job.deleted = True
            ex._send_json(200, {})

    def _gemini_batch_list(self, ex: _Exchange) -> None:
        query = ex.rec.query
        size = _int(query.get("pageSize"), 50)
        start = _int(query.get("pageToken"), 0)
        if size is None or size < 1 or start is None or start < 0:
            self._error(ex, 400, "Invalid pageSize or pageToken.")
            return
        jobs = self._listed(ex)
        body: dict[str, Any] = {
            "operations": [self._gemini_operation(job) for job in jobs[start : start + size]]
        }
        if start + size < len(jobs):
            body["nextPageToken"] = str(start + size)
        ex._send_json(200, body)


class _Owner:
    """Stands in for an exchange where only the provider and prefix matter (result files)."""

    def __init__(self, job: _Job) -> None:
        self.route = _Route(job.provider, "batch_get", prefix=job.prefix)


def _new(prefix: str, n: int) -> str:
    return prefix + uuid.uuid4().hex[:n]


def _int(text: str | None, default: int) -> int | None:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        return None


def _jsonl(lines: list[bytes]) -> bytes:
    """JSONL with a final newline and no blank line (anthropic's decoder chokes on one)."""
    return b"".join(line + b"\n" for line in lines)


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _openai_lines(
    data: bytes, endpoint: str
) -> tuple[list[_Item], list[dict[str, Any]], str | None]:
    """The requests of an OpenAI batch input file, the problems of its bad lines, the model."""
    items: list[_Item] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None

    def bad(line: int, code: str, message: str) -> None:
        problems.append({"code": code, "message": message, "param": None, "line": line})

    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        try:
            obj = json.loads(text)
        except ValueError:
            bad(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(obj, dict):
            bad(number, "invalid_json_line", "This line is not a JSON object.")
            continue
        custom_id = obj.get("custom_id")
        body = obj.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            bad(number, "missing_required_parameter", "Missing required parameter: 'custom_id'.")
        elif custom_id in seen:
            bad(number, "duplicate_custom_id", f"The custom_id '{custom_id}' is not unique.")
        elif obj.get("method") != "POST":
            bad(number, "invalid_method", "The method must be 'POST'.")
        elif obj.get("url") != endpoint:
            bad(
                number,
                "mismatched_endpoint",
                f"The url must match the batch's endpoint {endpoint}.",
            )
        elif not isinstance(body, dict):
            bad(number, "missing_required_parameter", "Missing required parameter: 'body'.")
        elif model is not None and body.get("model") != model:
            bad(number, "mismatched_model", "Every request in a batch must use the same model.")
        else:
            seen.add(custom_id)
            if model is None and isinstance(body.get("model"), str):
                model = body["model"]
            items.append(_Item(custom_id=custom_id, body=body))
    if not items and not problems:
        bad(1, "empty_file", "The input file is empty.")
    return items, problems, model


def _gemini_lines(data: bytes) -> tuple[list[_Item], str | None]:
    """The requests of a Gemini batch input file (``{"key", "request"}`` lines), or a problem."""
    items = []
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            return [], f"Invalid JSON in the input file at line {number}."
        request = _get(obj, "request")
        if not isinstance(request, dict):
            return [], f"Line {number} of the input file has no request."
        key = obj.get("key")
        items.append(_Item(custom_id=key if isinstance(key, str) else None, body=request))
    if not items:
        return [], "The input file holds no request."
    return items, None


def _openai_usage(items: list[_Item]) -> dict[str, Any]:
    """The batch's usage: the sums of its answers' token counts."""
    n_in = n_out = cached = reasoning = 0
    for item in items:
        usage = item.answer.get("usage") if item.status < 400 else None
        if not isinstance(usage, dict):
            continue
        n_in += usage.get("prompt_tokens", 0)
        n_out += usage.get("completion_tokens", 0)
        cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        reasoning += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": n_in + n_out,
    }
