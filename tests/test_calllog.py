"""The log's interface as both backends implement it (SQLite, and PostgreSQL when the tests have
one: tests/pg.py): idempotent rows, reservations held against spending windows without races,
conversations as chains, rows exported for a copy."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from llmcli import calllog
from llmcli.calllog import CallRecord, OverLimit, Window
from tests.conftest import base_env, open_test_log

DAY = Window("daily", "2000-01-01T00:00:00.000000Z", Decimal("1.00"))


@pytest.fixture
def store(log_backend):
    with open_test_log() as opened:
        yield opened


def test_a_row_added_twice_is_one_row(store):
    record = CallRecord("echo", "ok", cost_usd=Decimal("0.1"))
    first = store.add(record)
    assert store.add(record) == first
    assert len(store.recent(10)) == 1


def test_reservations_count_against_the_limit_until_settled_or_released(store):
    held = store.reserve(Decimal("0.60"), [DAY], ttl_s=60)
    (spent,) = store.spent([DAY])
    assert (spent.spent_usd, spent.reserved_usd) == (Decimal(0), Decimal("0.6"))
    with pytest.raises(OverLimit) as info:
        store.reserve(Decimal("0.50"), [DAY], ttl_s=60)
    assert info.value.spent.reserved_usd == Decimal("0.6")
    # Settled: the reservation is replaced by what the call really cost.
    store.settle(held, CallRecord("echo", "ok", cost_usd=Decimal("0.25")))
    (spent,) = store.spent([DAY])
    assert (spent.spent_usd, spent.reserved_usd) == (Decimal("0.25"), Decimal(0))
    other = store.reserve(Decimal("0.75"), [DAY], ttl_s=60)  # exactly up to the limit
    store.release(other)
    assert store.spent([DAY])[0].reserved_usd == Decimal(0)


def test_a_reservation_left_by_a_killed_process_expires(store):
    store.reserve(Decimal("0.90"), [DAY], ttl_s=0.001)
    import time

    time.sleep(0.01)
    assert store.spent([DAY])[0].reserved_usd == Decimal(0)
    store.reserve(Decimal("0.90"), [DAY], ttl_s=60)  # the expired hold no longer counts


def test_a_tag_window_counts_only_its_tag(store):
    ci = Window("ci", DAY.since, Decimal("0.10"), tag="ci")
    store.add(CallRecord("echo", "ok", tag="ci", cost_usd=Decimal("0.08")))
    store.add(CallRecord("echo", "ok", tag="other", cost_usd=Decimal("0.50")))
    assert store.spent([ci])[0].spent_usd == Decimal("0.08")
    with pytest.raises(OverLimit):
        store.reserve(Decimal("0.05"), [ci], ttl_s=60, tag="ci")
    store.reserve(Decimal("0.05"), [ci], ttl_s=60, tag="other")  # not this window's calls


def test_windows_read_the_daily_totals_which_follow_every_change_to_the_calls(store):
    """`spend_days` (what a budget check reads) must equal the calls it sums, whatever happens."""
    at = "2030-05-{:02d}T{}.000000Z"
    for day, hour, tag, cost in [
        (1, "09:00:00", None, "0.10"),
        (1, "23:59:59", "ci", "0.20"),
        (2, "00:00:00", "ci", "0.40"),
        (2, "12:00:00", None, None),  # unpriced: no amount
        (3, "08:00:00", None, "0.000000000001"),
    ]:
        store.add(CallRecord("echo", "ok", ts=at.format(day, hour), tag=tag,
                             cost_usd=None if cost is None else Decimal(cost)))  # fmt: skip

    def spent(since: str, tag: str | None = None) -> Decimal:
        return store.spent([Window("w", since, Decimal(1), tag=tag)])[0].spent_usd

    assert spent("2030-05-01T00:00:00.000000Z") == Decimal("0.700000000001")
    assert spent("2030-05-02T00:00:00.000000Z") == Decimal("0.400000000001")
    assert spent("2030-05-01T00:00:00.000000Z", tag="ci") == Decimal("0.60")
    # A window that starts mid-day counts that day's calls from then on, and every later day.
    assert spent("2030-05-01T12:00:00.000000Z") == Decimal("0.600000000001")
    assert spent("2030-05-01T12:00:00.000000Z", tag="ci") == Decimal("0.60")

    with store.transaction():  # an edit or a deletion by hand is followed too
        store._run("UPDATE calls SET cost_picousd = 0 WHERE ts LIKE '%-02T00%'")
        store._run("UPDATE calls SET tag = 'ci', ts = '2030-05-02T09:00:00.000000Z' "
                   "WHERE ts LIKE '%-01T09%'")  # fmt: skip
        store._run("DELETE FROM calls WHERE ts LIKE '%-03T%'")
    assert spent("2030-05-01T00:00:00.000000Z") == Decimal("0.30")
    assert spent("2030-05-02T00:00:00.000000Z", tag="ci") == Decimal("0.10")
    totals = store._one("SELECT SUM(cost_picousd) AS n FROM spend_days")["n"]
    assert totals == store._one("SELECT SUM(cost_picousd) AS n FROM calls")["n"]


RACER = """
import json, sys
from decimal import Decimal
from llmcli import config, logdb
from llmcli.calllog import OverLimit, Window
window = Window("daily", "2000-01-01T00:00:00.000000Z", Decimal("1.00"))
won = 0
with logdb.open_log(logdb.target(config.Environment())) as store:
    for _ in range(5):
        try:
            store.reserve(Decimal("0.07"), [window], ttl_s=60)
            won += 1
        except OverLimit:
            pass
print(json.dumps(won))
"""


def test_eight_processes_racing_for_the_last_dollars_never_pass_the_limit(log_backend):
    with open_test_log() as store:
        store.add(CallRecord("echo", "ok", cost_usd=Decimal("0.30")))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER], stdout=subprocess.PIPE, text=True, env=base_env()
        )
        for _ in range(8)
    ]
    won = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    assert all(r.returncode == 0 for r in racers)
    # $0.70 left at $0.07 a call: exactly ten reservations fit, whoever wins them.
    assert sum(won) == 10
    with open_test_log() as store:
        (spent,) = store.spent([DAY])
    assert spent.spent_usd + spent.reserved_usd == Decimal("1.00")


def test_conversations_are_chains_and_export_carries_them(store):
    first = CallRecord(
        "echo",
        "ok",
        conversation_id="c1",
        messages=[{"role": "user", "content": "hi"}],
        answer="hi",
        exit_code=0,
    )
    store.add(first)
    second = CallRecord(
        "echo",
        "ok",
        conversation_id="c1",
        parent_uid=first.uid,
        messages=[{"role": "user", "content": "again"}],
        answer="again",
        exit_code=0,
    )
    store.add(second)
    found = store.conversation("c1")
    assert found.tip == second.uid
    assert [m["content"] for m in found.messages] == ["hi", "hi", "again", "again"]
    assert store.conversation(None) == found  # the latest one
    assert store.conversation("nope") is None
    # A copy of the rows (a spool, a migration to another backend) keeps their identity.
    exported = store.export()
    assert [r.uid for r in exported] == [first.uid, second.uid]
    assert exported[1].parent_uid == first.uid and exported[1].cost_usd is None
    assert calllog.full_messages([([{"role": "user", "content": "a"}], "b")]) == [
        {"role": "user", "content": "a"}
    ]
