"""Secrets and files: what a `.env` may decide, how large it may be, the log's modes, and URLs
and keys that must never be echoed.

Most tests run the installed `llmcli` as a user would meet it; a few check the library
functions directly where a subprocess could not observe the property (bytes read from a pipe,
the modes of SQLite's -wal and -shm files while a connection is open).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from llmcli import config, errors, paths, redact
from tests.conftest import KEYS, LLMCLI, base_env, run_cli

SECRET = "sk-proj-SECRETpastedKEY0123456789wxyz"  # a key no variable of the environment holds
OTHER_UID = 65534  # "nobody"
ONE_MIB = 1024 * 1024  # the largest settings file read


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    """The common umask, under which SQLite and mkdir would make the log readable by all."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@contextlib.contextmanager
def owned_by_another_user(path: Path):
    """`path` chowned to another uid (we run as root in CI), and given back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    os.chown(path, OTHER_UID, OTHER_UID)
    try:
        yield
    finally:
        os.chown(path, 0, 0)


def logged(env: dict[str, str]) -> list[dict]:
    result = run_cli("logs", "--json", env=env)
    assert result.code == 0, result.err
    return json.loads(result.out)


# --- 1. `.env`: no interpolation ----------------------------------------------------------------


def test_dotenv_interpolation_is_off_so_no_secret_reaches_the_request_or_the_log(isolated):
    (isolated / ".env").write_text(
        "LLM_SYSTEM_PROMPT=${AWS_SECRET_ACCESS_KEY}\nLLM_TAG=${OPENAI_API_KEY}\n"
    )
    env = {**base_env(), "AWS_SECRET_ACCESS_KEY": "aws-SECRET-0123456789"}
    result = run_cli("ask", "-p", "echo", "hi", env=env)
    assert result.code == 0, result.err
    (row,) = logged(env)
    assert row["system_prompt"] == "${AWS_SECRET_ACCESS_KEY}"
    assert row["tag"] == "${OPENAI_API_KEY}"
    dump = json.dumps(row)
    assert "aws-SECRET" not in dump and KEYS["OPENAI_API_KEY"] not in dump


def test_env_file_flag_is_not_interpolated_either(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-SECRET-0123456789")
    path = tmp_path / "prod.env"
    path.write_text("LLM_TAG=${AWS_SECRET_ACCESS_KEY}\nLLM_MODEL=$AWS_SECRET_ACCESS_KEY\n")
    env = config.Environment({}, env_file=path)
    assert env.lookup("LLM_TAG")[0] == "${AWS_SECRET_ACCESS_KEY}"
    assert env.lookup("LLM_MODEL")[0] == "$AWS_SECRET_ACCESS_KEY"


# --- 1. `.env`: endpoints and LLMCLI_HOME from an implicitly found file --------------------------

ENDPOINTS = {
    "openai": ("OPENAI_BASE_URL", "/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", ""),
    "gemini": ("GOOGLE_GEMINI_BASE_URL", ""),
}


@pytest.mark.parametrize("provider", ENDPOINTS)
def test_implicit_dotenv_may_not_send_a_key_from_the_environment_elsewhere(
    provider, fake, isolated
):
    var, suffix = ENDPOINTS[provider]
    dotenv = isolated / ".env"
    dotenv.write_text(f"{var}={fake.url}{suffix}\n")  # the "attacker's" host
    result = run_cli("ask", "-p", provider, "hi", env=base_env())  # keys exported, no URLs
    assert result.code == 3, result.err
    assert fake.requests == []  # the key never left
    first, hint = result.err.splitlines()
    assert first.startswith(f"Error: {var}=") and str(dotenv.resolve()) in first
    assert "--env-file" in hint and f"export {var}" in hint
    assert "sk-" not in result.err and "AIza" not in result.err


def test_a_dotenv_holding_the_key_itself_or_named_with_env_file_is_trusted(fake, isolated):
    (isolated / ".env").write_text(f"OPENAI_BASE_URL={fake.url}/v1\n")
    named = run_cli("--env-file", ".env", "ask", "-p", "openai", "hi", env=base_env())
    assert named.code == 0, named.err
    (isolated / ".env").write_text(
        f"OPENAI_BASE_URL={fake.url}/v1\nOPENAI_API_KEY={KEYS['OPENAI_API_KEY']}\n"
    )
    own = run_cli("ask", "-p", "openai", "hi", env=base_env(keys=False))
    assert own.code == 0, own.err
    assert [r.api_key for r in fake.requests_for("openai")] == [KEYS["OPENAI_API_KEY"]] * 2


def test_validate_fails_and_show_notes_an_untrusted_endpoint(isolated):
    (isolated / ".env").write_text("OPENAI_BASE_URL=https://collector.example/v1\n")
    result = run_cli("config", "validate", "--json", env=base_env())
    assert result.code == 3
    report = json.loads(result.out)
    (row,) = [c for c in report["checks"] if c["variable"] == "OPENAI_BASE_URL"]
    assert row["status"] == "invalid" and row["exit_code"] == 3
    assert "--env-file" in row["fix"]
    assert result.err.startswith("Error: OPENAI_BASE_URL=https://collector.example/v1 in ")
    shown = run_cli("config", "show", "--json", env=base_env())
    assert shown.code == 0, shown.err
    (endpoint,) = [
        r for r in json.loads(shown.out)["settings"] if r["setting"] == "openai endpoint"
    ]
    assert endpoint["note"].startswith("not used: a .env found in the current directory")


def test_implicit_dotenv_may_not_move_the_log_while_keys_come_from_the_environment(isolated):
    (isolated / ".env").write_text("LLMCLI_HOME=./loot\n")
    env = {k: v for k, v in base_env().items() if k != "LLMCLI_HOME"}
    for args in (("ask", "-p", "echo", "hi"), ("logs",), ("cost",), ("config", "validate")):
        result = run_cli(*args, env=env)
        assert result.code == 3, (args, result.err)
        assert "LLMCLI_HOME=./loot in " in result.err and "--env-file" in result.err
    shown = run_cli("config", "show", env=env)
    assert shown.code == 0 and "not used: a .env found in the current directory" in shown.out
    assert not (isolated / "loot").exists()
    # No key in the environment, or the file named with --env-file: the user's own choice.
    keyless = {k: v for k, v in env.items() if k not in KEYS}
    assert run_cli("ask", "-p", "echo", "hi", env=keyless).code == 0
    assert run_cli("--env-file", ".env", "ask", "-p", "echo", "hi", env=env).code == 0
    assert (isolated / "loot" / "logs.db").is_file()


# --- 1. the settings file itself: size, pipes, /dev/null, folders, unreadable files -------------


def test_a_huge_dotenv_is_refused_at_once_not_parsed_for_minutes(isolated, tmp_path):
    # Distinct names: python-dotenv's interpolation made such a file take over ten minutes.
    lines = "".join(f"V{i}=x\n" for i in range(ONE_MIB // 7)).encode()[: ONE_MIB + 1]
    (isolated / ".env").write_bytes(lines)
    named = tmp_path / "huge.env"
    named.write_bytes(lines)
    for args in (("config", "show"), ("--env-file", str(named), "ask", "-p", "echo", "hi")):
        result = run_cli(*args, timeout=20)  # python-dotenv alone would take minutes
        assert result.code == 3, result.err
        assert result.err.startswith("Error: env file ") and "over 1 MiB" in result.err
        assert len(result.err.splitlines()) == 2


def test_exactly_one_mib_is_still_read():
    path = Path("edge.env")
    path.write_text("LLM_TAG=" + "x" * (ONE_MIB - len("LLM_TAG=")))
    assert len(config.Environment({}, env_file=path).lookup("LLM_TAG")[0]) > 1_000_000


def test_a_settings_file_is_read_no_further_than_one_mib_and_one_byte(tmp_path):
    """A pipe that holds the file open after MAX_BYTES + 1 bytes: reading on would block."""
    fifo = tmp_path / "settings.env"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # Linux: a FIFO end that never blocks to open
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            config.Environment({}, env_file=fifo)
        except errors.ConfigError as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    data = memoryview(b"#" * (ONE_MIB + 1))
    try:
        while data:  # bounded: 10 s for the reader to drain each pipe-full
            if not select.select([], [fd], [], 10)[1]:
                pytest.fail("llmcli stopped reading the pipe")
            try:
                data = data[os.write(fd, data[:65536]) :]
            except BlockingIOError:
                continue
        reader.join(timeout=10)
        assert not reader.is_alive(), "read on past MAX_BYTES + 1 bytes"
    finally:
        os.close(fd)  # end of file for a reader still waiting
        reader.join(timeout=10)
    assert "over 1 MiB" in str(outcome.get("error"))


def test_env_file_may_be_a_pipe_read_once_for_settings_and_for_unparsable_lines():
    script = (
        f'"{LLMCLI}" --env-file <(printf "LLM_TAG=piped\\nLLM_MODEL=\\"unclosed\\n") '
        "config validate -p echo --json"
    )
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=base_env(), timeout=30
    )
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    rows = {c["variable"]: c for c in report["checks"]}
    assert rows["LLM_TAG"]["status"] == "ok" and rows["LLM_TAG"]["value"] == "piped"
    assert rows["line 2 (LLM_MODEL)"]["status"] == "invalid"
    assert report["env_file"].startswith("/dev/fd/")


def test_env_file_may_be_dev_null():
    result = run_cli("--env-file", "/dev/null", "ask", "-p", "echo", "hi")
    assert (result.code, result.out) == (0, "hi\n"), result.err


def test_a_folder_as_env_file_is_a_configuration_error_exit_3(tmp_path):
    result = run_cli("--env-file", str(tmp_path), "ask", "-p", "echo", "hi")
    assert result.code == 3
    assert result.err.splitlines()[0] == f"Error: env file {tmp_path} is a folder, not a file"


def test_an_unreadable_env_file_is_a_configuration_error_exit_3():
    # Unreadable even for root (we run tests as root): a write-only kernel setting.
    path = "/proc/sys/vm/compact_memory"
    if not os.path.exists(path) or os.access(path, os.R_OK):
        pytest.skip("no file here that even root cannot read")
    result = run_cli("--env-file", path, "ask", "-p", "echo", "hi")
    assert result.code == 3
    assert result.err.splitlines()[0] == f"Error: cannot read env file {path}: Permission denied"


# --- 2. the log's folder and files --------------------------------------------------------------


def test_the_log_folder_is_created_0700_and_the_database_0600(tmp_path, umask_022):
    home = tmp_path / "fresh" / "llmcli"
    result = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLMCLI_HOME": str(home)})
    assert result.code == 0, result.err
    assert mode(home) == 0o700 and mode(home / "logs.db") == 0o600


def test_sqlite_gives_wal_and_shm_the_databases_mode(tmp_path, umask_022):
    from llmcli.store import CallRecord, Store

    path = tmp_path / "llmcli" / "logs.db"
    with Store(path) as store:
        store.add(CallRecord(provider="echo", status="ok"))
        sidecars = [path.with_name("logs.db-wal"), path.with_name("logs.db-shm")]
        assert all(p.exists() for p in sidecars)  # while the connection is open
        assert [mode(p) for p in (path, *sidecars)] == [0o600, 0o600, 0o600]


def test_an_existing_loose_folder_and_database_of_ours_are_tightened(tmp_path, umask_022):
    home = tmp_path / "llmcli"
    home.mkdir(mode=0o755)
    env = {**base_env(), "LLMCLI_HOME": str(home)}
    assert run_cli("ask", "-p", "echo", "hi", env=env).code == 0
    os.chmod(home, 0o755)
    os.chmod(home / "logs.db", 0o644)
    result = run_cli("logs", env=env)
    assert result.code == 0, result.err
    assert mode(home) == 0o700 and mode(home / "logs.db") == 0o600


def test_a_home_owned_by_another_user_is_refused(tmp_path):
    home = tmp_path / "shared"
    env = {**base_env(), "LLMCLI_HOME": str(home)}
    assert run_cli("ask", "-p", "echo", "first", env=env).code == 0
    with owned_by_another_user(home):
        result = run_cli("logs", env=env)
        assert result.code == 3
        assert result.err.splitlines()[0] == (
            f"Error: the llmcli folder {home} belongs to another user (uid {OTHER_UID}), "
            "who could read the call log (every prompt and answer)"
        )
        assert "LLMCLI_HOME" in result.err.splitlines()[1]
        check = run_cli("config", "validate", "-p", "echo", env=env)
        assert check.code == 3 and "belongs to another user" in check.err
        # Refused before anything is sent: no answer, no row.
        answered = run_cli("ask", "-p", "echo", "second", env=env)
        assert (answered.code, answered.out) == (3, "")
        assert "belongs to another user" in answered.err
    assert [r["messages"] for r in logged(env)] == [[{"role": "user", "content": "first"}]]


def test_a_home_others_can_write_is_refused_with_the_fix(tmp_path):
    home = tmp_path / "open"
    home.mkdir()
    os.chmod(home, 0o777)
    result = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLMCLI_HOME": str(home)})
    assert result.code == 3 and "can be written by other users (drwxrwxrwx)" in result.err
    assert result.out == ""
    assert list(home.iterdir()) == []  # nothing written into it
    with pytest.raises(errors.ConfigError, match="can be written by other users") as info:
        paths.private_folder(home)
    assert f"chmod 700 {home}" in info.value.hint


def test_a_database_that_is_a_symbolic_link_is_refused(tmp_path):
    home = tmp_path / "llmcli"
    home.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.db"
    (home / "logs.db").symlink_to(target)
    result = run_cli("logs", env={**base_env(), "LLMCLI_HOME": str(home)})
    # `logs` reads only an existing log; a dangling link is no log: nothing to show.
    assert result.code == 0 and not target.exists()
    answered = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLMCLI_HOME": str(home)})
    assert (answered.code, answered.out) == (3, "") and "is a symbolic link" in answered.err
    assert not target.exists()
    target.write_bytes(b"")
    result = run_cli("logs", env={**base_env(), "LLMCLI_HOME": str(home)})
    assert result.code == 3
    assert result.err.splitlines()[0] == (
        f"Error: the call log {home / 'logs.db'} is a symbolic link; "
        "llmcli writes its log only to a real file"
    )
    assert target.read_bytes() == b""


def test_logs_and_cost_on_a_log_that_does_not_exist_create_nothing(tmp_path):
    home = tmp_path / "never"
    for args in (("logs",), ("cost",)):
        assert run_cli(*args, env={**base_env(), "LLMCLI_HOME": str(home)}).code == 0
    assert not home.exists()


# --- 3. base URLs never shown with credentials or query ------------------------------------------

BAD_URL = "https//admin:pass@host/v1?token=abc"


def assert_no_url_secret(text: str) -> None:
    assert "admin" not in text and "pass@" not in text and "token=abc" not in text


def test_an_invalid_base_url_is_shown_without_credentials_or_query_everywhere():
    env = {**base_env(), "OPENAI_BASE_URL": BAD_URL}
    ask = run_cli("ask", "-p", "openai", "hi", env=env)
    assert ask.code == 3 and "invalid OPENAI_BASE_URL='***@host/v1?...'" in ask.err
    assert_no_url_secret(ask.err)
    for args in (("config", "validate"), ("config", "validate", "--json"), ("config", "show")):
        result = run_cli(*args, env=env)
        assert "***@host/v1?..." in result.out, args
        assert_no_url_secret(result.out + result.err)


def test_config_show_notes_an_invalid_base_url():
    result = run_cli("config", "show", "--json", env={**base_env(), "OPENAI_BASE_URL": "ftp://x"})
    assert result.code == 0
    (row,) = [r for r in json.loads(result.out)["settings"] if r["setting"] == "openai endpoint"]
    assert row["value"] == "ftp://x"
    assert row["note"].startswith("invalid: must be an http:// or https:// URL")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@proxy.example.com/v1?token=abc", "https://proxy.example.com/v1?..."),
        ("https://proxy.example.com/v1#key=abc", "https://proxy.example.com/v1#..."),
        (BAD_URL, "***@host/v1?..."),
        ("admin:pass@host:8080/v1", "***@host:8080/v1"),
        ("htps:/a:b@h", "***@h"),
        ("ftp://x", "ftp://x"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_display_url_masks_credentials_whatever_the_parse(url, shown):
    assert redact.display_url(url) == shown


# --- 4. a key pasted into the wrong variable -------------------------------------------------------


def test_a_key_in_the_wrong_variable_is_masked_in_every_invalid_message():
    env = {**base_env(), "LLM_MAX_TOKENS": SECRET}
    ask = run_cli("ask", "-p", "echo", "hi", env=env)
    assert ask.code == 3
    assert ask.err.startswith("Error: invalid LLM_MAX_TOKENS='sk-proj-...wxyz': must be")
    for args in (("config", "validate", "-p", "echo", "--json"), ("config", "show")):
        result = run_cli(*args, env=env)
        assert SECRET not in result.out + result.err and "sk-proj-...wxyz" in result.out
    plain = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLM_MAX_TOKENS": "abc"})
    assert plain.err.startswith("Error: invalid LLM_MAX_TOKENS='abc': must be")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("abc", "abc"),
        ("7", "7"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
        ("a3f9c2e1-7b4d-4e8a-9c1f-2d6e8b0a4f7c", "a3f9c2e1-7b4d-4e8a-9c1f-2d6e8b0a4f7c"),
        (SECRET, "sk-proj-...wxyz"),
        ("sk-ant-api03-abcdefgh", "sk-ant-...efgh"),
        ("AIzaSyD-abc12345", "AIza...2345"),
        ("gsk_8fJ2kLm9QpR4sT7vW1xY3zA5bC6dE", "...C6dE"),
        (f"KEY={SECRET} here", "KEY=sk-proj-...wxyz here"),
    ],
)
def test_mask_keys_hides_key_like_words_and_keeps_ordinary_values(text, shown):
    assert redact.mask_keys(text) == shown
