"""What a call cost, in USD, from the provider's reported usage.

Prices come from `genai-prices` (offline, from its bundled data, at the time of the call), or
from the user's own `$LLMCLI_HOME/prices.toml` for custom or private models. A model neither
knows has an unknown cost (`None`, shown `n/a`): never $0 and never a guess. The offline `echo`
provider is free.

`genai-prices` is imported only when a remote provider's call is priced: by then the SDK has
loaded pydantic, which it shares, so pricing adds tens of milliseconds, not hundreds.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from llmcli import errors, providers
from llmcli.types import Usage

if TYPE_CHECKING:
    from decimal import Decimal

# `decimal` (and `llmcli.money`) load only when something is priced: after the answer is out,
# never on a command's way to its first token.

# A rough, offline token estimate for `--dry-run`: about four characters per token in English.
CHARS_PER_TOKEN = 4
# No model costs anywhere near this per million tokens: a price above it is a typo (1e308).
MAX_PRICE_PER_MILLION = 100_000


class Price(NamedTuple):
    """A cost and where its price came from (`genai-prices 0.2.3`, `prices.toml`, `free`)."""

    usd: Decimal | None
    source: str | None


class Override(NamedTuple):
    """A user's price for one model, USD per million tokens (exact decimals, as written)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None  # cache writes kept an hour (default: cache_write)

    def cost(self, usage: Usage) -> Decimal:
        cached = usage.cached_input_tokens or 0
        written = usage.cache_write_tokens or 0
        hour = min(usage.cache_write_1h_tokens or 0, written)
        fresh = (usage.input_tokens or 0) - cached - written
        write = self.cache_write if self.cache_write is not None else self.input
        total = fresh * self.input + (usage.output_tokens or 0) * self.output
        total += cached * (self.cached_input if self.cached_input is not None else self.input)
        total += (written - hour) * write
        total += hour * (self.cache_write_1h if self.cache_write_1h is not None else write)
        from llmcli import money

        return money.exact(total / 1_000_000)


def _price(value: Any) -> Decimal:
    """One price from prices.toml: a finite number from 0 to MAX_PRICE_PER_MILLION."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    # The range first: a 400-digit integer overflows `isfinite`'s float.
    if not (0 <= value <= MAX_PRICE_PER_MILLION and math.isfinite(value)):
        raise ValueError("out of range")
    from decimal import Decimal

    return Decimal(str(value))


# The last parse of each price overrides file, by the file's identity (inode, size, mtime):
# serve prepares every request with them, and reading the TOML each time cost more than the rest
# of the price lookup.
_parsed: dict[str, tuple[tuple[int, int, int], dict[tuple[str, str], Override]]] = {}


def load_overrides(path: Path) -> Mapping[tuple[str, str], Override]:
    """Read `prices.toml`: one table per provider, one sub-table per model (docs/cost.md).

    The file as seen within the last second (`endpoints.recent_stat`: serve asks on every
    request); parsed again only when it has changed."""
    from llmcli import endpoints

    try:
        info = endpoints.recent_stat(path)
    except OSError:
        return {}
    if not stat.S_ISREG(info.st_mode):
        return {}
    identity = (info.st_ino, info.st_size, info.st_mtime_ns)
    held = _parsed.get(str(path))
    if held is not None and held[0] == identity:
        return held[1]
    overrides = _parse_overrides(path)
    if len(_parsed) >= 16:  # one path in use, a few in tests: never unbounded
        _parsed.clear()
    _parsed[str(path)] = (identity, overrides)
    return overrides


def _parse_overrides(path: Path) -> dict[tuple[str, str], Override]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.ConfigError(f"cannot read price overrides {path}: {exc}") from None
    overrides: dict[tuple[str, str], Override] = {}
    for provider, models in data.items():
        if not providers.known(provider) or not isinstance(models, dict):
            raise errors.ConfigError(
                f"{path}: [{provider}] is not a provider; use one of: {', '.join(providers.names())}"
            )
        for model, table in models.items():
            try:
                prices = {k: _price(v) for k, v in table.items()}
                overrides[(provider, model)] = Override(**prices)
            except (TypeError, ValueError, AttributeError):
                raise errors.ConfigError(
                    f'{path}: [{provider}."{model}"] needs numbers for input and output '
                    f"(USD per million tokens, from 0 to {MAX_PRICE_PER_MILLION:,}), "
                    "optionally cached_input, cache_write and cache_write_1h"
                ) from None
    return overrides


@functools.lru_cache(maxsize=1)
def genai_prices_version() -> str:
    """Read once per process: the package metadata lookup scans every installed distribution
    (about a millisecond), which a batch job or a server would pay on every answer."""
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')}"


def _calc(
    provider_id: str, model: str, usage: Usage, when: dt.datetime, batch: bool = False
) -> tuple[Decimal, bool] | None:
    """The price from genai-prices, and whether it is its own batch price.

    genai-prices keeps batch prices as variants chosen by `price_context={"processing":
    "batch"}` (Anthropic's, from 2026-10-14); a model without one is priced at the standard
    rate even when asked for batch, so the variant is looked for to tell the two apart.

    `calc_price` finds the model, resolves its price for the date, checks every price and
    orders the usage's units on each call: 0.1-0.2 ms, as much as the rest of a batch job's
    work for an answer. All that depends on the model and the day only, so the first call for
    a (provider, model, batch, day) keeps it (`_Plan`) and later calls only do the arithmetic,
    with genai-prices' own functions, in its order (tests/test_pricing_cache.py checks the
    two agree exactly)."""
    from genai_prices import Usage as PriceUsage

    from llmcli import money

    tokens = PriceUsage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=usage.cached_input_tokens or None,
        cache_write_tokens=usage.cache_write_tokens or None,
        cache_write_1h_tokens=usage.cache_write_1h_tokens or None,
    )
    key = (provider_id, model, batch, _day(when))
    plan = _plans.get(key, _UNPLANNED)
    if isinstance(plan, _Plan):
        total = plan.total(tokens)
        if total is not None:
            return money.exact(total), plan.own_batch_price
    found = _calc_price(provider_id, model, tokens, when, batch)
    if found is None:
        return None
    result, own_batch_price = found
    if plan is _UNPLANNED:
        if len(_plans) >= _PLANS_KEPT:
            _plans.clear()
        _plans[key] = _Plan.make(result, own_batch_price)
    return money.exact(result.total_price), own_batch_price


def _calc_price(
    provider_id: str, model: str, tokens: Any, when: dt.datetime, batch: bool
) -> tuple[Any, bool] | None:
    """genai-prices' `calc_price` for one call, and whether it used its own batch price."""
    from genai_prices import calc_price

    context = {"processing": "batch"} if batch else None
    try:
        result = calc_price(
            tokens, model, provider_id=provider_id, genai_request_timestamp=when,
            price_context=context,
        )  # fmt: skip
    except LookupError:
        return None
    own_batch_price = batch and any(
        variant.when.get("processing") == "batch"
        and (variant.constraint is None or variant.constraint.active(when))
        for variant in getattr(result.model, "price_variants", None) or ()
    )
    return result, own_batch_price


def _day(when: dt.datetime) -> dt.date:
    """The UTC day, which is what genai-prices' dated prices go by (a naive time is UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.date()


_PLANS_KEPT = 256  # (provider, model, batch, day) plans kept; a process rarely uses more than a few


class _Plan(NamedTuple):
    """One model's price for one day, resolved once: the priced units in the order genai-prices
    decomposes the usage (most specific first), each with the more specific units it contains.

    Built from genai-prices' own (private) helpers; where they are missing, or the price is
    not one to keep (`make` gives None), every call of that model goes through `calc_price`."""

    own_batch_price: bool
    units: tuple[tuple[Any, tuple[str, ...]], ...]  # (unit, the usage keys it contains)
    priced: tuple[tuple[Any, Any], ...]  # (unit, price) in the order the prices are summed
    tiered: bool
    requests: bool
    # What genai-prices infers for a usage key not reported (0, or None where it refuses),
    # which depends only on which keys are reported above 0: worked out once per such shape.
    inferred: dict[tuple[frozenset[str], str], int | None]

    @classmethod
    def make(cls, result: Any, own_batch_price: bool) -> _Plan | None:
        try:
            from genai_prices.decompose import is_descendant_or_self
            from genai_prices.types import (
                TieredPrices,
                _collect_resolved_model_prices,
                calc_unit_price,  # noqa: F401 (used by `total`; checked here)
            )
            from genai_prices.units import _get_registry
        except ImportError:
            return None
        if not _fixed_for_the_day(result.model) or result.provider.id == "groq":
            return None  # a time-of-day price, or groq's per-request audio minimum
        priced = _collect_resolved_model_prices(result.model_price, _get_registry())
        by_key = {unit.usage_key: unit for unit, _ in priced if unit.usage_key != "requests"}
        ordered = sorted(by_key.values(), key=lambda unit: (-len(unit.dimensions), unit.usage_key))
        units = tuple(
            (
                unit,
                tuple(
                    other.usage_key
                    for other in ordered
                    if other is not unit and is_descendant_or_self(unit, other)
                ),
            )
            for unit in ordered
        )
        return cls(
            own_batch_price,
            units,
            tuple(priced),
            any(isinstance(price, TieredPrices) for _, price in priced),
            any(unit.usage_key == "requests" for unit, _ in priced),
            {},
        )

    def total(self, tokens: Any) -> Decimal | None:
        """The usage's price (as `ModelPrice.calc_price` sums it), or None when genai-prices
        itself must answer (a usage it would reject: its error is then its own)."""
        from decimal import Decimal

        from genai_prices._usage import subtract_usage_values
        from genai_prices.types import calc_unit_price

        reported = vars(tokens)  # the keys given a value, as genai-prices' Usage stores them
        shape: frozenset[str] | None = None
        counts: dict[str, Any] = {}
        for unit, contained in self.units:
            key = unit.usage_key
            raw = reported.get(key)
            if raw is None:
                if shape is None:
                    shape = frozenset(k for k, v in reported.items() if v > 0)
                raw = self._infer(tokens, shape, key)
                if raw is None:
                    return None
            leaf = subtract_usage_values(raw, (counts[k] for k in contained))
            if leaf < 0:
                return None  # more of a part than of the whole: genai-prices says so
            counts[key] = leaf
        if self.requests:
            counts["requests"] = 1
        threshold = tokens.input_tokens if self.tiered else 0
        total = Decimal(0)
        for unit, price in self.priced:
            total += calc_unit_price(price, counts[unit.usage_key], threshold, unit.per)
        return total

    def _infer(self, tokens: Any, shape: frozenset[str], key: str) -> int | None:
        if (shape, key) not in self.inferred:
            try:
                value = getattr(tokens, key, None)
            except ValueError:  # e.g. cache writes reported without the input they are part of
                value = None
            self.inferred[(shape, key)] = 0 if value == 0 else None
        return self.inferred[(shape, key)]


def _fixed_for_the_day(model: Any) -> bool:
    """Whether every price of the model is the same all day: no constraint, or a start date."""
    from genai_prices.types import StartDateConstraint

    prices = model.prices if isinstance(model.prices, list) else ()
    constraints = [p.constraint for p in prices]
    constraints += [v.constraint for v in getattr(model, "price_variants", None) or ()]
    return all(c is None or isinstance(c, StartDateConstraint) for c in constraints)


_UNPLANNED = object()
_plans: dict[tuple[str, str, bool, dt.date], _Plan | None] = {}


#: What the providers charge for work done through their Batch APIs, where genai-prices has no
#: batch price of its own: half the standard rate (OpenAI's Batch API FAQ, Anthropic's "Batch
#: processing", Gemini's "Batch API" pages; wire-wave2.md §3).
BATCH_DISCOUNT = "0.5"


def cost(
    provider: str,
    models: list[str | None],
    usage: Usage,
    *,
    overrides: Mapping[tuple[str, str], Override] | None = None,
    when: dt.datetime | None = None,
    batch: bool = False,
) -> Price:
    """The cost of one call; `models` in order of preference (reported, then requested).

    `batch`: the call was made through a provider's Batch API. genai-prices' own batch price is
    used where it has one (source `genai-prices X (batch)`); otherwise the standard price with
    the providers' published 50% discount (source `... x 0.5 (batch discount)`), so a report
    can always tell which."""
    cls = providers.spec(provider)
    if not cls.remote or cls.free:
        from decimal import Decimal

        return Price(Decimal(0), "free")
    if usage.input_tokens is None and usage.output_tokens is None:
        return Price(None, None)
    names = [m for m in dict.fromkeys(models) if m]
    for name in names:
        override = (overrides or {}).get((provider, name))
        if override is not None:
            if batch:
                return _discounted(override.cost(usage), "prices.toml")
            return Price(override.cost(usage), "prices.toml")
    if cls.pricing_id is None:
        return Price(None, None)
    when = when or dt.datetime.now(dt.UTC)
    for name in names:
        found = _calc(cls.pricing_id, name, usage, when, batch)
        if found is None:
            continue
        usd, own_batch_price = found
        if not batch:
            return Price(usd, genai_prices_version())
        if own_batch_price:
            return Price(usd, f"{genai_prices_version()} (batch)")
        return _discounted(usd, genai_prices_version())
    return Price(None, None)


def _discounted(usd: Decimal, source: str) -> Price:
    from decimal import Decimal

    from llmcli import money

    return Price(
        money.exact(usd * Decimal(BATCH_DISCOUNT)),
        f"{source} x {BATCH_DISCOUNT} (batch discount)",
    )


def estimate_tokens(text: str) -> int:
    """An offline estimate of a text's token count (labelled as an estimate wherever shown)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0
