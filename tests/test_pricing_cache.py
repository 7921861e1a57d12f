"""`pricing.cost` keeps each model's resolved price for the day (`pricing._Plan`) and does only
the arithmetic on later calls: its prices must stay exactly genai-prices' own.

Checked against `genai_prices.calc_price` itself, for every model of the three providers'
price lists, for usages that cross Anthropic's and Gemini's long-context tiers, with cache reads
and (one-hour) cache writes, standard and batch, before and after the dated batch prices."""

from __future__ import annotations

import datetime as dt

import pytest

from llmcli import money, pricing
from llmcli.types import Usage

# (input, output, cache read, cache write, of which kept an hour)
USAGES = [
    (0, 0, 0, 0, 0),
    (1, 1, 0, 0, 0),
    (1234, 567, 0, 0, 0),
    (1234, 567, 1000, 0, 0),
    (5000, 80, 1000, 2000, 0),
    (5000, 80, 1000, 2000, 500),
    (5000, 80, 0, 2000, 2000),
    (199_999, 10, 0, 0, 0),
    (200_001, 10, 0, 0, 0),
    (272_001, 9, 0, 0, 0),
    (300_000, 4000, 100_000, 50_000, 20_000),
    (1_000_001, 1, 0, 0, 0),
    (10, 5, 20, 0, 0),  # more cached than sent: genai-prices rejects it
]
DAYS = [
    dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC),
    dt.datetime(2026, 10, 14, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),  # 13 Oct UTC
    dt.datetime(2026, 10, 14, 0, 30, tzinfo=dt.UTC),
]


def models(provider_id: str) -> list[str]:
    from genai_prices import data_snapshot

    for provider in data_snapshot.get_snapshot().providers:
        if provider.id == provider_id:
            return [model.id for model in provider.models]
    raise AssertionError(f"genai-prices has no provider {provider_id}")


def own_batch_price(provider_id: str, model: str) -> bool:
    """Whether genai-prices has a batch price of its own for the model (from some date)."""
    from genai_prices import data_snapshot

    for provider in data_snapshot.get_snapshot().providers:
        for info in provider.models if provider.id == provider_id else ():
            if info.id == model:
                variants = info.price_variants or ()
                return any(v.when.get("processing") == "batch" for v in variants)
    return False


def reference(provider_id: str, model: str, usage: tuple[int, ...], when, batch: bool):
    """What `pricing._calc` gave before the plans: `calc_price` on every call."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    inp, out, read, write, hour = usage
    tokens = PriceUsage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read or None,
        cache_write_tokens=write or None,
        cache_write_1h_tokens=hour or None,
    )
    context = {"processing": "batch"} if batch else None
    try:
        result = calc_price(
            tokens, model, provider_id=provider_id, genai_request_timestamp=when,
            price_context=context,
        )  # fmt: skip
    except LookupError:
        return None
    except ValueError as exc:
        return ("ValueError", str(exc))
    own = batch and any(
        variant.when.get("processing") == "batch"
        and (variant.constraint is None or variant.constraint.active(when))
        for variant in getattr(result.model, "price_variants", None) or ()
    )
    return money.exact(result.total_price), own


def planned(provider_id: str, model: str, usage: tuple[int, ...], when, batch: bool):
    inp, out, read, write, hour = usage
    mine = Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=hour,
    )
    try:
        return pricing._calc(provider_id, model, mine, when, batch)
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize("provider_id", ["openai", "anthropic", "google"])
def test_planned_prices_are_calc_prices_own(provider_id):
    pricing._plans.clear()
    compared = planned_models = 0
    for model in models(provider_id):
        for when in DAYS:
            for batch in (False, True):
                # A usage first (the call that makes the plan), then every usage through it.
                for usage in [USAGES[2], *USAGES]:
                    expected = reference(provider_id, model, usage, when, batch)
                    got = planned(provider_id, model, usage, when, batch)
                    assert got == expected, (model, usage, when, batch)
                    compared += 1
        planned_models += any(
            isinstance(plan, pricing._Plan)
            for key, plan in pricing._plans.items()
            if key[1] == model
        )
    # The comparison is only worth something if the plans were used for most models.
    assert compared > 100
    assert planned_models >= len(models(provider_id)) // 2


def test_a_plan_is_kept_per_day():
    """A price that changes on a date (Anthropic's batch prices from 2026-10-14) is planned
    apart for each day: the day before keeps the standard rate with the discount."""
    from decimal import Decimal

    pricing._plans.clear()
    model = next(m for m in models("anthropic") if own_batch_price("anthropic", m))
    usage = Usage(input_tokens=1000, output_tokens=1000)
    before = dt.datetime(2026, 10, 13, 23, 59, tzinfo=dt.UTC)
    after = dt.datetime(2026, 10, 14, 0, 1, tzinfo=dt.UTC)
    standard = reference("anthropic", model, (1000, 1000, 0, 0, 0), before, False)[0]
    own = reference("anthropic", model, (1000, 1000, 0, 0, 0), after, True)[0]
    for _ in range(2):  # the second round goes through the plans
        old = pricing.cost("anthropic", [model], usage, when=before, batch=True)
        new = pricing.cost("anthropic", [model], usage, when=after, batch=True)
        assert old.source.endswith("x 0.5 (batch discount)")
        assert old.usd == money.exact(standard * Decimal("0.5"))
        assert new.source.endswith("(batch)")
        assert new.usd == own
