"""A team's call log: PostgreSQL through psycopg 3 (`LLMCLI_DB=postgresql://...`, docs/team.md).

The same schema, migrations and statements as the local SQLite log (`llmcli.migrations`,
`llmcli.sqllog`), so every command answers alike on both. What differs is how many machines
share it:
- migrations run under a transaction-level advisory lock, so twenty machines starting at once
  on a new database migrate it once, and the others wait, then find it done;
- a reservation takes another advisory lock in its transaction: reservations queue, so racing
  processes never pass a budget between them;
- a connection that cannot be made within `CONNECT_TIMEOUT_S` fails at once with
  `DatabaseTrouble("unreachable")`, which `llmcli.journal` turns into a local spool.

This is the only module that imports psycopg, and it is imported only when the log is a
PostgreSQL URL. Its failures leave as `LogFailure` wrapping `DatabaseTrouble`, whose words are
scrubbed of the password: a driver's message may quote the connection string.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from llmcli import migrations, redact
from llmcli.calllog import DatabaseTrouble, LogFailure
from llmcli.sqllog import Dialect, SqlLog

CONNECT_TIMEOUT_S = 2
MIGRATIONS: tuple[str, ...] = migrations.migrations("postgresql")
# Advisory lock keys (any 64-bit numbers other programs are unlikely to use): "llmcli" in ASCII.
MIGRATION_LOCK = 0x6C6C6D636C69_01
BUDGET_LOCK = 0x6C6C6D636C69_02


class PgStore(SqlLog):
    """The shared log. Opening it connects (within 2 s) and applies pending migrations."""

    DIALECT = Dialect(
        "postgresql",
        "length(key) + octet_length(response)",
        # Byte order and NULL first, as SQLite sorts, whatever the database's collation.
        '{expr} COLLATE "C" NULLS FIRST',
        False,
    )
    FAILURES = (psycopg.Error, DatabaseTrouble)

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.location = redact.display_url(url)
        self._secrets = _secrets(url)
        self._sql: dict[str, str] = {}
        try:
            self.conn = psycopg.connect(
                url,
                connect_timeout=CONNECT_TIMEOUT_S,
                autocommit=True,  # reads see the latest commits; writes take `transaction`
                row_factory=dict_row,
                application_name="llmcli",
            )
        except psycopg.Error as exc:
            raise LogFailure(self.trouble(exc), self.location) from None
        try:
            if migrate:
                self.migrate()
        except psycopg.Error as exc:
            self.conn.close()
            raise LogFailure(self.trouble(exc), self.location) from None

    def trouble(self, exc: BaseException) -> DatabaseTrouble:
        """The driver's failure as a `DatabaseTrouble`, its words free of the password."""
        if isinstance(exc, DatabaseTrouble):
            return exc
        text = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = redact.mask_keys(text)
        return DatabaseTrouble(_kind(exc, text), " ".join(text.split()))

    def _failure(self, exc: BaseException) -> BaseException:
        return self.trouble(exc)  # any psycopg error: its words go through the scrubber

    def close(self) -> None:
        self.conn.close()

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (closed here, or lost): `logdb.open_early` asks."""
        return bool(self.conn.closed)

    def __enter__(self) -> PgStore:
        return self

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("?", "%s")
        try:
            return self.conn.execute(translated, params or None)
        except psycopg.Error as exc:
            if self.conn.closed or isinstance(exc, psycopg.OperationalError):
                raise self.trouble(exc) from None
            raise

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        try:
            with self.conn.transaction():
                yield self.conn
        except psycopg.Error as exc:  # e.g. the commit, when the server went away meanwhile
            raise self.trouble(exc) from None

    def _lock_budgets(self) -> None:
        # Until this transaction ends: every other reservation waits here, then sees this one.
        self._run("SELECT pg_advisory_xact_lock(?)", (BUDGET_LOCK,))

    @property
    def version(self) -> int:
        """The schema version: the last migration applied (0 on a database never used)."""
        try:
            row = self._one("SELECT MAX(version) AS version FROM llmcli_schema")
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row["version"] or 0)

    def server_version(self) -> str:
        return str(self._one("SHOW server_version")["server_version"])

    def migrate(self, upto: int | None = None) -> None:
        """Apply the migrations the database lacks, once, however many processes try at once."""
        target = len(MIGRATIONS) if upto is None else upto
        if self.version >= target:
            return  # the usual case: one quick read, no lock
        with self.transaction():
            # Held to the end of this transaction; DDL is transactional in PostgreSQL, so the
            # next process in line sees either no migration or all of them.
            self._run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            self._run(
                "CREATE TABLE IF NOT EXISTS llmcli_schema "
                "(version INTEGER PRIMARY KEY, applied TEXT NOT NULL)"
            )
            row = self._one("SELECT MAX(version) AS version FROM llmcli_schema")
            current = int(row["version"] or 0)
            from llmcli.calllog import utc_now

            for number in range(current + 1, target + 1):
                for statement in migrations.statements(
                    MIGRATIONS[number - 1], migrations.outside_dollars
                ):
                    self.conn.execute(statement)
                self._run(
                    "INSERT INTO llmcli_schema (version, applied) VALUES (?, ?)",
                    (number, utc_now()),
                )


def _secrets(url: str) -> list[str]:
    """The password as written in the URL and as decoded: neither may be shown."""
    from urllib.parse import unquote, urlsplit

    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    try:
        decoded = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        decoded = None
    if decoded:
        found.append(str(decoded))
    # Longest first, so that a password containing another is replaced whole.
    return sorted({s for s in found if s}, key=len, reverse=True)


def _kind(exc: BaseException, text: str) -> str:
    """What kind of trouble (`DatabaseTrouble.kind`) a driver's failure is."""
    state = getattr(exc, "sqlstate", None) or ""
    lowered = text.lower()
    if state in ("28P01", "28000") or "password authentication failed" in lowered:
        return "auth"
    if "no password supplied" in lowered or "authentication failed" in lowered:
        return "auth"
    if state == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return "missing"
    if state == "42501" or state.startswith("42"):
        return "permission" if state == "42501" else "other"
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return "unreachable"
    return "other"
