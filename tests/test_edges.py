"""Edge cases a careful user meets: closed or full stdout, empty answers in a conversation,
exhausted quota, odd bytes, damaged files. Each was a bug once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from llmcli import config, errors
from llmcli.chat import ChatSession
from llmcli.journal import Journal
from tests.conftest import LLMCLI, base_env, run_cli
from tests.fakeserver import Reply


def log_rows() -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(os.environ["LLMCLI_HOME"]) / "logs.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM calls ORDER BY id").fetchall()
    finally:
        db.close()


def shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL
    )


def test_closed_stdout_exits_0_quietly_and_the_call_is_logged():
    proc = shell(f'"{LLMCLI}" ask -p echo "hi there" >&-; echo "rc=$?" >&2', base_env())
    assert proc.stderr.decode().strip() == "rc=0"
    assert [r["status"] for r in log_rows()] == ["ok"]


def test_stream_into_a_closed_pipe_is_logged_with_what_was_sent(cli, fake, tmp_path):
    fake.script("openai", Reply(chunks=[f"w{i} " for i in range(3000)]))
    script = (
        f'"{LLMCLI}" stream -p openai go | head -c 5 >/dev/null; echo "rc=${{PIPESTATUS[0]}}" >&2'
    )
    proc = shell(script, base_env(fake))
    assert proc.stderr.decode().strip() == "rc=0"
    (row,) = log_rows()
    assert row["status"] in ("interrupted", "ok") and row["answer"].startswith("w0 w1")


def test_full_stdout_is_a_plain_error_not_an_internal_one():
    proc = shell(f'"{LLMCLI}" ask -p echo hi > /dev/full', base_env())
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("Error: input/output error: No space left on device")
    assert b"internal error" not in proc.stderr


def test_filtered_answer_does_not_join_the_conversation(cli, fake):
    fake.script("openai", Reply(text="", finish="content_filter"), Reply(text="ok"))
    assert cli("ask", "-p", "openai", "bad question").code == 8
    result = cli("ask", "-p", "openai", "--cid", log_rows()[0]["conversation_id"], "second")
    assert result.code == 0, result.err
    assert [m["content"] for m in fake.requests_for("openai")[-1].body["messages"]] == ["second"]


def test_empty_chat_reply_keeps_its_line_and_stays_out_of_history(cli, fake):
    fake.script(
        "gemini", Reply(text="One."), Reply(text="", finish="content_filter"), Reply(text="Three.")
    )
    result = cli("chat", "-p", "gemini", stdin="a\nb\nc\n")
    assert result.out == "One.\n\nThree.\n"
    contents = fake.requests_for("gemini")[-1].body["contents"]
    assert [c["parts"][0]["text"] for c in contents] == ["a", "One.", "c"]


def test_ctrl_c_in_piped_chat_stops_the_run_with_130(fake):
    gate = threading.Event()
    fake.script("openai", Reply(chunks=["slow", " reply", " here"], gate=gate))
    proc = subprocess.Popen(
        [LLMCLI, "chat", "-p", "openai"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(fake),
    )
    try:
        proc.stdin.write(b"one\ntwo\n")
        proc.stdin.close()
        assert os.read(proc.stdout.fileno(), 100).startswith(b"slow")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 130, err
    assert len(fake.requests_for("openai")) == 1  # "two" was never sent


@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        ("anthropic", Reply(status=402)),
        ("openai", Reply(status=429, error_code="insufficient_quota")),
    ],
)
def test_exhausted_quota_is_not_retried(cli, fake, provider, reply):
    fake.script(provider, reply, Reply(text="never"))
    result = cli("ask", "-p", provider, "--retries", "3", "hi")
    assert result.code == 5
    assert "retrying in" not in result.err and "add credit" in result.err
    assert len(fake.requests_for(provider)) == 1


def test_cost_matches_the_requested_model_and_groups_failures_apart(cli, fake):
    fake.script(
        "openai", Reply(model="gpt-4o-mini-2024-07-18"), Reply(status=400), Reply(status=400)
    )
    cli("ask", "-p", "openai", "-m", "gpt-4o-mini", "hi")
    cli("ask", "-p", "openai", "-m", "gpt-4o", "--retries", "0", "hi")
    cli("ask", "-p", "openai", "-m", "gpt-4.1", "--retries", "0", "hi")
    only = json.loads(cli("cost", "-m", "gpt-4o-mini", "--format", "json").out)
    assert only["total"]["calls"] == 1
    by_model = json.loads(cli("cost", "--by", "model", "--format", "json").out)
    assert sorted((r["model"], r["calls"]) for r in by_model["rows"]) == [
        ("gpt-4.1", 1),
        ("gpt-4o", 1),
        ("gpt-4o-mini-2024-07-18", 1),
    ]
    assert "No calls match" in cli("cost", "-m", "nothing-like-it").err


def test_undecodable_bytes_in_arguments_are_a_usage_error():
    env = base_env()
    proc = subprocess.run(
        [LLMCLI, "ask", "-p", "echo", b"caf\xe9"], capture_output=True, env=env, timeout=30
    )
    assert proc.returncode == 2
    assert b"not valid UTF-8" in proc.stderr and proc.stdout == b""


def test_chat_warns_about_a_truncated_reply():
    result = run_cli("chat", "-p", "echo", "--max-tokens", "1", stdin="one two three\n")
    assert result.out == "one\n" and "truncated" in result.err


def test_system_dash_removes_a_system_prompt_set_in_the_environment(tmp_path):
    env = config.Environment({"LLM_SYSTEM_PROMPT": "be terse"})
    session = ChatSession.start(env, {"provider": "echo"}, Journal(env, enabled=False))
    assert session.check().request.system == "be terse"
    session.set("system", "")
    assert session.check().request.system is None


@pytest.mark.parametrize(
    ("prices", "needle"),
    [
        ("[openai.x]\ninput = 'cheap'\n", "prices.toml"),
        ("[openai.x]\ninput = nan\noutput = 1.0\n", "from 0 to 100,000"),  # finite prices only
        ("[openai.x]\ninput = 1e308\noutput = 1.0\n", "from 0 to 100,000"),  # no Infinity
    ],
    ids=["not-a-number", "nan", "absurd"],
)
def test_config_validate_fails_on_a_broken_prices_file(prices, needle):
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text(prices)
    result = run_cli("config", "validate", "-p", "echo")
    assert result.code == 3 and needle in result.err


def test_dry_run_endpoint_hides_credentials_in_the_base_url():
    env = {
        **base_env(),
        "OPENAI_BASE_URL": "https://user:s3cr3tpass@proxy.example/v1?key=sk-querysecret1",
    }
    data = json.loads(run_cli("ask", "-p", "openai", "--dry-run", "hi", env=env).out)
    assert data["endpoint"] == "https://proxy.example/v1?..."


def test_damaged_log_and_absurd_ages_are_clear_errors():
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs.db").write_text("not a database")
    for command in (["cost"], ["logs"]):
        result = run_cli(*command)
        assert result.code == 3 and "cannot read the call log" in result.err
    result = run_cli("cost", "--since", "99999999999d")
    assert result.code == 2 and "internal error" not in result.err


def test_continue_with_logging_off_does_not_create_the_log():
    result = run_cli("ask", "-p", "echo", "-c", "hi", env={**base_env(), "LLMCLI_LOG": "0"})
    assert result.code == 2
    assert not (Path(os.environ["LLMCLI_HOME"]) / "logs.db").exists()


def test_many_processes_creating_the_log_at_once_all_land_their_rows(tmp_path):
    env = {**base_env(), "LLMCLI_HOME": str(tmp_path / "fresh")}
    procs = [
        subprocess.Popen([LLMCLI, "ask", "-p", "echo", f"call {n}"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for n in range(16)
    ]  # fmt: skip
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert all(not e for e in errors), errors
    db = sqlite3.connect(tmp_path / "fresh" / "logs.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 16
    finally:
        db.close()


def test_filtered_chat_reply_is_an_error_line_and_exit_8(cli, fake):
    fake.script("openai", Reply(text="", finish="content_filter"), Reply(text="Fine."))
    result = cli("chat", "-p", "openai", stdin="bad\ngood\n")
    assert result.code == 8
    assert result.out == "\nFine.\n"
    assert "content filtered" in result.err
    assert [r["exit_code"] for r in log_rows()] == [8, 0]


def test_retry_after_a_failed_turn_keeps_the_earlier_exchange(fake):
    fake.script("openai", Reply(text="First answer."), Reply(status=400), Reply(text="Retried."))
    environ = {**base_env(fake), "LLMCLI_LOG": "0"}
    env = config.Environment(environ)
    session = ChatSession.start(
        env, {"provider": "openai", "retries": 0}, Journal(env, enabled=False)
    )
    session.send("continue", lambda text: None)
    with pytest.raises(errors.RequestRejected):
        session.send("continue", lambda text: None)
    prompt = session.retry_prompt()
    session.send(prompt, lambda text: None)
    sent = [m["content"] for m in fake.requests_for("openai")[-1].body["messages"]]
    assert sent == ["continue", "First answer.", "continue"]


def test_stream_with_stdout_already_closed_logs_nothing():
    proc = shell(f'"{LLMCLI}" stream -p echo hi >&-; echo "rc=$?" >&2', base_env())
    assert proc.stderr.decode().strip() == "rc=0"
    assert not (Path(os.environ["LLMCLI_HOME"]) / "logs.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "-p", "echo", "--stop", b"\xff", "hi"],
        ["logs", "--cid", b"\xff"],
        ["cost", "-m", b"\xff"],
    ],
)
def test_undecodable_bytes_in_any_argument_are_a_usage_error(args):
    proc = subprocess.run([LLMCLI, *args], capture_output=True, env=base_env(), timeout=30)
    assert (
        proc.returncode == 2
        and b"not valid UTF-8" in proc.stderr
        and b"internal" not in proc.stderr
    )
