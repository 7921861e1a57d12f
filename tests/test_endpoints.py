"""Named endpoints and aliases (`config.toml`), as a user meets them through the installed CLI.

Every endpoint lives on the fake server under its own path prefix (`/ollama/v1`, `/claude-proxy`,
`/gem`), with its own key variable, beside the built-in providers at their usual paths: each test
checks what went on the wire (URL, key, model), what the user saw, and what the log kept.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from pathlib import Path

import pexpect
import pytest

from tests.conftest import KEYS, LLMCLI, base_env, run_cli
from tests.fakeserver import Reply

LOCAL_KEY = "olk-test-endpoint-KEY-0004"  # LOCAL_LLM_KEY: the OpenAI-speaking endpoint's
PROXY_KEY = "sk-ant-test-proxy-KEY-0005"  # CLAUDE_PROXY_KEY: the Anthropic-speaking one's
GEM_KEY = "AIza-test-gem-proxy-KEY-0006"  # GEM_PROXY_KEY: the Gemini-speaking one's
ROUTER_KEY = "sk-or-v1-test-router-KEY-0007"  # ROUTER_KEY: an aggregator's
GROQ_KEY = "gsk_test-groq-KEY-0008"
ENDPOINT_KEYS = {
    "LOCAL_LLM_KEY": LOCAL_KEY,
    "CLAUDE_PROXY_KEY": PROXY_KEY,
    "GEM_PROXY_KEY": GEM_KEY,
    "ROUTER_KEY": ROUTER_KEY,
    "GROQ_KEY": GROQ_KEY,
}
ALL_KEYS = {*KEYS.values(), *ENDPOINT_KEYS.values()}


def config_toml(url: str) -> str:
    """A config with one endpoint of each protocol, an aggregator, a priced one and aliases."""
    return f"""
[providers.ollama]
protocol = "openai"
base_url = "{url}/ollama/v1"
key_env = "LOCAL_LLM_KEY"
default_model = "llama3.2"
prices = "free"

[providers.claude-proxy]
protocol = "anthropic"
base_url = "{url}/claude-proxy"
key_env = "CLAUDE_PROXY_KEY"
default_model = "claude-3-5-haiku-latest"

[providers.gem]
protocol = "gemini"
base_url = "{url}/gem"
key_env = "GEM_PROXY_KEY"
default_model = "gemini-2.0-flash"

[providers.openrouter]
protocol = "openai"
base_url = "{url}/openrouter/api/v1"
key_env = "ROUTER_KEY"
default_model = "openai/gpt-4o-mini"

[providers.groq]
protocol = "openai"
base_url = "{url}/groq/openai/v1"
key_env = "GROQ_KEY"
default_model = "llama-3.3-70b-versatile"
prices = "groq"

[aliases]
fast = "anthropic/claude-haiku-4-5"
local = "ollama/llama3.2"
quick = "local"
"""


def home() -> Path:
    return Path(os.environ["LLMCLI_HOME"])


def write_config(text: str, path: Path | None = None) -> Path:
    """`$LLMCLI_HOME/config.toml` (or `path`) with `text`."""
    path = path or home() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def endpoints(fake):
    """The config above in `$LLMCLI_HOME/config.toml`."""
    return write_config(config_toml(fake.url))


@pytest.fixture
def ecli(cli, endpoints):
    """`cli` with every endpoint's key variable set too."""

    def invoke(*args: str, extra_env: dict[str, str] | None = None, **kwargs):
        return cli(*args, extra_env={**ENDPOINT_KEYS, **(extra_env or {})}, **kwargs)

    return invoke


def wire(rec) -> tuple[str, str | None, str | None]:
    """Where a request went, the key it carried and the model it asked for."""
    return rec.path, rec.api_key, rec.model


def no_key_shown(result, *keys: str) -> None:
    for key in keys or ALL_KEYS:
        assert key not in result.out and key not in result.err


def logged(ecli) -> list[dict]:
    result = ecli("logs", "--json", "-n", "50")
    assert result.code == 0, result.err
    return json.loads(result.out)


# --- an OpenAI-speaking endpoint on another path with its own key ----------------------------------


def test_ask_and_stream_go_to_the_endpoint_with_its_key_and_the_builtin_openai_is_untouched(
    ecli, fake
):
    fake.script("openai", Reply(text="Local answer."), prefix="/ollama")
    asked = ecli("ask", "-p", "ollama", "Hello?")
    streamed = ecli("stream", "-p", "ollama", "Hello?")
    builtin = ecli("ask", "-p", "openai", "Hello?")

    assert (asked.code, asked.out) == (0, "Local answer.\n"), asked.err
    assert (streamed.code, streamed.out) == (0, "Hello from the fake server.\n"), streamed.err
    assert builtin.code == 0, builtin.err
    first, second, third = fake.requests_for("openai")
    assert wire(first) == ("/ollama/v1/chat/completions", LOCAL_KEY, "llama3.2")
    assert first.headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert (wire(second), second.stream) == (wire(first), True)
    assert wire(third) == ("/v1/chat/completions", KEYS["OPENAI_API_KEY"], "gpt-4o-mini")
    # No other key travelled with the endpoint's requests.
    for rec in (first, second):
        assert not any(key in str(rec.headers) for key in ALL_KEYS - {LOCAL_KEY})
    for result in (asked, streamed, builtin):
        no_key_shown(result)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("-p", "OLLAMA"), {}),
        (("-p", " Ollama "), {}),
        ((), {"LLM_PROVIDER": "ollama"}),
        ((), {"LLM_PROVIDER": "Ollama"}),
    ],
    ids=["-p OLLAMA", "-p ' Ollama '", "LLM_PROVIDER", "LLM_PROVIDER Ollama"],
)
def test_the_endpoint_is_chosen_by_name_in_any_case_by_flag_or_environment(ecli, fake, args, env):
    result = ecli("ask", *args, "--json", "Hello?", extra_env=env)
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert (answer["provider"], answer["model"]) == ("ollama", "llama3.2")
    (rec,) = fake.requests
    assert wire(rec) == ("/ollama/v1/chat/completions", LOCAL_KEY, "llama3.2")


def test_json_and_the_log_name_the_endpoint_and_its_model(ecli, fake):
    result = ecli("ask", "-p", "ollama", "-m", "qwen2.5:7b", "--json", "Hello?")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert (answer["provider"], answer["model"], answer["requested_model"]) == (
        "ollama",
        "qwen2.5:7b",
        "qwen2.5:7b",
    )
    (row,) = logged(ecli)
    assert (row["provider"], row["model"], row["status"]) == ("ollama", "qwen2.5:7b", "ok")
    assert row["id"] == answer["log_id"]
    assert wire(fake.requests[0])[2] == "qwen2.5:7b"


def test_piped_chat_talks_to_the_endpoint_every_turn(ecli, fake):
    fake.script("openai", Reply(text="One."), Reply(text="Two."), prefix="/ollama")
    result = ecli("chat", "-p", "ollama", stdin="first\nsecond\n")
    assert (result.code, result.out) == (0, "One.\nTwo.\n"), result.err
    first, second = fake.requests
    assert wire(first) == wire(second) == ("/ollama/v1/chat/completions", LOCAL_KEY, "llama3.2")
    assert [m["content"] for m in second.body["messages"]] == ["first", "One.", "second"]
    assert {row["provider"] for row in logged(ecli)} == {"ollama"}


def test_chat_switches_to_the_endpoint_and_back_with_slash_provider(fake, endpoints):
    fake.script("openai", Reply(text="From OpenAI."), Reply(text="From Ollama."))
    env = {**base_env(fake), **ENDPOINT_KEYS}
    chat = pexpect.spawn(LLMCLI, ["chat", "-p", "openai"], env=env, timeout=20, encoding="utf-8")
    try:
        chat.expect_exact("> ")
        chat.sendline("one")
        chat.expect_exact("From OpenAI.")
        chat.expect_exact("> ")
        chat.sendline("/provider OLLAMA")
        chat.expect_exact("provider ollama, model llama3.2")
        chat.expect_exact("> ")
        chat.sendline("two")
        chat.expect_exact("From Ollama.")
        chat.expect_exact("> ")
        chat.sendline("/provider nowhere")
        chat.expect_exact("Error: ")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
    builtin, endpoint = fake.requests
    assert wire(builtin) == ("/v1/chat/completions", KEYS["OPENAI_API_KEY"], "gpt-4o-mini")
    assert wire(endpoint) == ("/ollama/v1/chat/completions", LOCAL_KEY, "llama3.2")
    # The conversation carried over to the endpoint.
    assert [m["content"] for m in endpoint.body["messages"]] == ["one", "From OpenAI.", "two"]


def test_dry_run_shows_the_endpoint_its_key_variable_and_masked_key_and_sends_nothing(ecli, fake):
    result = ecli("ask", "-p", "ollama", "--dry-run", "Hello?")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert (shown["provider"], shown["model"], shown["params"]["model"]) == (
        "ollama",
        "llama3.2",
        "llama3.2",
    )
    assert shown["endpoint"] == f"{fake.url}/ollama/v1"
    assert (shown["api_key_variable"], shown["api_key"]) == ("LOCAL_LLM_KEY", "...0004")
    assert shown["worst_case"]["cost_usd"] == 0  # prices = "free"
    assert fake.requests == []
    no_key_shown(result)


def test_cost_and_logs_report_the_endpoint_beside_the_builtin_providers(ecli, fake):
    assert ecli("ask", "-p", "ollama", "one").code == 0
    assert ecli("ask", "-p", "ollama", "two").code == 0
    assert ecli("ask", "-p", "openai", "three").code == 0

    mine = ecli("cost", "-p", "Ollama")
    assert mine.code == 0, mine.err
    rows = [line.split() for line in mine.out.splitlines()[2:]]
    assert [row[:3] for row in rows] == [["ollama", "llama3.2", "2"], ["TOTAL", "2", "22"]]
    by_provider = ecli("cost", "--by", "provider")
    assert by_provider.code == 0, by_provider.err
    lines = {line.split()[0]: line for line in by_provider.out.splitlines() if line.strip()}
    assert lines["ollama"].split()[1] == "2" and "$0.000000" in lines["ollama"]
    assert lines["openai"].split()[1] == "1"
    table = ecli("logs")
    assert table.code == 0, table.err
    assert [line.split()[4] for line in table.out.splitlines()[2:]] == [
        "ollama",
        "ollama",
        "openai",
    ]
    # Any name the log may hold is a filter (an endpoint since removed still has its rows).
    nowhere = ecli("cost", "-p", "nowhere")
    assert (nowhere.code, nowhere.out) == (0, "") and "No calls match" in nowhere.err


def test_an_endpoint_whose_key_variable_is_unset_fails_fast_naming_it(cli, fake, endpoints):
    result = cli("ask", "-p", "ollama", "Hello?")
    assert (result.code, result.out) == (3, "")
    assert "LOCAL_LLM_KEY" in result.err and "export LOCAL_LLM_KEY=" in result.err
    assert fake.requests == []
    # The built-in openai key is not a stand-in for it.
    no_key_shown(result)


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
def test_an_endpoint_without_key_env_never_sends_a_providers_key(cli, fake, protocol):
    base = {"openai": "/keyless/v1", "anthropic": "/keyless", "gemini": "/keyless"}[protocol]
    write_config(
        f'[providers.keyless]\nprotocol = "{protocol}"\nbase_url = "{fake.url}{base}"\n'
        'default_model = "local-model"\n'
    )
    result = cli("ask", "-p", "keyless", "Hello?", extra_env={"GOOGLE_API_KEY": GEM_KEY})
    (rec,) = fake.requests
    assert rec.prefix == "/keyless"
    assert not any(key in str(rec.headers) + str(rec.query) for key in ALL_KEYS)
    assert result.code == 0, result.err


# --- Anthropic- and Gemini-speaking endpoints -------------------------------------------------------


def test_an_anthropic_endpoint_gets_its_own_key_and_the_builtin_anthropic_its_own(ecli, fake):
    fake.script("anthropic", Reply(text="Via the proxy."), prefix="/claude-proxy")
    asked = ecli("ask", "-p", "claude-proxy", "--json", "Hello?")
    streamed = ecli("stream", "-p", "CLAUDE-PROXY", "-m", "claude-3-5-sonnet-latest", "Hello?")
    builtin = ecli("ask", "-p", "anthropic", "Hello?")

    assert asked.code == 0, asked.err
    answer = json.loads(asked.out)
    assert (answer["content"], answer["provider"], answer["model"]) == (
        "Via the proxy.",
        "claude-proxy",
        "claude-3-5-haiku-latest",
    )
    assert (streamed.code, streamed.out) == (0, "Hello from the fake server.\n"), streamed.err
    assert builtin.code == 0, builtin.err
    first, second, third = fake.requests_for("anthropic")
    assert wire(first) == ("/claude-proxy/v1/messages", PROXY_KEY, "claude-3-5-haiku-latest")
    assert "anthropic-version" in first.headers
    assert wire(second) == ("/claude-proxy/v1/messages", PROXY_KEY, "claude-3-5-sonnet-latest")
    assert second.stream
    assert wire(third) == ("/v1/messages", KEYS["ANTHROPIC_API_KEY"], "claude-haiku-4-5")
    assert [row["provider"] for row in logged(ecli)] == [
        "claude-proxy",
        "claude-proxy",
        "anthropic",
    ]


def test_a_gemini_endpoint_gets_its_own_key(ecli, fake):
    asked = ecli("ask", "-p", "gem", "Hello?")
    streamed = ecli("stream", "-p", "gem", "Hello?")
    assert (asked.code, asked.out) == (0, "Hello from the fake server.\n"), asked.err
    assert (streamed.code, streamed.out) == (0, "Hello from the fake server.\n"), streamed.err
    first, second = fake.requests_for("gemini")
    for rec, action in ((first, "generateContent"), (second, "streamGenerateContent")):
        assert (rec.prefix, rec.api_key, rec.model) == ("/gem", GEM_KEY, "gemini-2.0-flash")
        assert rec.path.startswith("/gem/v1") and rec.path.endswith(f":{action}")
        assert rec.headers["x-goog-api-key"] == GEM_KEY
    assert KEYS["GEMINI_API_KEY"] not in str(first.headers)


# --- aliases and provider/model --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "sent", "path", "key"),
    [
        ("fast", "anthropic", "claude-haiku-4-5", "/v1/messages", KEYS["ANTHROPIC_API_KEY"]),
        (
            "anthropic/claude-haiku-4-5",
            "anthropic",
            "claude-haiku-4-5",
            "/v1/messages",
            KEYS["ANTHROPIC_API_KEY"],
        ),
        ("ollama/llama3.2", "ollama", "llama3.2", "/ollama/v1/chat/completions", LOCAL_KEY),
        ("ollama/qwen2.5:7b", "ollama", "qwen2.5:7b", "/ollama/v1/chat/completions", LOCAL_KEY),
        ("local", "ollama", "llama3.2", "/ollama/v1/chat/completions", LOCAL_KEY),
        ("quick", "ollama", "llama3.2", "/ollama/v1/chat/completions", LOCAL_KEY),
        (
            "openrouter/openai/gpt-4o",
            "openrouter",
            "openai/gpt-4o",
            "/openrouter/api/v1/chat/completions",
            ROUTER_KEY,
        ),
        (
            "openrouter/meta-llama/Llama-3-70b",
            "openrouter",
            "meta-llama/Llama-3-70b",
            "/openrouter/api/v1/chat/completions",
            ROUTER_KEY,
        ),
    ],
)
def test_model_as_alias_or_provider_slash_model_sets_both(
    ecli, fake, model, provider, sent, path, key
):
    result = ecli("ask", "-m", model, "--json", "Hello?")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert (answer["provider"], answer["model"]) == (provider, sent)
    (rec,) = fake.requests
    assert wire(rec) == (path, key, sent)
    (row,) = logged(ecli)
    assert (row["provider"], row["requested_model"]) == (provider, sent)


def test_llm_model_may_be_an_alias_too(ecli, fake):
    result = ecli("ask", "--json", "Hello?", extra_env={"LLM_MODEL": "local"})
    assert result.code == 0, result.err
    assert (json.loads(result.out)["provider"], fake.requests[0].model) == ("ollama", "llama3.2")


@pytest.mark.parametrize(
    "model", ["meta-llama/Llama-3-70b", "openai/gpt-4o", "anthropic/claude-3.5-sonnet"]
)
def test_with_p_an_aggregators_model_name_is_kept_whole(ecli, fake, model):
    result = ecli("ask", "-p", "openrouter", "-m", model, "--json", "Hello?")
    assert result.code == 0, result.err
    assert (json.loads(result.out)["provider"], json.loads(result.out)["model"]) == (
        "openrouter",
        model,
    )
    (rec,) = fake.requests
    assert wire(rec) == ("/openrouter/api/v1/chat/completions", ROUTER_KEY, model)


def test_the_provider_named_in_the_model_agrees_with_p(ecli, fake):
    result = ecli("ask", "-p", "ollama", "-m", "local", "Hello?")
    assert result.code == 0, result.err
    assert wire(fake.requests[0]) == ("/ollama/v1/chat/completions", LOCAL_KEY, "llama3.2")


def test_an_alias_contradicting_p_is_a_usage_error(ecli, fake):
    result = ecli("ask", "-p", "openai", "-m", "fast", "Hello?")
    assert (result.code, result.out) == (2, "")
    assert "fast" in result.err and "anthropic/claude-haiku-4-5" in result.err
    assert "openai" in result.err
    assert fake.requests == []


def test_an_alias_contradicting_llm_provider_is_a_config_error(ecli, fake):
    result = ecli("ask", "Hello?", extra_env={"LLM_PROVIDER": "openai", "LLM_MODEL": "local"})
    assert (result.code, result.out) == (3, "")
    assert "LLM_MODEL='local'" in result.err and "ollama/llama3.2" in result.err
    assert fake.requests == []


# --- prices ---------------------------------------------------------------------------------------


def test_a_free_endpoint_costs_zero_in_usage_and_the_log(ecli, fake):
    result = ecli("ask", "-p", "ollama", "-u", "Hello?")
    assert result.code == 0, result.err
    assert "cost $0.000000" in result.err
    (row,) = logged(ecli)
    assert (row["cost_usd"], row["price_source"]) == (0, "free")


def test_a_genai_prices_id_prices_the_endpoints_models(ecli, fake):
    fake.script("openai", Reply(input_tokens=1000, output_tokens=2000), prefix="/groq/openai")
    result = ecli("ask", "-p", "groq", "-u", "Hello?")
    assert result.code == 0, result.err
    # Groq's llama-3.3-70b-versatile in genai-prices: $0.59 in, $0.79 out per million tokens.
    expected = (1000 * Decimal("0.59") + 2000 * Decimal("0.79")) / 1_000_000
    assert f"cost ${expected:.6f}" in result.err
    (row,) = logged(ecli)
    assert Decimal(str(row["cost_usd"])) == expected
    assert row["price_source"].startswith("genai-prices")
    assert wire(fake.requests[0]) == (
        "/groq/openai/v1/chat/completions",
        GROQ_KEY,
        "llama-3.3-70b-versatile",
    )


@pytest.mark.parametrize(
    "args",
    [
        ("-p", "openrouter"),  # no prices: unknown, whatever the model
        ("-p", "claude-proxy"),  # a Claude model, but not Anthropic's own endpoint
        ("-p", "groq", "-m", "no-price-model"),  # a genai-prices id that does not know the model
    ],
)
def test_an_endpoint_without_a_known_price_costs_na_never_zero(ecli, fake, args):
    result = ecli("ask", *args, "-u", "Hello?")
    assert result.code == 0, result.err
    assert "cost n/a" in result.err and "$0.000000" not in result.err
    (row,) = logged(ecli)
    assert (row["cost_usd"], row["price_source"]) == (None, None)
    listed = ecli("cost", "--by", "provider")
    assert "n/a" in listed.out and "$0.000000" not in listed.out


def test_prices_toml_prices_an_endpoints_models(ecli, fake):
    (home() / "prices.toml").write_text(
        '[openrouter."meta-llama/Llama-3-70b"]\ninput = 1.0\noutput = 3.0\n', encoding="utf-8"
    )
    fake.script("openai", Reply(input_tokens=1000, output_tokens=1000))
    result = ecli("ask", "-p", "openrouter", "-m", "meta-llama/Llama-3-70b", "-u", "Hello?")
    assert result.code == 0, result.err
    assert "cost $0.004000" in result.err
    (row,) = logged(ecli)
    assert (row["cost_usd"], row["price_source"]) == (0.004, "prices.toml")
    assert ecli("cost", "-p", "openrouter").code == 0


# --- malformed config files ------------------------------------------------------------------------

INLINE_KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
GROQ_LIKE_KEY = "gsk_8fK2mQ9xLp3VtR7nW1yZ4bC6dE0gH5jS2uX9aB3cD7eF1hJ4kM"
ENDPOINT = '[providers.mine]\nprotocol = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
MALFORMED = {
    "bad TOML": ('[providers.mine\nprotocol = "openai"\n', ["not valid TOML", "line 1"]),
    "unknown protocol": (
        ENDPOINT.replace('"openai"', '"grpc"') + 'default_model = "m"\n',
        ["[providers.mine] protocol", "'grpc'", 'protocol = "openai"'],
    ),
    "missing protocol": (
        '[providers.mine]\nbase_url = "http://h/v1"\ndefault_model = "m"\n',
        ["[providers.mine] protocol", "missing", 'protocol = "openai"'],
    ),
    "missing base_url": (
        '[providers.mine]\nprotocol = "openai"\ndefault_model = "m"\n',
        ["[providers.mine] base_url", "missing", "set base_url"],
    ),
    "bad base_url": (
        ENDPOINT.replace("http://127.0.0.1:9/v1", "localhost:11434") + 'default_model = "m"\n',
        ["[providers.mine] base_url", "fix the URL"],
    ),
    "missing default_model": (ENDPOINT, ["[providers.mine] default_model", "missing"]),
    "key inline": (
        ENDPOINT + f'default_model = "m"\napi_key = "{INLINE_KEY}"\n',
        ["[providers.mine] api_key", "never read from the config file", 'key_env = "MINE_API_KEY"'],
    ),
    "key in key_env": (
        ENDPOINT + f'default_model = "m"\nkey_env = "{INLINE_KEY}"\n',
        ["[providers.mine] key_env", "not hold the key", 'key_env = "MINE_API_KEY"'],
    ),
    "a Groq key in key_env": (
        ENDPOINT + f'default_model = "m"\nkey_env = "{GROQ_LIKE_KEY}"\n',
        ["[providers.mine] key_env", "not hold the key", 'key_env = "MINE_API_KEY"'],
    ),
    "alias to an unknown provider": (
        '[aliases]\nfast = "nowhere/model-1"\n',
        ["[aliases] fast", "'nowhere/model-1'", "names no provider", "provider/model"],
    ),
    "alias without a provider": (
        '[aliases]\nfast = "gpt-4o"\n',
        ["[aliases] fast", "names no provider", "provider/model"],
    ),
    "alias loop": (
        '[aliases]\na = "b"\nb = "c"\nc = "a"\n',
        ["[aliases] a", "loop: a -> b -> c -> a", "provider/model"],
    ),
    "shadowing a built-in": (
        '[providers.openai]\nprotocol = "openai"\nbase_url = "http://h/v1"\ndefault_model = "m"\n',
        ["[providers.openai]", "shadow the built-in provider 'openai'", "another name"],
    ),
    "unknown section": ('[defaults]\nmodel = "x"\n', ["[defaults]", "not a section", "[aliases]"]),
    "unknown field": (
        ENDPOINT + 'default_model = "m"\nmodels = ["a"]\n',
        ["[providers.mine] models", "not a field", "use protocol, base_url"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_config_stops_ask_with_exit_3_naming_file_place_and_fix(cli, fake, case):
    text, needles = MALFORMED[case]
    path = write_config(text)
    result = cli("ask", "-p", "openai", "Hello?")
    assert (result.code, result.out) == (3, ""), result.err
    assert result.err.startswith(f"Error: {path}")
    for needle in needles:
        assert needle in result.err
    assert len(result.err.splitlines()) == 2  # the error and its fix
    assert "Traceback" not in result.err
    assert fake.requests == []
    no_key_shown(result, INLINE_KEY, GROQ_LIKE_KEY, *KEYS.values())


@pytest.mark.parametrize("case", list(MALFORMED))
def test_config_validate_reports_a_malformed_config_and_still_checks_the_rest(cli, fake, case):
    text, needles = MALFORMED[case]
    path = write_config(text)
    result = cli("config", "validate", "--json")
    assert result.code == 3, result.err
    report = json.loads(result.out)
    config_row = next(c for c in report["checks"] if c["check"] == "config")
    assert (config_row["status"], config_row["variable"]) == ("invalid", str(path))
    for needle in needles:
        assert needle in config_row["message"] + " " + config_row["fix"]
    key_row = next(c for c in report["checks"] if c["variable"] == "OPENAI_API_KEY")
    assert key_row["status"] == "ok"
    assert fake.requests == []
    no_key_shown(result, INLINE_KEY, GROQ_LIKE_KEY, *KEYS.values())


def test_a_config_named_by_flag_or_variable_is_the_one_read(cli, fake, tmp_path):
    write_config('[defaults]\nbroken = "yes"\n')  # $LLMCLI_HOME/config.toml: not read
    named = write_config(config_toml(fake.url), tmp_path / "elsewhere.toml")
    env = {"LOCAL_LLM_KEY": LOCAL_KEY}
    by_flag = cli("--config", str(named), "ask", "-p", "ollama", "Hello?", extra_env=env)
    by_variable = cli(
        "ask", "-p", "ollama", "Hello?", extra_env={**env, "LLMCLI_CONFIG": str(named)}
    )
    assert by_flag.code == 0, by_flag.err
    assert by_variable.code == 0, by_variable.err
    assert [r.prefix for r in fake.requests] == ["/ollama", "/ollama"]
    missing = cli("--config", str(tmp_path / "nope.toml"), "ask", "Hello?")
    assert missing.code == 3 and "nope.toml" in missing.err
    broken = cli("config", "validate", "--json", extra_env={"LLMCLI_CONFIG": str(named) + ".x"})
    row = json.loads(broken.out)["checks"][0]
    assert (broken.code, row["status"], row["variable"]) == (3, "invalid", str(named) + ".x")


def test_help_never_reads_the_config_file(fake):
    write_config("this is = not TOML [\n")
    env = base_env(fake)
    for args in (("--help",), ("cost", "--help"), ("ask", "--help"), ("config", "--help")):
        result = run_cli(*args, env=env)
        assert (result.code, result.err) == (0, ""), args
        assert "Usage:" in result.out
    assert run_cli("ask", "Hello?", env=env).code == 3  # the file is broken all the same


# --- config validate and config show ---------------------------------------------------------------


def test_config_validate_checks_a_named_endpoint_offline_and_live(ecli, fake):
    offline = ecli("config", "validate", "-p", "Ollama", "--json")
    assert offline.code == 0, offline.err
    checks = json.loads(offline.out)["checks"]
    assert json.loads(offline.out)["providers"] == ["ollama"]
    assert ("ollama", "LOCAL_LLM_KEY", "ok") in [
        (c["check"], c["variable"], c["status"]) for c in checks
    ]
    assert fake.requests == []

    live = ecli("config", "validate", "-p", "ollama", "--live", "--json")
    assert live.code == 0, live.err
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.api_key) == ("GET", "/ollama/v1/models", LOCAL_KEY)
    no_key_shown(live)


def test_config_validate_live_fails_for_an_endpoint_whose_key_is_refused(ecli, fake):
    result = ecli(
        "config",
        "validate",
        "-p",
        "claude-proxy",
        "--live",
        extra_env={"CLAUDE_PROXY_KEY": "bad-key-0009"},
    )
    assert result.code == 4, result.err
    (rec,) = fake.requests
    assert (rec.prefix, rec.api_key) == ("/claude-proxy", "bad-key-0009")


def test_config_validate_all_includes_every_endpoint(ecli, fake):
    result = ecli("config", "validate", "--all", "--json", extra_env={"GROQ_KEY": ""})
    report = json.loads(result.out)
    names = [
        "openai",
        "anthropic",
        "gemini",
        "echo",
        "ollama",
        "claude-proxy",
        "gem",
        "openrouter",
        "groq",
    ]
    assert report["providers"] == names
    rows = {(c["check"], c["variable"]): c["status"] for c in report["checks"]}
    assert rows[("ollama", "LOCAL_LLM_KEY")] == "ok"
    assert rows[("gem", "GEM_PROXY_KEY")] == "ok"
    assert rows[("groq", "GROQ_KEY")] == "missing"
    assert result.code == 3
    assert "GROQ_KEY" in result.err
    assert fake.requests == []


def test_config_show_lists_the_config_file_endpoints_and_aliases(ecli, endpoints):
    result = ecli("config", "show", "--json")
    assert result.code == 0, result.err
    rows = {r["setting"]: r for r in json.loads(result.out)["settings"]}
    assert rows["config file"]["value"] == str(endpoints)
    assert rows["ollama endpoint"]["variable"] == "LOCAL_LLM_KEY"
    assert rows["ollama endpoint"]["value"].startswith("openai at http://127.0.0.1:")
    assert rows["ollama endpoint"]["note"] == "llama3.2"
    assert rows["claude-proxy endpoint"]["value"].startswith("anthropic at ")
    assert rows["alias fast"]["value"] == "anthropic/claude-haiku-4-5"
    assert rows["alias quick"]["value"] == "local"
    no_key_shown(result)
    table = ecli("config", "show")
    assert "openrouter endpoint" in table.out and "alias local" in table.out


def test_config_show_reports_a_broken_config_file_and_shows_the_rest(cli, fake):
    path = write_config('[providers.mine]\nprotocol = "grpc"\n')
    result = cli("config", "show", "--json")
    assert result.code == 0, result.err
    rows = {r["setting"]: r for r in json.loads(result.out)["settings"]}
    assert rows["config file"]["value"] == "(invalid)"
    assert str(path) in rows["config file"]["note"] and "protocol" in rows["config file"]["note"]
    assert rows["openai key"]["value"] == "sk-...0001"


CUT = re.compile(r"\.\.\.(\s|$)", re.MULTILINE)  # a cell cut short (a masked key has `...` inside)


def test_config_show_keeps_every_value_whole_in_a_pipe_and_cuts_them_at_a_terminal(fake, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-for-a-deploy-" * 3) / "llmcli"
    write_config(config_toml(fake.url), deep / "config.toml")
    env = {**base_env(fake), "LLMCLI_HOME": str(deep)}
    assert len(str(deep / "logs.db")) > 60
    piped = run_cli("config", "show", env=env)
    assert piped.code == 0, piped.err
    assert str(deep / "logs.db") in piped.out and str(deep / "config.toml") in piped.out
    assert not CUT.search(piped.out)

    terminal = pexpect.spawn(
        LLMCLI, ["config", "show"], env=env, timeout=20, encoding="utf-8", dimensions=(50, 400)
    )
    try:
        terminal.expect(pexpect.EOF)
        shown = terminal.before
    finally:
        terminal.close()
    assert str(deep / "logs.db") not in shown and CUT.search(shown)


def test_llmcli_config_from_a_found_env_is_refused_while_a_key_is_exported(cli, fake, tmp_path):
    evil = write_config(
        f'[providers.evil]\nprotocol = "openai"\nbase_url = "{fake.url}/evil/v1"\n'
        'key_env = "OPENAI_API_KEY"\ndefault_model = "m"\n',
        tmp_path / "work" / "evil.toml",
    )
    Path(".env").write_text(f"LLMCLI_CONFIG={evil}\nLLM_PROVIDER=evil\n", encoding="utf-8")
    asked = cli("ask", "Hello?")
    assert (asked.code, asked.out) == (3, "")
    assert "LLMCLI_CONFIG=" in asked.err and ".env" in asked.err and "OPENAI_API_KEY" in asked.err
    assert "--env-file" in asked.err
    validated = cli("config", "validate")
    assert validated.code == 3 and "LLMCLI_CONFIG" in validated.out
    assert fake.requests == []
    # Named with --env-file, the same .env is the user's own.
    trusted = cli("--env-file", ".env", "ask", "Hello?")
    assert trusted.code == 0, trusted.err
    assert [r.prefix for r in fake.requests] == ["/evil"]


def test_a_found_env_may_not_choose_a_config_that_reads_any_exported_key(fake, tmp_path):
    """Only an endpoint's key exported (no provider's): the config could name any variable."""
    env = {**base_env(fake, keys=False), "GITHUB_TOKEN": "ghp_test-github-TOKEN-0010"}
    env.pop("LLMCLI_HOME")  # so that the .env's own may count
    evil = write_config(
        f'[providers.evil]\nprotocol = "openai"\nbase_url = "{fake.url}/evil/v1"\n'
        'key_env = "GITHUB_TOKEN"\ndefault_model = "m"\n',
        tmp_path / "work" / "evil.toml",
    )
    Path(".env").write_text(f"LLMCLI_CONFIG={evil}\nLLM_PROVIDER=evil\n", encoding="utf-8")
    asked = run_cli("ask", "Hello?", env=env)
    assert (asked.code, asked.out) == (3, "")
    assert "GITHUB_TOKEN from the environment" in asked.err and "ghp_" not in asked.err
    assert fake.requests == []
    # LLMCLI_HOME from the same .env, with the file as its config.toml: refused alike.
    write_config(evil.read_text(encoding="utf-8"), tmp_path / "work" / "loot" / "config.toml")
    Path(".env").write_text("LLMCLI_HOME=./loot\nLLM_PROVIDER=evil\n", encoding="utf-8")
    moved = run_cli("ask", "Hello?", env=env)
    assert (moved.code, moved.out) == (3, "")
    assert "LLMCLI_HOME=./loot" in moved.err and "GITHUB_TOKEN" in moved.err
    assert fake.requests == []
    # A key kept in that .env itself is the .env's own to send.
    Path(".env").write_text(
        f"LLMCLI_CONFIG={evil}\nLLM_PROVIDER=evil\nGITHUB_TOKEN=own-token-0011\n", encoding="utf-8"
    )
    env.pop("GITHUB_TOKEN")
    own = run_cli("ask", "Hello?", env=env)
    assert own.code == 0, own.err
    assert [(r.prefix, r.api_key) for r in fake.requests] == [("/evil", "own-token-0011")]


# --- what a named OpenAI-speaking endpoint is sent, a placeholder key, a prices id checked -------


def test_a_named_endpoint_is_sent_max_tokens_and_openai_max_completion_tokens(ecli, fake):
    fake.script("openai", Reply(text="A."), prefix="/ollama")
    fake.script("openai", Reply(text="B."))
    assert ecli("ask", "-p", "ollama", "--max-tokens", "77", "hi").code == 0
    assert ecli("ask", "-p", "openai", "--max-tokens", "77", "hi").code == 0
    endpoint, openai = fake.requests_for("openai")
    # Ollama, LM Studio and vLLM read max_tokens; OpenAI's o-series reject it.
    assert endpoint.body["max_tokens"] == 77 and "max_completion_tokens" not in endpoint.body
    assert openai.body["max_completion_tokens"] == 77 and "max_tokens" not in openai.body


def test_a_placeholder_key_does_not_mask_the_providers_name(ecli):
    result = ecli("config", "show", extra_env={"LOCAL_LLM_KEY": "ollama"})
    assert result.code == 0, result.err
    assert "ollama endpoint" in result.out


def test_config_validate_warns_of_a_prices_id_genai_prices_does_not_know(cli, fake):
    write_config(
        f'[providers.fastai]\nprotocol = "openai"\nbase_url = "{fake.url}/fastai/v1"\n'
        'default_model = "m"\nprices = "grok"\n'
    )
    result = cli("config", "validate", "-p", "fastai")
    assert result.code == 0, result.err  # a warning: the calls still work, unpriced
    assert "genai-prices knows no provider 'grok'" in result.err
    assert "did you mean" in result.err
