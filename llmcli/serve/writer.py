"""serve's journal: the log written by a thread of its own, off the event loop.

A row costs the loop little CPU (about 0.07 ms) but its commit waits for the disk: a p99 of
8-13 ms on a busy machine, and on a team's PostgreSQL log a network round trip every time.
Written on the loop, that wait stalled every request in flight (docs/performance.md, "serve").
Here one thread per serve worker owns the log's connection and takes its work from a queue:
the rows queued within `GROUP_WAIT_S` of each other, or while it was writing, are written
together, in one transaction (`add_many`), and SQLite and psycopg let go of the GIL while they
wait, so the loop goes on serving meanwhile.

What does not change: a row that cannot be written is spooled for a team's log, or warned
about (`warn`, one line per group), as `Journal.record` does; nothing queued is lost when the
server stops normally (`close`, which `serve.start` calls once uvicorn has drained, and which
the interpreter calls at exit in a `--workers` process).

What does: a queued row's id is not known when the call ends, so `record` returns a `Logged`
whose id is None; serve's answers name the call by its `request_uid` instead (docs/serve.md).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, TypeVar

from llmcli.calllog import CallRecord, refused_for_its_data
from llmcli.journal import Journal, Logged

if TYPE_CHECKING:
    from llmcli import config
    from llmcli.cache import Policy
    from llmcli.calllog import Conversation, Reservation
    from llmcli.core import Call
    from llmcli.types import Response

T = TypeVar("T")
_STOP = object()  # queued by `close`: everything before it is written, then the thread ends
# How long the thread lets rows gather before it writes them: at a few hundred requests a second
# that makes groups of a few rows, one wake-up and one commit for them all instead of one each
# (about 0.1-0.3 ms less CPU a request, docs/performance.md). Work a request waits for (a
# budget's hold) does not wait this out (`_urgent`).
GROUP_WAIT_S = 0.01


class QueuedJournal(Journal):
    """A `Journal` whose every use of the log runs on its writer thread, in the order asked.

    Budgets stay exact because the order is kept, not because anything is written at once: a
    reservation is taken on the thread (`areserve`, which the call awaits before it is sent)
    after every row queued before it, so it counts them; the row that settles it is queued like
    any other and replaces it in one transaction (`CallLog.settle`), and until then the
    reservation itself holds the call's worst case. A limit can thus only be reached sooner
    than by rows written at once, never passed.

    The connection is opened, used and closed by the thread alone (SQLite's connections belong
    to the thread that made them); the loop only builds rows and reads the settings.
    """

    def __init__(
        self,
        env: config.Environment,
        *,
        enabled: bool = True,
        source: str | None = None,
        warn: Callable[[str], None],
    ) -> None:
        super().__init__(env, enabled=enabled, source=source)
        self._warn = warn
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._urgent = threading.Event()  # a request waits for queued work: no gathering

    # --- what the loop asks ----------------------------------------------------------------------

    def record(
        self, call: Call, *, reservation: Reservation | None = None, **row: Any
    ) -> Logged | None:
        """Queue the call's row; its id is None (not written yet), its uids are final."""
        record = self.row(call, reserved=reservation is not None, **row)
        if record is None:
            return None
        if reservation is None:
            self._put(record)
        else:
            self._submit(lambda: self.write(record, reservation))
        return Logged(None, record.uid, record.request_uid)

    def reserve(self, call: Call) -> Reservation | None:
        wanted = self.budget_of(call)
        if wanted is None:
            return None
        return self._submit(lambda: self.hold(call, *wanted), waited=True).result()

    async def areserve(self, call: Call) -> Reservation | None:
        """The hold, taken on the thread while the loop serves others. A call cancelled while
        it waits (its client went away) lets go of a hold taken meanwhile, at once."""
        wanted = self.budget_of(call)
        if wanted is None:
            return None
        held = self._submit(lambda: self.hold(call, *wanted), waited=True)
        try:
            return await asyncio.wrap_future(held)
        except asyncio.CancelledError:
            held.add_done_callback(self._let_go)
            raise

    def _let_go(self, held: Future[Reservation | None]) -> None:
        if held.cancelled() or held.exception() is not None:
            return
        reservation = held.result()
        if reservation is not None:
            self.release(reservation)

    def release(self, reservation: Reservation) -> None:
        self._submit(lambda: Journal.release(self, reservation))

    def cached(self, key: str, policy: Policy) -> Response | None:
        return self._submit(lambda: Journal.cached(self, key, policy), waited=True).result()

    def keep(self, key: str, response: Response) -> None:
        self._submit(lambda: Journal.keep(self, key, response))

    def conversation(self, conversation_id: str | None) -> Conversation:
        found = self._submit(lambda: Journal.conversation(self, conversation_id), waited=True)
        return found.result()

    def close(self) -> None:
        """Write everything queued, then close the log: a stopping server loses no row."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is None:
            Journal.close(self)
            return
        self._queue.put(_STOP)
        self._urgent.set()
        self._thread.join()

    # --- the queue -------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name="llmcli-log-writer", daemon=True)
        self._thread.start()
        # Run at the interpreter's exit before its threads are joined, in the main process and
        # in a `--workers` process alike (multiprocessing's children skip `atexit`).
        threading._register_atexit(self.close)  # type: ignore[attr-defined]

    def _put(self, item: Any) -> None:
        if self._stopped:  # after `close` (nothing should come): written here and now
            self._work([item])
            Journal.close(self)
            return
        self._start()
        self._queue.put(item)

    def _submit(self, job: Callable[[], T], *, waited: bool = False) -> Future[T]:
        """Queue `job`; `waited`: a request waits for its result, so it is done at once."""
        done: Future[T] = Future()
        self._put((job, done))
        if waited:
            self._urgent.set()
        return done

    def _serve(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            if isinstance(group[0], CallRecord):  # nobody waits for a row: let others join it
                self._urgent.wait(GROUP_WAIT_S)
            self._urgent.clear()
            while True:  # everything queued meanwhile joins this group
                try:
                    group.append(self._queue.get_nowait())
                except Empty:
                    break
            stop = self._work(group)
        Journal.close(self)

    def _work(self, group: list[Any]) -> bool:
        """Do a group's work in order, consecutive rows in one transaction; whether it held
        `_STOP`. Then say what went wrong, once for the group."""
        rows: list[CallRecord] = []
        stop = False
        for item in group:
            if isinstance(item, CallRecord):
                rows.append(item)
                continue
            self._write_rows(rows)
            rows = []
            if item is _STOP:
                stop = True
                continue
            job, done = item
            if done.set_running_or_notify_cancel():
                try:
                    done.set_result(job())
                except BaseException as exc:  # the caller's to raise (a budget refused)
                    done.set_exception(exc)
        self._write_rows(rows)
        problem, self.problem = self.problem, None
        if problem:
            self._warn(problem)
        return stop

    def _write_rows(self, rows: list[CallRecord]) -> None:
        """Rows in one transaction. If the log refused them, each is reported as one row would
        be, not tried again alone: a locked log would make each wait its busy timeout, and what
        fails a group (a full disk, a database away) fails each row. If one row's own text was
        refused, the others are written alone, so that a request cannot take its neighbours'
        rows (and their spend) with it."""
        if len(rows) == 1:
            self.write(rows[0])
        elif rows:
            try:
                self.log().add_many(rows)
            except Exception as exc:
                alone = refused_for_its_data(exc)
                for record in rows:
                    if alone:
                        self.write(record)
                    else:
                        self.not_written(record, exc)
