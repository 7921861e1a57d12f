"""The call log, pricing, `llmcli cost`, `llmcli logs` and conversations."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from llmcli import pricing, report
from llmcli.calllog import CallRecord, Window
from llmcli.store import MIGRATIONS, Store
from llmcli.types import Usage
from tests.conftest import LLMCLI, base_env, open_test_log, run_cli, table_rows
from tests.fakeserver import Reply


def log_path() -> Path:
    return Path(os.environ["LLMCLI_HOME"]) / "logs.db"


def rows() -> list[dict]:
    """The calls as stored, in whichever backend the test uses (`log_backend`)."""
    return table_rows("calls")


# --- what a call leaves in the log ----------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_successful_call_row_has_exact_usage_and_the_genai_prices_cost(cli, fake):
    fake.script(
        "openai", Reply(text="Four.", input_tokens=1234, output_tokens=56, cached_tokens=200)
    )
    result = cli("ask", "-p", "openai", "-s", "Be terse.", "--tag", "maths", "2+2?")
    assert result.code == 0, result.err
    (row,) = rows()
    assert (row["provider"], row["requested_model"], row["model"]) == (
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini",
    )
    assert (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]) == (
        1234,
        56,
        200,
    )
    assert (row["status"], row["exit_code"], row["finish_reason"], row["raw_finish_reason"]) == (
        "ok",
        0,
        "stop",
        "stop",
    )
    assert (
        row["system_prompt"] == "Be terse." and row["answer"] == "Four." and row["tag"] == "maths"
    )
    assert json.loads(row["messages"]) == [{"role": "user", "content": "2+2?"}]
    expected = calc_price(
        PriceUsage(input_tokens=1234, output_tokens=56, cache_read_tokens=200),
        "gpt-4o-mini",
        provider_id="openai",
    )
    # Exact: whole picodollars, not a float near the price.
    assert row["cost_picousd"] == int(expected.total_price * 10**12)
    assert row["price_source"].startswith("genai-prices ")
    assert row["ts"].endswith("Z") and row["attempts"] == 1 and row["duration_ms"] >= 0


def test_unknown_model_has_null_cost_shown_as_na(cli, fake):
    result = cli("ask", "-p", "anthropic", "-m", "my-private-model", "-u", "hi")
    assert result.code == 0, result.err
    assert "cost n/a" in result.err
    assert rows()[0]["cost_picousd"] is None
    summary = cli("cost")
    assert "n/a" in summary.out and "1 call has no known price" in summary.err


def test_echo_costs_zero():
    run_cli("ask", "-p", "echo", "free words")
    assert rows()[0]["cost_picousd"] == 0


FAILURES = [
    ("401", [Reply(status=401)], "AuthError", 4),
    ("429", [Reply(status=429)], "RateLimitError", 5),
    ("500", [Reply(status=500)], "ServerError", 6),
    ("404", [Reply(status=404)], "RequestRejected", 9),
    ("filtered", [Reply(text="", finish="content_filter")], "IncompleteAnswer", 8),
]


@pytest.mark.parametrize(
    ("name", "script", "error_class", "code"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_failed_calls_are_logged_with_their_class_and_exit_code(
    cli, fake, name, script, error_class, code
):
    fake.script("gemini", *script)
    result = cli("ask", "-p", "gemini", "--retries", "0", "hi")
    assert result.code == code
    (row,) = rows()
    assert (row["error_class"], row["exit_code"]) == (error_class, code)
    assert row["status"] == ("ok" if name == "filtered" else "error")
    assert row["attempts"] == 1


def test_network_failure_is_logged(cli):
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    result = cli("ask", "-p", "openai", "--retries", "0", "hi", extra_env=env)
    assert result.code == 7
    assert rows()[0]["error_class"] == "NetworkError"


def test_broken_stream_keeps_partial_answer_in_the_log(cli, fake):
    fake.script("openai", Reply(chunks=["Once", " upon", " a", " time"], drop_after=2))
    result = cli("stream", "-p", "openai", "hi")
    assert result.code == 6
    (row,) = rows()
    assert (row["status"], row["answer"], row["exit_code"]) == ("error", "Once upon", 6)


def test_no_log_flag_and_switch(cli, fake):
    cli("ask", "-p", "echo", "--no-log", "hi")
    cli("ask", "-p", "echo", "hi", extra_env={"LLMCLI_LOG": "0"})
    assert not log_path().exists()


def test_distinctive_key_never_reaches_the_database(cli, fake):
    secret = "sk-DISTINCTIVE-db-key-7e1f00d5"
    cli("ask", "-p", "openai", "hi", extra_env={"OPENAI_API_KEY": secret})
    cli(
        "ask", "-p", "openai", "--retries", "0", "hi", extra_env={"OPENAI_API_KEY": "bad-" + secret}
    )
    assert len(rows()) == 2
    for path in log_path().parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_unwritable_log_warns_but_keeps_the_answer(tmp_path):
    home = tmp_path / "readonly"
    home.mkdir()
    (home / "logs.db").write_text("this is not a database")
    result = run_cli(
        "ask", "-p", "echo", "still answered", env={**base_env(), "LLMCLI_HOME": str(home)}
    )
    assert (result.code, result.out) == (0, "still answered\n")
    assert result.err.startswith("warning: could not write the call log")


def test_json_output_gains_log_id_and_conversation(cli):
    data = json.loads(cli("ask", "-p", "echo", "--json", "hi").out)
    assert data["log_id"] == rows()[0]["id"]
    assert data["conversation_id"] == rows()[0]["conversation_id"]
    assert data["cost_usd"] == 0.0


def test_usage_line_shows_the_cost(cli, fake):
    fake.script("openai", Reply(input_tokens=1000, output_tokens=1000))
    result = cli("ask", "-p", "openai", "-u", "hi")
    cost = calc_price(
        PriceUsage(input_tokens=1000, output_tokens=1000), "gpt-4o-mini", provider_id="openai"
    )
    assert (
        f"tokens: 1,000 in, 1,000 out, 2,000 total · cost ${float(cost.total_price):.6f}"
        in result.err
    )


# --- concurrency --------------------------------------------------------------------------------------


def test_concurrent_processes_all_land_their_rows():
    # 8 shell loops of 25 calls each. The offline provider keeps 200 process starts affordable; the
    # log path (journal, store, SQLite locking) is the same as for the real providers.
    script = f'for i in $(seq 25); do "{LLMCLI}" ask -p echo --no-stdin "call $i from $0" >/dev/null || exit 1; done'
    env = base_env()
    procs = [
        subprocess.Popen(["bash", "-c", script, f"worker{n}"], env=env, stderr=subprocess.PIPE)
        for n in range(8)
    ]
    errors = [p.communicate(timeout=240)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert all("locked" not in e and "warning" not in e for e in errors), errors
    assert len(rows()) == 200
    assert len({r["conversation_id"] for r in rows()}) == 200


# --- conversations -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_continue_sends_the_latest_conversation_history(cli, fake):
    fake.script("anthropic", Reply(text="Hello Ada."), Reply(text="Your name is Ada."))
    cli("ask", "-p", "anthropic", "-s", "Be kind.", "My name is Ada.")
    result = cli("ask", "-p", "anthropic", "-c", "What is my name?")
    assert result.code == 0, result.err
    body = fake.requests_for("anthropic")[-1].body
    assert body["system"] == "Be kind."
    assert body["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    first, second = rows()
    assert first["conversation_id"] == second["conversation_id"]


@pytest.mark.usefixtures("log_backend")
def test_cid_continues_a_given_conversation_across_providers(cli, fake):
    cli("ask", "-p", "echo", "first conversation")
    cid = rows()[0]["conversation_id"]
    cli("ask", "-p", "echo", "second conversation")
    result = cli("ask", "-p", "gemini", "--cid", cid, "and again")
    assert result.code == 0, result.err
    contents = fake.requests_for("gemini")[-1].body["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "first conversation"),
        ("model", "first conversation"),
        ("user", "and again"),
    ]


@pytest.mark.usefixtures("log_backend")
def test_failed_turn_leaves_nothing_dangling(cli, fake):
    fake.script("openai", Reply(text="one"), Reply(status=400), Reply(text="three"))
    cli("ask", "-p", "openai", "turn one")
    assert cli("ask", "-p", "openai", "-c", "turn two").code == 9
    cli("ask", "-p", "openai", "-c", "turn three")
    messages = fake.requests_for("openai")[-1].body["messages"]
    assert [m["content"] for m in messages] == ["turn one", "one", "turn three"]


def test_continue_errors_are_usage_errors():
    assert "no conversation to continue" in run_cli("ask", "-p", "echo", "-c", "hi").err
    result = run_cli("ask", "-p", "echo", "--cid", "nope", "hi")
    run_cli("ask", "-p", "echo", "seed the log")
    assert run_cli("ask", "-p", "echo", "--cid", "nope", "hi").code == 2
    assert result.code == 2
    assert run_cli("ask", "-p", "echo", "-c", "--cid", "x", "hi").code == 2


# --- llmcli cost and llmcli logs ---------------------------------------------------------------------


def fill(records: list[CallRecord]) -> None:
    with open_test_log() as store:
        for record in records:
            store.add(record)


SAMPLE = [
    CallRecord("openai", "ok", ts="2026-11-01T10:00:00.000000Z", model="gpt-4o-mini", input_tokens=100, output_tokens=10, cost_usd=0.25, tag="a"),
    CallRecord("openai", "ok", ts="2026-11-02T10:00:00.000000Z", model="gpt-4o-mini", input_tokens=200, output_tokens=20, cost_usd=0.50, tag="b"),
    CallRecord("anthropic", "ok", ts="2026-11-02T11:00:00.000000Z", model="claude-x", input_tokens=300, output_tokens=30, cost_usd=None, tag="a"),
    CallRecord("anthropic", "error", ts="2026-11-03T09:00:00.000000Z", requested_model="claude-haiku-4-5", error_class="AuthError", exit_code=4),
]  # fmt: skip


@pytest.mark.usefixtures("log_backend")
def test_cost_groups_by_provider_and_model_with_a_total():
    fill(SAMPLE)
    result = run_cli("cost", "--format", "json")
    data = json.loads(result.out)
    by_key = {(r["provider"], r["model"]): r for r in data["rows"]}
    assert by_key[("openai", "gpt-4o-mini")]["calls"] == 2
    assert by_key[("openai", "gpt-4o-mini")]["cost_usd"] == pytest.approx(0.75)
    assert by_key[("anthropic", "claude-x")]["cost_usd"] is None
    assert by_key[("anthropic", "claude-x")]["unpriced_calls"] == 1
    # A request refused before anything was produced is not billed: $0, not unknown.
    assert by_key[("anthropic", "claude-haiku-4-5")]["cost_usd"] == 0.0
    total = data["total"]
    assert (
        total["calls"],
        total["input_tokens"],
        total["output_tokens"],
        total["total_tokens"],
    ) == (4, 600, 60, 660)
    assert total["cost_usd"] == pytest.approx(0.75) and total["unpriced_calls"] == 1


@pytest.mark.usefixtures("log_backend")
def test_cost_table_and_filters():
    fill(SAMPLE)
    table = run_cli("cost", "--by", "day").out.splitlines()
    assert table[0].split()[:2] == ["day", "calls"]
    assert [line.split()[0] for line in table[2:]] == [
        "2026-11-01",
        "2026-11-02",
        "2026-11-03",
        "TOTAL",
    ]
    assert "$0.750000 + n/a (1 call)" in table[-1]
    tagged = json.loads(run_cli("cost", "--by", "tag", "--tag", "a", "--format", "json").out)
    assert [r["tag"] for r in tagged["rows"]] == ["a"] and tagged["total"]["calls"] == 2
    ranged = json.loads(
        run_cli("cost", "--since", "2026-11-02", "--until", "2026-11-03", "--format", "json").out
    )
    assert ranged["total"]["calls"] == 2
    only = json.loads(run_cli("cost", "-p", "openai", "-m", "gpt-4o-mini", "--format", "json").out)
    assert only["total"]["calls"] == 2


@pytest.mark.usefixtures("log_backend")
def test_cost_csv_parses_and_ends_with_total():
    fill(SAMPLE)
    parsed = list(
        csv.DictReader(io.StringIO(run_cli("cost", "--by", "provider", "--format", "csv").out))
    )
    assert [r["provider"] for r in parsed] == ["anthropic", "openai", "TOTAL"]
    assert parsed[1]["cost_usd"] == "0.75" and parsed[0]["cost_usd"] == ""


@pytest.mark.usefixtures("log_backend")
def test_cost_relative_since_counts_recent_calls():
    run_cli("ask", "-p", "echo", "now")
    fill(SAMPLE)
    assert (
        json.loads(run_cli("cost", "--since", "24h", "--format", "json").out)["total"]["calls"] == 1
    )


def test_cost_on_an_empty_log_is_friendly():
    result = run_cli("cost")
    assert (result.code, result.out) == (0, "")
    assert result.err.startswith("No calls logged yet")
    assert not log_path().exists()
    assert json.loads(run_cli("cost", "--format", "json").out)["total"] is None


def test_cost_rejects_a_bad_since():
    result = run_cli("cost", "--since", "last tuesday")
    assert result.code == 2 and "--since" in result.err


@pytest.mark.usefixtures("log_backend")
def test_each_row_says_which_command_made_it():
    run_cli("ask", "-p", "echo", "asked")
    run_cli("stream", "-p", "echo", "streamed")
    run_cli("chat", "-p", "echo", stdin="chatted\n")
    calls = json.loads(run_cli("logs", "--json").out)
    assert [(c["answer"], c["source"], c["batch_id"]) for c in calls] == [
        ("asked", "ask", None),
        ("streamed", "stream", None),
        ("chatted", "chat", None),
    ]
    rows = json.loads(run_cli("cost", "--by", "source", "--format", "json").out)["rows"]
    assert [(r["source"], r["calls"]) for r in rows] == [("ask", 1), ("chat", 1), ("stream", 1)]


@pytest.mark.usefixtures("log_backend")
def test_logs_lists_recent_calls_and_one_conversation():
    for word in ("alpha", "beta", "gamma"):
        run_cli("ask", "-p", "echo", word)
    table = run_cli("logs", "-n", "2").out
    assert "beta" in table and "gamma" in table and "alpha" not in table
    calls = json.loads(run_cli("logs", "--json").out)
    assert [c["answer"] for c in calls] == ["alpha", "beta", "gamma"]
    cid = calls[0]["conversation_id"]
    run_cli("ask", "-p", "echo", "--cid", cid, "delta")
    mine = json.loads(run_cli("logs", "--cid", cid, "--json").out)
    assert [c["answer"] for c in mine] == ["alpha", "delta"]


# --- schema migrations and prices -----------------------------------------------------------------


def test_a_migration_1_database_upgrades_in_place(tmp_path):
    path = tmp_path / "old.db"
    old = Store.__new__(Store)
    old.path = path
    old.db = sqlite3.connect(path, isolation_level=None)
    old.db.row_factory = sqlite3.Row
    old.migrate(upto=1)
    # Rows written the way release 1 wrote them: only the columns migration 1 created, money
    # as floats, and every message of a conversation repeated in each of its rows.
    history = [{"role": "user", "content": "hi"}]
    for values in (
        ("openai", "ok", "gpt-4o-mini", 5, 9.000000000000002e-07, None),
        ("openai", "ok", "private", 7, None, json.dumps(history)),
    ):
        old.db.execute(
            "INSERT INTO calls (ts, provider, status, model, input_tokens, cost_usd, messages) "
            "VALUES ('2026-11-01T00:00:00.000000Z', ?, ?, ?, ?, ?, ?)",
            values,
        )
    assert old.version == 1
    old.close()
    with Store(path) as store:
        assert store.version == len(MIGRATIONS)
        recent = store.recent()
        assert [r["input_tokens"] for r in recent] == [5, 7]
        # The float noise is gone: the amount is exact, in whole picodollars.
        assert [r["cost_usd"] for r in recent] == [Decimal("0.0000009"), None]
        assert recent[1]["messages"] == history  # an old row keeps its whole history
        assert len({r["uid"] for r in recent}) == 2
        # The old calls are in the daily totals a budget check reads.
        month = Window("monthly", "2026-11-01T00:00:00.000000Z", Decimal(1))
        assert store.spent([month])[0].spent_usd == Decimal("0.0000009")
        # Migration 3's generated column, rebuilt by migration 4, still knows the unpriced.
        assert [r[0] for r in store.db.execute("SELECT unpriced FROM calls ORDER BY id")] == [0, 1]
        indexes = {
            r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {
            "calls_ts",
            "calls_provider_model",
            "calls_cost_by_model",
            "calls_cost_by_day",
        } <= indexes


def test_database_is_in_wal_mode(tmp_path):
    with Store(tmp_path / "x.db") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_price_overrides_from_prices_toml(cli, fake):
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text('[openai."ft:my-model"]\ninput = 2.0\noutput = 8.0\n')
    fake.script("openai", Reply(input_tokens=1_000_000, output_tokens=500_000))
    result = cli("ask", "-p", "openai", "-m", "ft:my-model", "--json", "hi")
    data = json.loads(result.out)
    assert data["cost_usd"] == pytest.approx(6.0)
    assert rows()[0]["price_source"] == "prices.toml"


def test_bad_prices_toml_fails_fast(cli, fake):
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.toml").write_text("[openai.x]\ninput = 'cheap'\n")
    result = cli("ask", "-p", "openai", "hi")
    assert result.code == 3 and "prices.toml" in result.err
    assert fake.requests == []


def test_pricing_unknown_is_none_never_zero():
    assert pricing.cost("openai", ["no-such-model-anywhere"], Usage(10, 10)).usd is None
    assert pricing.cost("openai", ["gpt-4o-mini"], Usage()).usd is None
    assert pricing.cost("echo", ["echo"], Usage(10, 10)).usd == 0.0


def test_dry_run_shows_the_worst_case_cost(cli):
    result = cli("ask", "-p", "openai", "--dry-run", "--max-tokens", "1000", "x" * 400)
    worst = json.loads(result.out)["worst_case"]
    assert worst["input_tokens_estimate"] == 100 and worst["output_tokens"] == 1000
    expected = calc_price(
        PriceUsage(input_tokens=100, output_tokens=1000), "gpt-4o-mini", provider_id="openai"
    )
    assert worst["cost_usd"] == pytest.approx(float(expected.total_price))
    assert "estimated" in worst["note"]


def test_report_parse_when_accepts_ages_and_dates():
    import datetime as dt

    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    assert report.parse_when("24h", "--since", now) == "2026-11-24T12:00:00.000000Z"
    assert report.parse_when("2w", "--since", now) == "2026-11-11T12:00:00.000000Z"
    assert report.parse_when("2026-11-01", "--since", now) == "2026-11-01T00:00:00.000000Z"


def test_threads_do_not_matter_for_the_store(tmp_path):
    path = tmp_path / "t.db"
    Store(path).close()

    def work():
        with Store(path) as store:
            for _ in range(20):
                store.add(CallRecord("echo", "ok"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with Store(path) as store:
        assert len(store.recent(1000)) == 80
