"""The embedded call log: SQLite at `$LLMCLI_HOME/logs.db`, one row per call (`llmcli.calllog`).

WAL mode and a busy timeout let many `llmcli` processes write at once (shell loops, parallel
jobs); numbered migrations, tracked in `PRAGMA user_version`, let later releases change the schema
without losing rows. Reservations are checked and taken under SQLite's write lock (BEGIN
IMMEDIATE), so processes racing for the last dollars of a budget queue instead of overlapping.
This is the only module that imports sqlite3; its failures leave as `calllog.LogFailure`. Keys are
never stored: nothing here ever receives one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from llmcli import money
from llmcli.calllog import (
    CacheEntry,
    CacheStats,
    CallRecord,
    Conversation,
    LogFailure,
    OverLimit,
    Reservation,
    Spent,
    Window,
    full_messages,
    new_uid,
    utc_now,
)

BUSY_TIMEOUT_MS = 10_000

# A call whose cost is unknown: it has no price, and it may have been billed. A request that failed
# before producing anything (no usage, no text) is not billed by the providers, so it is not counted.
UNPRICED = "cost_usd IS NULL AND NOT (status = 'error' AND input_tokens IS NULL AND COALESCE(answer, '') = '')"
UNPRICED_4 = UNPRICED.replace("cost_usd", "cost_picousd")


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
    # 4: exact money (whole picodollars, summed as integers), a uid per row (the same row in every
    # backend), a conversation's rows refer to the one they continue instead of repeating its
    # messages, cache writes kept an hour (billed higher), budget reservations, and the response
    # cache (its entries, and which calls it answered and what they saved). The table is rebuilt: SQLite cannot drop the float
    # column while an index and a generated column use it. Old rows keep their full messages
    # and no parent, which reads back the same.
    f"""
    CREATE TABLE calls_v4 (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        ts TEXT NOT NULL,
        provider TEXT NOT NULL,
        requested_model TEXT,
        model TEXT,
        conversation_id TEXT,
        parent_uid TEXT,
        request_uid TEXT,
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
        cache_write_1h_tokens INTEGER,
        cost_picousd INTEGER,
        price_source TEXT,
        duration_ms INTEGER,
        ttft_ms INTEGER,
        attempts INTEGER,
        status TEXT NOT NULL,
        error_class TEXT,
        error_message TEXT,
        exit_code INTEGER,
        tag TEXT,
        response_id TEXT,
        cached INTEGER,
        saved_picousd INTEGER,
        unpriced INTEGER GENERATED ALWAYS AS ({UNPRICED_4}) VIRTUAL
    );
    INSERT INTO calls_v4 (id, uid, ts, provider, requested_model, model, conversation_id,
        system_prompt, messages, answer, finish_reason, raw_finish_reason, input_tokens,
        output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, cost_picousd,
        price_source, duration_ms, ttft_ms, attempts, status, error_class, error_message,
        exit_code, tag, response_id)
    SELECT id, lower(hex(randomblob(16))), ts, provider, requested_model, model, conversation_id,
        system_prompt, messages, answer, finish_reason, raw_finish_reason, input_tokens,
        output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens,
        CAST(round(cost_usd * 1e12) AS INTEGER),
        price_source, duration_ms, ttft_ms, attempts, status, error_class, error_message,
        exit_code, tag, response_id
    FROM calls;
    DROP TABLE calls;
    ALTER TABLE calls_v4 RENAME TO calls;
    CREATE INDEX calls_conversation ON calls (conversation_id, id);
    CREATE INDEX calls_ts ON calls (ts);
    CREATE INDEX calls_provider_model ON calls (provider, model);
    CREATE INDEX calls_cost_by_model ON calls
        (provider, COALESCE(model, requested_model), ts, input_tokens, output_tokens, cost_picousd, unpriced, saved_picousd);
    CREATE INDEX calls_cost_by_day ON calls
        (substr(ts, 1, 10), ts, input_tokens, output_tokens, cost_picousd, unpriced, saved_picousd);
    CREATE INDEX calls_cached ON calls (cached, saved_picousd) WHERE cached = 1;
    CREATE INDEX calls_tag_ts ON calls (tag, ts, cost_picousd);
    CREATE INDEX calls_request ON calls (request_uid);
    CREATE TABLE reservations (
        uid TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        expires TEXT NOT NULL,
        cost_picousd INTEGER NOT NULL,
        tag TEXT
    );
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT,
        response TEXT NOT NULL,
        cost_picousd INTEGER
    );
    CREATE INDEX cache_ts ON cache (ts);
    -- Known spend per UTC day and tag, kept by triggers in the transaction that writes the call,
    -- so a budget check reads at most 31 rows however big the log is (`Store._spent`).
    CREATE TABLE spend_days (
        day TEXT NOT NULL,
        tag TEXT NOT NULL,
        cost_picousd INTEGER NOT NULL,
        PRIMARY KEY (day, tag)
    ) WITHOUT ROWID;
    INSERT INTO spend_days (day, tag, cost_picousd)
        SELECT substr(ts, 1, 10), COALESCE(tag, ''), SUM(cost_picousd) FROM calls
        WHERE cost_picousd IS NOT NULL GROUP BY 1, 2;
    CREATE TRIGGER calls_spend_added AFTER INSERT ON calls WHEN NEW.cost_picousd IS NOT NULL BEGIN
        INSERT INTO spend_days (day, tag, cost_picousd)
            VALUES (substr(NEW.ts, 1, 10), COALESCE(NEW.tag, ''), NEW.cost_picousd)
            ON CONFLICT (day, tag) DO UPDATE SET cost_picousd = cost_picousd + excluded.cost_picousd;
    END;
    CREATE TRIGGER calls_spend_removed AFTER DELETE ON calls WHEN OLD.cost_picousd IS NOT NULL BEGIN
        UPDATE spend_days SET cost_picousd = cost_picousd - OLD.cost_picousd
            WHERE day = substr(OLD.ts, 1, 10) AND tag = COALESCE(OLD.tag, '');
    END;
    CREATE TRIGGER calls_spend_changed AFTER UPDATE OF ts, tag, cost_picousd ON calls BEGIN
        UPDATE spend_days SET cost_picousd = cost_picousd - OLD.cost_picousd
            WHERE OLD.cost_picousd IS NOT NULL
            AND day = substr(OLD.ts, 1, 10) AND tag = COALESCE(OLD.tag, '');
        INSERT INTO spend_days (day, tag, cost_picousd)
            SELECT substr(NEW.ts, 1, 10), COALESCE(NEW.tag, ''), NEW.cost_picousd
            WHERE NEW.cost_picousd IS NOT NULL
            ON CONFLICT (day, tag) DO UPDATE SET cost_picousd = cost_picousd + excluded.cost_picousd;
    END;
    """,
)


# The columns a `CallRecord` fills, in order (amounts in USD are stored as whole picodollars).
_PICO_COLUMNS = {"cost_usd": "cost_picousd", "saved_usd": "saved_picousd"}
COLUMNS = tuple(_PICO_COLUMNS.get(f.name, f.name) for f in fields(CallRecord))
T = TypeVar("T")


def row_values(record: CallRecord) -> list[Any]:
    """A record as the values of `COLUMNS`, in order (messages as JSON, cost in picodollars)."""
    data = dict(record.__dict__)
    data["messages"] = (
        json.dumps(record.messages, ensure_ascii=False) if record.messages is not None else None
    )
    for name, column in _PICO_COLUMNS.items():
        amount = data[name]
        data[column] = None if amount is None else money.to_pico(amount)
    return [data[c] for c in COLUMNS]


def _failures(method: Callable[..., T]) -> Callable[..., T]:
    """The driver's failures leave a backend as `LogFailure`, the one kind callers handle."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            raise LogFailure(exc, self.location) from None

    return wrapper


def _statements(script: str) -> Iterator[str]:
    """A migration's statements one by one: `executescript` would commit the transaction that
    keeps a migration all-or-nothing, and a trigger's body has `;` of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _later(seconds: float) -> str:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """The log database. Opening it creates it (and its folder) and applies pending migrations."""

    def __init__(self, path: Path) -> None:
        try:
            self._open(path)
        except (sqlite3.Error, OSError) as exc:
            raise LogFailure(exc, str(path)) from None

    def _open(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        from llmcli import paths

        # The log holds every prompt and answer: a private folder, a database only we can read.
        paths.private_folder(path.parent)
        paths.private_database(path)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        # A damaged row may hold bytes that are not UTF-8: read them replaced (U+FFFD) rather
        # than fail a whole report on one row.
        self.db.text_factory = lambda data: data.decode("utf-8", "replace")
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
            except sqlite3.OperationalError as exc:
                # Only another process's lock is worth waiting for: a read-only file or folder
                # is said at once, not after the busy timeout.
                busy = getattr(exc, "sqlite_errorname", "").startswith(
                    ("SQLITE_BUSY", "SQLITE_LOCKED")
                )
                if not busy or time.monotonic() > deadline:
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
                for statement in _statements(MIGRATIONS[number - 1]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # --- writing ---------------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, record: CallRecord) -> int:
        placeholders = ", ".join("?" for _ in COLUMNS)
        cursor = db.execute(
            f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT (uid) DO NOTHING",
            row_values(record),
        )
        if cursor.rowcount:
            return int(cursor.lastrowid)
        return int(db.execute("SELECT id FROM calls WHERE uid = ?", (record.uid,)).fetchone()[0])

    @_failures
    def add(self, record: CallRecord) -> int:
        """Insert one call (a uid already present is not added twice); its id."""
        with self.transaction() as db:
            return self._insert(db, record)

    def _spent(self, db: sqlite3.Connection, window: Window, now: str) -> Spent:
        """What a window has used: settled calls from the daily totals (a window that starts
        mid-day adds that day's calls from the index), plus the holds not yet expired."""
        day = window.since[:10]
        tagged = "" if window.tag is None else " AND tag = ?"
        tags: list[Any] = [] if window.tag is None else [window.tag]
        if window.since == f"{day}T00:00:00.000000Z":
            settled = db.execute(
                f"SELECT COALESCE(SUM(cost_picousd), 0) FROM spend_days WHERE day >= ?{tagged}",
                [day, *tags],
            ).fetchone()[0]
        else:
            settled = (
                db.execute(
                    f"SELECT COALESCE(SUM(cost_picousd), 0) FROM spend_days WHERE day > ?{tagged}",
                    [day, *tags],
                ).fetchone()[0]
                + db.execute(
                    f"SELECT COALESCE(SUM(cost_picousd), 0) FROM calls WHERE ts >= ? AND ts < ?{tagged}",
                    [window.since, f"{day}T24", *tags],  # the rest of that day, and no later
                ).fetchone()[0]
            )
        held = db.execute(
            "SELECT COALESCE(SUM(cost_picousd), 0) FROM reservations "
            f"WHERE ts >= ?{tagged} AND expires > ?",
            [window.since, *tags, now],
        ).fetchone()[0]
        return Spent(window, money.from_pico(settled), money.from_pico(held))

    @_failures
    def spent(self, windows: Sequence[Window]) -> list[Spent]:
        now = utc_now()
        return [self._spent(self.db, w, now) for w in windows]

    @_failures
    def reserve(
        self, amount: Decimal, windows: Sequence[Window], ttl_s: float, tag: str | None = None
    ) -> Reservation:
        reservation = Reservation(new_uid(), money.exact(amount), _later(ttl_s))
        with self.transaction() as db:
            now = utc_now()
            db.execute("DELETE FROM reservations WHERE expires <= ?", (now,))
            for window in windows:
                if window.tag is not None and window.tag != tag:
                    continue
                used = self._spent(db, window, now)
                if used.spent_usd + used.reserved_usd + reservation.cost_usd > window.limit_usd:
                    raise OverLimit(used, reservation.cost_usd)
            db.execute(
                "INSERT INTO reservations (uid, ts, expires, cost_picousd, tag) VALUES (?, ?, ?, ?, ?)",
                (reservation.uid, now, reservation.expires, money.to_pico(amount), tag),
            )
        return reservation

    @_failures
    def settle(self, reservation: Reservation, record: CallRecord) -> int:
        with self.transaction() as db:
            db.execute("DELETE FROM reservations WHERE uid = ?", (reservation.uid,))
            return self._insert(db, record)

    @_failures
    def release(self, reservation: Reservation) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM reservations WHERE uid = ?", (reservation.uid,))

    # --- the response cache ----------------------------------------------------------------------

    @_failures
    def cache_get(self, key: str, since: str | None = None) -> CacheEntry | None:
        row = self.db.execute(
            "SELECT key, ts, provider, model, response, cost_picousd FROM cache "
            "WHERE key = ? AND ts >= ?",
            (key, since or ""),
        ).fetchone()
        if row is None:
            return None
        try:
            stored = json.loads(row["response"])
        except (ValueError, TypeError, RecursionError):
            return None  # a damaged entry is a miss: the answer is asked for, and stored anew
        if not isinstance(stored, dict) or not isinstance(stored.get("text"), str):
            return None
        picos = row["cost_picousd"]
        cost = money.from_pico(picos) if isinstance(picos, int) else None
        return CacheEntry(row["key"], row["ts"], row["provider"], row["model"], stored, cost)

    @_failures
    def cache_put(self, entry: CacheEntry) -> None:
        cost = None if entry.cost_usd is None else money.to_pico(entry.cost_usd)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO cache (key, ts, provider, model, response, cost_picousd) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET ts = excluded.ts, "
                "provider = excluded.provider, model = excluded.model, "
                "response = excluded.response, cost_picousd = excluded.cost_picousd",
                (entry.key, entry.ts, entry.provider, entry.model,
                 json.dumps(entry.response, ensure_ascii=False), cost),
            )  # fmt: skip

    @_failures
    def cache_stats(self) -> CacheStats:
        entries, size, oldest, newest = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(key) + length(CAST(response AS BLOB))), 0), "
            "MIN(ts), MAX(ts) FROM cache"
        ).fetchone()
        hits, saved = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(saved_picousd), 0) FROM calls WHERE cached = 1"
        ).fetchone()
        return CacheStats(entries, size, oldest, newest, hits, money.from_pico(saved))

    @_failures
    def cache_clear(self, older_than: str | None = None) -> int:
        with self.transaction() as db:
            if older_than is None:
                return db.execute("DELETE FROM cache").rowcount
            return db.execute("DELETE FROM cache WHERE ts < ?", (older_than,)).rowcount

    # --- reading ---------------------------------------------------------------------------------

    def _chain(self, uid: str | None, cache: dict[str, sqlite3.Row]) -> list[sqlite3.Row]:
        """A row and the rows it continues, root first (a missing parent ends the chain)."""
        chain: list[sqlite3.Row] = []
        seen: set[str] = set()
        while uid is not None and uid not in seen:
            seen.add(uid)
            row = cache.get(uid)
            if row is None:
                row = self.db.execute(
                    "SELECT uid, parent_uid, messages, answer FROM calls WHERE uid = ?", (uid,)
                ).fetchone()
                if row is None:
                    break
                cache[uid] = row
            chain.append(row)
            uid = row["parent_uid"]
        return chain[::-1]

    def _full_messages(
        self, uid: str, cache: dict[str, sqlite3.Row]
    ) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Every message the call sent, or (None, why not) when a row of its chain is damaged."""
        chain = []
        for row in self._chain(uid, cache):
            try:
                own = json.loads(row["messages"]) if row["messages"] else []
            except (ValueError, TypeError, RecursionError) as exc:
                return None, f"not valid JSON: {exc}"
            if not isinstance(own, list):
                return None, "not a list of messages"
            chain.append((own, row["answer"]))
        return full_messages(chain), None

    def _as_dict(self, row: sqlite3.Row, cache: dict[str, sqlite3.Row]) -> dict[str, Any]:
        # A damaged column may hold a BLOB: text, so that --json can print it.
        data = {
            k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            for k, v in dict(row).items()
        }
        for name, column in _PICO_COLUMNS.items():
            picos = data.pop(column)
            data[name] = money.from_pico(picos) if isinstance(picos, int) else None
        data["cached"] = bool(data["cached"]) if data["cached"] is not None else None
        data.pop("unpriced", None)
        data["messages"], data["messages_error"] = (
            self._full_messages(row["uid"], cache) if row["messages"] is not None else (None, None)
        )
        return data

    @_failures
    def recent(self, limit: int = 10, conversation_id: str | None = None) -> list[dict[str, Any]]:
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
        cache: dict[str, sqlite3.Row] = {}
        return [self._as_dict(row, cache) for row in rows[::-1]]

    @_failures
    def latest_conversation(self) -> str | None:
        row = self.db.execute(
            "SELECT conversation_id FROM calls WHERE conversation_id IS NOT NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    @_failures
    def conversation(self, conversation_id: str | None) -> Conversation | None:
        """A conversation up to its last complete answer; None if the id is unknown.

        Only complete answers end it: a filtered (exit 8) or empty reply would send an empty
        assistant turn, which providers reject, so failed turns leave nothing dangling.
        """
        cid = conversation_id or self.latest_conversation()
        if cid is None:
            return None
        row = self.db.execute(
            "SELECT uid, system_prompt, answer FROM calls WHERE conversation_id = ? AND status = 'ok' "
            "AND exit_code = 0 AND answer <> '' ORDER BY id DESC LIMIT 1",
            (cid,),
        ).fetchone()
        if row is None:
            known = self.db.execute(
                "SELECT 1 FROM calls WHERE conversation_id = ? LIMIT 1", (cid,)
            ).fetchone()
            return Conversation(cid, None, (), None) if known else None
        sent = self._full_messages(row["uid"], {})[0] or []
        messages = (*sent, {"role": "assistant", "content": row["answer"]})
        return Conversation(cid, row["system_prompt"], messages, row["uid"])

    @_failures
    def aggregate(
        self,
        group_by: Sequence[str],
        *,
        since: str | None = None,
        until: str | None = None,
        filters: dict[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Calls, tokens and known cost per group; `unpriced` counts calls whose cost is unknown;
        `saved_usd` is what calls answered from the cache would have cost."""
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
            "SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced, "
            "SUM(unpriced) AS unpriced, SUM(saved_picousd) AS saved_picousd FROM calls"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        if group_by:
            # By position: in GROUP BY, SQLite binds a bare name to the table's column, not the alias.
            positions = ", ".join(str(i + 1) for i in range(len(group_by)))
            sql += f" GROUP BY {positions} ORDER BY {positions}"
        result = []
        for row in self.db.execute(sql, params).fetchall():
            data = dict(row)
            picos, priced = data.pop("cost_picousd"), data.pop("priced")
            data["cost_usd"] = money.from_pico(picos) if priced else None
            data["saved_usd"] = money.from_pico(data.pop("saved_picousd") or 0)
            result.append(data)
        return result

    @_failures
    def export(self, after_id: int = 0, limit: int = 1000) -> list[CallRecord]:
        rows = self.db.execute(
            f"SELECT id, {', '.join(COLUMNS)} FROM calls WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        records = []
        for row in rows:
            data = {c: row[c] for c in COLUMNS}
            for name, column in _PICO_COLUMNS.items():
                picos = data.pop(column)
                data[name] = None if picos is None else money.from_pico(picos)
            data["cached"] = None if data["cached"] is None else bool(data["cached"])
            data["messages"] = json.loads(data["messages"]) if data["messages"] else None
            records.append(CallRecord(**data))
        return records
