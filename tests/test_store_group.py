"""`Store.group_writes` (a batch job's rows committed together): a row that fails leaves the
group's other rows, and the day's spending they add, exactly as they were."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from llmcli.calllog import CallRecord, LogFailure
from llmcli.store import Store


def record(cost: str, status: str | None = "ok") -> CallRecord:
    return CallRecord(provider="openai", status=status, model="gpt-4o-mini", cost_usd=Decimal(cost))


def test_a_failed_row_in_a_group_leaves_the_others(tmp_path):
    store = Store(tmp_path / "log.db")
    first = record("0.25")
    with store.group_writes():
        store.add(first)
        with pytest.raises(LogFailure):
            store.add(record("1", status=None))  # NOT NULL status: refused
        store.add(record("0.5"))
    store.close()

    db = sqlite3.connect(tmp_path / "log.db")
    rows = db.execute("SELECT status, cost_picousd FROM calls ORDER BY id").fetchall()
    assert rows == [("ok", 250_000_000_000), ("ok", 500_000_000_000)]
    # The trigger's daily total holds the two rows only: the failed one left nothing behind.
    (spent,) = db.execute("SELECT SUM(cost_picousd) FROM spend_days").fetchone()
    assert spent == 750_000_000_000


def test_a_row_in_a_group_is_committed_by_commit(tmp_path):
    store = Store(tmp_path / "log.db")
    with store.group_writes():
        store.add(record("0.1"))
        other = sqlite3.connect(tmp_path / "log.db")
        assert other.execute("SELECT COUNT(*) FROM calls").fetchone() == (0,)
        store.commit()
        assert other.execute("SELECT COUNT(*) FROM calls").fetchone() == (1,)
    store.close()
