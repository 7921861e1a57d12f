"""Edges a review of the whole change found: a log folder that cannot be used, SIGHUP under
nohup, error bodies and prices of odd shapes, cache counts a stream leaves out, reprs and URLs
that could show a password, keys of a provider not in use, and Python 3.10's sqlite3 errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from llmcli import config, core, redact
from llmcli.types import Message
from tests.conftest import KEYS, LLMCLI, base_env, run_cli
from tests.fakeserver import Reply

# --- a log location that cannot be used is a configuration error, never an internal one -------


@pytest.mark.parametrize(
    "args",
    [("ask", "-p", "echo", "hi"), ("config", "validate", "-p", "echo"), ("logs",)],
    ids=["ask", "validate", "logs"],
)
def test_a_home_below_a_file_exits_3_naming_it(tmp_path, args):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**base_env(), "LLMCLI_HOME": str(blocker / "llmcli")}
    result = run_cli(*args, env=env)
    if args[0] == "logs":  # reading only: no log there, nothing to show
        assert result.code == 0, result.err
        return
    assert result.code == 3, result.err
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert str(blocker) in result.err


# --- SIGHUP ignored on purpose (nohup) stays ignored ------------------------------------------


def test_under_nohup_a_closed_terminal_does_not_stop_the_answer(fake):
    gate = threading.Event()
    fake.script("openai", Reply(chunks=["Once", " upon", " a", " time"], gate=gate))
    proc = subprocess.Popen(
        [LLMCLI, "stream", "-p", "openai", "hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(fake),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        seen = b""
        while b"Once upon a" not in seen:
            chunk = os.read(proc.stdout.fileno(), 1024)
            assert chunk, seen
            seen += chunk
        proc.send_signal(signal.SIGHUP)
    finally:
        gate.set()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (seen + out).decode() == "Once upon a time\n"


# --- odd shapes from a provider or a prices file ------------------------------------------------


def test_a_gemini_error_body_without_details_is_a_provider_error(cli, fake):
    fake.script("gemini", Reply(status=502, error_body=b'{"error": "Bad gateway"}'))
    result = cli("ask", "-p", "gemini", "--retries", "0", "hi")
    assert result.code == 6, result.err
    assert "internal error" not in result.err


def test_a_price_too_big_for_a_float_is_refused(cli):
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text('[openai."m"]\ninput = ' + "9" * 400 + "\noutput = 1\n")
    for args in (
        ("ask", "-p", "openai", "--dry-run", "hi"),
        ("config", "validate", "-p", "openai"),
    ):
        result = cli(*args)
        assert result.code == 3, result.err
        assert "from 0 to 100,000" in result.err


def test_a_stream_delta_without_cache_counts_keeps_the_earlier_ones():
    from types import SimpleNamespace

    from llmcli.providers.anthropic import _usage

    start = _usage(
        SimpleNamespace(
            input_tokens=10,
            cache_read_input_tokens=1000,
            cache_creation_input_tokens=200,
            output_tokens=1,
        )
    )
    assert start.input_tokens == 1210
    # A later delta repeats the input but leaves the cache counts out (the SDK allows it).
    delta = _usage(SimpleNamespace(input_tokens=10, output_tokens=50), start)
    assert (delta.input_tokens, delta.cached_input_tokens, delta.cache_write_tokens) == (
        1210,
        1000,
        200,
    )
    assert delta.output_tokens == 50


# --- chat --no-log does not judge a log it will not write -----------------------------------


def test_chat_without_the_log_does_not_refuse_a_loose_home(tmp_path):
    home = tmp_path / "open"
    home.mkdir()
    os.chmod(home, 0o777)
    env = {**base_env(), "LLMCLI_HOME": str(home)}
    result = run_cli("chat", "-p", "echo", "--no-log", stdin="hi\n", env=env)
    assert (result.code, result.out) == (0, "hi\n"), result.err
    refused = run_cli("chat", "-p", "echo", stdin="hi\n", env=env)
    assert refused.code == 3 and "can be written by other users" in refused.err


# --- no password from a base URL, however it is written -----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:pa/ss@proxy.test/v1",
        "https://admin:pa?ss@proxy.test/v1",
        "https://admin:pa#ss@proxy.test/v1",
        "https//admin:pass@proxy.test/v1?token=tok",
    ],
)
def test_a_password_in_a_base_url_is_never_shown(url):
    shown = redact.display_url(url)
    assert "admin" not in shown and "pa" not in shown.split("proxy")[0], shown
    assert "tok" not in shown
    with pytest.raises(ValueError):
        config.parse_url(url)


def test_reprs_show_no_password_of_an_endpoint(fake):
    url = "http://admin:hunter2@127.0.0.1:9/v1?token=tok123"
    env = config.Environment({**KEYS, "OPENAI_BASE_URL": url})
    call = core.prepare([Message("user", "hi")], {"provider": "openai"}, env)
    for shown in (repr(call), repr(call.credentials), repr(call.provider)):
        assert "hunter2" not in shown and "tok123" not in shown, shown
    from llmcli.providers.base import ProviderSpec

    spec = ProviderSpec("local", "openai", "m", base_url=url)
    assert "hunter2" not in repr(spec) and "name='local'" in repr(spec)


# --- a key of a provider not in use, echoed back, is masked too ------------------------------


def test_a_key_for_another_provider_echoed_back_is_masked(cli, fake):
    other = KEYS["OPENAI_API_KEY"]
    fake.script("anthropic", Reply(status=404, error_message=f"model: {other} not found"))
    result = cli("ask", "-p", "anthropic", "-m", "claude-x", "--retries", "0", "hi")
    assert result.code == 9, result.err
    assert other not in result.err and redact.mask(other) in result.err
    logged = json.loads(run_cli("logs", "--json").out)[0]
    assert other not in logged["error_message"]


# --- Python 3.10: sqlite3 errors carry no sqlite_errorname -------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("attempt to write a readonly database", "read-only"),
        ("database or disk is full", "no-space"),
        ("file is not a database", "damaged"),
        ("database is locked", "busy"),
    ],
)
def test_log_trouble_is_named_from_sqlites_words_where_no_error_name_is_given(tmp_path, text, kind):
    from llmcli import logtrouble

    error = sqlite3.OperationalError(text)
    assert getattr(error, "sqlite_errorname", None) is None  # as on Python 3.10
    assert logtrouble.describe(error, tmp_path / "logs.db", writing=True).kind == kind
