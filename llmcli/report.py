"""Reading the call log back: cost summaries and recent calls, as plain data.

The commands format these (table, CSV, JSON); nothing here prints. A log that does not exist yet
is simply empty, and is not created by reading it. Which log (the local file or a team's
PostgreSQL database) is `llmcli.logdb`'s choice: every function here takes its `Target`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcli import errors

if TYPE_CHECKING:
    from llmcli.logdb import Target

GROUPINGS = {
    "provider": ("provider",),
    "model": ("model",),
    "day": ("day",),
    "tag": ("tag",),
    "host": ("host",),
    "user": ("user",),
    "source": ("source",),
    "batch": ("batch",),
}
DEFAULT_GROUPING = ("provider", "model")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, option: str, now: dt.datetime | None = None) -> str:
    """`7d`, `24h`, `30m`, `2w` ago, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(text)
    if match:
        try:
            when = now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except (OverflowError, ValueError):  # ValueError: more digits than int() takes
            raise _out_of_range(text, option) from None
    else:
        try:
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise errors.UsageError(
                f"invalid value for {option}: {text!r}",
                "use a date (2026-11-01), a date and time (2026-11-01T09:30), or an age (24h, 7d, 2w, 30m)",
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    try:
        when = when.astimezone(dt.UTC)  # 0001-01-01T00:00+01:00 is before year 1 in UTC
    except OverflowError:
        raise _out_of_range(text, option) from None
    # isoformat, not strftime("%Y"): the log's timestamps compare as text, so year 999 must be
    # written 0999 (glibc's %Y writes 999, which sorts after 2026).
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _out_of_range(text: str, option: str) -> errors.UsageError:
    return errors.UsageError(
        f"invalid value for {option}: {text!r} is out of range",
        "use a time from 0001-01-01 to 9999-12-31 (UTC); an age must not reach before year 1",
    )


@contextmanager
def _reading(where: Target) -> Iterator[Any]:
    """The log opened for a report; a log that cannot be read is a configuration error, not a crash.

    What is wrong (damaged, read-only, full disk, no permission, a server away) decides what to
    tell the user: moving a read-only but healthy log aside would be the wrong advice.
    """
    from llmcli import logdb
    from llmcli.calllog import LogFailure

    try:
        store = logdb.open_log(where)
        try:
            yield store
        finally:
            store.close()
    except LogFailure as exc:
        raise _unreadable(exc.error, where) from None


def _unreadable(exc: BaseException, where: Target | Path) -> errors.ConfigError:
    from llmcli import logtrouble

    # The file itself (its folder and disk are looked at), or the team log's masked URL.
    location = (
        where if isinstance(where, Path) else (where.location if where.shared else where.path)
    )
    trouble = logtrouble.describe(exc, location, writing=False)
    return errors.ConfigError(trouble.message, trouble.hint)


def _logged(where: Target) -> bool:
    """Whether there is a log to read (reading must not create one; a team's log is there).

    `exists`, not `is_file`: a folder in the log's place is reported as such, not as an empty log.
    """
    try:
        return where.exists()
    except OSError as exc:  # e.g. a folder on the way that may not be entered
        raise _unreadable(exc, where.path) from None


@dataclass(frozen=True)
class CostRow:
    """One group of calls. `cost_usd` sums the known costs; `unpriced` counts the unknown ones;
    `saved_usd` is what the calls answered from the response cache would have cost."""

    group: dict[str, str | None]
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None  # exact
    unpriced: int
    saved_usd: Decimal = Decimal(0)  # exact

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.group,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced,
            "saved_usd": self.saved_usd,
        }


def _row(group: dict[str, str | None], row: Any) -> CostRow:
    known, unpriced = row["cost_usd"], row["unpriced"]
    if known is None and not unpriced:
        known = Decimal(0)  # only requests that failed before producing anything: nothing billed
    return CostRow(
        group=group,
        calls=row["calls"],
        input_tokens=row["input_tokens"] or 0,
        output_tokens=row["output_tokens"] or 0,
        cost_usd=known,
        unpriced=unpriced,
        saved_usd=row["saved_usd"],
    )


def cost_summary(
    path: Target,
    by: tuple[str, ...] = DEFAULT_GROUPING,
    *,
    since: str | None = None,
    until: str | None = None,
    filters: dict[str, str | None] | None = None,
) -> tuple[list[CostRow], CostRow | None]:
    """Rows per group and the total; ([], None) when nothing was logged in the range."""
    if not _logged(path):
        return [], None
    with _reading(path) as store:
        grouped = store.aggregate(by, since=since, until=until, filters=filters)
    if not grouped:
        return [], None
    rows = [_row({g: r[g] for g in by}, r) for r in grouped]
    # The total is the sum of the groups (exact decimals): one scan of the log, not two.
    known = [r["cost_usd"] for r in grouped if r["cost_usd"] is not None]
    total = {
        "calls": sum(r["calls"] for r in grouped),
        "input_tokens": sum(r["input_tokens"] or 0 for r in grouped),
        "output_tokens": sum(r["output_tokens"] or 0 for r in grouped),
        "cost_usd": sum(known) if known else None,
        "unpriced": sum(r["unpriced"] for r in grouped),
        "saved_usd": sum((r["saved_usd"] for r in grouped), Decimal(0)),
    }
    return rows, _row({}, total)


def recent_calls(
    path: Target, limit: int, conversation_id: str | None = None
) -> list[dict[str, Any]]:
    """The last `limit` calls, oldest first, as dictionaries (messages decoded).

    A row whose messages cannot be decoded keeps its other fields: `messages` is None and
    `messages_error` says why (it is None on every sound row), so one damaged row neither hides
    the others nor stops the report.
    """
    if not _logged(path):
        return []
    with _reading(path) as store:
        return store.recent(limit, conversation_id)


@dataclass(frozen=True)
class BudgetRow:
    """One budget in force now: its limit, what its window has spent and holds, what is left."""

    budget: str  # `daily`, `monthly`, `daily, tag ci`
    tag: str | None
    limit_usd: Decimal
    spent_usd: Decimal  # settled calls
    reserved_usd: Decimal  # held by calls under way (or by a killed process, until it expires)
    since: str
    resets_at: str

    @property
    def left_usd(self) -> Decimal:
        # Never below zero: a limit lowered after the money was spent leaves nothing, not a debt.
        return max(self.limit_usd - self.spent_usd - self.reserved_usd, Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "tag": self.tag,
            "limit_usd": self.limit_usd,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "left_usd": self.left_usd,
            "since": self.since,
            "resets_at": self.resets_at,
        }


def budget_status(path: Target, windows: list[Any]) -> list[BudgetRow]:
    """Each budget window (`llmcli.calllog.Window`) with what the log says it has used.

    The same sums the budget check adds up before a call (`CallLog.spent`), so `cost` shows what
    the next call will be measured against. No log yet: nothing spent, and none is created.
    """
    from llmcli import budget

    if not windows:
        return []
    if _logged(path):
        with _reading(path) as store:
            used = [(s.spent_usd, s.reserved_usd) for s in store.spent(windows)]
    else:
        used = [(Decimal(0), Decimal(0))] * len(windows)
    return [
        BudgetRow(
            w.name if w.tag is None else f"daily, tag {w.tag}",
            w.tag,
            w.limit_usd,
            spent,
            held,
            w.since,
            budget.resets_at(w),
        )
        for w, (spent, held) in zip(windows, used, strict=True)
    ]
