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
import stat
from pathlib import Path

import pytest

from llmcli import errors, paths, redact
from tests.conftest import base_env, run_cli

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
        # The answer is still given (the log never costs one), with a warning, and no row.
        answered = run_cli("ask", "-p", "echo", "second", env=env)
        assert (answered.code, answered.out) == (0, "second\n")
        assert "belongs to another user" in answered.err
    assert [r["messages"] for r in logged(env)] == [[{"role": "user", "content": "first"}]]


def test_a_home_others_can_write_is_refused_with_the_fix(tmp_path):
    home = tmp_path / "open"
    home.mkdir()
    os.chmod(home, 0o777)
    result = run_cli("ask", "-p", "echo", "hi", env={**base_env(), "LLMCLI_HOME": str(home)})
    assert result.code == 0 and "can be written by other users (drwxrwxrwx)" in result.err
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
    assert answered.code == 0 and "is a symbolic link" in answered.err
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
