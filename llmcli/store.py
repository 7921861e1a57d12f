"""The embedded call log: SQLite at `$LLMCLI_HOME/logs.db`, one row per call (`llmcli.calllog`).

WAL mode and a busy timeout let many `llmcli` processes write at once (shell loops, parallel
jobs); numbered migrations (`llmcli.migrations`), tracked in `PRAGMA user_version`, let later
releases change the schema without losing rows. Reservations are checked and taken under
SQLite's write lock (BEGIN IMMEDIATE), so processes racing for the last dollars of a budget queue
instead of overlapping. The statements themselves are shared with PostgreSQL (`llmcli.sqllog`).
This is the only module that imports sqlite3; its failures leave as `calllog.LogFailure`. Keys
are never stored: nothing here ever receives one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmcli import migrations
from llmcli.calllog import CallRecord, LogFailure, Reservation, Window
from llmcli.sqllog import COLUMNS, Dialect, SqlLog, failures, row_values

__all__ = ["COLUMNS", "MIGRATIONS", "CallRecord", "Store", "row_values"]

BUSY_TIMEOUT_MS = 10_000
MIGRATIONS: tuple[str, ...] = migrations.migrations("sqlite")


class Store(SqlLog):
    """The log database. Opening it creates it (and its folder) and applies pending migrations."""

    DIALECT = Dialect("sqlite", "length(key) + length(CAST(response AS BLOB))", "{expr}", True)
    FAILURES = (sqlite3.Error,)
    _grouping = False  # writes share one transaction until `commit` (`group_writes`)
    _in_group = False  # that transaction has begun

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
                name = getattr(exc, "sqlite_errorname", "")
                if not name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        with suppress(LogFailure):  # a group's last rows; a failure was reported by `commit`
            self.commit()
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self._grouping:
            with self._in_the_group():
                yield self.db
            return
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on the busy timeout
        # instead of failing halfway with "database is locked".
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- grouped writes (`batch run`) ---------------------------------------------------------

    @contextmanager
    def group_writes(self) -> Iterator[None]:
        """Inside, writes are not committed one by one but together, by `commit`.

        A commit is most of what a row costs (about 0.06 of its 0.1 ms), and a batch job writes
        hundreds of rows a second: committing them every few dozen milliseconds instead halves
        the log's share of each answer. What is not committed yet is lost if the process dies,
        so the caller commits before it acts on those rows (a batch job writes an answer's
        output line only after its row is committed). Each write is still all or nothing (a
        savepoint), a budget reservation is committed at once (`reserve`: a hold must outlive
        this process), and other processes' writes wait for the group's commit (the write
        lock is held from the group's first write to its commit: keep groups short)."""
        self._grouping = True
        try:
            yield
        finally:
            self._grouping = False
        # After a failure the group is left for `close` to commit: a second failure here
        # would hide the first.
        self.commit()

    def _begin_group(self) -> None:
        if not self._in_group:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_group = True

    @contextmanager
    def _in_the_group(self) -> Iterator[None]:
        self._begin_group()
        self.db.execute("SAVEPOINT llmcli_write")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO llmcli_write")
            self.db.execute("RELEASE llmcli_write")
            raise
        self.db.execute("RELEASE llmcli_write")

    @failures
    def add(self, record: CallRecord) -> int:
        """`SqlLog.add`; in a group without a savepoint of its own: the row is one INSERT (its
        `spend_days` trigger included), which SQLite undoes by itself if it fails, leaving the
        group's other rows as they were. Two statements fewer for each of a batch job's rows."""
        if not self._grouping:
            with self.transaction():
                return self._insert(record)
        self._begin_group()
        return self._insert(record)

    @failures
    def commit(self) -> None:
        """Commit the writes grouped so far (`group_writes`); nothing when there are none."""
        if not self._in_group:
            return
        self._in_group = False
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:
            with suppress(sqlite3.Error):  # SQLite may have rolled back already
                self.db.execute("ROLLBACK")
            raise

    def reserve(
        self, amount: Decimal, windows: Sequence[Window], ttl_s: float, tag: str | None = None
    ) -> Reservation:
        held = super().reserve(amount, windows, ttl_s, tag)
        self.commit()  # never left in a group: the hold must count even if this process dies
        return held

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
                for statement in migrations.statements(
                    MIGRATIONS[number - 1], sqlite3.complete_statement
                ):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @failures
    def forget(self, upto_id: int) -> None:
        """Remove the rows up to `upto_id`: a spool's rows once the team log has them."""
        with self.transaction():
            self._run("DELETE FROM calls WHERE id <= ?", (upto_id,))
