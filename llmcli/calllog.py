"""The call log's interface: what a backend stores, and what the rest of llmcli may ask of it.

Every command reads and writes the log through `CallLog`, never through a database module: the
embedded SQLite file (`llmcli.store`) and a team's PostgreSQL database (`llmcli.pgstore`)
implement the same methods, with the same SQL (`llmcli.sqllog`), and `llmcli.logdb` chooses. Nothing outside a backend imports a database driver; a
backend turns its driver's failures into `LogFailure`, which `llmcli.logtrouble` words.

A row is a call, successful or not. A conversation stores each message once: a row keeps the
messages its call added (usually one user message) and the uid of the row it continued
(`parent_uid`); the whole history is that chain read back (`full_messages`). Money is exact:
`cost_usd` is a Decimal, stored as whole picodollars (`llmcli.money`).
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from llmcli.errors import LlmcliError
    from llmcli.types import Response


def utc_now() -> str:
    """A sortable UTC timestamp: `2026-11-25T10:40:52.123456Z`."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uid() -> str:
    """A row's identity in every backend, so a row copied from one to another stays one row."""
    return uuid.uuid4().hex


@dataclass
class CallRecord:
    """One row of the log. Every field but provider and status may be unknown (None)."""

    provider: str
    status: str  # ok | error | interrupted
    uid: str = field(default_factory=new_uid)
    ts: str = field(default_factory=utc_now)
    requested_model: str | None = None
    model: str | None = None
    conversation_id: str | None = None
    parent_uid: str | None = None  # the row this call continued; its messages come first
    request_uid: str | None = None  # shared by the attempts of one request (--fallback)
    system_prompt: str | None = None
    messages: list[dict[str, Any]] | None = None  # the messages this call added
    answer: str | None = None
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    cost_usd: Decimal | None = None
    price_source: str | None = None
    duration_ms: int | None = None
    ttft_ms: int | None = None
    attempts: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    tag: str | None = None
    response_id: str | None = None
    cached: bool | None = None  # given from the response cache (cost 0); None in older rows
    saved_usd: Decimal | None = None  # a cached call: what the answer first cost
    host: str | None = None  # the machine that made the call (a team's log holds many)
    os_user: str | None = None  # the account on it that ran llmcli
    source: str | None = None  # the command that made it: ask, stream, chat, serve or batch
    batch_id: str | None = None  # `batch run`'s job (`cost --by batch`)

    def take_answer(self, response: Response) -> None:
        """Fill the row from an answer: the one place a `Response` becomes columns."""
        usage = response.usage
        self.model = response.model
        self.answer = response.text
        self.finish_reason = response.finish_reason.value
        self.raw_finish_reason = response.raw_finish_reason
        self.input_tokens = usage.input_tokens
        self.output_tokens = usage.output_tokens
        self.cached_input_tokens = usage.cached_input_tokens
        self.cache_write_tokens = usage.cache_write_tokens
        self.cache_write_1h_tokens = usage.cache_write_1h_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.cost_usd = response.cost_usd
        self.price_source = response.price_source
        self.duration_ms = response.duration_ms
        self.ttft_ms = response.ttft_ms
        self.attempts = response.attempts
        self.response_id = response.request_id
        self.saved_usd = response.saved_usd
        self.exit_code = 0

    def take_error(self, error: LlmcliError) -> None:
        """Fill the row from the error that ended the call."""
        self.error_class = type(error).__name__
        self.error_message = error.message
        self.exit_code = int(error.exit_code)
        self.attempts = self.attempts or error.attempts


class Conversation(NamedTuple):
    """A conversation to continue: its system prompt, every message so far, and the uid of the
    row whose answer ends it (None when that row is not in the log)."""

    conversation_id: str
    system: str | None
    messages: tuple[dict[str, Any], ...]
    tip: str | None


class Window(NamedTuple):
    """A spending limit over calls since `since` (optionally only those with `tag`)."""

    name: str
    since: str
    limit_usd: Decimal
    tag: str | None = None


class Reservation(NamedTuple):
    """A call's worst-case cost, held against every limit until the call is settled."""

    uid: str
    cost_usd: Decimal
    expires: str


class Spent(NamedTuple):
    """What a window has used: settled calls, and reservations of calls still under way."""

    window: Window
    spent_usd: Decimal
    reserved_usd: Decimal


class OverLimit(Exception):
    """A reservation would take a window past its limit; nothing was reserved."""

    def __init__(self, spent: Spent, amount: Decimal) -> None:
        super().__init__(spent.window.name)
        self.spent = spent
        self.amount = amount


class CacheEntry(NamedTuple):
    """A stored answer (`llmcli.cache`): its request's key, when it was stored, and what it
    cost then (None: the price was unknown)."""

    key: str
    ts: str
    provider: str
    model: str | None
    response: dict[str, Any]  # the answer's text and details, as `cache.entry` stores them
    cost_usd: Decimal | None


class CacheStats(NamedTuple):
    """The cache's entries, and what cached calls saved according to the log."""

    entries: int
    size_bytes: int  # the stored answers and their details
    oldest: str | None
    newest: str | None
    hits: int  # calls logged as answered from the cache
    saved_usd: Decimal  # what those calls would have cost (known prices only)


class LogFailure(Exception):
    """The log could not be read or written. `error` is the driver's own exception, which
    `llmcli.logtrouble` turns into words (read-only, disk full, damaged...)."""

    def __init__(self, error: BaseException, location: str) -> None:
        super().__init__(f"{location}: {error}")
        self.error = error
        self.location = location


def refused_for_its_data(exc: BaseException) -> bool:
    """Whether the log refused a row for what it holds, not for the log's state: text SQLite
    cannot encode (half a surrogate pair: a ValueError), or a value the database refuses (PEP
    249's `DataError`: a NUL in a PostgreSQL text, say), as `exc`, its `error`, or one of their
    causes. Such a row fails alone: the next one may well be written. `DataError` is known by
    its name: each driver has its own, and only the backends import their driver."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ValueError) or any(
            kind.__name__ == "DataError" for kind in type(seen).__mro__
        ):
            return True
        seen = getattr(seen, "error", None) or seen.__cause__ or seen.__context__
    return False


_T = TypeVar("_T")


def failures(method: Callable[..., _T]) -> Callable[..., _T]:
    """A log backend's method whose driver failures (the backend's `FAILURES`, and OSError)
    leave as `LogFailure`, the one kind callers handle."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (*self.FAILURES, OSError) as exc:
            raise LogFailure(self._failure(exc), self.location) from None

    return wrapper


class DatabaseTrouble(Exception):
    """A database server's failure, in words that hold no password (a driver's own exception
    may quote the connection string). `kind` is one of: unreachable (no answer, refused, timed
    out, or the connection was lost), auth (user or password refused), missing (no such
    database), permission (the user may not do this), other."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class CallLog(Protocol):
    """What every backend implements. Methods raise `LogFailure` for the backend's failures."""

    location: str  # a path, or a URL with its password masked

    def add(self, record: CallRecord) -> int:
        """Insert one call (idempotent on its uid); its row id."""
        ...

    def reserve(
        self, amount: Decimal, windows: Sequence[Window], ttl_s: float, tag: str | None = None
    ) -> Reservation:
        """Hold `amount` against every window (a tag's window only for a call with that tag), in
        the same transaction that checks them all (`OverLimit` if one would pass its limit); it
        expires after `ttl_s` if never settled."""
        ...

    def settle(self, reservation: Reservation, record: CallRecord) -> int:
        """Replace a reservation by the call that used it, in one transaction; its row id."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was never sent."""
        ...

    def spent(self, windows: Sequence[Window]) -> list[Spent]:
        """What each window has used so far."""
        ...

    def cache_get(self, key: str, since: str | None = None) -> CacheEntry | None:
        """The answer stored under `key`, if it was stored at or after `since` (None: any age)."""
        ...

    def cache_put(self, entry: CacheEntry) -> None:
        """Store an answer under its key, replacing an older one."""
        ...

    def cache_stats(self) -> CacheStats:
        """How many answers are stored, their size and ages, and what the cache has saved."""
        ...

    def cache_clear(self, older_than: str | None = None) -> int:
        """Remove the answers stored before `older_than` (None: all); how many were removed."""
        ...

    def conversation(self, conversation_id: str | None) -> Conversation | None:
        """A conversation up to its last complete answer (None = the latest conversation);
        None when there is no such conversation."""
        ...

    def recent(self, limit: int, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` calls (or one conversation's), oldest first, with full messages."""
        ...

    def aggregate(
        self,
        group_by: Sequence[str],
        *,
        since: str | None = None,
        until: str | None = None,
        filters: dict[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Calls, tokens, known cost (`cost_usd`, exact) and unpriced calls per group."""
        ...

    def export(self, after_id: int = 0, limit: int = 1000) -> list[CallRecord]:
        """Rows in id order after `after_id`: what a spool or a migration copies elsewhere."""
        ...

    def export_ids(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, CallRecord]]:
        """`export`, each row with its id (where the next batch starts)."""
        ...

    def add_many(self, records: Sequence[CallRecord]) -> int:
        """Insert calls in one transaction, each at most once (by uid); how many were new."""
        ...

    def count(self) -> int:
        """How many calls the log holds."""
        ...

    def close(self) -> None: ...


def full_messages(chain: Sequence[tuple[list[dict[str, Any]], str | None]]) -> list[dict[str, Any]]:
    """The messages a call sent, from its chain of rows (root first): each earlier row's own
    messages and answer, then the call's own messages."""
    messages: list[dict[str, Any]] = []
    for own, answer in chain[:-1]:
        messages += own
        messages.append({"role": "assistant", "content": answer or ""})
    if chain:
        messages += chain[-1][0]
    return messages
