"""Which log a run reads and writes: the local SQLite file, or a team's PostgreSQL database.

`LLMCLI_DB=postgresql://...` (or `[log] url` in config.toml; the variable wins) sends every read
and write of the log to PostgreSQL (docs/team.md); without it, nothing changes. This is the one
place that chooses: every command asks `target(env)` where the log is and `open_log` to open it.

A team's log must never cost anyone an answer: a call that cannot be written to it goes to a
local spool (`$LLMCLI_HOME/spool.db`, a SQLite log of the same schema), and the next run that
reaches the database sends the spool first. Rows carry a uid and inserts ignore a uid already
there, so a row sent twice (a sync cut short, two processes syncing at once) is stored once.

Opening a team's log costs a fresh process about 60 ms (importing psycopg, then connecting),
where the SQLite file costs a few. `open_early` hides it: a call that will be logged starts
opening the log in a background thread once its request is on its way, so the work overlaps
the provider's answer instead of following it; `open_log` then takes what that thread made,
its failures included, exactly as if it had opened the log itself.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcli import config, errors, paths

if TYPE_CHECKING:
    from llmcli.calllog import CallLog, CallRecord

SCHEMES = ("postgresql", "postgres")
EXTRA_HINT = "install it with: pip install 'llmcli[postgres]'"
# How long a caller waits for a log being opened in the background before it counts the
# database as away (the call then goes to the spool). Far above the connect timeout (2 s): only
# a server that accepted the connection and then hangs (a migration lock never released) gets here.
EARLY_WAIT_S = 20.0


@dataclass(frozen=True)
class Target:
    """Where the log is: `url` (a team's PostgreSQL) or, when it is None, the file `path`."""

    path: Path  # the local SQLite log; beside it, the spool of a team's log
    url: str | None = None
    source: str | None = None  # where the URL was set: LLMCLI_DB, or the config file

    @property
    def shared(self) -> bool:
        return self.url is not None

    @property
    def location(self) -> str:
        """What to show: the file, or the URL with its password masked."""
        if self.url is None:
            return str(self.path)
        from llmcli import redact

        return redact.display_url(self.url)

    @property
    def spool(self) -> Path:
        return self.path.with_name("spool.db")

    def exists(self) -> bool:
        """Whether there is a log to read (reading must not create a local one)."""
        return self.shared or self.path.exists()


def target(env: config.Environment) -> Target:
    """The log this run uses. ConfigError (exit 3) for a URL that is not PostgreSQL's."""
    path = paths.log_db(env)
    refusal = env.location_refusal("LLMCLI_DB", "send the call log elsewhere")
    if refusal is not None:
        raise refusal
    found = env.lookup("LLMCLI_DB")
    if found is not None:
        url, source = found[0].strip(), "LLMCLI_DB"
    else:
        from llmcli import endpoints

        loaded = endpoints.load(env)
        if loaded.log_url is None:
            return Target(path)
        url, source = loaded.log_url, f"[log] url in {loaded.path}"
    problem = url_problem(url)
    if problem is not None:
        from llmcli import redact

        raise errors.ConfigError(
            f"{source} is not a PostgreSQL URL ({redact.display_url(url)}): {problem}",
            "write it as postgresql://user@host:5432/dbname (docs/team.md)",
        )
    return Target(path, url, source)


def url_problem(url: str) -> str | None:
    """What is wrong with the form of a PostgreSQL URL, or None. Nothing is connected to."""
    from urllib.parse import urlsplit

    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return "it must start with postgresql://"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:
        return str(exc).replace(url, "...")
    if any(c.isspace() for c in url):
        return "it contains spaces"
    return None


def require_driver(where: Target) -> None:
    """ConfigError (exit 3) when the log is a PostgreSQL URL and psycopg is not installed.

    Checked before a call is sent, without importing psycopg (only finding it).
    """
    if not where.shared:
        return
    import importlib.util

    try:
        found = importlib.util.find_spec("psycopg") is not None
    except (ImportError, ValueError):  # a broken install, or an import system that refuses it
        found = False
    if not found:
        raise errors.ConfigError(
            f"the call log is a PostgreSQL database ({where.source}), but psycopg, the driver "
            "llmcli needs for it, is not installed",
            EXTRA_HINT,
        )


def open_log(where: Target, *, sync: bool = True) -> CallLog:
    """Open (and create or migrate) the log. A team's log first receives the spool, if any.

    A team's log that `open_early` is opening is taken from its thread (waited for, at most
    `EARLY_WAIT_S`); what failed there is raised here, as if it had failed here.
    """
    if not where.shared:
        from llmcli.store import Store

        return Store(where.path)
    early = _early.pop(where.url, None) if sync else None
    if early is not None:
        return early.result()
    return _open_shared(where, sync=sync)


def _open_shared(where: Target, *, sync: bool) -> CallLog:
    require_driver(where)
    from llmcli.pgstore import PgStore

    assert where.url is not None
    log = PgStore(where.url)
    if sync and where.spool.exists():
        import contextlib

        from llmcli.calllog import LogFailure

        # What the spool holds waits for the next run if it cannot be sent now (`llmcli log
        # sync` says why): this run's own reads and writes go on.
        with contextlib.suppress(LogFailure):
            send_spool(log, where)
    _opened.add(log)
    return log


# Team logs opened in this process and not closed yet, whoever holds them: a log already open
# needs no early opening (it would be a second connection, never used).
_opened: weakref.WeakSet[Any] = weakref.WeakSet()
_early: dict[str, _Early] = {}  # by URL: opened in the background, not yet taken
_tried: set[str] = set()  # URLs opened early once already in this process


def open_early(where: Target, when_sent: Callable[[Callable[[], None]], None]) -> None:
    """Start opening a team's log in a background thread, to be taken by `open_log`.

    The thread begins when the provider's request is on the wire (`when_sent`, from
    `transport.when_sent`): until then the caller is busy on the CPU (importing the provider's
    SDK, building the request) and would wait for the GIL as long as our import holds it, so
    its request would leave that much later; once it is out, the caller only waits. A call
    whose request is never sent (the echo provider, a failure before sending) opens the log
    when it writes the row, as without `open_early`. Nothing is started for the local log, for
    a team's log this process already has open, or twice in one process (a log that failed
    once is not tried again by the same run: `journal.Journal`). The thread is a daemon: a
    process that ends without taking the log does not wait for it.
    """
    url = where.url
    if url is None or url in _tried or url in _early:
        return
    if any(getattr(log, "url", None) == url and not log.closed for log in list(_opened)):
        return
    _tried.add(url)
    early = _early[url] = _Early(where)
    when_sent(early.go.set)


class _Early:
    """A team's log being opened by a background thread; whoever claims the work first does it:
    the thread once `go` is set (the request is out), or the caller of `result` if it comes
    first (then no thread work is waited for, and the log opens exactly as it would have
    without `open_early`)."""

    def __init__(self, where: Target) -> None:
        self.where = where
        self.go = threading.Event()  # the request is out, or `result` wants the log now
        self.claim = threading.Lock()
        self.done = threading.Event()
        self.log: CallLog | None = None
        self.error: BaseException | None = None
        thread = threading.Thread(target=self._background, name="llmcli-log-open", daemon=True)
        thread.start()

    def _background(self) -> None:
        self.go.wait()
        if self.claim.acquire(blocking=False):
            self._open()

    def _open(self) -> None:
        try:
            self.log = _open_shared(self.where, sync=True)
        except BaseException as exc:  # raised again, in the caller's thread
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> CallLog:
        self.go.set()
        if self.claim.acquire(blocking=False):
            self._open()  # the thread had not begun: open it here, now
        elif not self.done.wait(EARLY_WAIT_S):
            from llmcli.calllog import DatabaseTrouble, LogFailure

            trouble = DatabaseTrouble("unreachable", f"no answer within {EARLY_WAIT_S:g} s")
            raise LogFailure(trouble, self.where.location)
        if self.error is not None:
            raise self.error
        assert self.log is not None
        return self.log


def send_spool(log: CallLog, where: Target) -> int:
    """Send the spooled calls to the team's log, each once; how many it did not have yet
    (a call sent before, by a sync cut short, is not stored again).

    A spool row is removed only after the database has committed it: a sync cut short sends
    the rest next time, and what it had sent is not stored twice (uids).
    """
    from llmcli.store import Store

    if not where.spool.exists():
        return 0
    sent = 0
    with Store(where.spool) as spool:
        for batch in _batches(spool):
            sent += log.add_many([record for _, record in batch])
            spool.forget(batch[-1][0])
    return sent


def spool_call(where: Target, record: CallRecord) -> None:
    """Keep a call that could not reach the team's log, to send later."""
    from llmcli.store import Store

    with Store(where.spool) as spool:
        spool.add(record)


def spooled(where: Target) -> int:
    """How many calls wait in the spool."""
    if not where.spool.exists():
        return 0
    from llmcli.store import Store

    with Store(where.spool) as spool:
        return spool.count()


def copy_log(
    source: CallLog, destination: CallLog, progress: Callable[[int], None]
) -> tuple[int, int]:
    """Copy every call of `source` into `destination`, each at most once (by uid): (calls read,
    calls new to the destination). `progress` is told how many have been read so far."""
    read = new = 0
    for batch in _batches(source):
        new += destination.add_many([record for _, record in batch])
        read += len(batch)
        progress(read)
    return read, new


def _batches(log: CallLog, size: int = 1000) -> Iterator[list[tuple[int, CallRecord]]]:
    """Every row of `log`, in id order, `size` at a time (a million rows never all in memory)."""
    after = 0
    while True:
        rows = log.export_ids(after, size)
        if not rows:
            return
        yield rows
        after = rows[-1][0]
