"""Provider batch jobs: submit a file of prompts to a provider's Batch API, come back for the
answers (docs/batch.md, "Provider jobs").

What is shared with the live `batch run` (`llmcli.batch`): the input (`Source`), the check of
every line as a call before anything is sent, and the output line (`result_line`), so both
modes read the same files and write the same lines. What differs: every request goes to the
provider in one job (one provider and model), answers arrive hours later and out of order, and
they are billed at the batch rate. The job is remembered in the log (`llmcli.jobstore`), so
later commands need only its id.

Each fetched result is logged as a call whose uid is derived from the job and the request
(`result_uid`): fetching twice, or into two files, adds no row twice.

Nothing here imports Click or prints; the SDKs load in `llmcli.batchapi`'s adapters only.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

from llmcli import errors
from llmcli.batch import BadLine, Item, Source, id_key

if TYPE_CHECKING:
    from llmcli import config
    from llmcli.batchapi import Adapter, Result, Status
    from llmcli.calllog import CallRecord
    from llmcli.jobstore import Job
    from llmcli.providers.base import Provider
    from llmcli.types import Response

#: Rows written to the log in one transaction while fetching.
LOG_CHUNK = 500


class Prepared(NamedTuple):
    """A checked input, ready to submit: the requests as the provider takes them (a JSONL file
    of `Adapter.entry`s), and what the log must remember to map the answers back."""

    entries: Path
    count: int
    size: int  # bytes of the requests as sent
    items: list[list[Any]]  # [custom_id, input id, schema index or None], in order
    schemas: list[str]
    bad: list[BadLine]
    sha256: str


def custom_id(position: int) -> str:
    """Our id for the request at `position`: input ids may be anything (spaces, 200
    characters), and Anthropic takes only `^[a-zA-Z0-9_-]{1,64}$`."""
    return f"r{position}"


def result_uid(provider: str, job_id: str, request: str) -> str:
    """The log row of one fetched result: the same on every fetch, so a second adds nothing."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"llmcli:batch/{provider}/{job_id}/{request}").hex


def limit_error(adapter: Adapter, what: str) -> errors.UsageError:
    return errors.UsageError(
        f"too many {what} for one {adapter.name} batch job: its Batch API takes at most "
        f"{adapter.limits_doc}; nothing was sent",
        "split the file into smaller ones and submit each (or send it live: llmcli batch run)",
    )


def prepare(
    source: Source,
    flags: Mapping[str, Any],
    env: config.Environment,
    adapter: Adapter,
    provider: str,
    model: str,
) -> Prepared:
    """Check every line as `batch run` does, and build its request with the provider's own
    `params()`, writing them to a temporary file (memory stays flat).

    A job is one provider and one model (OpenAI requires it): a line that asks for another is a
    bad line. A provider limit passed is a usage error at once, before the rest is read."""
    from llmcli import batch

    bad: list[BadLine] = []
    items: list[list[Any]] = []
    schemas: dict[str, int] = {}
    size = 0
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - handed to the caller, who deletes it
        "w", encoding="utf-8", suffix=".jsonl", prefix="llmcli-batch-", delete=False
    )
    path = Path(handle.name)
    try:
        with handle:
            calls = batch.Calls(flags, env, require_key=False)
            for item, call in batch.good_lines(source, calls, bad):
                request = call.request
                if (request.provider, request.model) != (provider, model):
                    bad.append(BadLine(item.line, _other_model(request.provider, request.model,
                                                               provider, model)))  # fmt: skip
                    continue
                position = len(items)
                entry = adapter.entry(custom_id(position), call.provider.params(request))
                line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
                size += len(line.encode("utf-8"))
                if adapter.max_requests is not None and position + 1 > adapter.max_requests:
                    raise limit_error(adapter, f"requests (more than {adapter.max_requests:,})")
                if size > adapter.max_bytes:
                    raise limit_error(adapter, f"bytes (more than {adapter.max_bytes:,})")
                handle.write(line)
                schema = None
                if request.schema is not None:
                    schema = schemas.setdefault(request.schema, len(schemas))
                items.append([custom_id(position), item.id, schema])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Prepared(path, len(items), size, items, list(schemas), bad, source.sha256.hexdigest())


def _other_model(asked_provider: str, asked_model: str, provider: str, model: str) -> str:
    return (
        f"asks for {asked_provider} {asked_model}, but a batch job is one provider and model "
        f"({provider} {model}): submit those lines as another job"
    )


# --- the job's life ----------------------------------------------------------------------------


def connect(job_provider: str, env: config.Environment) -> Provider:
    """The provider that holds a job, with its key (ConfigError when it is missing), found by
    the name it was submitted under (a named endpoint is read from config.toml)."""
    from llmcli import config, endpoints, providers

    if not providers.known(job_provider):
        endpoints.load(env)
    if not providers.known(job_provider):
        raise errors.ConfigError(
            f"the job was submitted to {job_provider!r}, which is no longer a provider or "
            "endpoint in config.toml",
            "add the endpoint back to config.toml to reach the job",
        )
    creds = config.credentials(job_provider, env, required=True)
    return providers.connect(providers.spec(job_provider), creds.api_key, creds.base_url)


def apply(job: Job, status: Status) -> None:
    """Keep the provider's latest word on `job` (the caller saves it)."""
    job.state = status.state
    job.provider_state = status.provider_state
    job.counts = status.counts or job.counts
    job.error = status.error


# --- fetching -------------------------------------------------------------------------------------


class Fetched(NamedTuple):
    """What a fetch did: lines written, lines already in the file, and the totals."""

    written: int
    failed: int
    skipped: int  # results whose id was already in the output file
    tokens: int
    cost: Decimal
    unpriced: int
    failed_ids: tuple[Any, ...]


def missing_error(job: Job, provider: str) -> errors.LlmcliError:
    """Why a request of a finished job has no result line at all."""
    from llmcli import batchapi

    if job.state == "expired":
        return batchapi.expired(provider)
    if job.state == "cancelled":
        return batchapi.canceled(provider)
    if job.state == "failed":
        return errors.RequestRejected(
            f"{provider} refused the whole job: {job.error or 'no reason given'}",
            "fix the input and submit it again",
            provider=provider,
        )
    return errors.ProviderError(
        f"{provider} returned no result for this request", "fetch again later", provider=provider
    )


def prompts_of(job: Job) -> dict[str, tuple[str, str | None]]:
    """Each request's prompt and system prompt, by custom id, read back from the input file
    for the log (as `batch run` logs them); none when the file is gone or has changed since
    it was submitted (its sha256 differs): a prompt the job did not send is never logged."""
    reading = job.reading
    path = Path(job.input_path)
    if not reading or not path.is_file():
        return {}
    by_input = {id_key(entry[1]): entry[0] for entry in job.items}
    found: dict[str, tuple[str, str | None]] = {}
    try:
        source = Source(path, reading.get("form"), column=reading.get("column"),
                        id_column=reading.get("id_column"), template=reading.get("template"))  # fmt: skip
        for item in source.items(hashing=True):
            if isinstance(item, Item):
                cid = by_input.get(id_key(item.id))
                if cid is not None and cid not in found:
                    found[cid] = (item.prompt, item.options.get("system", reading.get("system")))
    except errors.LlmcliError:
        return {}
    return found if source.sha256.hexdigest() == job.input_sha256 else {}


class Fetcher:
    """Maps a finished job's results back to the input ids, writes the new ones to the output
    file in `run`'s line format, and logs every result once."""

    def __init__(
        self,
        job: Job,
        env: config.Environment,
        out: Path,
        *,
        log: Any | None,
    ) -> None:
        from llmcli import paths, pricing

        self.job = job
        self.out = out
        self.log = log  # None: --no-log
        self.prices = pricing.load_overrides(paths.prices_file(env))
        self.records: list[CallRecord] = []
        self.log_problem: str | None = None
        self.prompts: dict[str, tuple[str, str | None]] = {}
        if log is not None:
            self.prompts = prompts_of(job)

    def run(self, results: Iterator[Result], done: set[str]) -> Fetched:
        from llmcli import batch

        job = self.job
        by_id = {entry[0]: entry for entry in job.items}
        seen: set[str] = set()
        written = failed = skipped = tokens = unpriced = 0
        cost = Decimal(0)
        failed_ids: list[Any] = []

        def outcomes() -> Iterator[tuple[list[Any], Response | None, errors.LlmcliError | None]]:
            for result in results:
                entry = by_id.get(result.custom_id)
                if entry is None or result.custom_id in seen:
                    continue  # not a request of ours (or a repeated line)
                seen.add(result.custom_id)
                yield entry, result.response, result.error
            for entry in job.items:
                if entry[0] not in seen:
                    yield entry, None, missing_error(job, job.provider)

        try:
            with self.out.open("a", encoding="utf-8") as handle:
                for entry, response, error in outcomes():
                    line = self._line(entry, response, error)
                    if "error" in line:
                        failed += 1
                        if len(failed_ids) < 5:
                            failed_ids.append(entry[1])
                    usage = line.get("usage") or {}
                    tokens += (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
                    if line.get("cost_usd") is not None:
                        cost += line["cost_usd"]
                    elif line.get("content") is not None:
                        unpriced += 1
                    if id_key(entry[1]) in done:
                        skipped += 1
                        continue
                    handle.write(batch._json(line) + "\n")
                    handle.flush()
                    written += 1
                    if len(self.records) >= LOG_CHUNK:
                        self._flush_log()
        except OSError as exc:
            raise errors.LlmcliError(f"cannot write {self.out}: {exc.strerror or exc}") from None
        finally:
            self._flush_log()
        return Fetched(written, failed, skipped, tokens, cost, unpriced, tuple(failed_ids))

    def _line(
        self, entry: list[Any], response: Response | None, error: errors.LlmcliError | None
    ) -> dict[str, Any]:
        from llmcli import batch, core, pricing
        from llmcli.types import Request

        job = self.job
        cid, input_id, schema_index = entry
        schema = job.schemas[schema_index] if schema_index is not None else None
        request = Request(provider=job.provider, model=job.model, messages=(), schema=schema)
        outcome = None
        if response is not None:
            response = core.structured(request, response)._replace(requested_model=job.model)
            try:
                price = pricing.cost(job.provider, [response.model, job.model], response.usage,
                                     overrides=self.prices, batch=True)  # fmt: skip
                response = response._replace(cost_usd=price.usd, price_source=price.source)
            except Exception:  # a pricing-data bug must not lose a paid-for answer
                pass
            outcome = SimpleNamespace(response=response, problem=core.incomplete(response,
                                                                                 strict=False))  # fmt: skip
        item = Item(0, input_id, "", {})
        line = batch.result_line(item, SimpleNamespace(request=request), outcome, error)  # type: ignore[arg-type]
        self._record(cid, response, outcome.problem if outcome is not None else error)
        return line

    def _record(
        self, cid: str, response: Response | None, error: errors.LlmcliError | None
    ) -> None:
        if self.log is None:
            return
        from llmcli.calllog import CallRecord
        from llmcli.journal import who

        job = self.job
        record = CallRecord(
            provider=job.provider,
            status="ok" if response is not None else "error",
            uid=result_uid(job.provider, job.job_id, cid),
            requested_model=job.model,
            tag=job.tag,
            host=who()[0],
            os_user=who()[1],
            source="batch",
            batch_id=job.job_id,
        )
        prompt = self.prompts.get(cid)
        if prompt is not None:
            from llmcli.types import Message

            record.messages = [Message("user", prompt[0]).to_dict()]
            record.system_prompt = prompt[1]
        if response is not None:
            record.take_answer(response)
        if error is not None:
            record.take_error(error)
        self.records.append(record)

    def _flush_log(self) -> None:
        records, self.records = self.records, []
        if not records or self.log is None or self.log_problem is not None:
            return
        try:
            self.log.add_many(records)
        except Exception as exc:  # the log must never cost the user the answers
            from llmcli import logtrouble
            from llmcli.calllog import LogFailure

            cause = exc.error if isinstance(exc, LogFailure) else exc
            where = getattr(self.log, "location", "the log")
            trouble = logtrouble.describe(cause, where, writing=True)
            self.log_problem = f"the answers were not logged: {trouble}"
