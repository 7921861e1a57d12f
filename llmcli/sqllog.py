"""The call log in SQL, for every backend: what SQLite (`llmcli.store`) and PostgreSQL
(`llmcli.pgstore`) share.

Both hold the same schema (`llmcli.migrations`) and answer every question with the same statements,
so a report reads the same whichever database is behind it. A backend adds only its connection,
its transactions, and the few things its SQL says differently (`Dialect`). Statements are
written with `?` placeholders; a backend that uses another style translates them. Nothing here
imports a database driver.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, ClassVar

from llmcli import money
from llmcli.calllog import (
    CacheEntry,
    CacheStats,
    CallRecord,
    Conversation,
    OverLimit,
    Reservation,
    Spent,
    Window,
    failures,
    full_messages,
    new_uid,
    utc_now,
)
from llmcli.jobstore import JobSql

# The columns a `CallRecord` fills, in order (amounts in USD are stored as whole picodollars).
_PICO_COLUMNS = {"cost_usd": "cost_picousd", "saved_usd": "saved_picousd"}
COLUMNS = tuple(_PICO_COLUMNS.get(f.name, f.name) for f in fields(CallRecord))
# One row's INSERT; a uid already present (a retried copy) is left as it is.
INSERT = (
    f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (uid) DO NOTHING RETURNING id"
)
# A record's fields in the order of COLUMNS, and where the ones stored otherwise are: a batch
# job writes hundreds of rows a second, so a row is read in one call, not copied as a dict.
_FIELDS = operator.attrgetter(*(f.name for f in fields(CallRecord)))
_MESSAGES = COLUMNS.index("messages")
_PICOS = tuple(COLUMNS.index(column) for column in _PICO_COLUMNS.values())
_CACHED = COLUMNS.index("cached")
# What `cost --by` groups by: the SQL for each grouping's value.
GROUP_KEYS = {
    "provider": "provider",
    "model": "COALESCE(model, requested_model)",
    "day": "substr(ts, 1, 10)",
    "tag": "tag",
    "host": "host",
    "user": "os_user",
    "source": "source",
    "batch": "batch_id",
}


def row_values(record: CallRecord) -> list[Any]:
    """A record as the values of `COLUMNS`, in order (messages as JSON, cost in picodollars)."""
    values = list(_FIELDS(record))
    if values[_MESSAGES] is not None:
        values[_MESSAGES] = json.dumps(values[_MESSAGES], ensure_ascii=False)
    for index in _PICOS:
        if values[index] is not None:
            values[index] = money.to_pico(values[index])
    if values[_CACHED] is not None:  # an INTEGER column in every backend (PostgreSQL is strict)
        values[_CACHED] = int(values[_CACHED])
    return values


def record_of(row: Any) -> CallRecord:
    """A stored row (with every column of `COLUMNS`) as the record it was made from."""
    data = {c: row[c] for c in COLUMNS}
    for name, column in _PICO_COLUMNS.items():
        picos = data.pop(column)
        data[name] = None if picos is None else money.from_pico(picos)
    data["cached"] = None if data["cached"] is None else bool(data["cached"])
    data["messages"] = json.loads(data["messages"]) if data["messages"] else None
    return CallRecord(**data)


def later(seconds: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Dialect:
    """What a backend's SQL says differently in the statements below."""

    name: str  # a key of `migrations.DIALECTS`
    # The stored size of a cache entry (SQLite's length() counts characters of text).
    entry_size: str
    # How one grouped value sorts: every backend must order a report's rows alike (byte order,
    # NULL first, as SQLite does), whatever the database's own collation.
    order: str  # e.g. `{expr}` or `{expr} COLLATE "C" NULLS FIRST`
    # GROUP BY/ORDER BY by position: in GROUP BY, SQLite binds a bare name to the table's
    # column, not the alias.
    by_position: bool


class SqlLog(JobSql):
    """Every `CallLog` method, in SQL (and the provider batch jobs', `llmcli.jobstore`). Subclasses connect, and provide `_run`, `transaction`,
    `_lock_budgets` and `close`."""

    DIALECT: ClassVar[Dialect]
    FAILURES: ClassVar[tuple[type[BaseException], ...]] = ()
    location: str

    # --- what a backend provides ------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute one statement (written with `?` placeholders); a cursor whose rows are read
        by column name."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction: committed at the end, rolled back on any exception."""
        raise NotImplementedError

    def _lock_budgets(self) -> None:
        """Inside a transaction: make reservations queue, so that two never pass a limit."""

    def _failure(self, exc: BaseException) -> BaseException:
        """The driver's exception as `LogFailure` should carry it (a backend may reword it)."""
        return exc

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> SqlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._run(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._run(sql, params).fetchall()

    # --- writing ---------------------------------------------------------------------------------

    def _insert(self, record: CallRecord) -> int:
        row = self._one(INSERT, row_values(record))
        if row is None:  # already there (a retried copy): its id
            row = self._one("SELECT id FROM calls WHERE uid = ?", (record.uid,))
        return int(row["id"])

    @failures
    def add(self, record: CallRecord) -> int:
        """Insert one call (a uid already present is not added twice); its id."""
        with self.transaction():
            return self._insert(record)

    @failures
    def add_many(self, records: Sequence[CallRecord]) -> int:
        """Insert calls in one transaction, each at most once (by uid); how many were new."""
        added = 0
        with self.transaction():
            for record in records:
                added += self._one(INSERT, row_values(record)) is not None
        return added

    def _spent(self, window: Window, now: str) -> Spent:
        """What a window has used: settled calls from the daily totals that triggers keep
        (`spend_days`; a window that starts mid-day adds the rest of that day's calls), plus the
        holds not yet expired. One statement, so one snapshot: a call settled meanwhile is
        counted once, as its reservation or as its row, never as neither."""
        day = window.since[:10]
        tag = "" if window.tag is None else " AND tag = ?"
        tagged = [window.tag] if window.tag is not None else []
        if window.since == f"{day}T00:00:00.000000Z":
            settled, params = (
                f"(SELECT COALESCE(SUM(cost_picousd), 0) FROM spend_days WHERE day >= ?{tag})",
                [day, *tagged],
            )
        else:
            settled = (
                f"((SELECT COALESCE(SUM(cost_picousd), 0) FROM spend_days WHERE day > ?{tag}) + "
                "(SELECT COALESCE(SUM(cost_picousd), 0) FROM calls "
                f"WHERE ts >= ? AND ts < ?{tag}))"
            )
            # `T24` sorts after every time of that day and before the next day.
            params = [day, *tagged, window.since, f"{day}T24", *tagged]
        row = self._one(
            f"SELECT {settled} AS settled, "
            f"(SELECT COALESCE(SUM(cost_picousd), 0) FROM reservations WHERE ts >= ?{tag} "
            "AND expires > ?) AS held",
            [*params, window.since, *tagged, now],
        )
        return Spent(window, money.from_pico(row["settled"]), money.from_pico(row["held"]))

    @failures
    def spent(self, windows: Sequence[Window]) -> list[Spent]:
        now = utc_now()
        return [self._spent(w, now) for w in windows]

    @failures
    def reserve(
        self, amount: Decimal, windows: Sequence[Window], ttl_s: float, tag: str | None = None
    ) -> Reservation:
        reservation = Reservation(new_uid(), money.exact(amount), later(ttl_s))
        with self.transaction():
            self._lock_budgets()
            now = utc_now()
            self._run("DELETE FROM reservations WHERE expires <= ?", (now,))
            for window in windows:
                if window.tag is not None and window.tag != tag:
                    continue
                used = self._spent(window, now)
                if used.spent_usd + used.reserved_usd + reservation.cost_usd > window.limit_usd:
                    raise OverLimit(used, reservation.cost_usd)
            self._run(
                "INSERT INTO reservations (uid, ts, expires, cost_picousd, tag) VALUES (?, ?, ?, ?, ?)",
                (reservation.uid, now, reservation.expires, money.to_pico(amount), tag),
            )
        return reservation

    @failures
    def settle(self, reservation: Reservation, record: CallRecord) -> int:
        with self.transaction():
            self._run("DELETE FROM reservations WHERE uid = ?", (reservation.uid,))
            return self._insert(record)

    @failures
    def release(self, reservation: Reservation) -> None:
        with self.transaction():
            self._run("DELETE FROM reservations WHERE uid = ?", (reservation.uid,))

    # --- the response cache ----------------------------------------------------------------------

    @failures
    def cache_get(self, key: str, since: str | None = None) -> CacheEntry | None:
        row = self._one(
            "SELECT key, ts, provider, model, response, cost_picousd FROM cache "
            "WHERE key = ? AND ts >= ?",
            (key, since or ""),
        )
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

    @failures
    def cache_put(self, entry: CacheEntry) -> None:
        cost = None if entry.cost_usd is None else money.to_pico(entry.cost_usd)
        with self.transaction():
            self._run(
                "INSERT INTO cache (key, ts, provider, model, response, cost_picousd) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET ts = excluded.ts, "
                "provider = excluded.provider, model = excluded.model, "
                "response = excluded.response, cost_picousd = excluded.cost_picousd",
                (entry.key, entry.ts, entry.provider, entry.model,
                 json.dumps(entry.response, ensure_ascii=False), cost),
            )  # fmt: skip

    @failures
    def cache_stats(self) -> CacheStats:
        stored = self._one(
            f"SELECT COUNT(*) AS entries, COALESCE(SUM({self.DIALECT.entry_size}), 0) AS size, "
            "MIN(ts) AS oldest, MAX(ts) AS newest FROM cache"
        )
        used = self._one(
            "SELECT COUNT(*) AS hits, COALESCE(SUM(saved_picousd), 0) AS saved FROM calls "
            "WHERE cached = 1"
        )
        return CacheStats(
            int(stored["entries"]),
            int(stored["size"]),
            stored["oldest"],
            stored["newest"],
            int(used["hits"]),
            money.from_pico(used["saved"]),
        )

    @failures
    def cache_clear(self, older_than: str | None = None) -> int:
        with self.transaction():
            if older_than is None:
                return self._run("DELETE FROM cache").rowcount
            return self._run("DELETE FROM cache WHERE ts < ?", (older_than,)).rowcount

    # --- reading ---------------------------------------------------------------------------------

    def _chain(self, uid: str | None, cache: dict[str, Any]) -> list[Any]:
        """A row and the rows it continues, root first (a missing parent ends the chain)."""
        chain: list[Any] = []
        seen: set[str] = set()
        while uid is not None and uid not in seen:
            seen.add(uid)
            row = cache.get(uid)
            if row is None:
                row = self._one(
                    "SELECT uid, parent_uid, messages, answer FROM calls WHERE uid = ?", (uid,)
                )
                if row is None:
                    break
                cache[uid] = row
            chain.append(row)
            uid = row["parent_uid"]
        return chain[::-1]

    def _full_messages(
        self, uid: str, cache: dict[str, Any]
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

    def _as_dict(self, row: Any, cache: dict[str, Any]) -> dict[str, Any]:
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

    @failures
    def recent(self, limit: int = 10, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` calls (or one conversation's), oldest first."""
        if conversation_id is not None:
            rows = self._all(
                "SELECT * FROM calls WHERE conversation_id = ? ORDER BY id DESC LIMIT ?",
                (conversation_id, limit),
            )
        else:
            rows = self._all("SELECT * FROM calls ORDER BY id DESC LIMIT ?", (limit,))
        cache: dict[str, Any] = {}
        return [self._as_dict(row, cache) for row in rows[::-1]]

    @failures
    def latest_conversation(self) -> str | None:
        row = self._one(
            "SELECT conversation_id FROM calls WHERE conversation_id IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        )
        return row["conversation_id"] if row else None

    @failures
    def conversation(self, conversation_id: str | None) -> Conversation | None:
        """A conversation up to its last complete answer; None if the id is unknown.

        Only complete answers end it: a filtered (exit 8) or empty reply would send an empty
        assistant turn, which providers reject, so failed turns leave nothing dangling.
        """
        cid = conversation_id or self.latest_conversation()
        if cid is None:
            return None
        row = self._one(
            "SELECT uid, system_prompt, answer FROM calls WHERE conversation_id = ? AND status = 'ok' "
            "AND exit_code = 0 AND answer <> '' ORDER BY id DESC LIMIT 1",
            (cid,),
        )
        if row is None:
            known = self._one(
                "SELECT 1 AS known FROM calls WHERE conversation_id = ? LIMIT 1", (cid,)
            )
            return Conversation(cid, None, (), None) if known else None
        sent = self._full_messages(row["uid"], {})[0] or []
        messages = (*sent, {"role": "assistant", "content": row["answer"]})
        return Conversation(cid, row["system_prompt"], messages, row["uid"])

    @failures
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
        select = [f"{GROUP_KEYS[g]} AS {_alias(g)}" for g in group_by]
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
                where.append(f"{GROUP_KEYS[column]} = ?")
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
            dialect = self.DIALECT
            keys = [
                str(i + 1) if dialect.by_position else GROUP_KEYS[g] for i, g in enumerate(group_by)
            ]
            order = [dialect.order.format(expr=k) for k in keys]
            sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(order)}"
        result = []
        for row in self._all(sql, params):
            data = {g: row[g] for g in group_by}
            priced = row["priced"]
            data["calls"] = int(row["calls"])
            data["input_tokens"] = _int(row["input_tokens"])
            data["output_tokens"] = _int(row["output_tokens"])
            data["unpriced"] = int(row["unpriced"] or 0)
            data["cost_usd"] = money.from_pico(row["cost_picousd"]) if priced else None
            data["saved_usd"] = money.from_pico(row["saved_picousd"] or 0)
            result.append(data)
        return result

    def export(self, after_id: int = 0, limit: int = 1000) -> list[CallRecord]:
        return [record for _, record in self.export_ids(after_id, limit)]

    @failures
    def export_ids(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, CallRecord]]:
        """`export`, with each row's id: where to carry on from."""
        rows = self._all(
            f"SELECT id, {', '.join(COLUMNS)} FROM calls WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [(int(row["id"]), record_of(row)) for row in rows]

    @failures
    def count(self) -> int:
        """How many calls the log holds."""
        return int(self._one("SELECT COUNT(*) AS n FROM calls")["n"])


def _alias(group: str) -> str:
    # `user` is a reserved word in PostgreSQL (it is the current user): quoted, in every dialect.
    return f'"{group}"'


def _int(value: Any) -> int | None:
    """A sum as a Python int (PostgreSQL sums bigints as numeric)."""
    return None if value is None else int(value)
