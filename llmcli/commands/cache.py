"""`llmcli cache`: what the response cache holds and has saved, and emptying it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, environment
from llmcli.wording import plural


@contextmanager
def _log(*, writing: bool) -> Iterator[Any]:
    """The log that holds the cache, or None when there is none yet (reading must not create
    one); a log that cannot be opened is a configuration error, worded by what is wrong."""
    from llmcli import logdb, logtrouble
    from llmcli.calllog import LogFailure

    where = logdb.target(environment())
    path = where.path if not where.shared else where.location
    try:
        if not where.exists():
            yield None
            return
        log = logdb.open_log(where)
        try:
            yield log
        finally:
            log.close()
    except (LogFailure, OSError) as exc:
        cause = exc.error if isinstance(exc, LogFailure) else exc
        trouble = logtrouble.describe(cause, path, writing=writing)
        raise errors.ConfigError(trouble.message, trouble.hint) from None


def _size(size: int) -> str:
    """`512 B`, `34.5 KB`, `1.2 MB` (powers of 1000, as `ls -h --si`)."""
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def _when(ts: str | None) -> str:
    return "-" if ts is None else ts[:19].replace("T", " ") + " UTC"


@click.group(context_settings=CONTEXT)
def cache() -> None:
    """The response cache: answers kept by `ask --cache` and `stream --cache`.

    A request asked again with the cache on is answered from here, with no network call and
    no cost; `cost` shows what that saved. Entries live in the log database.

    \b
    Examples:
      llmcli cache stats
      llmcli cache stats --json | jq .saved_usd
      llmcli cache clear --older-than 7d
      llmcli cache clear
    """


@cache.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(as_json: bool) -> None:
    """How many answers are stored, their size, the oldest and newest, and what the cache has
    saved so far (from the calls the log records as answered from it).

    \b
    Examples:
      llmcli cache stats
      llmcli cache stats --json | jq .entries
    """
    from decimal import Decimal

    from llmcli import logdb
    from llmcli.calllog import CacheStats

    with _log(writing=False) as log:
        found = log.cache_stats() if log is not None else None
    found = found or CacheStats(0, 0, None, None, 0, Decimal(0))
    if as_json:
        render.as_json_out({**found._asdict(), "log": logdb.target(environment()).location})
        return
    rows = [
        ["entries", f"{found.entries:,}"],
        ["size", _size(found.size_bytes)],
        ["oldest", _when(found.oldest)],
        ["newest", _when(found.newest)],
        ["hits", f"{found.hits:,} (calls answered from the cache)"],
        ["saved", render.cost_text(found.saved_usd)],
    ]
    width = max(len(name) for name, _ in rows)
    render.answer("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))


@cache.command(context_settings=CONTEXT)
@click.option(
    "--older-than",
    metavar="AGE|DATE",
    help="Only answers stored before this: an age (30m, 24h, 7d, 2w) or a date (2026-11-01).",
)
def clear(older_than: str | None) -> None:
    """Remove stored answers (all of them, or those older than --older-than) and say how
    many. The log's record of past calls, and what they saved, stays.

    \b
    Examples:
      llmcli cache clear --older-than 7d
      llmcli cache clear
    """
    from llmcli import report

    before = report.parse_when(older_than, "--older-than") if older_than is not None else None
    with _log(writing=True) as log:
        removed = log.cache_clear(before) if log is not None else 0
    render.answer(f"Removed {plural(removed, 'cached answer')}.")
