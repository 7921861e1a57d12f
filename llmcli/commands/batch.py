"""`llmcli batch run`: many prompts from one file, answered live (docs/batch.md).

`llmcli.batch` (the job itself) is imported only when a job runs: `--help` stays light.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, FLOAT, INTEGER, PROVIDER, environment

PROGRESS_EVERY = 0.1  # seconds between two redraws of the progress line


@click.group(context_settings=CONTEXT)
def batch() -> None:
    """Many prompts from one file: JSON Lines, plain text or CSV (see docs/batch.md).

    \b
    Examples:
      llmcli batch run prompts.jsonl -o answers.jsonl
      llmcli batch run tickets.csv --column text --template 'Classify: {text}' -o labels.jsonl
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
@click.option(
    "--format",
    "form",
    type=click.Choice(["jsonl", "text", "csv"]),
    help="The input's form.  [default: from the file name: .jsonl, .csv, else text]",
)
@click.option("--column", metavar="NAME", help="CSV: the column that holds the prompt.")
@click.option(
    "--id-column", metavar="NAME", help="CSV: the column that holds the id.  [default: row number]"
)
@click.option(
    "--template",
    metavar="TEXT",
    help="Fill the prompt from each line's fields: 'Classify: {text}' (CSV columns, JSON "
    "fields; a text line is {text}).",
)
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
@click.option("-s", "--system", help="System prompt for lines that have none.")
@click.option("-t", "--temperature", type=FLOAT, help="Sampling temperature.")
@click.option("--max-tokens", type=INTEGER, help="Most tokens per answer.  [default: 1000]")
@click.option("--schema", metavar="SCHEMA", help="Answer with JSON matching this schema.")
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
    source = job_module.Source(
        file,
        params["form"],
        column=params["column"],
        id_column=params["id_column"],
        template=params["template"],
    )
    flags = {
        name: params[name]
        for name in ("provider", "model", "system", "temperature", "max_tokens", "schema")
    }
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
