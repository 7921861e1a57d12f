"""`llmcli cost` and `llmcli logs`: what the log says was spent, and on what; `llmcli log`:
sending a team log's spool, and copying a local log into a team's (docs/team.md)."""

from __future__ import annotations

import csv
import io
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, environment
from llmcli.wording import plural

if TYPE_CHECKING:
    from llmcli.config import Environment
    from llmcli.logdb import Target
    from llmcli.report import BudgetRow

TABLE_HEADERS = [
    "calls",
    "input tokens",
    "output tokens",
    "total tokens",
    "cost (USD)",
    "saved (USD)",
]
AMOUNTS = ("cost_usd", "saved_usd")  # written as plain decimals in CSV
# `logs -n`: SQLite's LIMIT takes no more than 2**63 - 1; a round bound that says what it is.
MAX_COUNT = 1_000_000_000


def _cost_cell(cost: float | None, unpriced: int) -> str:
    if cost is None:
        return "n/a"
    text = render.cost_text(cost)
    return f"{text} + n/a ({plural(unpriced, 'call')})" if unpriced else text


def _saved_cell(saved: Decimal) -> str:
    """What the response cache saved; `-` when nothing was (no `$0.000000` in every row of a
    log that never used it, which would also read like a price)."""
    return render.cost_text(saved) if saved else "-"


def _not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An empty filter is refused: `--since "$SINCE"` with SINCE unset must not report all time."""
    if value == "":
        name = max(param.opts, key=len)
        raise errors.UsageError(
            f"invalid value for {name}: it is empty", f"give a value, or leave {name} out"
        )
    return value


def _check_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`csv`, `json`, or one of tabulate's own formats (its list read only when needed)."""
    if value in ("csv", "json", "simple"):
        return value
    from tabulate import tabulate_formats

    if value not in tabulate_formats:
        raise click.BadParameter(
            f"{value!r}: use csv, json or one of: {', '.join(tabulate_formats)}"
        )
    return value


@click.command(context_settings=CONTEXT)
@click.option(
    "--by",
    type=click.Choice(["provider", "model", "day", "tag", "host", "user", "source", "batch"]),
    help="Group by this (default: provider and model); host and user: the machine and account "
    "that made each call; source: the command (ask, stream, chat, serve, batch); batch: the "
    "batch run job.",
)
@click.option(
    "--since",
    callback=_not_empty,
    help="From this time: a date (2026-11-01), a date and time, or an age (24h, 7d, 2w).",
)
@click.option(
    "--until",
    callback=_not_empty,
    help="Up to (not including) this time, in the same forms as --since.",
)
@click.option(
    "-p",
    "--provider",
    # Any name the log may hold, in any case (OpenAI is openai): an endpoint since removed from
    # config.toml still has its rows.
    callback=lambda ctx, param, value: (_not_empty(ctx, param, value) or "").lower() or None,
    help="Only this provider.",
)
@click.option("-m", "--model", callback=_not_empty, help="Only this model.")
@click.option("--tag", callback=_not_empty, help="Only calls with this tag.")
@click.option(
    "--format",
    "fmt",
    default="simple",
    show_default=True,
    callback=_check_format,
    help="csv, json, or any tabulate table format (github, grid, psql, pipe, ...).",
)
def cost(by: str | None, since: str | None, until: str | None, provider: str | None, model: str | None,
         tag: str | None, fmt: str) -> None:  # fmt: skip
    """Show what the logged calls cost: calls, tokens and USD per group, with a TOTAL, and
    what answers given from the response cache (`ask --cache`) saved.

    A call whose price is unknown (a model genai-prices does not know, and no entry in
    prices.toml) is shown as n/a and left out of the sums, never counted as $0.

    With a budget set (LLMCLI_BUDGET_DAILY_USD, LLMCLI_BUDGET_MONTHLY_USD, [budget] in
    config.toml), a second table shows each one now, whatever the filters: its limit, what its
    window has spent, what calls under way hold, what is left and when it resets (in --format
    json: "budgets"; not in csv).

    \b
    Examples:
      llmcli cost
      llmcli cost --by day --since 7d
      llmcli cost --by tag --format csv > spend.csv
      llmcli cost -p anthropic --since 2026-11-01 --format json | jq .total.cost_usd
    """
    from llmcli import logdb, report

    env = environment()
    path = logdb.target(env)
    since_at = report.parse_when(since, "--since") if since is not None else None
    until_at = report.parse_when(until, "--until") if until is not None else None
    group = report.GROUPINGS[by] if by else report.DEFAULT_GROUPING
    filters = {"provider": provider, "model": model, "tag": tag}
    rows, total = report.cost_summary(path, group, since=since_at, until=until_at, filters=filters)
    if fmt == "csv":  # one table per file: the budgets are in the other formats
        totals = [{group[0]: "TOTAL", **total.to_dict()}] if total else []
        sys.stdout.write(_csv([r.to_dict() for r in rows] + totals, group))
        return
    budgets = _budgets(env, path)
    if fmt == "json":
        render.as_json_out(
            {
                "rows": [r.to_dict() for r in rows],
                "total": total.to_dict() if total else None,
                "budgets": [b.to_dict() for b in budgets],
                "log": path.location,
            }
        )
        return
    if total is None:
        filtered = any(v is not None for v in (since, until, provider, model, tag))
        render.diag(f"No calls {'match' if filtered else 'logged yet'} (log: {path.location}).")
        _budget_table(budgets, fmt)
        return

    def line(row: Any) -> list[Any]:
        # Names come from the log (a provider may report any model name): escaped for the
        # terminal here, since tabulate's formats do not go through render.table.
        cells = (
            [
                render.printable(str(row.group[g])) if row.group[g] is not None else "-"
                for g in group
            ]
            if row.group
            else [""] * len(group)
        )
        return [*cells, row.calls, row.input_tokens, row.output_tokens, row.total_tokens,
                _cost_cell(row.cost_usd, row.unpriced), _saved_cell(row.saved_usd)]  # fmt: skip

    table = [line(r) for r in rows] + [["TOTAL", *line(total)[1:]]]
    headers = [*group, *TABLE_HEADERS]
    if fmt == "simple":
        numbers = tuple(range(len(group), len(group) + 4))
        render.answer(render.table(table, headers, numeric=numbers))
    else:
        from tabulate import tabulate

        render.answer(
            tabulate(table, headers=headers, tablefmt=fmt, intfmt=",", disable_numparse=False)
        )
    if total.unpriced:
        have, are = ("has", "is") if total.unpriced == 1 else ("have", "are")
        render.diag(
            f"note: {plural(total.unpriced, 'call')} {have} no known price and {are} not in the cost total"
        )
    _budget_table(budgets, fmt, after_table=True)


def _budgets(env: Environment, path: Target) -> list[BudgetRow]:
    """The budgets in force now (whatever the filters), each with its window's spend."""
    from llmcli import budget, report

    return report.budget_status(path, budget.in_force(env).windows())


def _budget_table(budgets: list[BudgetRow], fmt: str, *, after_table: bool = False) -> None:
    """A small table of the budgets after the cost table, in the same format."""
    if not budgets:
        return
    from llmcli.budget import dollars

    table = [
        [
            render.printable(b.budget),
            dollars(b.limit_usd),
            dollars(b.spent_usd),
            dollars(b.reserved_usd),
            dollars(b.left_usd),
            b.resets_at[:16].replace("T", " "),
        ]
        for b in budgets
    ]
    headers = ["budget", "limit", "spent", "reserved", "left", "resets (UTC)"]
    if fmt == "simple":
        text = render.table(table, headers, numeric=(1, 2, 3, 4))
    else:
        from tabulate import tabulate

        text = tabulate(table, headers=headers, tablefmt=fmt, disable_numparse=True)
    render.answer(("\n" if after_table else "") + text)


def _csv(rows: list[dict[str, Any]], group: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    columns = [
        *group,
        "calls",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        # Before cost_usd: scripts that read the cost and unpriced calls as the last two columns
        # (`cut -d, -f7-`, `row[-2]`) keep working.
        "saved_usd",
        "cost_usd",
        "unpriced_calls",
    ]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # 0.000022, not 2.2e-05: spreadsheets and people read it
        amounts = {k: render.cost_decimal(row[k]) for k in AMOUNTS if row[k] is not None}
        writer.writerow({k: ("" if v is None else v) for k, v in {**row, **amounts}.items()})
    return buffer.getvalue()


def _preview(call: dict[str, Any], width: int = 40) -> str:
    """The last thing the user said, on one line; `(unreadable)` when the log row is damaged."""
    if call.get("messages_error"):
        return "(unreadable)"
    said = (
        m["content"]
        for m in reversed(call["messages"] or [])
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    )
    text = " ".join(next(said, "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_count(ctx: click.Context, param: click.Parameter, value: int) -> int:
    # Not in the IntRange: its upper bound would be in --help, for a limit nobody needs to read.
    if value > MAX_COUNT:
        raise click.BadParameter(f"{value} is not in the range 1<=x<={MAX_COUNT}.")
    return value


@click.command(context_settings=CONTEXT)
@click.option(
    "-n",
    "--count",
    "count",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    callback=_check_count,
    help="How many calls.",
)
@click.option("--cid", callback=_not_empty, help="Only this conversation.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the calls as a JSON list, with everything logged.",
)
def logs(count: int, cid: str | None, as_json: bool) -> None:
    """Show the most recent calls from the log, oldest first.

    \b
    Examples:
      llmcli logs
      llmcli logs -n 50 --json | jq '.[] | select(.status != "ok")'
      llmcli logs --cid 3f2a9c01b7de
    """
    from llmcli import logdb, report

    env = environment()
    path = logdb.target(env)
    calls = report.recent_calls(path, count, cid)
    if as_json:
        render.as_json_out(calls)
        return
    if not calls:
        if cid is not None:
            render.diag(f"No conversation with id {cid!r} in the log (log: {path.location}).")
        else:
            render.diag(f"No calls logged yet (log: {path.location}).")
        return
    table = [
        [
            c["id"],
            str(c["ts"])[:19].replace("T", " "),
            c["conversation_id"],
            c["provider"],
            c["model"] or c["requested_model"],
            c["status"] if not c["exit_code"] else f"{c['status']} ({c['exit_code']})",
            c["input_tokens"] if c["input_tokens"] is not None else "?",
            c["output_tokens"] if c["output_tokens"] is not None else "?",
            render.cost_text(c["cost_usd"]),
            _preview(c),
        ]
        for c in calls
    ]
    headers = [
        "id",
        "time (UTC)",
        "conversation",
        "provider",
        "model",
        "status",
        "in",
        "out",
        "cost",
        "prompt",
    ]
    render.answer(render.table(table, headers))


@click.group("log", context_settings=CONTEXT)
def log_group() -> None:
    """The team log (LLMCLI_DB=postgresql://..., docs/team.md): send the calls kept locally
    while the database was away, or copy a local log into it.

    \b
    Examples:
      llmcli log sync
      llmcli log migrate --to postgresql://me@db.example.com:5432/llmcli
    """


def _team_log(url: str | None = None, *, sync: bool) -> tuple[Any, Any]:
    """(target, opened log) for the team log (`url`, else the one configured); ConfigError
    (exit 3) when there is none, or it cannot be reached."""
    from llmcli import logdb, logtrouble
    from llmcli.calllog import LogFailure

    env = environment()
    where = logdb.target(env)
    if url is not None:
        problem = logdb.url_problem(url)
        if problem is not None:
            from llmcli.redact import display_url

            raise errors.ConfigError(
                f"--to is not a PostgreSQL URL ({display_url(url)}): {problem}",
                "write it as postgresql://user@host:5432/dbname (docs/team.md)",
            )
        where = logdb.Target(where.path, url, "--to")
    if not where.shared:
        raise errors.ConfigError(
            "there is no team log: LLMCLI_DB (or [log] url in config.toml) is not set",
            "set LLMCLI_DB=postgresql://user@host:5432/dbname (docs/team.md)",
        )
    try:
        return where, logdb.open_log(where, sync=sync)
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, where.location, writing=True)
        raise errors.ConfigError(trouble.message, trouble.hint) from None


@log_group.command(context_settings=CONTEXT)
def sync() -> None:
    """Send the calls kept in the local spool (while the team log could not be reached) to
    the team log, and say how many. Each call is stored once, however often this runs; any
    command that reaches the team log does the same first.

    \b
    Examples:
      llmcli log sync
    """
    from llmcli import logdb, logtrouble
    from llmcli.calllog import LogFailure

    where, log = _team_log(sync=False)
    try:
        waiting = logdb.spooled(where)
        sent = logdb.send_spool(log, where)
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, where.location, writing=True)
        raise errors.ConfigError(trouble.message, trouble.hint) from None
    finally:
        log.close()
    if not waiting:
        render.answer(f"Nothing to send: the spool is empty (team log: {where.location}).")
        return
    again = waiting - sent
    note = (
        f" ({plural(again, 'call')} {'was' if again == 1 else 'were'} there already)"
        if again
        else ""
    )
    render.answer(f"Sent {plural(waiting, 'call')} from {where.spool} to {where.location}{note}.")


@log_group.command(context_settings=CONTEXT)
@click.option(
    "--to",
    "url",
    metavar="URL",
    help="The team log: postgresql://user@host:5432/dbname (default: LLMCLI_DB or [log] url).",
)
def migrate(url: str | None) -> None:
    """Copy this machine's log ($LLMCLI_HOME/logs.db) into a team log, with a progress line on
    stderr: its calls, and the provider batch jobs it remembers (so `batch fetch` and `batch
    list` find them there). Run it again at any time: nothing already copied is copied twice.

    \b
    Examples:
      llmcli log migrate --to postgresql://me@db.example.com:5432/llmcli
      LLMCLI_DB=postgresql://me@db/llmcli llmcli log migrate
    """
    from llmcli import logdb, logtrouble
    from llmcli.calllog import LogFailure
    from llmcli.jobstore import copy_jobs

    where, team = _team_log(url, sync=True)
    local = logdb.Target(where.path)  # this machine's SQLite log
    if not local.path.exists():
        team.close()
        render.answer(f"Nothing to copy: there is no local log at {local.path}.")
        return
    tty = render.is_terminal(sys.stderr)
    try:
        with logdb.open_log(local) as source:
            total = source.count()

            def progress(done: int) -> None:
                # On a terminal, one line that counts up; in a CI log, one line at the end.
                line = f"copying the local log: {done:,} of {total:,} calls"
                if tty:
                    render.write_stderr(f"\r{line}")
                elif done == total:
                    render.diag(line)

            read, new = logdb.copy_log(source, team, progress)
            jobs_read, jobs_new = copy_jobs(source, team)
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, exc.location, writing=True)
        raise errors.ConfigError(trouble.message, trouble.hint) from None
    finally:
        team.close()
        if tty:
            render.write_stderr("\n")
    already = read - new
    note = f"; {already:,} were there already" if already else ""
    jobs = ""
    if jobs_read:
        jobs = f" And {plural(jobs_read, 'batch job')}: {jobs_new:,} new."
    render.answer(
        f"Copied {plural(read, 'call')} from {local.path} to {where.location}: {new:,} new{note}."
        + jobs
    )
