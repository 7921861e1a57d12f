"""`llmcli models`: each provider's models and prices offline, aliases, prices.toml, --live.

Offline prices are compared with what genai-prices itself says (read here, in the test), plus a
few written by hand so a wrong reading of its data cannot agree with itself. --live runs against
the fake server, which lists models for all three providers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import KEYS, base_env, run_cli

BUILTIN_PRICING = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
DEFAULTS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "echo": "echo",
}
# The fake server's model lists (tests/fakeserver.py).
FAKE_MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o3-mini"],
    "anthropic": ["claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-4-6"],
    "gemini": ["gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-pro"],
}
LOCAL_KEY = "sk-local-endpoint-KEY-0009"
GENAI_PRICES = f"genai-prices {version('genai-prices')}"


def _json(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)


def _genai_prices(pricing_id: str) -> dict[str, tuple[Decimal | None, Decimal | None, int | None]]:
    """Every model genai-prices has for a provider: (input, output) below any tier, context."""
    from genai_prices import data_snapshot

    now = dt.datetime.now(dt.UTC)
    found = data_snapshot.get_snapshot().find_provider(None, pricing_id, None)
    result = {}
    for info in found.models:
        prices = info.get_prices(now)
        pair = []
        for price in (prices.input_mtok, prices.output_mtok):
            pair.append(getattr(price, "base", price))  # a tiered price starts at its base
        result[info.id] = (pair[0], pair[1], info.context_window)
    return result


def _row(out: str, provider: str, model: str) -> list[str]:
    """The table row of `model` under `provider`, split on the table's column gaps."""
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:2] == [provider, model]:
            return cells
    raise AssertionError(f"no row for {provider} {model} in:\n{out}")


def _write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def _home() -> Path:
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(mode=0o700, exist_ok=True)
    return home


def _by_provider(document: dict) -> dict[str, dict]:
    return {p["provider"]: p for p in document["providers"]}


def _models(listing: dict) -> dict[str, dict]:
    return {m["model"]: m for m in listing["models"]}


def config_toml(url: str = "http://localhost:11434/v1") -> str:
    return f"""
[providers.ollama]
protocol = "openai"
base_url = "{url}"
default_model = "llama3.2"
prices = "free"

[providers.fastgroq]
protocol = "openai"
base_url = "https://api.groq.com/openai/v1"
key_env = "GROQ_API_KEY"
default_model = "llama-3.1-8b-instant"
prices = "groq"

[providers.lab]
protocol = "anthropic"
base_url = "http://10.0.0.5:8080"
default_model = "house-model"

[aliases]
fast = "anthropic/claude-haiku-4-5"
local = "ollama/llama3.2"
quick = "fast"
cheap = "fastgroq/llama-3.1-8b-instant"
"""


# --- offline: built-in providers -----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_each_builtin_provider_lists_genai_prices_models_and_prices(provider):
    result = run_cli("models", "-p", provider, "--json", env=base_env(keys=False))
    assert result.code == 0, result.err
    assert result.err == ""
    (listing,) = _json(result.out)["providers"]
    assert listing["provider"] == provider
    assert listing["prices"] == BUILTIN_PRICING[provider]
    assert listing["default_model"] == DEFAULTS[provider]
    expected = _genai_prices(BUILTIN_PRICING[provider])
    listed = _models(listing)
    assert set(listed) == set(expected)  # the default model is one of genai-prices' ids
    for name, (price_in, price_out, context) in expected.items():
        model = listed[name]
        assert (model["input_usd_per_mtok"], model["output_usd_per_mtok"]) == (price_in, price_out)
        assert model["context_window"] == context
        known = price_in is not None or price_out is not None
        assert model["price_source"] == (GENAI_PRICES if known else None)
    assert [m["model"] for m in listing["models"] if m["default"]] == [DEFAULTS[provider]]
    assert listing["models"][0]["model"] == DEFAULTS[provider]  # the default comes first


@pytest.mark.parametrize(
    ("provider", "model", "price_in", "price_out", "context"),
    [
        ("openai", "gpt-4o-mini", "$0.15", "$0.60", "128,000"),
        ("anthropic", "claude-haiku-4-5", "$1.00", "$5.00", "200,000"),
        ("gemini", "gemini-2.5-flash", "$0.30", "$2.50", "1,048,576"),
    ],
)
def test_table_shows_known_prices_per_million_tokens(provider, model, price_in, price_out, context):
    result = run_cli("models", "-p", provider, env=base_env(keys=False))
    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    assert header == ["provider", "model", "input", "/1M", "output", "/1M", "context", "note"]
    assert _row(result.out, provider, model) == [
        provider,
        model,
        price_in,
        price_out,
        context,
        "default",
    ]


def test_prices_are_right_aligned_and_unknown_ones_are_na_never_zero():
    result = run_cli("models", "-p", "gemini", env=base_env(keys=False))
    assert result.code == 0
    lines = result.out.splitlines()
    price_end = lines[0].index("input /1M") + len("input /1M")
    for line in lines[2:]:
        assert line[price_end - 1] != " ", line  # every input price ends under its header
    # gemma-3: genai-prices has it without prices
    assert _row(result.out, "gemini", "gemma-3")[2:5] == ["n/a", "n/a", "n/a"]
    # a tiered price shows its base, and says where it rises
    row = _row(result.out, "gemini", "gemini-2.5-pro")
    assert row[2:4] == ["$1.25", "$10.00"]
    assert "higher from 200,000 input tokens" in row[-1]


def test_echo_lists_its_one_model_free_without_loading_prices():
    result = run_cli("models", "-p", "echo", "--json", env=base_env(keys=False))
    assert result.code == 0, result.err
    (listing,) = _json(result.out)["providers"]
    assert listing["prices"] == "free"
    assert listing["models"] == [
        {
            "model": "echo",
            "default": True,
            "input_usd_per_mtok": 0,
            "output_usd_per_mtok": 0,
            "context_window": None,
            "price_source": "free",
            "deprecated": False,
            "tiers": [],
        }
    ]


def test_without_p_every_builtin_provider_is_listed_in_order_and_nothing_is_sent(fake):
    result = run_cli("models", "--json", env=base_env(fake))
    assert result.code == 0, result.err
    document = _json(result.out)
    assert [p["provider"] for p in document["providers"]] == list(DEFAULTS)
    assert document["aliases"] == []
    assert fake.requests == []


# --- offline: config.toml endpoints and aliases ------------------------------------------------


def test_endpoints_free_priced_by_genai_id_and_unpriced(tmp_path):
    config = _write_config(tmp_path, config_toml())
    result = run_cli("--config", config, "models", "--json", env=base_env(keys=False))
    assert result.code == 0, result.err
    document = _json(result.out)
    listings = _by_provider(document)
    assert list(listings) == [*DEFAULTS, "ollama", "fastgroq", "lab"]

    # prices = "free": its default model only, at $0
    assert listings["ollama"]["prices"] == "free"
    assert [
        (m["model"], m["input_usd_per_mtok"], m["output_usd_per_mtok"], m["default"])
        for m in listings["ollama"]["models"]
    ] == [("llama3.2", 0, 0, True)]

    # prices = "groq": genai-prices' groq models, with groq's prices
    groq = _genai_prices("groq")
    listed = _models(listings["fastgroq"])
    assert set(listed) == set(groq)
    for name, (price_in, price_out, _) in groq.items():
        assert (listed[name]["input_usd_per_mtok"], listed[name]["output_usd_per_mtok"]) == (
            price_in,
            price_out,
        )
    assert listed["llama-3.1-8b-instant"]["default"] is True

    # no prices: the default model, price unknown: null, never 0
    assert listings["lab"]["prices"] is None
    assert listings["lab"]["models"] == [
        {
            "model": "house-model",
            "default": True,
            "input_usd_per_mtok": None,
            "output_usd_per_mtok": None,
            "context_window": None,
            "price_source": None,
            "deprecated": False,
            "tiers": [],
        }
    ]

    assert document["aliases"] == [
        {
            "name": "fast",
            "target": "anthropic/claude-haiku-4-5",
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
        },
        {"name": "local", "target": "ollama/llama3.2", "provider": "ollama", "model": "llama3.2"},
        {"name": "quick", "target": "fast", "provider": "anthropic", "model": "claude-haiku-4-5"},
        {
            "name": "cheap",
            "target": "fastgroq/llama-3.1-8b-instant",
            "provider": "fastgroq",
            "model": "llama-3.1-8b-instant",
        },
    ]


def test_endpoints_and_aliases_in_the_table(tmp_path):
    config = _write_config(tmp_path, config_toml())
    result = run_cli("--config", config, "models", env=base_env(keys=False))
    assert result.code == 0, result.err
    assert _row(result.out, "ollama", "llama3.2")[2:] == ["$0.00", "$0.00", "n/a", "default"]
    assert _row(result.out, "lab", "house-model")[2:] == ["n/a", "n/a", "n/a", "default"]
    assert _row(result.out, "fastgroq", "llama-3.1-8b-instant")[2:4] == ["$0.05", "$0.08"]
    _, aliases = result.out.split("\n\n")
    assert aliases.splitlines()[0].split() == ["alias", "points", "to", "provider", "model"]
    assert re.split(r"\s{2,}", aliases.splitlines()[4]) == [
        "quick",
        "fast",
        "anthropic",
        "claude-haiku-4-5",
    ]


def test_p_selects_providers_in_the_order_given_and_only_their_aliases(tmp_path):
    config = _write_config(tmp_path, config_toml())
    result = run_cli(
        "--config",
        config,
        "models",
        "-p",
        "ollama",
        "-p",
        "Anthropic",
        "--json",
        env=base_env(keys=False),
    )
    assert result.code == 0, result.err
    document = _json(result.out)
    assert [p["provider"] for p in document["providers"]] == ["ollama", "anthropic"]
    assert [a["name"] for a in document["aliases"]] == ["fast", "local", "quick"]


def test_p_unknown_provider_is_a_usage_error():
    result = run_cli("models", "-p", "nope", env=base_env(keys=False))
    assert result.code == 2
    assert result.out == ""
    assert "'nope' is not one of" in result.err


def test_a_prices_id_genai_prices_does_not_know_is_a_warning_and_n_a(tmp_path):
    config = _write_config(
        tmp_path,
        '[providers.typo]\nprotocol = "openai"\nbase_url = "http://x.example/v1"\n'
        'default_model = "llama3"\nprices = "grok"\n',
    )
    result = run_cli("--config", config, "models", "-p", "typo", env=base_env(keys=False))
    assert result.code == 0
    assert _row(result.out, "typo", "llama3")[2:4] == ["n/a", "n/a"]
    assert "genai-prices knows no provider 'grok'" in result.err
    assert "did you mean 'groq'?" in result.err


def test_a_broken_config_file_is_exit_3_naming_it(tmp_path):
    config = _write_config(tmp_path, "[providers.x\n")
    result = run_cli("--config", config, "models", env=base_env(keys=False))
    assert result.code == 3
    assert result.out == ""
    assert result.err.startswith(f"Error: {config} is not valid TOML")


# --- offline: prices.toml --------------------------------------------------------------------


def test_prices_toml_models_are_listed_and_win_over_genai_prices(tmp_path):
    (_home() / "prices.toml").write_text(
        '[openai."gpt-4o-mini"]\ninput = 9\noutput = 10.5\n\n'
        '[openai."ft:my-model"]\ninput = 0.3\noutput = 1.2\n\n'
        '[lab."house-model"]\ninput = 1.5\noutput = 2\n'
    )
    config = _write_config(tmp_path, config_toml())
    args = ("--config", config, "models", "-p", "openai", "-p", "lab")
    result = run_cli(*args, env=base_env(keys=False))
    assert result.code == 0, result.err
    assert _row(result.out, "openai", "gpt-4o-mini")[2:] == [
        "$9.00",
        "$10.50",
        "128,000",
        "default, prices.toml",
    ]
    assert _row(result.out, "openai", "ft:my-model")[2:4] == ["$0.30", "$1.20"]
    assert _row(result.out, "lab", "house-model")[2:] == [
        "$1.50",
        "$2.00",
        "n/a",
        "default, prices.toml",
    ]
    listed = _models(
        _by_provider(_json(run_cli(*args, "--json", env=base_env(keys=False)).out))["openai"]
    )
    assert listed["ft:my-model"]["price_source"] == "prices.toml"
    assert listed["gpt-4o"]["price_source"] == GENAI_PRICES


def test_a_malformed_prices_toml_is_exit_3():
    (_home() / "prices.toml").write_text('[openai."gpt-4o-mini"]\ninput = "cheap"\n')
    result = run_cli("models", "-p", "openai", env=base_env(keys=False))
    assert result.code == 3
    assert result.out == ""
    assert "prices.toml" in result.err and "needs numbers" in result.err


# --- --json shape ----------------------------------------------------------------------------


def test_json_is_one_document_with_exact_prices_and_tiers():
    result = run_cli("models", "-p", "gemini", "--json", env=base_env(keys=False))
    assert result.code == 0
    assert result.out.count("\n") == 1  # one line: one document
    document = _json(result.out)
    assert set(document) == {"ok", "exit_code", "live", "providers", "aliases"}
    assert (document["ok"], document["exit_code"], document["live"]) == (True, 0, False)
    (listing,) = document["providers"]
    assert set(listing) == {
        "provider",
        "protocol",
        "default_model",
        "prices",
        "models",
        "live",
        "notes",
    }
    assert listing["live"] is None and listing["notes"] == []
    models = _models(listing)
    assert models["gemini-flash-1.5-8b"]["input_usd_per_mtok"] == Decimal("0.0375")
    assert models["gemini-2.5-pro"]["tiers"] == [
        {
            "from_input_tokens": 200000,
            "input_usd_per_mtok": Decimal("2.5"),
            "output_usd_per_mtok": 15,
        }
    ]
    assert models["gemini-2.0-flash"]["deprecated"] is True


# --- --live ----------------------------------------------------------------------------------


def test_live_lists_what_each_provider_says_priced_and_one_request_each(cli, fake):
    result = cli("models", "--live", "-p", "openai", "-p", "anthropic", "-p", "gemini", "--json")
    assert result.code == 0, result.err
    document = _json(result.out)
    assert (document["ok"], document["live"]) == (True, True)
    for name, listing in _by_provider(document).items():
        assert sorted(_models(listing)) == sorted(FAKE_MODELS[name])
        assert listing["live"] == {
            "status": "ok",
            "exit_code": 0,
            "problem": (f"{len(FAKE_MODELS[name])} models listed"),
            "fix": None,
        }
        assert listing["models"][0] == {
            **listing["models"][0],
            "model": DEFAULTS[name],
            "default": True,
        }
    gpt = _models(_by_provider(document)["openai"])["gpt-4o-mini"]
    assert (gpt["input_usd_per_mtok"], gpt["output_usd_per_mtok"]) == (
        Decimal("0.15"),
        Decimal("0.6"),
    )
    sent = [(r.provider, r.method, r.path.split("?")[0]) for r in fake.requests]
    assert sorted(sent) == [
        ("anthropic", "GET", "/v1/models"),
        ("gemini", "GET", "/v1/models"),
        ("openai", "GET", "/v1/models"),
    ]


def test_live_a_refused_key_is_shown_for_its_provider_while_the_others_list(cli, fake):
    bad = "bad-anthropic-key-0000000000000000"
    result = cli(
        "models",
        "--live",
        "-p",
        "openai",
        "-p",
        "anthropic",
        "-p",
        "gemini",
        extra_env={"ANTHROPIC_API_KEY": bad},
    )
    assert result.code == 4
    assert _row(result.out, "openai", "gpt-4o-mini")[2:4] == ["$0.15", "$0.60"]
    assert _row(result.out, "gemini", "gemini-2.5-pro")[0] == "gemini"
    failed = _row(result.out, "anthropic", "-")
    assert failed[-1].startswith("rejected: authentication failed for anthropic (401)")
    assert "Check that ANTHROPIC_API_KEY (from environment) is a current key" in failed[-1]
    assert result.err.startswith("Error: authentication failed for anthropic (401)")
    assert bad not in result.out + result.err

    as_json = cli(
        "models",
        "--live",
        "-p",
        "openai",
        "-p",
        "anthropic",
        "--json",
        extra_env={"ANTHROPIC_API_KEY": bad},
    )
    assert as_json.code == 4
    listings = _by_provider(_json(as_json.out))
    assert listings["anthropic"]["live"]["status"] == "rejected"
    assert listings["anthropic"]["live"]["exit_code"] == 4
    assert listings["anthropic"]["models"] == []
    assert listings["openai"]["live"]["status"] == "ok"
    assert sorted(_models(listings["openai"])) == sorted(FAKE_MODELS["openai"])
    assert _json(as_json.out)["exit_code"] == 4


def test_live_exit_code_is_the_smallest_failing_one(fake):
    # anthropic refused (4), gemini's key missing (3), openai unreachable (7): 3 wins
    env = base_env(fake)
    env.update(ANTHROPIC_API_KEY="bad-key-000000000000", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    del env["GEMINI_API_KEY"]
    result = run_cli("models", "--live", "--json", env=env, timeout=60)
    assert result.code == 3
    listings = _by_provider(_json(result.out))
    assert {n: (x["live"]["status"], x["live"]["exit_code"]) for n, x in listings.items()} == {
        "openai": ("unreachable", 7),
        "anthropic": ("rejected", 4),
        "gemini": ("missing", 3),
        "echo": ("ok", 0),
    }
    assert "Missing required environment variable: GEMINI_API_KEY" in result.err
    assert "2 more problems listed in the JSON on stdout" in result.err

    del env["OPENAI_BASE_URL"]
    env["GEMINI_API_KEY"] = KEYS["GEMINI_API_KEY"]
    env.update(fake.env())
    result = run_cli("models", "--live", "-p", "gemini", "-p", "anthropic", env=env)
    assert result.code == 4


def test_live_named_endpoint_uses_its_own_url_and_key(cli, fake, tmp_path):
    config = _write_config(
        tmp_path,
        f'[providers.local]\nprotocol = "openai"\nbase_url = "{fake.url}/v1"\n'
        'key_env = "LOCAL_KEY"\ndefault_model = "llama3.2"\nprices = "free"\n',
    )
    result = cli(
        "--config", config, "models", "--live", "-p", "local", extra_env={"LOCAL_KEY": LOCAL_KEY}
    )
    assert result.code == 0, result.err
    assert _row(result.out, "local", "gpt-4o")[2:4] == ["$0.00", "$0.00"]
    assert "local does not list its default model 'llama3.2' for this key" in result.err
    (request,) = fake.requests
    assert (request.path, request.api_key) == ("/v1/models", LOCAL_KEY)


def test_live_a_malformed_llm_timeout_is_exit_3_before_any_request(cli, fake):
    result = cli("models", "--live", "-p", "openai", extra_env={"LLM_TIMEOUT": "soon"})
    assert result.code == 3
    assert result.out == ""
    assert "LLM_TIMEOUT" in result.err
    assert fake.requests == []
