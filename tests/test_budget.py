"""Budgets as a user meets them: the installed `llmcli` against the fake provider server, with
stdout, stderr, the exit code and the call log checked separately.

Prices are chosen so every amount is exact and easy: in prices.toml `budget-mini` (openai) costs
nothing for input and $1,000 per million output tokens, so with `--max-tokens 10` a call's worst
case is exactly $0.01, and a reply of 10 output tokens really costs $0.01 (3 tokens: $0.003).
`budget-claude` (anthropic) is five times dearer: worst case $0.05.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LLMCLI, base_env, open_test_log, run_cli, table_rows
from tests.fakeserver import Reply

PRICES = """\
[openai."budget-mini"]
input = 0
output = 1000

[anthropic."budget-claude"]
input = 0
output = 5000

[openai."budget-eyes"]
input = 1000
output = 0
"""
MINI = ("-p", "openai", "-m", "budget-mini", "--max-tokens", "10", "--retries", "0")
HINT = "wait for the reset, lower --max-tokens, or raise the budget (docs/cost.md)\n"
CENT = Reply(text="fine", input_tokens=5, output_tokens=10)  # costs exactly $0.01 on budget-mini


def home() -> Path:
    path = Path(os.environ["LLMCLI_HOME"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def prices() -> None:
    (home() / "prices.toml").write_text(PRICES)


def write_config(text: str) -> None:
    (home() / "config.toml").write_text(textwrap.dedent(text))


def refusal(first_line: str) -> str:
    """The whole stderr of a call refused by a budget."""
    return f"Error: {first_line}\n{HINT}"


def log_rows() -> list[dict[str, Any]]:
    """The log's rows, oldest first, read-only (none when nothing created the log)."""
    return table_rows("calls")


def reservations() -> list[dict[str, Any]]:
    """The budget reservations held in the log right now (expired ones included)."""
    return table_rows("reservations", order="uid")


def cents(picos: int | None) -> Decimal | None:
    return None if picos is None else Decimal(picos).scaleb(-12).normalize()


def costs() -> list[Decimal | None]:
    return [cents(row["cost_picousd"]) for row in log_rows()]


def budgets(cli, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """`cost --format json`'s budgets, by name, amounts as exact decimals."""
    result = cli("cost", "--format", "json", extra_env=env)
    assert result.code == 0, result.err
    found = json.loads(result.out, parse_float=Decimal)["budgets"]
    return {b["budget"]: b for b in found}


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def add_row(ts: dt.datetime, cost: str) -> None:
    """A call logged at `ts`, through the log's own interface (as a call of that day had)."""
    from llmcli.calllog import CallRecord

    with open_test_log() as store:
        store.add(
            CallRecord(
                provider="openai",
                status="ok",
                ts=ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                requested_model="budget-mini",
                model="budget-mini",
                cost_usd=Decimal(cost),
                price_source="prices.toml",
            )
        )


def wait_for(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


# --- a limit reached by real calls -----------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_a_limit_reached_by_logged_calls_refuses_the_next_call_before_it_is_sent(cli, fake):
    env = {"LLMCLI_BUDGET_DAILY_USD": "0.02"}
    fake.script("openai", CENT, CENT)
    for _ in range(2):
        result = cli("ask", *MINI, "hi", extra_env=env)
        assert (result.code, result.out, result.err) == (0, "fine\n", "")
    assert costs() == [Decimal("0.01"), Decimal("0.01")]

    fake.reset()
    result = cli("ask", *MINI, "hi", extra_env=env)
    assert result.code == 10
    assert result.out == ""
    assert result.err == refusal(
        "daily budget $0.02 would be exceeded: $0.02 spent today, this call may cost up to "
        "$0.01 (resets 00:00 UTC)"
    )
    assert fake.requests == []
    assert len(log_rows()) == 2  # a refused call was never made: no row
    assert reservations() == []


@pytest.mark.usefixtures("log_backend")
def test_cost_shows_each_budget_with_spent_reserved_and_left(cli, fake):
    write_config(
        """
        [budget]
        daily_usd = 5
        monthly_usd = 100

        [budget.tags]
        ci = 0.5
        """
    )
    fake.script("openai", CENT)
    assert cli("ask", *MINI, "--tag", "ci", "hi").code == 0

    table = cli("cost")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("budget ")))
    assert lines[start - 1] == ""  # after the cost table, apart from it
    assert lines[start].split() == [
        "budget",
        "limit",
        "spent",
        "reserved",
        "left",
        "resets",
        "(UTC)",
    ]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert lines[start + 2].split() == [
        "daily",
        "$5.00",
        "$0.01",
        "$0.00",
        "$4.99",
        tomorrow,
        "00:00",
    ]
    assert lines[start + 3].split()[:5] == ["monthly", "$100.00", "$0.01", "$0.00", "$99.99"]
    assert lines[start + 4].split()[:6] == ["daily,", "tag", "ci", "$0.50", "$0.01", "$0.00"]
    assert len(lines) == start + 5

    found = budgets(cli)
    assert list(found) == ["daily", "monthly", "daily, tag ci"]
    daily = found["daily"]
    assert (daily["limit_usd"], daily["spent_usd"], daily["reserved_usd"], daily["left_usd"]) == (
        5,
        Decimal("0.01"),
        0,
        Decimal("4.99"),
    )
    assert daily["tag"] is None and found["daily, tag ci"]["tag"] == "ci"
    assert daily["resets_at"] == f"{tomorrow}T00:00:00.000000Z"

    csv = cli("cost", "--format", "csv")
    assert csv.code == 0
    assert csv.out.splitlines()[1:] == [  # one table per CSV file: no budgets
        "openai,budget-mini,1,5,10,15,0,0.01,0",
        "TOTAL,,1,5,10,15,0,0.01,0",
    ]


def test_cost_without_a_budget_shows_none(cli, fake):
    assert cli("ask", "-p", "echo", "hi").code == 0
    result = cli("cost")
    assert result.code == 0 and "budget" not in result.out
    data = json.loads(cli("cost", "--format", "json").out)
    assert data["budgets"] == []


# --- windows ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_a_tag_budget_counts_only_calls_with_that_tag(cli, fake):
    write_config(
        """
        [budget.tags]
        ci = 0.02
        """
    )
    fake.script("openai", *[CENT] * 6)
    for tag in ("other", "other", "other"):
        assert cli("ask", *MINI, "--tag", tag, "hi").code == 0
    assert cli("ask", *MINI, "hi").code == 0  # untagged
    for _ in range(2):
        assert cli("ask", *MINI, "--tag", "ci", "hi").code == 0
    assert len(fake.requests) == 6

    fake.reset()
    refused = cli("ask", *MINI, "--tag", "ci", "hi")
    assert (refused.code, refused.out) == (10, "")
    assert refused.err == refusal(
        "daily budget for tag 'ci' $0.02 would be exceeded: $0.02 spent today, this call may "
        "cost up to $0.01 (resets 00:00 UTC)"
    )
    assert fake.requests == []
    fake.script("openai", CENT)
    assert cli("ask", *MINI, "--tag", "other", "hi").code == 0  # other tags are not bound by it
    assert len(fake.requests) == 1
    assert [r["tag"] for r in log_rows()] == ["other"] * 3 + [None, "ci", "ci", "other"]


@pytest.mark.usefixtures("log_backend")
def test_the_monthly_budget_counts_this_month_and_not_the_last(cli, fake):
    write_config(
        """
        [budget]
        daily_usd = 1
        monthly_usd = 0.05
        """
    )
    now = dt.datetime.now(dt.UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    add_row(month - dt.timedelta(hours=12), "10")  # last month: not counted
    earlier = max(
        month, now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    )
    add_row(earlier + dt.timedelta(seconds=1), "0.03")  # an earlier day of this month (or the 1st)

    fake.script("openai", CENT, CENT)
    for _ in range(2):  # $0.03 + $0.01 + $0.01: exactly up to the limit
        result = cli("ask", *MINI, "hi")
        assert result.code == 0, result.err
    fake.reset()
    refused = cli("ask", *MINI, "hi")
    assert (refused.code, refused.out) == (10, "")
    assert refused.err == refusal(
        "monthly budget $0.05 would be exceeded: $0.05 spent this month, this call may cost up "
        "to $0.01 (resets the 1st, 00:00 UTC)"
    )
    assert fake.requests == []
    found = budgets(cli)
    assert found["monthly"]["spent_usd"] == Decimal("0.05")
    assert found["monthly"]["since"] == month.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert found["daily"]["spent_usd"] == (Decimal("0.05") if now.day == 1 else Decimal("0.02"))


def test_the_environment_wins_over_config_toml(cli, fake):
    write_config(
        """
        [budget]
        daily_usd = 0
        monthly_usd = 0
        """
    )
    env = {"LLMCLI_BUDGET_DAILY_USD": "0.01", "LLMCLI_BUDGET_MONTHLY_USD": "1"}
    fake.script("openai", CENT)
    result = cli("ask", *MINI, "hi", extra_env=env)
    assert (result.code, result.out, result.err) == (0, "fine\n", "")

    refused = cli("ask", *MINI, "hi", extra_env=env)
    assert refused.code == 10
    assert refused.err.startswith("Error: daily budget $0.01 would be exceeded: $0.01 spent today")
    without = cli("ask", *MINI, "hi")  # config.toml's own limits again
    assert without.code == 10
    assert without.err.startswith("Error: daily budget $0.00 would be exceeded")
    assert len(fake.requests) == 1

    shown = json.loads(cli("config", "show", "--json", extra_env=env).out)["settings"]
    rows = {r["setting"]: r for r in shown}
    assert (rows["daily budget"]["value"], rows["daily budget"]["source"]) == (
        "$0.01",
        "environment",
    )
    assert rows["daily budget"]["note"] == "wins over config.toml's $0.00"
    assert (rows["monthly budget"]["value"], rows["monthly budget"]["source"]) == (
        "$1.00",
        "environment",
    )


# --- prices ----------------------------------------------------------------------------------


def test_an_unknown_price_is_refused_under_a_budget_unless_allowed(cli, fake):
    env = {"LLMCLI_BUDGET_DAILY_USD": "1"}
    refused = cli("ask", "-p", "openai", "-m", "mystery-model", "hi", extra_env=env)
    assert (refused.code, refused.out) == (10, "")
    assert refused.err == (
        "Error: openai mystery-model has no known price, so a budget cannot bound it\n"
        "price it in prices.toml (docs/cost.md), or set allow_unpriced = true under [budget] "
        "in config.toml\n"
    )
    assert fake.requests == []
    assert log_rows() == []

    write_config(
        """
        [budget]
        allow_unpriced = true
        """
    )
    allowed = cli("ask", "-p", "openai", "-m", "mystery-model", "hi", extra_env=env)
    assert allowed.code == 0, allowed.err
    assert len(fake.requests) == 1
    (row,) = log_rows()
    assert row["cost_picousd"] is None  # unknown, and counted as $0 against the budget
    assert budgets(cli, env)["daily"]["spent_usd"] == 0
    assert reservations() == []


def test_echo_is_free_and_passes_a_zero_budget(cli, fake):
    env = {"LLMCLI_BUDGET_DAILY_USD": "0"}
    result = cli("ask", "-p", "echo", "hello", extra_env=env)
    assert (result.code, result.out, result.err) == (0, "hello\n", "")
    assert costs() == [Decimal(0)]
    refused = cli("ask", *MINI, "hello", extra_env=env)
    assert refused.code == 10
    assert fake.requests == []


# --- reservations ----------------------------------------------------------------------------


class Running:
    """An `llmcli` subprocess in the background, always reaped."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [LLMCLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.mark.usefixtures("log_backend")
def test_the_reservation_holds_the_worst_case_until_the_real_cost_replaces_it(cli, fake):
    gate = threading.Event()
    fake.script("openai", Reply(text="one two three", output_tokens=3, gate=gate))
    env = {**base_env(fake), "LLMCLI_BUDGET_DAILY_USD": "1"}
    running = Running("stream", *MINI, "hi", env=env)
    try:
        wait_for(lambda: fake.requests and fake.requests[0].chunks_sent >= 1, "the first chunk")
        (held,) = reservations()
        assert cents(held["cost_picousd"]) == Decimal("0.01")  # every one of --max-tokens
        daily = budgets(cli, {"LLMCLI_BUDGET_DAILY_USD": "1"})["daily"]
        assert (daily["spent_usd"], daily["reserved_usd"], daily["left_usd"]) == (
            0,
            Decimal("0.01"),
            Decimal("0.99"),
        )
    finally:
        gate.set()
        code, out, err = running.finish()
    assert (code, out, err) == (0, "one two three\n", "")
    assert reservations() == []
    assert costs() == [Decimal("0.003")]  # what the 3 tokens really cost
    daily = budgets(cli, {"LLMCLI_BUDGET_DAILY_USD": "1"})["daily"]
    assert (daily["spent_usd"], daily["reserved_usd"]) == (Decimal("0.003"), 0)


def test_a_killed_process_reservation_expires_after_its_timeout(cli, fake):
    gate = threading.Event()
    fake.script("openai", Reply(text="one two three", output_tokens=3, gate=gate))
    env = {**base_env(fake), "LLMCLI_BUDGET_DAILY_USD": "0.015"}
    running = Running("stream", *MINI, "--timeout", "3", "hi", env=env)
    try:
        wait_for(lambda: fake.requests and fake.requests[0].chunks_sent >= 1, "the first chunk")
        running.proc.send_signal(signal.SIGKILL)
        running.proc.wait(timeout=10)
    finally:
        gate.set()
        running.close()
    (held,) = reservations()
    lasts = (parse_ts(held["expires"]) - parse_ts(held["ts"])).total_seconds()
    assert 3 <= lasts <= 10  # --timeout 3 × 1 attempt, and a few seconds to start

    fake.reset()
    refused = cli("ask", *MINI, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": "0.015"})
    assert refused.code == 10
    assert refused.err.startswith(
        "Error: daily budget $0.015 would be exceeded: $0.00 spent today and $0.01 held by "
        "calls under way, this call may cost up to $0.01 (resets 00:00 UTC)"
    )
    assert fake.requests == []

    left = (parse_ts(held["expires"]) - dt.datetime.now(dt.UTC)).total_seconds()
    assert left < 10
    time.sleep(max(0.0, left) + 0.2)  # until the recorded expiry has passed, no longer
    fake.script("openai", CENT)
    result = cli("ask", *MINI, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": "0.015"})
    assert (result.code, result.out) == (0, "fine\n"), result.err
    assert len(fake.requests) == 1
    assert costs() == [Decimal("0.01")]  # the killed call left no row, and no hold now
    assert reservations() == []


def test_a_call_waiting_to_retry_keeps_its_reservation(cli, fake):
    """The hold must last as long as the call can: its attempts and the waits between them.
    Otherwise another process takes the same money while this one waits out a Retry-After."""
    fake.script(
        "openai",
        Reply(status=429, headers={"Retry-After": "9"}),  # the first attempt of the first call
        CENT,  # the second call's, if it were allowed
        CENT,  # the first call's retry
    )
    env = {**base_env(fake), "LLMCLI_BUDGET_DAILY_USD": "0.015"}
    first = Running(
        "ask", "-p", "openai", "-m", "budget-mini", "--max-tokens", "10", "--retries", "1",
        "--timeout", "1", "hi", env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: len(fake.requests) == 1, "the first attempt")
        asked_at = fake.requests[0].started_at
        # Past the attempts' deadlines and the start-up allowance, before the retry at 9 s.
        time.sleep(max(0.0, asked_at + 7.5 - time.monotonic()))
        second = cli("ask", *MINI, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": "0.015"})
        code, out, err = first.finish(timeout=30)
    finally:
        first.close()
    assert (code, out) == (0, "fine\n"), err
    assert second.code == 10, second.err
    assert "$0.00 spent today and $0.01 held by calls under way" in second.err
    assert len(fake.requests) == 2  # the first call's two attempts, nothing else
    assert sum(c or 0 for c in costs()) <= Decimal("0.015")


# --- the race --------------------------------------------------------------------------------


def test_eight_racing_processes_never_pass_the_limit(fake):
    """8 processes × 10 calls, $0.01 each, against a $0.20 limit: exactly 20 are sent."""
    allowed = 20
    fake.script("openai", *[CENT] * 80)
    env = {**base_env(fake), "LLMCLI_BUDGET_DAILY_USD": "0.20"}

    def ten_calls(worker: int) -> list[tuple[int, str]]:
        results = []
        for n in range(10):
            result = run_cli("ask", *MINI, f"call {worker}.{n}", env=env, timeout=120)
            results.append((result.code, result.err))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [o for batch in pool.map(ten_calls, range(8)) for o in batch]
    codes = Counter(code for code, _ in outcomes)
    assert codes == {0: allowed, 10: 80 - allowed}, [e for c, e in outcomes if c not in (0, 10)]
    assert all(
        err.startswith("Error: daily budget $0.20 would be exceeded: ")
        for code, err in outcomes
        if code == 10
    )
    assert len(fake.requests) == allowed
    assert costs() == [Decimal("0.01")] * allowed
    assert sum(costs()) == Decimal("0.20")  # the log's total: never past the limit
    assert reservations() == []


# --- fallbacks -------------------------------------------------------------------------------


def test_each_fallback_reserves_its_own_worst_case(cli, fake):
    fallback = ("--fallback", "anthropic/budget-claude")
    fake.script("openai", Reply(status=500))
    refused = cli("ask", *MINI, *fallback, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": "0.04"})
    assert (refused.code, refused.out) == (10, "")
    assert refused.err == (
        "falling back to anthropic/budget-claude after server error (500) from openai\n"
        + refusal(
            "daily budget $0.04 would be exceeded: $0.00 spent today, this call may cost up to "
            "$0.05 (resets 00:00 UTC)"
        )
    )
    assert [r.provider for r in fake.requests] == ["openai"]  # the fallback was never sent
    assert [(r["provider"], r["status"], r["cost_picousd"]) for r in log_rows()] == [
        ("openai", "error", None)
    ]
    assert reservations() == []

    fake.reset()
    fake.script("openai", Reply(status=500))
    fake.script("anthropic", Reply(text="fine", output_tokens=10))
    result = cli("ask", *MINI, *fallback, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": "0.06"})
    assert (result.code, result.out) == (0, "fine\n"), result.err
    assert [r.provider for r in fake.requests] == ["openai", "anthropic"]
    assert costs()[1:] == [None, Decimal("0.05")]
    assert reservations() == []


# --- settings --------------------------------------------------------------------------------


def test_a_malformed_budget_variable_is_a_configuration_error_that_never_echoes_a_key(cli, fake):
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    result = cli("ask", *MINI, "hi", extra_env={"LLMCLI_BUDGET_DAILY_USD": key})
    assert (result.code, result.out) == (3, "")
    assert result.err.startswith("Error: invalid LLMCLI_BUDGET_DAILY_USD=")
    assert "must be an amount in USD" in result.err
    assert key not in result.err and key[:12] not in result.err
    assert fake.requests == []

    checked = cli("config", "validate", "-p", "echo", extra_env={"LLMCLI_BUDGET_DAILY_USD": key})
    assert checked.code == 3
    assert key not in checked.out + checked.err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLMCLI_BUDGET_DAILY_USD", "five"),
        ("LLMCLI_BUDGET_DAILY_USD", "-1"),
        ("LLMCLI_BUDGET_MONTHLY_USD", "nan"),
        ("LLMCLI_BUDGET_MONTHLY_USD", "1e99"),
    ],
)
def test_config_validate_fails_on_a_malformed_budget_variable(cli, variable, value):
    result = cli("config", "validate", "-p", "echo", "--json", extra_env={variable: value})
    assert result.code == 3
    report = json.loads(result.out)
    (row,) = [c for c in report["checks"] if c["variable"] == variable]
    assert (row["check"], row["status"], row["source"], row["value"]) == (
        "budget",
        "invalid",
        "environment",
        value,
    )
    assert row["problem"].startswith("must be an amount in USD")
    assert row["exit_code"] == 3
    assert result.err.startswith(f"Error: invalid {variable}='{value}': must be an amount in USD")

    # `ask` refuses the same value with the same words.
    asked = cli("ask", "-p", "echo", "hi", extra_env={variable: value})
    assert asked.code == 3
    assert asked.err.splitlines()[0] == result.err.splitlines()[0]


def test_config_validate_shows_the_limits_in_force(cli):
    write_config(
        """
        [budget]
        daily_usd = 5
        monthly_usd = 100
        allow_unpriced = true

        [budget.tags]
        ci = 2
        """
    )
    result = cli(
        "config", "validate", "-p", "echo", "--json",
        extra_env={"LLMCLI_BUDGET_MONTHLY_USD": "50"},
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    rows = [
        (c["variable"], c["status"], c["source"], c["value"])
        for c in json.loads(result.out)["checks"]
        if c["check"] == "budget"
    ]
    assert rows == [
        ("[budget] daily_usd", "ok", "config.toml", "$5.00"),
        ("LLMCLI_BUDGET_MONTHLY_USD", "ok", "environment", "$50.00"),
        ("[budget.tags] ci", "ok", "config.toml", "$2.00"),
        ("[budget] allow_unpriced", "ok", "config.toml", "true"),
    ]
    table = cli("config", "validate", "-p", "echo", extra_env={"LLMCLI_BUDGET_MONTHLY_USD": "50"})
    assert table.code == 0
    assert "wins over config.toml's $100.00" in table.out


@pytest.mark.parametrize(
    "table",
    [
        '[budget]\ndaily_usd = "lots"\n',
        "[budget]\ndaily_usd = -5\n",
        "[budget]\nweekly_usd = 5\n",
        '[budget]\nallow_unpriced = "yes"\n',
        "[budget.tags]\nci = true\n",
        "budget = 5\n",
    ],
)
def test_a_malformed_budget_table_fails_the_config_row(cli, fake, table):
    write_config(table)
    result = cli("config", "validate", "-p", "echo", "--json")
    assert result.code == 3
    (row,) = [c for c in json.loads(result.out)["checks"] if c["check"] == "config"]
    assert (row["status"], row["exit_code"]) == ("invalid", 3)
    assert "[budget" in row["problem"]
    assert row["fix"] == "see docs/cost.md for the [budget] section"
    asked = cli("ask", *MINI, "hi")
    assert asked.code == 3 and "[budget" in asked.err
    assert fake.requests == []


def test_config_show_lists_the_budgets_and_where_each_comes_from(cli):
    rows = {r["setting"]: r for r in json.loads(cli("config", "show", "--json").out)["settings"]}
    assert (rows["daily budget"]["value"], rows["daily budget"]["source"]) == ("(none)", "default")
    assert rows["monthly budget"]["variable"] == "LLMCLI_BUDGET_MONTHLY_USD"

    write_config(
        """
        [budget]
        monthly_usd = 100
        allow_unpriced = true

        [budget.tags]
        ci = 2.5
        """
    )
    result = cli("config", "show", "--json", extra_env={"LLMCLI_BUDGET_DAILY_USD": "oops"})
    assert result.code == 0
    rows = {r["setting"]: r for r in json.loads(result.out)["settings"]}
    assert rows["daily budget"]["value"] == "oops"
    assert rows["daily budget"]["note"].startswith("invalid: must be an amount in USD")
    assert (rows["monthly budget"]["value"], rows["monthly budget"]["source"]) == (
        "$100.00",
        "config.toml",
    )
    assert rows["monthly budget"]["note"] == "[budget] monthly_usd"
    tag = rows["daily budget, tag ci"]
    assert (tag["value"], tag["source"], tag["note"]) == (
        "$2.50",
        "config.toml",
        "[budget.tags] ci",
    )
    assert rows["unpriced models"]["value"] == "allowed"


def test_without_a_budget_a_no_log_call_creates_no_log(fake):
    """Without a budget the log is not read before a call (the common case stays fast)."""
    fake.script("openai", CENT)
    result = run_cli("ask", *MINI, "--no-log", "hi", env=base_env(fake))
    assert (result.code, result.out) == (0, "fine\n"), result.err
    assert not (home() / "logs.db").exists()


def test_no_log_calls_count_against_the_budget_without_their_words(cli, fake):
    """--no-log is no way around a budget: the spend is kept, the prompt and answer are not."""
    env = {"LLMCLI_BUDGET_DAILY_USD": "0.01"}
    fake.script("openai", CENT)
    result = cli("ask", *MINI, "--system", "be secret", "--no-log", "my secret prompt",
                 extra_env=env)  # fmt: skip
    assert (result.code, result.out) == (0, "fine\n"), result.err
    (row,) = log_rows()
    assert (row["status"], row["cost_picousd"], row["input_tokens"]) == ("ok", 10**10, 5)
    assert row["messages"] is None and row["answer"] is None and row["system_prompt"] is None
    assert b"secret" not in b"".join(p.read_bytes() for p in home().glob("logs.db*"))
    assert reservations() == []
    refused = cli("ask", *MINI, "--no-log", "hi", extra_env=env)
    assert refused.code == 10
    assert refused.err.startswith("Error: daily budget $0.01 would be exceeded: $0.01 spent today")
    assert len(fake.requests) == 1


def test_an_attachment_whose_tokens_cannot_be_told_is_held_at_a_generous_bound(cli, fake, tmp_path):
    """A PDF's tokens are unknown offline; the hold bounds them (1 per 4 bytes) instead of 0."""
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"0" * 39_990 + b"\n%%EOF")  # 40,000 bytes: 10,000 tokens
    env = {"LLMCLI_BUDGET_DAILY_USD": "1"}
    eyes = ("-p", "openai", "-m", "budget-eyes", "--max-tokens", "10", "--retries", "0")
    fake.script("openai", CENT)
    assert cli("ask", *eyes, "hi", extra_env=env).code == 0  # 1 token of input: $0.001
    refused = cli("ask", *eyes, "-a", str(pdf), "summarise", extra_env=env)
    assert refused.code == 10, refused.err
    assert "this call may cost up to $10.00" in refused.err  # 10,000 tokens + the prompt
    assert len(fake.requests) == 1


ENV_DAILY = "LLMCLI_BUDGET_DAILY_USD"


def test_a_dotenv_found_here_may_tighten_the_budget_but_not_raise_it(cli, fake, isolated):
    """A cloned repository's .env must not lift the limit the user set in config.toml."""
    write_config("[budget]\ndaily_usd = 0.01\n")
    (isolated / ".env").write_text("LLMCLI_BUDGET_DAILY_USD=1000\n")
    raised = cli("ask", *MINI, "hi")
    assert (raised.code, raised.out) == (3, "")
    assert (
        raised.err.startswith("Error: LLMCLI_BUDGET_DAILY_USD=$1,000.00 in ")
        and "may not raise the budget config.toml sets ($0.01)" in raised.err
    )
    assert fake.requests == []
    checked = cli("config", "validate", "-p", "echo", "--json")
    assert checked.code == 3
    (row,) = [c for c in json.loads(checked.out)["checks"] if c["variable"] == ENV_DAILY]
    assert row["status"] == "invalid" and "may not raise the budget" in row["problem"]

    fake.script("openai", CENT)
    named = cli("--env-file", str(isolated / ".env"), "ask", *MINI, "hi")  # the user's own file
    assert (named.code, named.out) == (0, "fine\n"), named.err
    (isolated / ".env").write_text("LLMCLI_BUDGET_DAILY_USD=0\n")  # tighter: taken
    tightened = cli("ask", *MINI, "hi")
    assert tightened.code == 10
    assert tightened.err.startswith("Error: daily budget $0.00 would be exceeded")
