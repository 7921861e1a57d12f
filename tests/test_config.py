"""Settings precedence and fail-fast validation, through the library and the installed CLI."""

from __future__ import annotations

import pytest

from llmcli import config, errors
from tests.conftest import base_env, run_cli


def env_of(environ=None, dotenv_text=None, tmp_path=None):
    path = None
    if dotenv_text is not None:
        path = tmp_path / "settings.env"
        path.write_text(dotenv_text)
    return config.Environment(environ or {}, env_file=path)


def test_precedence_flag_over_environment_over_dotenv_over_default(tmp_path):
    env = env_of({"LLM_MAX_TOKENS": "200"}, "LLM_MAX_TOKENS=300\nLLM_TIMEOUT=5\n", tmp_path)
    settings = config.resolve({"max_tokens": 100}, env)
    assert settings.max_tokens == 100 and settings.sources["max_tokens"] is config.FLAG
    settings = config.resolve({}, env)
    assert settings.max_tokens == 200 and settings.sources["max_tokens"].kind == "environment"
    assert settings.timeout == 5.0 and settings.sources["timeout"].kind == ".env"
    assert settings.retries == 3 and settings.sources["retries"] is config.DEFAULT


def test_empty_and_whitespace_values_count_as_unset(tmp_path):
    env = env_of({"LLM_MAX_TOKENS": "  ", "OPENAI_API_KEY": ""}, "LLM_MAX_TOKENS=42\n", tmp_path)
    assert config.resolve({}, env).max_tokens == 42
    with pytest.raises(
        errors.ConfigError, match="Missing required environment variable: OPENAI_API_KEY"
    ):
        config.credentials("openai", env)


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        ("LLM_MAX_TOKENS", "abc", "whole number from 1 to 10,000,000"),
        ("LLM_MAX_TOKENS", "0", "whole number from 1 to 10,000,000"),
        ("LLM_MAX_TOKENS", "-5", "whole number from 1 to 10,000,000"),
        ("LLM_TEMPERATURE", "7", "from 0 to 2"),
        ("LLM_TEMPERATURE", "nan", "from 0 to 2"),
        ("LLM_TIMEOUT", "0", "from 0.001 to 3600"),
        ("LLM_MAX_RETRIES", "-1", "from 0 to 10"),
        ("LLM_PROVIDER", "foo", "choose one of: openai, anthropic, gemini, echo"),
        ("LLMCLI_LOG", "maybe", "0 (off) or 1 (on)"),
    ],
)
def test_malformed_environment_values_name_the_variable_and_the_range(var, value, problem):
    with pytest.raises(errors.ConfigError) as info:
        config.resolve({}, env_of({var: value}))
    assert var in info.value.message and repr(value) in info.value.message
    assert problem in info.value.message
    assert info.value.exit_code == 3


def test_flag_values_are_usage_errors_naming_the_flag():
    with pytest.raises(errors.UsageError, match="--max-tokens") as info:
        config.resolve({"max_tokens": 0}, env_of())
    assert info.value.exit_code == 2


def test_temperature_is_checked_against_the_providers_own_range():
    assert config.resolve({"provider": "openai", "temperature": 1.5}, env_of()).temperature == 1.5
    with pytest.raises(errors.UsageError, match="out of range for anthropic: must be from 0 to 1"):
        config.resolve({"provider": "anthropic", "temperature": 1.5}, env_of())
    with pytest.raises(errors.ConfigError, match="LLM_TEMPERATURE"):
        config.resolve({}, env_of({"LLM_PROVIDER": "anthropic", "LLM_TEMPERATURE": "1.5"}))


def test_model_defaults_per_provider_and_env_model_stays_with_env_provider():
    assert config.resolve({"provider": "anthropic"}, env_of()).model == "claude-haiku-4-5"
    env = env_of({"LLM_PROVIDER": "openai", "LLM_MODEL": "gpt-4.1"})
    assert config.resolve({}, env).model == "gpt-4.1"
    assert config.resolve({"provider": "openai"}, env).model == "gpt-4.1"
    # -p picks another provider: the model set for openai would only earn a 404 there.
    assert config.resolve({"provider": "gemini"}, env).model == "gemini-2.5-flash"
    assert (
        config.resolve({"provider": "gemini", "model": "gemini-2.0-flash"}, env).model
        == "gemini-2.0-flash"
    )


def test_gemini_accepts_either_variable_and_prefers_google_api_key_like_the_sdk(tmp_path):
    only_gemini = config.credentials("gemini", env_of({"GEMINI_API_KEY": "g-key-123456789"}))
    assert (only_gemini.api_key.reveal(), only_gemini.key_var) == (
        "g-key-123456789",
        "GEMINI_API_KEY",
    )
    both = config.credentials(
        "gemini", env_of({"GEMINI_API_KEY": "gem-1234567890", "GOOGLE_API_KEY": "goo-1234567890"})
    )
    assert both.key_var == "GOOGLE_API_KEY"
    # The environment wins over .env, whichever of the two names each holds.
    mixed = config.credentials(
        "gemini",
        env_of({"GEMINI_API_KEY": "env-1234567890"}, "GOOGLE_API_KEY=file-1234567890\n", tmp_path),
    )
    assert (mixed.key_var, mixed.key_source.kind) == ("GEMINI_API_KEY", "environment")
    with pytest.raises(errors.ConfigError, match=r"GEMINI_API_KEY \(or GOOGLE_API_KEY\)"):
        config.credentials("gemini", env_of())


def test_bad_base_url_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="OPENAI_BASE_URL"):
        config.credentials(
            "openai",
            env_of({"OPENAI_API_KEY": "sk-123456789012", "OPENAI_BASE_URL": "localhost:8080"}),
        )


def test_missing_env_file_is_a_config_error(tmp_path):
    with pytest.raises(errors.ConfigError, match="env file not found"):
        config.Environment({}, env_file=tmp_path / "nope.env")


# --- the same rules seen by a user of the installed command --------------------------------------


def test_missing_key_message_and_exit_code_before_any_network_call(fake):
    env = base_env(fake, keys=False)
    result = run_cli("ask", "-p", "openai", "hello", env=env)
    assert result.code == 3
    assert result.out == ""
    lines = result.err.splitlines()
    assert lines[0] == "Error: Missing required environment variable: OPENAI_API_KEY"
    assert lines[1].startswith("Set it with: export OPENAI_API_KEY=your-key-here")
    assert fake.requests == []


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_missing_key_for_other_providers(fake, provider):
    result = run_cli("ask", "-p", provider, "hello", env=base_env(fake, keys=False))
    assert result.code == 3 and "Missing required environment variable" in result.err
    assert fake.requests == []


def test_dotenv_in_current_directory_and_env_file_flag(fake, isolated):
    env = base_env(fake, keys=False)
    (isolated / ".env").write_text("LLM_PROVIDER=echo\nLLM_MAX_TOKENS=2\n")
    result = run_cli("ask", "one two three", env=env, cwd=isolated)
    assert (result.code, result.out) == (0, "one two\n")
    # The process environment wins over .env.
    result = run_cli("ask", "one two three", env={**env, "LLM_MAX_TOKENS": "3"}, cwd=isolated)
    assert result.out == "one two three\n"
    # --env-file replaces ./.env; a flag wins over both.
    other = isolated / "other.env"
    other.write_text("LLM_PROVIDER=echo\nLLM_MAX_TOKENS=1\n")
    result = run_cli("--env-file", str(other), "ask", "one two three", env=env, cwd=isolated)
    assert result.out == "one\n"
    result = run_cli(
        "--env-file", str(other), "ask", "--max-tokens", "2", "one two three", env=env, cwd=isolated
    )
    assert result.out == "one two\n"


def test_dotenv_key_is_used_and_reaches_the_provider(fake, isolated):
    env = base_env(fake, keys=False)
    (isolated / ".env").write_text("ANTHROPIC_API_KEY=sk-ant-from-dotenv-999\n")
    result = run_cli("ask", "-p", "anthropic", "--retries", "0", "hi", env=env, cwd=isolated)
    assert result.code == 0, result.err
    assert fake.requests[-1].api_key == "sk-ant-from-dotenv-999"


def test_malformed_env_value_exits_3_naming_it():
    result = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLM_MAX_TOKENS": "abc"})
    assert result.code == 3
    assert (
        "LLM_MAX_TOKENS" in result.err
        and "'abc'" in result.err
        and "from 1 to 10,000,000" in result.err
    )
    assert result.out == ""
