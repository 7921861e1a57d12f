"""Spending limits, checked and reserved in the log before a call is sent.

    [budget]                 # config.toml; LLMCLI_BUDGET_DAILY_USD / _MONTHLY_USD win over it
    daily_usd = 5
    monthly_usd = 100
    allow_unpriced = false   # a model whose price is unknown is refused while a budget is set

    [budget.tags]
    ci = 2                   # daily, for calls tagged `ci`

Windows are the UTC calendar day and month. Before a call goes out, its worst case (input tokens
estimated offline, as `--dry-run` does, plus every one of `--max-tokens` at the output price) is
reserved in the log, in the same transaction that adds up each window and checks it
(`CallLog.reserve`): processes racing for the last dollars queue on the log's lock and none can
pass a limit. The reservation becomes the call's real row when it ends; one left by a killed
process expires after the call's timeout times its attempts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from llmcli import errors

if TYPE_CHECKING:
    from llmcli.calllog import Spent, Window
    from llmcli.config import Environment, Source
    from llmcli.core import Call

ENV_DAILY = "LLMCLI_BUDGET_DAILY_USD"
ENV_MONTHLY = "LLMCLI_BUDGET_MONTHLY_USD"
MAX_LIMIT = Decimal(10_000_000)
_FIELDS = ("daily_usd", "monthly_usd", "allow_unpriced", "tags")


class Budget(NamedTuple):
    """The limits in force; None where none is set."""

    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None
    tags: Mapping[str, Decimal] = MappingProxyType({})  # daily, per tag
    allow_unpriced: bool = False

    @property
    def active(self) -> bool:
        return self.daily_usd is not None or self.monthly_usd is not None or bool(self.tags)

    def windows(self, now: dt.datetime | None = None) -> list[Window]:
        """Every window in force now, each from the start of its UTC day or month."""
        from llmcli.calllog import Window

        now = now or dt.datetime.now(dt.UTC)
        day = now.strftime("%Y-%m-%dT00:00:00.000000Z")
        month = now.strftime("%Y-%m-01T00:00:00.000000Z")
        found = []
        if self.daily_usd is not None:
            found.append(Window("daily", day, self.daily_usd))
        if self.monthly_usd is not None:
            found.append(Window("monthly", month, self.monthly_usd))
        for tag, limit in self.tags.items():
            found.append(Window(f"daily budget for tag {tag!r}", day, limit, tag=tag))
        return found


def parse_usd(raw: Any) -> Decimal:
    """A limit in USD: a finite number from 0 (nothing may be spent) to 10,000,000."""
    if isinstance(raw, bool):
        raise ValueError("must be an amount in USD, e.g. 5 or 2.50")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError("must be an amount in USD, e.g. 5 or 2.50") from None
    if not value.is_finite() or not 0 <= value <= MAX_LIMIT:
        raise ValueError(f"must be an amount in USD from 0 to {MAX_LIMIT:,}")
    return abs(value)  # -0 is 0, not `$-0.00`


def from_table(table: Any, where: str) -> Budget:
    """The `[budget]` table of config.toml; ValueError naming the field and what is wrong."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = [k for k in table if k not in _FIELDS]
    if unknown:
        raise ValueError(
            f"{where} {unknown[0]}: is not a field llmcli reads; use {', '.join(_FIELDS)}"
        )
    values: dict[str, Any] = {}
    for name in ("daily_usd", "monthly_usd"):
        if name in table:
            try:
                values[name] = parse_usd(table[name])
            except ValueError as exc:
                raise ValueError(f"{where} {name}: {exc}") from None
    allow = table.get("allow_unpriced", False)
    if not isinstance(allow, bool):
        raise ValueError(f"{where} allow_unpriced: must be true or false")
    tags = table.get("tags", {})
    if not isinstance(tags, dict):
        raise ValueError(f"{where}.tags: must be a table of tag = daily USD")
    limits = {}
    for tag, limit in tags.items():
        try:
            limits[str(tag)] = parse_usd(limit)
        except ValueError as exc:
            raise ValueError(f"{where}.tags {tag}: {exc}") from None
    return Budget(
        values.get("daily_usd"),
        values.get("monthly_usd"),
        MappingProxyType(limits),
        allow,
    )


def env_limit(env: Environment, var: str) -> tuple[Decimal, Source] | None:
    """A limit set in the environment (or .env) and where; None if unset; ConfigError if malformed.

    One place for the wording, so `config validate` says exactly what `ask` would.
    """
    found = env.lookup(var)
    if found is None:
        return None
    try:
        return parse_usd(found[0]), found[1]
    except ValueError as exc:
        from llmcli import redact

        # A key pasted into the wrong variable must not be echoed back.
        where = f" (from {found[1]})" if found[1].kind == ".env" else ""
        raise errors.ConfigError(
            f"invalid {var}={redact.mask_keys(found[0].strip())!r}{where}: {exc}",
            f"Set it with: export {var}=5",
        ) from None


def resolve(env: Environment, configured: Budget | None) -> Budget:
    """The limits in force: the environment's over config.toml's (ConfigError if malformed)."""
    budget = configured or Budget()
    for var, field in ((ENV_DAILY, "daily_usd"), (ENV_MONTHLY, "monthly_usd")):
        found = env_limit(env, var)
        if found is None:
            continue
        refusal = raise_refusal(env, var, found, getattr(budget, field))
        if refusal is not None:
            raise refusal
        budget = budget._replace(**{field: found[0]})
    return budget


def raise_refusal(
    env: Environment, var: str, found: tuple[Decimal, Source], own: Decimal | None
) -> errors.ConfigError | None:
    """Why a limit from the environment may not replace config.toml's `own`, or None: a
    repository's .env (an implicit one) may tighten the user's limit, never raise it."""
    limit, source = found
    if own is None or limit <= own or not env.untrusted(source):
        return None
    return errors.ConfigError(
        f"{var}={dollars(limit)} in {env.env_file} is not used: a .env found in the "
        f"current directory may not raise the budget config.toml sets ({dollars(own)})",
        env.trust_hint(var),
    )


def in_force(env: Environment) -> Budget:
    """The limits in force for a command that has not read config.toml yet (`cost`)."""
    from llmcli import endpoints

    return resolve(env, endpoints.load(env).budget)


def resets_at(window: Window) -> str:
    """When a window starts again: the next UTC midnight, or the 1st of next month."""
    start = dt.datetime.strptime(window.since, "%Y-%m-%dT%H:%M:%S.%fZ")
    if window.name == "monthly":
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    else:
        end = start + dt.timedelta(days=1)
    return end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dollars(amount: Decimal) -> str:
    """`$4.97` for whole cents; other amounts with their digits (`$0.015`, `$4.973457`,
    `$0.00060015`), so a limit or a cost is never shown rounded to another one, nor read as 0."""
    from llmcli import money

    if amount and abs(amount) < Decimal("0.01"):
        return f"${money.plain(amount)}"
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return f"${amount:,.6f}".rstrip("0")


def exceeded(spent: Spent, amount: Decimal) -> errors.BudgetExceeded:
    """`daily budget $5.00 would be exceeded: $4.97 spent today, this call may cost up to
    $0.04 (resets 00:00 UTC)`; what calls under way hold is named apart from what was spent."""
    window = spent.window
    monthly = window.name == "monthly"
    when = "this month" if monthly else "today"
    held = (
        f" and {dollars(spent.reserved_usd)} held by calls under way" if spent.reserved_usd else ""
    )
    resets = "the 1st, 00:00 UTC" if monthly else "00:00 UTC"
    name = window.name if window.tag is not None else f"{window.name} budget"
    return errors.BudgetExceeded(
        f"{name} {dollars(window.limit_usd)} would be exceeded: {dollars(spent.spent_usd)} spent "
        f"{when}{held}, this call may cost up to {dollars(amount)} (resets {resets})",
        "wait for the reset, lower --max-tokens, or raise the budget (docs/cost.md)",
    )


def worst_case(call: Call) -> Decimal | None:
    """The most the call can cost: its input estimated offline (as `--dry-run` does), every
    output token used. An attachment whose tokens cannot be told offline (a PDF, an image on a
    provider without a published formula) is bounded by `file_tokens`, on the safe side: the
    hold is replaced by the real cost when the answer ends."""
    from llmcli import core

    return core.estimate(call, unknown_file_tokens=file_tokens).price.usd


def file_tokens(part: Any) -> int:
    """A generous bound on an attachment's input tokens: one per 4 bytes, at least 2,000 (a PDF
    page is billed as its text plus an image of the page, about 1,500-3,000 tokens)."""
    return max(len(part.data) // 4, 2000)


def reservation_ttl(call: Call) -> float:
    """How long a reservation outlives a process killed mid-call.

    As long as the call itself can last: every attempt's deadline, the longest wait before each
    retry (a server's Retry-After is honoured up to MAX_RETRY_AFTER) and a few seconds to start.
    A hold that expired while its call was still waiting to retry would let other processes
    spend the same money.
    """
    from llmcli.retry import MAX_BACKOFF, MAX_RETRY_AFTER

    retries = call.request.retries
    attempts = retries + 1
    waits = retries * max(MAX_BACKOFF, MAX_RETRY_AFTER)
    return max(1.0, math.ceil(call.request.timeout * attempts + waits + 5))


def unpriced(call: Call) -> errors.BudgetExceeded:
    request = call.request
    return errors.BudgetExceeded(
        f"{request.provider} {request.model} has no known price, so a budget cannot bound it",
        "price it in prices.toml (docs/cost.md), or set allow_unpriced = true under [budget] "
        "in config.toml",
    )
