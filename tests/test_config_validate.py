"""`llmcli config validate` and `config show`: every status and source, --live, and no key leaks.

Most cases call `llmcli.checks` in-process (an `llmcli` subprocess that imports the anthropic
SDK costs seconds); a few subprocess runs prove the installed command's output, JSON and exit
codes.
"""

from __future__ import annotations

import json

import pytest

from llmcli import checks, errors
from tests.conftest import KEYS, base_env, run_cli
from tests.fakeserver import Reply

# Distinctive keys: what must never appear in any output is easy to search for.
SECRET = {
    "OPENAI_API_KEY": "sk-proj-SECRETopenaiQWERTY0123456789wxyz",
    "ANTHROPIC_API_KEY": "sk-ant-SECRETanthropicASDFGH987654321abcd",
    "GEMINI_API_KEY": "AIzaSECRETgeminiZXCVBN1122334455efgh",
}
SECRET_PARTS = ("SECRETopenai", "SECRETanthropic", "SECRETgemini")


def by_variable(report: checks.Report, variable: str) -> checks.Check:
    found = [c for c in report.checks if c.variable == variable]
    assert len(found) == 1, report.checks
    return found[0]


def statuses(report: checks.Report) -> dict[str, str]:
    return {c.variable: c.status for c in report.checks}


def write_dotenv(path, text: str):
    path.write_text(text)
    return path


# --- keys: missing, empty, whitespace, .env, both ----------------------------------------------


@pytest.mark.parametrize(
    "value", [None, "", "   ", "\t\n"], ids=["unset", "empty", "spaces", "tab"]
)
def test_missing_empty_or_whitespace_key_is_missing_with_the_seed_message(value):
    environ = {"LLM_PROVIDER": "anthropic"}
    if value is not None:
        environ["ANTHROPIC_API_KEY"] = value
    report = checks.validate(environ=environ)
    check = by_variable(report, "ANTHROPIC_API_KEY")
    assert check.status == checks.MISSING and check.exit_code == 3
    assert report.exit_code == 3 and not report.ok
    error = report.error()
    assert isinstance(error, errors.ConfigError)
    assert error.message == "Missing required environment variable: ANTHROPIC_API_KEY"
    assert error.hint.startswith("Set it with: export ANTHROPIC_API_KEY=your-key-here")


def test_key_set_in_dotenv_only_names_the_file_as_source(isolated):
    dotenv = write_dotenv(isolated / ".env", f"OPENAI_API_KEY={KEYS['OPENAI_API_KEY']}\n")
    report = checks.validate(environ={})
    check = by_variable(report, "OPENAI_API_KEY")
    assert check.status == checks.OK and report.exit_code == 0
    assert check.source == f".env ({dotenv.resolve()})"
    assert check.value == "sk-...0001"
    assert report.env_file == str(dotenv.resolve())
    assert by_variable(report, str(dotenv.resolve())).status == checks.OK


def test_environment_wins_over_dotenv(isolated):
    write_dotenv(isolated / ".env", "OPENAI_API_KEY=sk-from-dotenv-file-9999\n")
    report = checks.validate(environ={"OPENAI_API_KEY": "sk-from-environment-1111"})
    check = by_variable(report, "OPENAI_API_KEY")
    assert (check.source, check.value) == ("environment", "sk-...1111")


def test_env_file_flag_is_read_instead_of_the_current_directory(isolated, tmp_path):
    write_dotenv(isolated / ".env", "LLM_MAX_TOKENS=abc\n")
    other = write_dotenv(tmp_path / "prod.env", "OPENAI_API_KEY=sk-prod-key-00005555\n")
    report = checks.validate(environ={}, env_file=other)
    assert report.ok, report.checks
    assert by_variable(report, "OPENAI_API_KEY").source == f".env ({other.resolve()})"
    assert "LLM_MAX_TOKENS" not in statuses(report)


def test_missing_env_file_is_a_failed_check_not_a_crash(tmp_path):
    report = checks.validate(environ=dict(KEYS), env_file=tmp_path / "nope.env")
    (check,) = report.checks
    assert check.status == checks.MISSING and check.source == "flag"
    assert report.exit_code == 3 and "env file not found" in report.error().message


def test_key_that_cannot_work_is_invalid_and_masked():
    report = checks.validate(environ={"OPENAI_API_KEY": "sk-abc def-ghijklmnop"})
    check = by_variable(report, "OPENAI_API_KEY")
    assert check.status == checks.INVALID and "spaces" in check.problem
    assert check.value == "sk-...mnop"
    placeholder = checks.validate(environ={"OPENAI_API_KEY": "your-key-here"})
    assert by_variable(placeholder, "OPENAI_API_KEY").problem == "is a placeholder, not a real key"


# --- settings: types, ranges, unknown provider ---------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        ("LLM_MAX_TOKENS", "abc", "whole number from 1 to 10,000,000"),
        ("LLM_MAX_TOKENS", "0", "whole number from 1 to 10,000,000"),
        ("LLM_MAX_TOKENS", "1.5", "whole number from 1 to 10,000,000"),
        ("LLM_TEMPERATURE", "hot", "from 0 to 2"),
        ("LLM_TEMPERATURE", "7", "from 0 to 2"),
        ("LLM_TEMPERATURE", "nan", "from 0 to 2"),
        ("LLM_TIMEOUT", "0", "from 0.001 to 3600"),
        ("LLM_TIMEOUT", "-3", "from 0.001 to 3600"),
        ("LLM_TIMEOUT", "soon", "from 0.001 to 3600"),
        ("LLM_MAX_RETRIES", "-1", "from 0 to 10"),
        ("LLM_MAX_RETRIES", "many", "from 0 to 10"),
        ("LLM_PROVIDER", "foo", "choose one of: openai, anthropic, gemini, echo"),
        ("LLMCLI_LOG", "maybe", "0 (off) or 1 (on)"),
    ],
)
def test_malformed_settings_are_invalid_with_the_problem_and_the_fix(var, value, problem):
    report = checks.validate(environ={**KEYS, var: value})
    check = by_variable(report, var)
    assert check.status == checks.INVALID and check.exit_code == 3
    assert problem in check.problem and check.value == value
    assert check.fix.startswith(f"Set it with: export {var}=")
    # The same words `ask` uses for the same mistake.
    assert check.message.startswith(f"invalid {var}={value!r}")
    assert report.exit_code == 3


def test_every_problem_is_reported_not_only_the_first(isolated):
    write_dotenv(isolated / ".env", "LLM_TIMEOUT=0\n")
    report = checks.validate(
        environ={"LLM_PROVIDER": "anthropic", "LLM_MAX_TOKENS": "abc", "LLM_MAX_RETRIES": "99"}
    )
    assert [c.variable for c in report.failures] == [
        "LLM_MAX_TOKENS",
        "LLM_TIMEOUT",
        "LLM_MAX_RETRIES",
        "ANTHROPIC_API_KEY",
    ]
    assert by_variable(report, "LLM_TIMEOUT").source.startswith(".env (")
    assert "3 more problems listed" in report.error().hint


def test_settings_that_are_set_and_valid_are_ok_and_unset_ones_are_left_out():
    report = checks.validate(
        environ={**KEYS, "LLM_MAX_TOKENS": "500", "LLM_TIMEOUT": "2.5", "LLM_MODEL": "gpt-4o"}
    )
    assert report.ok
    assert statuses(report) == {
        "LLM_PROVIDER": "ok",
        "LLM_MODEL": "ok",
        "LLM_MAX_TOKENS": "ok",
        "LLM_TIMEOUT": "ok",
        "OPENAI_API_KEY": "ok",
    }
    assert by_variable(report, "LLM_PROVIDER").source == "default"


def test_temperature_is_checked_against_each_checked_providers_range():
    environ = {**KEYS, "LLM_TEMPERATURE": "1.5"}
    assert checks.validate(environ={**environ, "LLM_PROVIDER": "openai"}).ok
    report = checks.validate(environ={**environ, "LLM_PROVIDER": "anthropic"})
    check = by_variable(report, "LLM_TEMPERATURE")
    assert check.status == checks.INVALID
    assert check.problem == "is out of range for anthropic: must be from 0 to 1"
    assert not checks.validate(environ=environ, all_providers=True).ok


def test_unknown_provider_checks_no_provider_and_fails():
    report = checks.validate(environ={**KEYS, "LLM_PROVIDER": "foo"})
    assert report.providers == () and report.exit_code == 3
    assert by_variable(report, "LLM_PROVIDER").status == checks.INVALID


def test_provider_flags_and_all_choose_what_is_checked():
    environ = {"OPENAI_API_KEY": KEYS["OPENAI_API_KEY"], "LLM_PROVIDER": "anthropic"}
    report = checks.validate(environ=environ, provider_names=["openai", "echo", "openai"])
    assert report.providers == ("openai", "echo") and report.ok
    assert by_variable(report, "--provider").source == "flag"
    everything = checks.validate(environ=environ, all_providers=True)
    assert everything.providers == ("openai", "anthropic", "gemini", "echo")
    assert [c.variable for c in everything.failures] == ["ANTHROPIC_API_KEY", "GEMINI_API_KEY"]


def test_base_urls_must_be_http_urls_and_are_shown_without_credentials():
    report = checks.validate(
        environ={
            **KEYS,
            "OPENAI_BASE_URL": "https://user:pw@proxy.example.com/v1?token=abc",
            "GOOGLE_GEMINI_BASE_URL": "proxy.example.com",
        },
        all_providers=True,
    )
    good = by_variable(report, "OPENAI_BASE_URL")
    assert (good.status, good.value) == (checks.OK, "https://proxy.example.com/v1?...")
    bad = by_variable(report, "GOOGLE_GEMINI_BASE_URL")
    assert bad.status == checks.INVALID and "http:// or https:// URL" in bad.problem
    assert [c.variable for c in report.failures] == ["GOOGLE_GEMINI_BASE_URL"]


# --- Gemini's two variables --------------------------------------------------------------------


def test_gemini_accepts_either_variable():
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        report = checks.validate(environ={var: "AIzaSomeGeminiKey0001"}, provider_names=["gemini"])
        assert report.ok and by_variable(report, var).status == checks.OK


def test_gemini_missing_key_names_both_variables():
    report = checks.validate(environ={}, provider_names=["gemini"])
    check = by_variable(report, "GEMINI_API_KEY")
    assert check.status == checks.MISSING
    assert check.message == (
        "Missing required environment variable: GEMINI_API_KEY (or GOOGLE_API_KEY)"
    )


def test_gemini_both_variables_google_wins_and_a_different_other_key_is_a_warning():
    same = checks.validate(
        environ={"GOOGLE_API_KEY": "AIzaSameKey000001", "GEMINI_API_KEY": "AIzaSameKey000001"},
        provider_names=["gemini"],
    )
    assert statuses(same) == {"--provider": "ok", "GOOGLE_API_KEY": "ok"}
    different = checks.validate(
        environ={"GOOGLE_API_KEY": "AIzaGoogleKey00001", "GEMINI_API_KEY": "AIzaGeminiKey00002"},
        provider_names=["gemini"],
    )
    assert different.ok  # a warning is not a failure
    assert statuses(different)["GOOGLE_API_KEY"] == checks.OK
    warning = by_variable(different, "GEMINI_API_KEY")
    assert warning.status == checks.WARNING and "GOOGLE_API_KEY is used" in warning.problem


def test_gemini_environment_beats_dotenv_whichever_name(isolated):
    write_dotenv(isolated / ".env", "GOOGLE_API_KEY=AIzaFromDotenv0001\n")
    report = checks.validate(
        environ={"GEMINI_API_KEY": "AIzaFromEnvironment02"}, provider_names=["gemini"]
    )
    used = by_variable(report, "GEMINI_API_KEY")
    assert (used.status, used.source) == (checks.OK, "environment")


# --- the .env file itself ----------------------------------------------------------------------


def test_unparsable_dotenv_lines_are_reported_with_their_line_numbers(isolated):
    write_dotenv(
        isolated / ".env",
        "# comment\nLLM_MAX_TOKENS=100\nthis is not a setting\n"
        'ANTHROPIC_API_KEY="sk-ant-unterminated\nLLM_TAG=ok\n',
    )
    report = checks.validate(environ={}, provider_names=["anthropic"])
    lines = [c.variable for c in report.checks if c.check == ".env"]
    assert lines == ["line 3", "line 4 (ANTHROPIC_API_KEY)"]
    assert all(by_variable(report, line).status == checks.INVALID for line in lines)
    # The key on the broken line looks unset; the fix points at the line, not at `export`.
    missing = by_variable(report, "ANTHROPIC_API_KEY")
    assert missing.status == checks.MISSING and "line 4" in missing.fix
    assert "cannot parse line 3" in report.error().message
    # The lines' text, which may hold a key, is never shown.
    assert "unterminated" not in json.dumps(report.to_dict())


# --- the report --------------------------------------------------------------------------------


def test_exit_code_is_the_smallest_failing_code_and_json_has_checks_and_ok():
    report = checks.Report(
        (
            checks.Check("openai live", "OPENAI_API_KEY", checks.UNREACHABLE, exit_code=7),
            checks.Check("gemini live", "GEMINI_API_KEY", checks.REJECTED, exit_code=4),
            checks.Check("settings", "LLM_MODEL", checks.WARNING),
        ),
        ("openai", "gemini"),
        True,
        None,
    )
    assert report.exit_code == 4 and report.decisive.variable == "GEMINI_API_KEY"
    assert isinstance(report.error(), errors.AuthError)
    data = report.to_dict()
    assert data["ok"] is False and data["exit_code"] == 4 and len(data["checks"]) == 3
    assert set(data["checks"][0]) >= {"check", "variable", "status", "source", "value", "fix"}


def test_validate_rejects_unknown_provider_names():
    with pytest.raises(errors.UsageError, match="unknown provider: nope"):
        checks.validate(environ={}, provider_names=["nope"])


# --- --live against the fake server ------------------------------------------------------------


def live_env(fake, **overrides: str) -> dict[str, str]:
    return {**KEYS, **fake.env(), **overrides}


def test_live_valid_keys_pass_and_each_provider_lists_models_once(fake):
    report = checks.validate(environ=live_env(fake), all_providers=True, live=True)
    assert report.ok, report.failures
    live = [c for c in report.checks if c.check.endswith(" live")]
    assert [(c.provider, c.status) for c in live] == [
        ("openai", "ok"),
        ("anthropic", "ok"),
        ("gemini", "ok"),
        ("echo", "ok"),
    ]
    for provider in ("openai", "anthropic", "gemini"):
        (request,) = fake.requests_for(provider)
        assert request.method == "GET" and request.path.endswith("/models")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_live_rejected_key_is_status_rejected_and_exit_4(fake, provider):
    var = "GEMINI_API_KEY" if provider == "gemini" else f"{provider.upper()}_API_KEY"
    bad = "bad-key-for-" + provider + "-0123456789"
    report = checks.validate(
        environ=live_env(fake, **{var: bad}), provider_names=[provider], live=True
    )
    check = next(c for c in report.checks if c.check == f"{provider} live")
    assert check.status == checks.REJECTED and report.exit_code == 4
    assert isinstance(report.error(), errors.AuthError)
    assert bad not in json.dumps(report.to_dict())
    if provider == "gemini":
        # Gemini says 400 INVALID_ARGUMENT / API_KEY_INVALID for a wrong key (wire.md §0.6).
        (request,) = fake.requests_for("gemini")
        assert request.status == 400


def test_live_gemini_scripted_api_key_invalid_is_rejected(fake):
    fake.script("gemini", Reply(status=400, error_type="API_KEY_INVALID"))
    report = checks.validate(environ=live_env(fake), provider_names=["gemini"], live=True)
    assert report.exit_code == 4
    assert "API key not valid" in report.error().message


def test_live_server_down_is_unreachable_and_exit_7():
    environ = {
        **KEYS,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9",
    }
    report = checks.validate(environ=environ, provider_names=["openai", "gemini"], live=True)
    live = [c for c in report.checks if c.check.endswith(" live")]
    assert [c.status for c in live] == [checks.UNREACHABLE, checks.UNREACHABLE]
    assert report.exit_code == 7 and isinstance(report.error(), errors.NetworkError)
    assert "http://127.0.0.1:9/v1" in live[0].fix


def test_live_other_provider_failures_keep_their_exit_code(fake):
    fake.script("openai", Reply(status=503))
    report = checks.validate(environ=live_env(fake), provider_names=["openai"], live=True)
    assert report.checks[-1].status == checks.FAILED and report.exit_code == 6
    assert len(fake.requests_for("openai")) == 1  # one attempt: a deploy check fails fast


def test_live_model_not_listed_is_a_warning_only_for_the_provider_it_belongs_to(fake):
    environ = live_env(fake, LLM_PROVIDER="openai", LLM_MODEL="gpt-9-imaginary")
    report = checks.validate(environ=environ, provider_names=["openai", "gemini"], live=True)
    assert report.ok
    warnings = [c for c in report.checks if c.status == checks.WARNING]
    assert [(c.provider, c.variable, c.value) for c in warnings] == [
        ("openai", "LLM_MODEL", "gpt-9-imaginary")
    ]
    listed = checks.validate(
        environ=live_env(fake, LLM_PROVIDER="gemini", LLM_MODEL="models/gemini-2.5-pro"),
        live=True,
    )
    assert not [c for c in listed.checks if c.status == checks.WARNING]


def test_live_is_skipped_for_a_provider_whose_key_is_missing(fake):
    environ = {**fake.env(), "OPENAI_API_KEY": KEYS["OPENAI_API_KEY"]}
    report = checks.validate(environ=environ, provider_names=["openai", "gemini"], live=True)
    assert by_variable(report, "GEMINI_API_KEY").status == checks.MISSING
    skipped = [c for c in report.checks if c.status == checks.SKIPPED]
    assert [c.provider for c in skipped] == ["gemini"]
    assert fake.requests_for("gemini") == [] and report.exit_code == 3


def test_without_live_nothing_touches_the_network(fake):
    assert checks.validate(environ=live_env(fake), all_providers=True).ok
    assert fake.requests == []


# --- show --------------------------------------------------------------------------------------


def shown(rows, setting):
    (row,) = [r for r in rows if r.setting == setting]
    return row


def test_show_lists_effective_values_sources_and_paths(isolated, tmp_path):
    write_dotenv(
        isolated / ".env", "LLM_MAX_TOKENS=250\nANTHROPIC_API_KEY=sk-ant-dotenv-key-7777\n"
    )
    home = tmp_path / "llmhome"
    rows = checks.show(environ={"LLM_PROVIDER": "anthropic", "LLMCLI_HOME": str(home)})
    assert (shown(rows, "provider").value, shown(rows, "provider").source) == (
        "anthropic",
        "environment",
    )
    model = shown(rows, "model")
    assert (model.value, model.source) == ("claude-haiku-4-5", "default")
    tokens = shown(rows, "max_tokens")
    assert (tokens.value, tokens.source) == ("250", f".env ({(isolated / '.env').resolve()})")
    assert shown(rows, "timeout").value == "600"
    assert shown(rows, "anthropic key").value == "sk-ant-...7777"
    assert shown(rows, "openai key").value == "(not set)"
    assert shown(rows, ".env file").value == str((isolated / ".env").resolve())
    assert (shown(rows, "config folder").value, shown(rows, "config folder").source) == (
        str(home),
        "environment",
    )
    assert shown(rows, "log database").value == str(home / "logs.db")


def test_show_says_which_gemini_variable_is_used():
    rows = checks.show(
        environ={"GOOGLE_API_KEY": "AIzaGoogleKey00001", "GEMINI_API_KEY": "AIzaGeminiKey00002"}
    )
    key = shown(rows, "gemini key")
    assert (key.variable, key.value) == ("GOOGLE_API_KEY", "AIza...0001")
    assert "GEMINI_API_KEY (environment) is also set and ignored" in key.note
    assert "google-genai" in key.note
    only_gemini = shown(checks.show(environ={"GEMINI_API_KEY": "AIzaGeminiKey00002"}), "gemini key")
    assert (only_gemini.variable, only_gemini.note) == ("GEMINI_API_KEY", "GEMINI_API_KEY is used")


def test_show_reports_an_invalid_value_as_written_with_a_note():
    row = shown(checks.show(environ={"LLM_TIMEOUT": "soon"}), "timeout")
    assert row.value == "soon" and row.note.startswith("invalid: must be a number of seconds")


# --- the installed command ---------------------------------------------------------------------


def test_cli_missing_key_table_on_stdout_seed_message_on_stderr():
    env = base_env(keys=False)
    env["LLM_PROVIDER"] = "anthropic"
    result = run_cli("config", "validate", env=env)
    assert result.code == 3
    assert result.err.splitlines()[:2] == [
        "Error: Missing required environment variable: ANTHROPIC_API_KEY",
        "Set it with: export ANTHROPIC_API_KEY=your-key-here (or add it to .env)",
    ]
    header = result.out.splitlines()[0].split()
    assert header == ["check", "variable", "status", "source", "value", "fix"]
    assert "missing" in result.out and "ANTHROPIC_API_KEY" in result.out


def test_cli_all_ok_exits_0_and_json_quiet_modes(isolated):
    env = {**base_env(keys=False), **SECRET}
    ok = run_cli("config", "validate", "--all", env=env)
    assert ok.code == 0 and ok.err == "", ok.err
    assert ok.out.count(" ok ") >= 4
    doc = json.loads(run_cli("config", "validate", "--json", env=env).out)
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["providers"] == ["openai"]
    quiet = run_cli("config", "validate", "-q", "-p", "anthropic", env=base_env(keys=False))
    assert (quiet.code, quiet.out, quiet.err) == (3, "", "")


def test_cli_json_reports_failures_and_keeps_stderr_message(isolated):
    (isolated / ".env").write_text("LLM_MAX_TOKENS=abc\n")
    result = run_cli("config", "validate", "--json", env=base_env())
    doc = json.loads(result.out)
    assert result.code == 3 and doc["ok"] is False and doc["exit_code"] == 3
    (bad,) = [c for c in doc["checks"] if c["status"] != "ok"]
    assert bad["variable"] == "LLM_MAX_TOKENS" and bad["source"].startswith(".env (")
    assert result.err.startswith("Error: invalid LLM_MAX_TOKENS='abc'")


def test_cli_env_file_option_is_used(tmp_path):
    prod = tmp_path / "prod.env"
    prod.write_text("LLM_PROVIDER=echo\n")
    result = run_cli("--env-file", str(prod), "config", "validate", env=base_env(keys=False))
    assert result.code == 0, result.err
    assert str(prod.resolve()) in result.out
    missing = run_cli("--env-file", str(tmp_path / "nope.env"), "config", "validate")
    assert missing.code == 3 and "env file not found" in missing.err


@pytest.mark.parametrize(
    "args",
    [
        ["--all", "-p", "openai"],
        ["--quiet", "--json"],
        ["-p", "nope"],
    ],
    ids=" ".join,
)
def test_cli_usage_errors_exit_2(args):
    result = run_cli("config", "validate", *args)
    assert result.code == 2 and result.out == "" and result.err


def test_cli_live_valid_rejected_and_down(cli):
    assert cli("config", "validate", "--live").code == 0
    rejected = cli(
        "config",
        "validate",
        "--live",
        "-p",
        "gemini",
        extra_env={"GEMINI_API_KEY": "bad-0123456789"},
    )
    assert rejected.code == 4 and "rejected" in rejected.out
    assert rejected.err.startswith("Error: authentication failed for gemini")
    down = cli(
        "config", "validate", "--live", extra_env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    )
    assert down.code == 7 and "unreachable" in down.out
    assert down.err.startswith("Error: could not reach openai")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for part in SECRET_PARTS:
            assert part not in text
        for key in SECRET.values():
            assert key not in text


def test_full_keys_never_appear_in_any_config_output(fake, isolated):
    # Keys in both layers, a key pasted into the wrong variable, and a rejected key in --live.
    (isolated / ".env").write_text(
        f"ANTHROPIC_API_KEY={SECRET['ANTHROPIC_API_KEY']}\nLLM_TAG={SECRET['OPENAI_API_KEY']}\n"
    )
    env = {**base_env(fake, keys=False), **SECRET, "GOOGLE_API_KEY": SECRET["GEMINI_API_KEY"]}
    env["LLM_TIMEOUT"] = SECRET["GEMINI_API_KEY"]  # invalid, and echoed in the error message
    # Longer than a table cell: cutting it before scrubbing would leave its start readable.
    env["LLM_SYSTEM_PROMPT"] = SECRET["ANTHROPIC_API_KEY"] + " was pasted here by mistake"
    runs = [
        run_cli("config", "validate", "--all", env=env),
        run_cli("config", "validate", "--all", "--json", env=env),
        run_cli("config", "show", env=env),
        run_cli("config", "show", "--json", env=env),
        run_cli("config", "validate", "-p", "openai", "--live", env={**env, "LLM_TIMEOUT": "5"}),
    ]
    for result in runs:
        assert result.out or result.err
        assert_no_secret(result.out, result.err)
    assert runs[0].code == 3 and runs[-1].code == 0


def test_cli_show_table_and_json(isolated):
    env = {**base_env(keys=False), "GEMINI_API_KEY": "AIzaGeminiKey00002"}
    table = run_cli("config", "show", env=env)
    assert table.code == 0 and table.err == ""
    assert table.out.splitlines()[0].split() == ["setting", "variable", "value", "source", "note"]
    doc = json.loads(run_cli("config", "show", "--json", env=env).out)
    gemini = next(r for r in doc["settings"] if r["setting"] == "gemini key")
    assert gemini["variable"] == "GEMINI_API_KEY" and gemini["value"] == "AIza...0002"
