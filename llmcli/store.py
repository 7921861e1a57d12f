"""The call log: one SQLite row per call, successful or not, at `$LLMCLI_HOME/logs.db`.

WAL mode and a busy timeout let many `llmcli` processes write at once (shell loops, parallel
jobs); numbered migrations, tracked in `PRAGMA user_version`, let later releases change the schema
without losing rows. Keys are never stored: nothing here ever receives one.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 10_000

# A call whose cost is unknown: it has no price, and it may have been billed. A request that failed
# before producing anything (no usage, no text) is not billed by the providers, so it is not counted.
UNPRICED = "cost_usd IS NULL AND NOT (status = 'error' AND input_tokens IS NULL AND COALESCE(answer, '') = '')"


# Append only: never edit a released migration, add the next one.
MIGRATIONS: tuple[str, ...] = (
    # 1: the calls table.
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        provider TEXT NOT NULL,
        requested_model TEXT,
        model TEXT,
        conversation_id TEXT,
        system_prompt TEXT,
        messages TEXT,
        answer TEXT,
        finish_reason TEXT,
        raw_finish_reason TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cached_input_tokens INTEGER,
        cache_write_tokens INTEGER,
        reasoning_tokens INTEGER,
        cost_usd REAL,
        price_source TEXT,
        duration_ms INTEGER,
        ttft_ms INTEGER,
        attempts INTEGER,
        status TEXT NOT NULL,
        error_class TEXT,
        error_message TEXT,
        exit_code INTEGER,
        tag TEXT,
        response_id TEXT
    );
    CREATE INDEX calls_conversation ON calls (conversation_id, id);
    """,
    # 2: what `llmcli cost` filters and groups by, so it stays fast on a million rows.
    """
    CREATE INDEX calls_ts ON calls (ts);
    CREATE INDEX calls_provider_model ON calls (provider, model);
    """,
    # 3: `cost` on a million rows in well under a second: whether a call is unpriced becomes a
    # generated column (one definition, no rows rewritten), and covering indexes hold everything
    # the default and per-day reports read, so they scan a narrow index, not the wide rows.
    f"""
    ALTER TABLE calls ADD COLUMN unpriced INTEGER GENERATED ALWAYS AS ({UNPRICED}) VIRTUAL;
    CREATE INDEX calls_cost_by_model ON calls
        (provider, COALESCE(model, requested_model), ts, input_tokens, output_tokens, cost_usd, unpriced);
    CREATE INDEX calls_cost_by_day ON calls
        (substr(ts, 1, 10), ts, input_tokens, output_tokens, cost_usd, unpriced);
    """,
)


def utc_now() -> str:
    """A sortable UTC timestamp: `2026-11-25T10:40:52.123456Z`."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class CallRecord:
    """One row of the log. Every field but provider and status may be unknown (None)."""

    provider: str
    status: str  # ok | error | interrupted
    ts: str = field(default_factory=utc_now)
    requested_model: str | None = None
    model: str | None = None
    conversation_id: str | None = None
    system_prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    answer: str | None = None
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    price_source: str | None = None
    duration_ms: int | None = None
    ttft_ms: int | None = None
    attempts: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    tag: str | None = None
    response_id: str | None = None

    def values(self) -> list[Any]:
        """Column values in `COLUMNS` order, messages as JSON."""
        data = dict(self.__dict__)
        data["messages"] = (
            json.dumps(self.messages, ensure_ascii=False) if self.messages is not None else None
        )
        return [data[c] for c in COLUMNS]


COLUMNS = tuple(f.name for f in fields(CallRecord))


class Store:
    """The log database. Opening it creates it (and its folder) and applies pending migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        from llmcli import paths

        # The log holds every prompt and answer: a private folder, a database only we can read.
        paths.private_folder(path.parent)
        paths.private_database(path)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._use_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.migrate()

    def _use_wal(self) -> None:
        """Switch to WAL, waiting out other processes doing the same on a brand-new log.

        Changing the journal mode does not honour the busy timeout: it fails at once with
        "database is locked" while another connection holds the file, so it is retried here.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on the busy timeout
        # instead of failing halfway with "database is locked".
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self, upto: int | None = None) -> None:
        """Apply migrations after the database's version (up to `upto`, for tests)."""
        target = len(MIGRATIONS) if upto is None else upto
        if self.version >= target:
            return
        with self.transaction() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
            for number in range(current + 1, target + 1):
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def add(self, record: CallRecord) -> int:
        """Insert one call; returns its id."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({placeholders})", record.values()
            )
        return int(cursor.lastrowid)

    def recent(self, limit: int = 10, conversation_id: str | None = None) -> list[sqlite3.Row]:
        """The last `limit` calls (or one conversation's), oldest first."""
        if conversation_id is not None:
            rows = self.db.execute(
                "SELECT * FROM calls WHERE conversation_id = ? ORDER BY id DESC LIMIT ?",
                (conversation_id, limit),
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM calls ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return rows[::-1]

    def latest_conversation(self) -> str | None:
        row = self.db.execute(
            "SELECT conversation_id FROM calls WHERE conversation_id IS NOT NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def history(self, conversation_id: str) -> tuple[str | None, list[dict[str, str]]] | None:
        """The system prompt and messages of a conversation so far, from its last answered turn.

        Each row keeps every message it sent, so the last successful row plus its answer is the
        whole history; failed turns leave nothing dangling. None if the id is unknown.
        """
        row = self.db.execute(
            # Only complete answers: a filtered (exit 8) or empty reply would send an empty
            # assistant turn, which providers reject.
            "SELECT system_prompt, messages, answer FROM calls WHERE conversation_id = ? AND status = 'ok' "
            "AND exit_code = 0 AND answer <> '' ORDER BY id DESC LIMIT 1",
            (conversation_id,),
        ).fetchone()
        if row is None:
            known = self.db.execute(
                "SELECT 1 FROM calls WHERE conversation_id = ? LIMIT 1", (conversation_id,)
            )
            return (None, []) if known.fetchone() else None
        messages = json.loads(row["messages"] or "[]")
        messages.append({"role": "assistant", "content": row["answer"] or ""})
        return row["system_prompt"], messages

    def aggregate(
        self,
        group_by: Sequence[str],
        *,
        since: str | None = None,
        until: str | None = None,
        filters: dict[str, str | None] | None = None,
    ) -> list[sqlite3.Row]:
        """Calls, tokens and known cost per group; `unpriced` counts calls whose cost is unknown."""
        keys = {
            "provider": "provider",
            "model": "COALESCE(model, requested_model)",
            "day": "substr(ts, 1, 10)",
            "tag": "tag",
        }
        select = [f"{keys[g]} AS {g}" for g in group_by]
        where, params = [], []
        if since:
            where.append("ts >= ?")
            params.append(since)
        if until:
            where.append("ts < ?")
            params.append(until)
        for column, value in (filters or {}).items():
            if value is None:
                continue
            if column == "model":  # the name asked for, or the (often dated) one reported
                where.append("(model = ? OR requested_model = ?)")
                params += [value, value]
            else:
                where.append(f"{keys[column]} = ?")
                params.append(value)
        columns = ", ".join([*select, ""])
        sql = (
            f"SELECT {columns}"
            "COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, "
            "SUM(cost_usd) AS cost_usd, SUM(unpriced) AS unpriced FROM calls"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        if group_by:
            # By position: in GROUP BY, SQLite binds a bare name to the table's column, not the alias.
            positions = ", ".join(str(i + 1) for i in range(len(group_by)))
            sql += f" GROUP BY {positions} ORDER BY {positions}"
        return self.db.execute(sql, params).fetchall()
