"""`llmcli batch`: many prompts from one file, answered live (`run`) or as a provider Batch API
job (`submit`, `status`, `list`, `cancel`, `fetch`; docs/batch.md).

`llmcli.batch` (the job itself) and the Batch API adapters are imported only when a job runs:
`--help` stays light.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, FLOAT, INTEGER, PROVIDER, environment

PROGRESS_EVERY = 0.1  # seconds between two redraws of the progress line
F = TypeVar("F", bound=Callable[..., Any])


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order `--help` lists them."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# How `run` and `submit` read FILE, and what they ask of every line that does not say.
_reading_options = _options(
    click.option(
        "--format",
        "form",
        type=click.Choice(["jsonl", "text", "csv"]),
        help="The input's form.  [default: from the file name: .jsonl, .csv, else text]",
    ),
    click.option("--column", metavar="NAME", help="CSV: the column that holds the prompt."),
    click.option(
        "--id-column",
        metavar="NAME",
        help="CSV: the column that holds the id.  [default: row number]",
    ),
    click.option(
        "--template",
        metavar="TEXT",
        help="Fill the prompt from each line's fields: 'Classify: {text}' (CSV columns, JSON "
        "fields; a text line is {text}).",
    ),
)
_request_options = _options(
    click.option("-s", "--system", help="System prompt for lines that have none."),
    click.option("-t", "--temperature", type=FLOAT, help="Sampling temperature."),
    click.option("--max-tokens", type=INTEGER, help="Most tokens per answer.  [default: 1000]"),
    click.option("--schema", metavar="SCHEMA", help="Answer with JSON matching this schema."),
)


def _read(file: Path, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """FILE as the reading options say, and the request options every line gets by default:
    one reading for `run` and `submit`."""
    from llmcli import batch as job_module

    source = job_module.Source(
        file,
        params["form"],
        column=params["column"],
        id_column=params["id_column"],
        template=params["template"],
    )
    names = ("provider", "model", "system", "temperature", "max_tokens", "schema")
    return source, {name: params[name] for name in names}


@click.group(context_settings=CONTEXT)
def batch() -> None:
    """Many prompts from one file: JSON Lines, plain text or CSV (see docs/batch.md).

    `run` sends them live; `submit` sends them as one provider Batch API job (half price,
    answered within 24 h), which `status`, `list`, `cancel` and `fetch` follow by its id.

    \b
    Examples:
      llmcli batch run prompts.jsonl -o answers.jsonl
      llmcli batch run tickets.csv --column text --template 'Classify: {text}' -o labels.jsonl
      llmcli batch submit prompts.jsonl -p anthropic
      llmcli batch fetch msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d -o answers.jsonl --wait
    """


@batch.command("run", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per input line here; ids already in it are skipped.",
)
@_reading_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=8,
    show_default=True,
    help="Most calls in flight; halved on a rate limit, grown back after successes.",
)
@click.option("--ordered", is_flag=True, help="Write the results in input order.")
@click.option(
    "--max-cost",
    metavar="USD",
    help="Stop before the next call could bring this run's cost over USD (its worst case, "
    "as --dry-run estimates it); exit 10.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again the lines whose result in the output is an error (the new line is "
    "appended; the last line of an id is its result).",
)
@click.option(
    "--skip-bad", is_flag=True, help="Send the good lines when some are bad (and list the bad)."
)
@click.option(
    "-p",
    "--provider",
    type=PROVIDER,
    help="Provider for lines that name none.  [env: LLM_PROVIDER; default: openai]",
)
@click.option("-m", "--model", help="Model for lines that name none.  [env: LLM_MODEL]")
@_request_options
@click.option("--timeout", type=FLOAT, help="Seconds each attempt may take.  [default: 600]")
@click.option("--retries", type=INTEGER, help="Retries after the first attempt.  [default: 3]")
@click.option(
    "--tag",
    help="The calls' tag in the log (the job's id is kept apart: `cost --by batch`).  [env: LLM_TAG]",
)
@click.option("--no-log", is_flag=True, help="Do not record the calls in the log.")
@click.option(
    "--cache",
    metavar="TTL",
    help="Reuse stored answers to the same requests (on, or a TTL such as 7d).  "
    "[env: LLMCLI_CACHE]",
)
@click.option("--no-cache", is_flag=True, help="Neither reuse nor store answers.")
def run(file: Path, output: Path, **params: Any) -> None:
    """Send every line of FILE, several at a time, and write one JSON line per answer to -o.

    FILE is JSON Lines ({"id": ..., "prompt": ...} and optional system, provider, model,
    max_tokens, temperature, schema), plain text (one prompt per line; the id is the line
    number) or CSV (--column, --id-column). Every line is checked before anything is sent.
    Run it again to resume: ids already in the output are skipped. Exit 0 when every line was
    answered, 8 when some failed (their lines have an "error"), 10 at --max-cost.

    \b
    Examples:
      llmcli batch run prompts.jsonl -o answers.jsonl --concurrency 16
      llmcli batch run questions.txt -p anthropic -o answers.jsonl --max-cost 2
      llmcli batch run tickets.csv --column text --id-column ticket -o labels.jsonl \\
          --template 'Label this ticket as bug, billing or other: {text}'
    """
    from decimal import Decimal, InvalidOperation

    from llmcli import batch as job_module
    from llmcli import cache
    from llmcli.journal import Journal

    env = environment()
    max_cost = None
    if params["max_cost"] is not None:
        try:
            max_cost = Decimal(str(params["max_cost"]).strip().removeprefix("$"))
        except InvalidOperation:
            max_cost = None
        if max_cost is None or not max_cost.is_finite() or max_cost <= 0:
            raise errors.UsageError(
                f"invalid value for --max-cost: {params['max_cost']!r} is not an amount in USD "
                "above 0 (e.g. 2.50)"
            )
    if output.resolve() == file.resolve():
        raise errors.UsageError("-o names the input file", "write the answers to another file")
    if not output.resolve().parent.is_dir():
        raise errors.UsageError(f"-o {output}: no folder {output.parent}")
    source, flags = _read(file, params)
    flags.update(timeout=params["timeout"], retries=params["retries"], tag=params["tag"])
    caching = cache.resolve(params["cache"], params["no_cache"], env)

    done, cut = job_module.answered(output, retry_failed=params["retry_failed"])
    checked = job_module.check(source, flags, env, done)
    if checked.bad:
        _report_bad(file, checked.bad, skipping=params["skip_bad"])
    job_module.check_keys(checked.providers, env)
    if cut:
        render.warn(f"{output} ended with a line cut short (a killed run); it was dropped")
    job_id = job_module.batch_id(output)
    skip = len(done)
    bad_lines = {entry.line for entry in checked.bad}
    view = _View(job_id)
    journal = Journal(env, enabled=not params["no_log"], source="batch")
    journal.batch_id = job_id  # `cost --by batch`
    job = job_module.Job(
        source,
        flags,
        env,
        journal,
        out=output,
        total=checked.total,
        skip=done,
        bad_lines=bad_lines,
        concurrency=params["concurrency"],
        ordered=params["ordered"],
        max_cost=max_cost,
        cache=caching,
        on_progress=view.progress,
        on_notice=view.notice,
    )
    from llmcli import startup

    # The command line pauses the garbage collector until the first answer is printed, and a
    # job prints none: left paused, every reference cycle of every call (the SDK makes some)
    # would be kept, about 12 KiB an answer, 1 GiB at 100,000 lines. Start-up is over here.
    startup.settle()
    try:
        job.run()
    finally:
        journal.close()
        view.summary(job.progress(), skipped=skip, bad=len(checked.bad), output=output)
        if journal.problem:
            render.warn(journal.problem)
    progress = job.progress()
    if progress.failed:
        shown = ", ".join(render.printable(str(i)) for i in progress.failed_ids)
        more = ", ..." if progress.failed > len(progress.failed_ids) else ""
        raise errors.IncompleteAnswer(
            f"{progress.failed} of {progress.done} lines failed (ids {shown}{more}); "
            f'their lines in {output} have an "error"',
            "run the same command with --retry-failed to send them again",
        )


def _report_bad(file: Path, bad: list[Any], *, skipping: bool) -> None:
    from llmcli.batch import SHOWN_BAD_LINES

    for entry in bad[:SHOWN_BAD_LINES]:
        render.diag(f"{file}:{entry.line}: {render.printable(entry.reason)}")
    if len(bad) > SHOWN_BAD_LINES:
        render.diag(f"... and {len(bad) - SHOWN_BAD_LINES} more bad lines")
    lines = "line" if len(bad) == 1 else "lines"
    if skipping:
        render.warn(f"skipping {len(bad)} bad {lines} of {file}")
        return
    raise errors.UsageError(
        f"{len(bad)} bad {lines} in {file} (the first: line {bad[0].line}); nothing was sent",
        "fix them, or pass --skip-bad to send the others",
    )


class _View:
    """The job on stderr: a progress line on a terminal (redrawn in place), notices, a summary."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.live = render.is_terminal(sys.stderr)
        self.drawn = False
        self.last = 0.0

    def _erase(self) -> str:
        if not self.drawn:
            return ""
        self.drawn = False
        return "\r\033[K"

    def notice(self, text: str) -> None:
        render.write_stderr(f"{self._erase()}{text}\n")

    def progress(self, p: Any) -> None:
        now = time.monotonic()
        if not self.live or (now - self.last < PROGRESS_EVERY and p.done < p.total):
            return
        self.last = now
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.total - p.done) / rate if rate > 0 else None
        parts = [
            f"{p.done:,}/{p.total:,}",
            f"{p.failed:,} failed",
            f"{p.tokens:,} tokens",
            render.cost_text(p.cost),
            f"{rate:.1f}/s",
            f"ETA {_duration(eta)}" if eta is not None else "ETA ?",
        ]
        render.write_stderr(f"\r\033[K{' · '.join(parts)}")
        self.drawn = True

    def summary(self, p: Any, *, skipped: int, bad: int, output: Path) -> None:
        answered = p.done - p.failed
        parts = [f"{answered:,} answered", f"{p.failed:,} failed"]
        if p.total - p.done:
            parts.append(f"{p.total - p.done:,} not sent")
        if skipped:
            parts.append(f"{skipped:,} already in {output}")
        if bad:
            parts.append(f"{bad:,} bad lines skipped")
        cost = render.cost_text(p.cost)
        if p.unpriced:
            cost += f" (+{p.unpriced:,} unpriced)"
        line = (
            f"{self.job_id}: {', '.join(parts)}; {p.tokens:,} tokens, {cost}, "
            f"{_duration(p.elapsed)}"
        )
        render.write_stderr(f"{self._erase()}{line}\n")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# --- provider batch jobs (submit, status, list, cancel, fetch) -------------------------------------

#: Seconds between two status reads under `fetch --wait`: the first, the growth, the most.
POLL_FIRST, POLL_GROWTH, POLL_MOST = 0.5, 1.6, 60.0


def _jobs_log(env: Any) -> Any:
    """The log that remembers the jobs, opened; ConfigError (exit 3) when it cannot be."""
    from llmcli import logdb, logtrouble, paths
    from llmcli.calllog import LogFailure

    where = logdb.target(env)
    paths.check_log_location(where.path)
    logdb.require_driver(where)
    try:
        return logdb.open_log(where)
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, where.location, writing=True)
        raise errors.ConfigError(trouble.message, trouble.hint) from None


def _logged(action: Any, log: Any) -> Any:
    """Run one job-table statement; a log failure is a configuration error (exit 3)."""
    from llmcli import logtrouble
    from llmcli.calllog import LogFailure

    try:
        return action()
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, log.location, writing=True)
        raise errors.ConfigError(trouble.message, trouble.hint) from None


def _find_job(log: Any, job_id: str) -> Any:
    """The job with this id from the log, with its items; a usage error (exit 2) if unknown."""
    found = _logged(lambda: log.jobs_named(job_id), log)
    if not found:
        raise errors.UsageError(
            f"no batch job {job_id!r} in the log",
            "`llmcli batch list` shows the jobs submitted from here (Gemini's look like batches/ID)",
        )
    if len(found) > 1:
        names = ", ".join(job.provider for job in found)
        raise errors.UsageError(f"{len(found)} jobs are named {job_id!r} (on {names})")
    return found[0]


def _refresh(job: Any, env: Any, log: Any) -> Any:
    """Ask the provider how the job is doing, and keep the answer in the log."""
    from llmcli import batchapi, batchjobs

    adapter = batchapi.adapter(batchjobs.connect(job.provider, env))
    batchjobs.apply(job, adapter.status(job.job_id))
    _logged(lambda: log.job_update(job), log)
    return adapter


@batch.command("submit", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_reading_options
@click.option(
    "--skip-bad", is_flag=True, help="Submit the good lines when some are bad (and list the bad)."
)
@click.option(
    "-p",
    "--provider",
    type=PROVIDER,
    help="openai, anthropic, gemini, or an endpoint that speaks OpenAI's wire.  "
    "[env: LLM_PROVIDER; default: openai]",
)
@click.option("-m", "--model", help="The job's model (one for every line).  [env: LLM_MODEL]")
@_request_options
@click.option("--tag", help="The tag the answers get in the log when fetched.  [env: LLM_TAG]")
def submit(file: Path, **params: Any) -> None:
    """Submit every line of FILE to the provider's Batch API as one job (half price, answered
    within 24 h); print the job's id.

    FILE is read as `batch run` reads it, and every line is checked before anything is sent.
    A job is one provider and one model. Come back with `batch status ID` and
    `batch fetch ID -o out.jsonl`.

    \b
    Examples:
      llmcli batch submit prompts.jsonl -p openai -m gpt-4o-mini
      llmcli batch submit tickets.csv --column text -p anthropic --tag triage
    """
    from llmcli import batchapi, batchjobs, config, providers
    from llmcli.jobstore import Job
    from llmcli.journal import who

    env = environment()
    source, flags = _read(file, params)
    flags["tag"] = params["tag"]
    settings = config.resolve(flags, env)
    provider, model = settings.provider, settings.model
    spec = providers.spec(provider)
    if not batchapi.supported(spec.protocol):
        raise errors.UsageError(
            f"{provider} has no Batch API",
            "submit to openai, anthropic, gemini or an OpenAI-compatible endpoint, or send the "
            "prompts live: llmcli batch run",
        )
    creds = config.credentials(provider, env, required=False)
    adapter = batchapi.adapter(providers.connect(spec, creds.api_key, creds.base_url))
    prepared = batchjobs.prepare(source, flags, env, adapter, provider, model)
    try:
        if prepared.bad:
            _report_bad(file, prepared.bad, skipping=params["skip_bad"])
        if not prepared.count:
            raise errors.UsageError(f"no prompts to submit in {file}")
        config.credentials(provider, env, required=True)  # exit 3 before anything is sent
        log = _jobs_log(env)  # the job must be remembered: a log that cannot be, stops it here
        try:
            label = f"llmcli-{file.stem}"[:60]
            job_id, status = adapter.submit(prepared.entries, model, label)
            job = Job(
                provider=provider,
                protocol=spec.protocol,
                job_id=job_id,
                model=model,
                input_path=str(file.resolve()),
                input_sha256=prepared.sha256,
                requests=prepared.count,
                state=status.state,
                items=prepared.items,
                schemas=prepared.schemas,
                reading={
                    "form": source.form,
                    "column": params["column"],
                    "id_column": params["id_column"],
                    "template": params["template"],
                    "system": settings.system,
                },
                tag=settings.tag,
                host=who()[0],
                os_user=who()[1],
            )
            batchjobs.apply(job, status)
            try:
                _logged(lambda: log.job_add(job), log)
            except errors.ConfigError as exc:
                # The job exists and will be billed: its id must not be lost with the log.
                render.answer(job_id)
                exc.message = f"{job_id} was submitted but could not be remembered: {exc.message}"
                exc.hint = "fetch it from the provider's console; `llmcli batch` cannot find it"
                raise
        finally:
            log.close()
    finally:
        prepared.entries.unlink(missing_ok=True)
    render.answer(job_id)
    requests = "request" if prepared.count == 1 else "requests"
    render.diag(
        f"submitted {prepared.count:,} {requests} to {provider} ({model}) as {job_id}; "
        f"`llmcli batch fetch {job_id} -o answers.jsonl --wait` collects the answers"
    )


def _seconds_since(since: str) -> float | None:
    import datetime as dt

    try:
        then = dt.datetime.strptime(since, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def _age(since: str) -> str:
    seconds = _seconds_since(since)
    return "?" if seconds is None else _duration(seconds)


def _counts_text(job: Any) -> str:
    counts = {k: v for k, v in (job.counts or {}).items() if v and k != "total"}
    parts = [f"{value:,} {name}" for name, value in counts.items()]
    return f"{job.requests:,} requests" + (f" ({', '.join(parts)})" if parts else "")


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "provider": job.provider,
        "model": job.model,
        "state": job.state,
        "provider_state": job.provider_state,
        "requests": job.requests,
        "counts": job.counts,
        "error": job.error,
        "input": job.input_path,
        "input_sha256": job.input_sha256,
        "tag": job.tag,
        "created": job.created,
        "updated": job.updated,
        "age_s": round(_seconds_since(job.created) or 0),
    }


def _job_line(job: Any) -> str:
    state = (
        job.state
        if job.provider_state in (None, job.state)
        else (f"{job.state} ({job.provider_state})")
    )
    line = (
        f"{job.job_id}  {job.provider}  {job.model}  {state}  {_counts_text(job)}  "
        f"submitted {_age(job.created)} ago"
    )
    if job.error:
        line += f"  error: {job.error}"
    return render.printable(line)


FORMAT = click.option(
    "--format",
    "form",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Plain lines, or JSON.",
)


@batch.command("status", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID")
@FORMAT
def status(job_id: str, form: str) -> None:
    """Ask the provider how job ID is doing: its state, counts and age.

    \b
    Examples:
      llmcli batch status batch_6744f0c2
      llmcli batch status batches/123abc --format json
    """
    env = environment()
    log = _jobs_log(env)
    try:
        job = _find_job(log, job_id)
        _refresh(job, env, log)
    finally:
        log.close()
    if form == "json":
        render.as_json_out(_job_dict(job))
    else:
        render.answer(_job_line(job))


@batch.command("list", context_settings=CONTEXT)
@click.option("-n", "--limit", type=click.IntRange(1), default=20, show_default=True,
              help="How many jobs, newest first.")  # fmt: skip
@FORMAT
def list_jobs(limit: int, form: str) -> None:
    """The jobs submitted from here (as the log remembers them), newest first; the unfinished
    ones are asked how they are doing.

    \b
    Examples:
      llmcli batch list
      llmcli batch list -n 5 --format json
    """
    env = environment()
    log = _jobs_log(env)
    try:
        jobs = _logged(lambda: log.jobs(limit), log)
        for job in jobs:
            if job.finished:
                continue
            try:
                _refresh(job, env, log)
            except errors.LlmcliError as exc:
                render.warn(f"{job.job_id}: could not ask {job.provider}: {exc.message}")
    finally:
        log.close()
    if form == "json":
        render.as_json_out([_job_dict(job) for job in jobs])
        return
    if not jobs:
        render.diag("no batch jobs in the log (llmcli batch submit FILE starts one)")
    for job in jobs:
        render.answer(_job_line(job))


@batch.command("cancel", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID")
def cancel(job_id: str) -> None:
    """Cancel job ID: requests not yet answered are not run (those answered are kept, and
    billed); `batch fetch` then lists them as cancelled.

    \b
    Examples:
      llmcli batch cancel batch_6744f0c2
    """
    from llmcli import batchapi, batchjobs
    from llmcli.jobstore import FINAL_STATES

    finished = FINAL_STATES - {"cancelled"}  # ended on its own: there was nothing to cancel
    env = environment()
    log = _jobs_log(env)
    try:
        job = _find_job(log, job_id)
        adapter = batchapi.adapter(batchjobs.connect(job.provider, env))
        try:
            batchjobs.apply(job, adapter.cancel(job.job_id))
        except errors.LlmcliError:
            # OpenAI refuses to cancel a finished batch (409): if it has finished, say so
            # below; if not, the refusal stands.
            batchjobs.apply(job, adapter.status(job.job_id))
            if job.state not in finished:
                raise
        _logged(lambda: log.job_update(job), log)
    finally:
        log.close()
    render.answer(_job_line(job))
    if job.state in finished:
        render.diag(f"{job.job_id} had already {job.state}: nothing was cancelled")


@batch.command("fetch", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per request here; ids already in it are skipped.",
)
@click.option("--wait", is_flag=True, help="Wait for the job to finish (polling, with backoff).")
@click.option(
    "--timeout",
    type=FLOAT,
    help="With --wait: give up after this many seconds (exit 11).  [default: 26 h]",
)
@click.option("--no-log", is_flag=True, help="Do not record the answers in the log.")
def fetch(job_id: str, output: Path, wait: bool, timeout: float | None, no_log: bool) -> None:
    """Write the answers of job ID to -o, one line per request in `batch run`'s format, under
    the input's ids; errored, expired and cancelled requests get an error line.

    Exit 0 when every request was answered, 8 when some were not, 11 when the job has not
    finished (without --wait, or past --timeout). Fetching again adds nothing twice.

    \b
    Examples:
      llmcli batch fetch batch_6744f0c2 -o answers.jsonl
      llmcli batch fetch msgbatch_01 -o answers.jsonl --wait --timeout 3600
    """
    from llmcli import batch as job_module
    from llmcli import batchjobs

    env = environment()
    if not output.resolve().parent.is_dir():
        raise errors.UsageError(f"-o {output}: no folder {output.parent}")
    if timeout is not None and timeout < 0:
        raise errors.UsageError("invalid value for --timeout: it must be 0 or more seconds")
    done, cut = job_module.answered(output)
    log = _jobs_log(env)
    try:
        job = _find_job(log, job_id)
        if output.resolve() == Path(job.input_path):
            raise errors.UsageError(
                "-o names the job's input file", "write the answers to another file"
            )
        adapter = _refresh(job, env, log)
        if not job.finished and wait:
            _wait(job, adapter, log, timeout if timeout is not None else 26 * 3600)
        if not job.finished:
            raise errors.JobPending(
                f"{job.job_id} has not finished: {_job_line(job)}",
                f"run `llmcli batch fetch {job.job_id} -o {output} --wait`, or come back later",
            )
        if cut:
            render.warn(f"{output} ended with a line cut short (a killed run); it was dropped")
        fetcher = batchjobs.Fetcher(job, env, output, log=None if no_log else log)
        result = fetcher.run(adapter.results(job.job_id), done)
    finally:
        log.close()
    if fetcher.log_problem:
        render.warn(fetcher.log_problem)
    answered = job.requests - result.failed
    parts = [f"{answered:,} answered", f"{result.failed:,} failed"]
    if result.skipped:
        parts.append(f"{result.skipped:,} already in {output}")
    cost = render.cost_text(result.cost)
    if result.unpriced:
        cost += f" (+{result.unpriced:,} unpriced)"
    render.diag(f"{job.job_id}: {', '.join(parts)}; {result.tokens:,} tokens, {cost} (batch price)")
    if result.failed:
        shown = ", ".join(render.printable(str(i)) for i in result.failed_ids)
        more = ", ..." if result.failed > len(result.failed_ids) else ""
        raise errors.IncompleteAnswer(
            f"{result.failed} of {job.requests} requests failed (ids {shown}{more}); "
            f'their lines in {output} have an "error"',
            "submit those lines again as a new job, or send them live with `llmcli batch run`",
        )


def _wait(job: Any, adapter: Any, log: Any, timeout: float) -> None:
    """Poll until the job ends or `timeout` passes: a short first wait (small jobs end fast),
    growing to a minute (a job of a day is not polled thousands of times)."""
    from llmcli import batchjobs

    live = render.is_terminal(sys.stderr)
    started = time.monotonic()
    delay = POLL_FIRST
    while not job.finished:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            break
        if live:
            render.write_stderr(
                f"\r\033[K{job.job_id}: {job.state}, {_counts_text(job)}, waited "
                f"{_duration(time.monotonic() - started)}"
            )
        time.sleep(min(delay, left))
        delay = min(delay * POLL_GROWTH, POLL_MOST)
        batchjobs.apply(job, adapter.status(job.job_id))
        _logged(lambda: log.job_update(job), log)
    if live:
        render.write_stderr("\r\033[K")
