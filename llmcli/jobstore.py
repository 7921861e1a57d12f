"""Provider batch jobs in the log (`batch submit`, `status`, `fetch`, `cancel`, `list`).

A job lives on the provider's side for a day or more; what llmcli must remember to come back
to it is kept in the `batch_jobs` table (migration 6): which provider and named endpoint holds
it, the model, the input file (path and sha256), and the map from each request's custom id to
the input line's id. So every later command needs only the job's id, and `batch list` works
without flags.

`JobSql` is mixed into `llmcli.sqllog.SqlLog`: the same statements serve the SQLite file and a
team's PostgreSQL log, as the calls' do. Nothing here imports a database driver.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from llmcli.calllog import failures, utc_now

# Every column but `items`, which can hold 100,000 entries: `batch list` reads none of them.
_SUMMARY = (
    "provider, protocol, job_id, model, input_path, input_sha256, requests, state, "
    "provider_state, counts, error, tag, created, updated, host, os_user"
)
#: The states a job ends in; `list` refreshes only the others from the provider.
FINAL_STATES = frozenset({"ended", "failed", "expired", "cancelled"})


@dataclass
class Job:
    """One provider batch job as the log remembers it.

    `items` holds, in submission order, `[custom_id, input id, schema index or None]`;
    `schemas` the distinct `--schema`/line schemas they refer to (compact JSON text), so a
    fetched answer is checked against its own line's schema without keeping one copy per line.
    """

    provider: str  # the name given to -p: a built-in provider or a named endpoint
    protocol: str  # the wire it speaks: openai | anthropic | gemini
    job_id: str
    model: str
    input_path: str
    input_sha256: str
    requests: int
    state: str  # pending | running | cancelling | ended | failed | expired | cancelled
    items: list[list[Any]] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    #: How the input file was read (form, column, id_column, template) and the job's system
    #: prompt, so `fetch` can read the prompts back for the log while the file is unchanged.
    reading: dict[str, Any] = field(default_factory=dict)
    provider_state: str | None = None  # the provider's own word (`in_progress`, `JOB_STATE_...`)
    counts: dict[str, int | None] = field(default_factory=dict)
    error: str | None = None  # why the whole job failed, when it did
    tag: str | None = None
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    host: str | None = None
    os_user: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


def _job(row: Any, with_items: bool) -> Job:
    items: dict[str, Any] = {}
    if with_items:
        items = json.loads(row["items"])
    return Job(
        provider=row["provider"],
        protocol=row["protocol"],
        job_id=row["job_id"],
        model=row["model"],
        input_path=row["input_path"],
        input_sha256=row["input_sha256"],
        requests=int(row["requests"]),
        state=row["state"],
        items=items.get("items", []),
        schemas=items.get("schemas", []),
        reading=items.get("reading", {}),
        provider_state=row["provider_state"],
        counts=json.loads(row["counts"]) if row["counts"] else {},
        error=row["error"],
        tag=row["tag"],
        created=row["created"],
        updated=row["updated"],
        host=row["host"],
        os_user=row["os_user"],
    )


class JobSql:
    """The `batch_jobs` statements, for any `SqlLog` backend (which provides `_run`, `_one`,
    `_all`, `transaction`, `FAILURES`, `_failure` and `location`)."""

    FAILURES: tuple[type[BaseException], ...] = ()
    location: str

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _failure(self, exc: BaseException) -> BaseException:
        return exc

    @failures
    def job_add(self, job: Job) -> None:
        """Remember a job just submitted (once: the same provider and id is not added twice)."""
        items = json.dumps(
            {"items": job.items, "schemas": job.schemas, "reading": job.reading},
            ensure_ascii=False,
        )
        with self.transaction():
            self._run(
                "INSERT INTO batch_jobs (provider, protocol, job_id, model, input_path, "
                "input_sha256, requests, items, state, provider_state, counts, error, tag, "
                "created, updated, host, os_user) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (provider, job_id) DO NOTHING",
                (job.provider, job.protocol, job.job_id, job.model, job.input_path,
                 job.input_sha256, job.requests, items, job.state, job.provider_state,
                 json.dumps(job.counts), job.error, job.tag, job.created, job.updated,
                 job.host, job.os_user),
            )  # fmt: skip

    @failures
    def job_update(self, job: Job) -> None:
        """Keep what the provider last said of a job: its state, counts and error."""
        job.updated = utc_now()
        with self.transaction():
            self._run(
                "UPDATE batch_jobs SET state = ?, provider_state = ?, counts = ?, error = ?, "
                "updated = ? WHERE provider = ? AND job_id = ?",
                (job.state, job.provider_state, json.dumps(job.counts), job.error, job.updated,
                 job.provider, job.job_id),
            )  # fmt: skip

    @failures
    def jobs_named(self, job_id: str) -> list[Job]:
        """The jobs with this id (one, but two endpoints could each have issued it), with their
        items."""
        rows = self._all(
            f"SELECT {_SUMMARY}, items FROM batch_jobs WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [_job(row, with_items=True) for row in rows]

    @failures
    def job_count(self) -> int:
        """How many jobs the log remembers."""
        return int(self._one("SELECT COUNT(*) AS n FROM batch_jobs")["n"])

    @failures
    def jobs(self, limit: int = 50) -> list[Job]:
        """The most recently submitted jobs, newest first, without their items."""
        rows = self._all(
            f"SELECT {_SUMMARY} FROM batch_jobs ORDER BY created DESC, id DESC LIMIT ?", (limit,)
        )
        return [_job(row, with_items=False) for row in rows]


def copy_jobs(source: Any, destination: Any) -> tuple[int, int]:
    """Copy every job `source` remembers into `destination`, each at most once (by provider and
    id; a job already there keeps what it says): (jobs read, jobs new to the destination).
    `log migrate` moves them with the calls, so `batch status`, `fetch` and `list` go on
    working against the team log for jobs submitted before it."""
    before = destination.job_count()
    jobs = source.jobs(limit=source.job_count())
    for summary in jobs:
        for job in source.jobs_named(summary.job_id):
            if job.provider == summary.provider:
                destination.job_add(job)
    return len(jobs), destination.job_count() - before
