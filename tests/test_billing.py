"""What a call is billed: usage mapped from each provider's wire fields, and its cost in dollars.

Every expectation here is written out by hand: the token counts from the provider's documented
meaning of its fields, and the dollars from per-million prices read once from genai-prices'
data and written down as literals. Nothing is computed with genai-prices from the same numbers
the code gets, because a test that asks the pricing library what the code asked it would pass
whatever tokens the code dropped.

What each provider's wire numbers mean (and so what the fake is scripted with):
- OpenAI: `prompt_tokens` includes the cached ones, `completion_tokens` the reasoning ones.
- Anthropic: `input_tokens` leaves out cache reads and cache writes; `output_tokens` includes
  the thinking (`output_tokens_details.thinking_tokens` breaks it down).
- Gemini: `promptTokenCount` includes the cached ones; `candidatesTokenCount` leaves out the
  thoughts (`thoughtsTokenCount`), which are billed as output.

The models' prices are plain per-million rates in genai-prices 0.2.3, with no start date and no
tiers (the call is priced at the time it is made, so a dated price would make the expectation
depend on the day the suite runs). `test_the_written_prices_are_genai_prices_own` says so when an
upgrade of genai-prices changes them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.fakeserver import Reply

# Exact arithmetic: genai-prices prices in Decimal and llmcli converts the total to float once,
# so the cost is the double nearest the exact sum. 1e-12 USD is far below a micro-dollar and far
# above that rounding, and any dropped or double-counted token moves the cost by more than it.
EXACT = 1e-12


class Case(NamedTuple):
    model: str
    reply: dict[str, int]  # the provider's own wire numbers (see the module docstring)
    usage: dict[str, int]  # what llmcli must report
    cost_usd: float


CASES = {
    # o4-mini: $1.10 input, $0.275 cached input, $4.40 output per million tokens.
    # prompt_tokens 12,000 of which 10,000 cached; completion_tokens 3,000 of which 2,000 reasoning.
    # (2,000 × 1.10 + 10,000 × 0.275 + 3,000 × 4.40) / 1e6
    #   = (2,200 + 2,750 + 13,200) / 1e6 = 18,150 / 1e6 = $0.01815
    "openai": Case(
        model="o4-mini",
        reply={
            "input_tokens": 12_000,
            "cached_tokens": 10_000,
            "output_tokens": 3_000,
            "reasoning_tokens": 2_000,
        },
        usage={
            "input_tokens": 12_000,
            "cached_input_tokens": 10_000,
            "cache_write_tokens": None,
            "cache_write_1h_tokens": None,
            "output_tokens": 3_000,
            "reasoning_tokens": 2_000,
            "total_tokens": 15_000,
        },
        cost_usd=0.01815,
    ),
    # claude-haiku-4-5: $1 input, $0.10 cache read, $1.25 cache write kept 5 minutes, $2 one
    # kept an hour, $5 output. input_tokens 1,000 uncached + 20,000 cache reads + 4,000 cache
    # writes (1,000 of them for an hour) = 25,000 in; output_tokens 2,500 of which 1,500 thinking.
    # (1,000 × 1 + 20,000 × 0.10 + 3,000 × 1.25 + 1,000 × 2 + 2,500 × 5) / 1e6
    #   = (1,000 + 2,000 + 3,750 + 2,000 + 12,500) / 1e6 = 21,250 / 1e6 = $0.02125
    "anthropic": Case(
        model="claude-haiku-4-5",
        reply={
            "input_tokens": 1_000,
            "cached_tokens": 20_000,
            "cache_write_tokens": 4_000,
            "cache_write_1h_tokens": 1_000,
            "output_tokens": 2_500,
            "reasoning_tokens": 1_500,
        },
        usage={
            "input_tokens": 25_000,
            "cached_input_tokens": 20_000,
            "cache_write_tokens": 4_000,
            "cache_write_1h_tokens": 1_000,
            "output_tokens": 2_500,
            "reasoning_tokens": 1_500,
            "total_tokens": 27_500,
        },
        cost_usd=0.02125,
    ),
    # gemini-2.5-flash: $0.30 input, $0.03 cached input, $2.50 output (thinking included).
    # promptTokenCount 30,000 of which 24,000 cached; 800 candidates + 3,200 thoughts = 4,000 out.
    # (6,000 × 0.30 + 24,000 × 0.03 + 4,000 × 2.50) / 1e6
    #   = (1,800 + 720 + 10,000) / 1e6 = 12,520 / 1e6 = $0.01252
    "gemini": Case(
        model="gemini-2.5-flash",
        reply={
            "input_tokens": 30_000,
            "cached_tokens": 24_000,
            "output_tokens": 800,
            "reasoning_tokens": 3_200,
        },
        usage={
            "input_tokens": 30_000,
            "cached_input_tokens": 24_000,
            "cache_write_tokens": None,
            "cache_write_1h_tokens": None,
            "output_tokens": 4_000,
            "reasoning_tokens": 3_200,
            "total_tokens": 34_000,
        },
        cost_usd=0.01252,
    ),
}

LOGGED = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
LOGGED += ("reasoning_tokens", "cache_write_1h_tokens")


def logged_row(cli, log_id: int) -> dict[str, Any]:
    result = cli("logs", "--json", "-n", "50")
    assert result.code == 0, result.err
    (row,) = [r for r in json.loads(result.out) if r["id"] == log_id]
    return row


@pytest.mark.parametrize("command", ["ask", "stream"])
@pytest.mark.parametrize("provider", list(CASES))
def test_usage_and_cost_are_billed_exactly(cli, fake, provider, command):
    case = CASES[provider]
    fake.script(provider, Reply(thinking=True, **case.reply))
    result = cli(command, "-p", provider, "-m", case.model, "--json", "hi")
    assert result.code == 0, result.err
    (request,) = fake.requests_for(provider)
    assert request.stream is (command == "stream")

    data = json.loads(result.out)
    assert data["usage"] == case.usage
    assert abs(data["cost_usd"] - case.cost_usd) < EXACT, data["cost_usd"]

    row = logged_row(cli, data["log_id"])
    assert {name: row[name] for name in LOGGED} == {name: case.usage[name] for name in LOGGED}
    assert abs(row["cost_usd"] - case.cost_usd) < EXACT, row["cost_usd"]
    assert row["price_source"] == "genai-prices 0.2.3"


def test_anthropic_thinking_without_caching_is_still_reasoning(cli, fake):
    # No cache fields on the wire at all: nothing cached, nothing written, thinking still counted.
    fake.script("anthropic", Reply(input_tokens=300, output_tokens=900, reasoning_tokens=700))
    result = cli("stream", "-p", "anthropic", "-m", "claude-haiku-4-5", "--json", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["usage"] == {
        "input_tokens": 300,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "cache_write_1h_tokens": None,
        "output_tokens": 900,
        "reasoning_tokens": 700,
        "total_tokens": 1_200,
    }
    # (300 × 1 + 900 × 5) / 1e6 = 4,800 / 1e6 = $0.0048 (exact arithmetic, as above)
    assert abs(data["cost_usd"] - 0.0048) < EXACT, data["cost_usd"]


PRICES_TOML = """\
[anthropic."acme-claude"]
input = 2.0
output = 10.0
cached_input = 0.2
cache_write = 2.5
cache_write_1h = 4.0

[gemini."acme-gemini"]
input = 0.5
output = 3.0
"""


def write_prices() -> None:
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text(PRICES_TOML)


def test_prices_toml_prices_cache_reads_writes_and_thinking(cli, fake):
    write_prices()
    fake.script("anthropic", Reply(thinking=True, **CASES["anthropic"].reply))
    result = cli("ask", "-p", "anthropic", "-m", "acme-claude", "--json", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["usage"] == CASES["anthropic"].usage
    # 1,000 uncached × 2.0 + 20,000 read × 0.2 + 3,000 written for 5 minutes × 2.5
    #   + 1,000 written for an hour × 4.0 + 2,500 out × 10.0
    #   = 2,000 + 4,000 + 7,500 + 4,000 + 25,000 = 42,500 per million = $0.0425
    assert abs(data["cost_usd"] - 0.0425) < EXACT, data["cost_usd"]
    row = logged_row(cli, data["log_id"])
    assert abs(row["cost_usd"] - 0.0425) < EXACT and row["price_source"] == "prices.toml"


def test_prices_toml_without_cache_prices_bills_cached_input_as_input(cli, fake):
    write_prices()
    fake.script("gemini", Reply(thinking=True, **CASES["gemini"].reply))
    result = cli("stream", "-p", "gemini", "-m", "acme-gemini", "--json", "hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["usage"] == CASES["gemini"].usage
    # No cached_input price: all 30,000 input tokens at 0.5; 800 + 3,200 thoughts at 3.0.
    #   30,000 × 0.5 + 4,000 × 3.0 = 15,000 + 12,000 = 27,000 per million = $0.027
    assert abs(data["cost_usd"] - 0.027) < EXACT, data["cost_usd"]
    row = logged_row(cli, data["log_id"])
    assert abs(row["cost_usd"] - 0.027) < EXACT and row["price_source"] == "prices.toml"


# Per-million prices as written in the comments above, checked once against genai-prices' data
# so that an upgrade which changes them fails here, with the reason, rather than as a wrong sum.
WRITTEN_PRICES = {
    ("openai", "o4-mini"): {"input": "1.1", "cache_read": "0.275", "output": "4.4"},
    ("anthropic", "claude-haiku-4-5"): {
        "input": "1",
        "cache_read": "0.1",
        "cache_write": "1.25",
        "cache_write_1h": "2",
        "output": "5",
    },
    ("google", "gemini-2.5-flash"): {"input": "0.3", "cache_read": "0.03", "output": "2.5"},
}


@pytest.mark.parametrize(("provider_id", "model"), list(WRITTEN_PRICES))
def test_the_written_prices_are_genai_prices_own(provider_id, model):
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    million = 1_000_000
    # One million tokens of each kind alone, at the time a call made now would be priced.
    probes = {
        "input": PriceUsage(input_tokens=million),
        "cache_read": PriceUsage(input_tokens=million, cache_read_tokens=million),
        "cache_write": PriceUsage(input_tokens=million, cache_write_tokens=million),
        "cache_write_1h": PriceUsage(
            input_tokens=million, cache_write_tokens=million, cache_write_1h_tokens=million
        ),
        "output": PriceUsage(output_tokens=million),
    }
    now = dt.datetime.now(dt.UTC)
    for kind, written in WRITTEN_PRICES[(provider_id, model)].items():
        price = calc_price(
            probes[kind], model, provider_id=provider_id, genai_request_timestamp=now
        ).total_price
        assert price == Decimal(written), (
            f"genai-prices now prices {model} {kind} at ${price}/M, not ${written}/M: "
            "rewrite the expectations in tests/test_billing.py"
        )
