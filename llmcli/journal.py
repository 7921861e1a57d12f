"""Recording calls in the log, and reading conversations back from it.

The log must never cost the user an answer: a log that cannot be opened or written (read-only
folder, corrupt file, disk full) is reported by `problem` for the caller to warn about, and the
call goes on. The log itself is whatever backend `llmcli.logdb` chooses (`llmcli.calllog`); a
call that cannot reach a team's PostgreSQL log is kept in the local spool instead, and sent with
the next run that reaches it.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from llmcli import config, errors, paths
from llmcli.types import Message, Response

if TYPE_CHECKING:
    from decimal import Decimal

    from llmcli.budget import Budget
    from llmcli.cache import Policy
    from llmcli.calllog import CallLog, CallRecord, Conversation, LogFailure, Reservation
    from llmcli.core import Call
    from llmcli.logdb import Target

# The backend and its driver load only when the log is really read or written (not with --no-log).


def new_conversation_id() -> str:
    return secrets.token_hex(6)


def open_log(env: config.Environment) -> CallLog:
    """The log every command of this run reads and writes (`llmcli.logdb` chooses which)."""
    from llmcli import logdb

    return logdb.open_log(logdb.target(env))


@functools.lru_cache(maxsize=1)
def who() -> tuple[str | None, str | None]:
    """This machine's name and the account running llmcli, kept with each call so that a
    team's log can say who spent what (`cost --by host`, `--by user`)."""
    import os

    try:
        host = os.uname().nodename if hasattr(os, "uname") else None
    except OSError:
        host = None
    if not host:
        import platform

        host = platform.node() or None
    try:
        import getpass

        user = getpass.getuser() or None
    except (OSError, KeyError, ImportError):  # no login name and no passwd entry (containers)
        user = None
    return host, user


class Logged(NamedTuple):
    """Where a call was recorded: its row id (shown to users), its uid (the same everywhere) and
    its request's uid (shared by a request's fallback attempts). The id is None for a row queued
    to be written later (`llmcli.serve.writer`): an id is known only once the row is written."""

    id: int | None
    uid: str
    request_uid: str | None = None


def _own_messages(
    call: Call, before: Conversation | None
) -> tuple[str | None, list[dict[str, object]]]:
    """The parent row and the messages this call added to it.

    Only when the request really begins with the conversation as logged (its tip is known and
    every earlier message is the same) does the row refer to it; otherwise it keeps them all.
    """
    sent = [m.to_dict() for m in call.request.messages]
    if before is None or before.tip is None:
        return None, sent
    known = list(before.messages)
    if sent[: len(known)] != known:
        return None, sent
    return before.tip, sent[len(known) :]


class Journal:
    """The log for one command run; opened on first use."""

    def __init__(
        self, env: config.Environment, *, enabled: bool = True, source: str | None = None
    ) -> None:
        self.env = env
        self.source = source  # the command whose calls these are (the log's `source`)
        self.batch_id: str | None = None  # set by `batch run` for its job
        self.path: Path = paths.log_db(env)
        self._target: Target | None = None
        self.enabled = False
        self.enable(enabled)
        self.problem: str | None = None
        self._log: CallLog | None = None
        self._down: LogFailure | None = None  # a team log that could not be reached this run
        self._spooled = 0

    @property
    def target(self) -> Target:
        """Where the log is (read when first needed: `--no-log` never looks)."""
        if self._target is None:
            from llmcli import logdb

            self._target = logdb.target(self.env)
        return self._target

    @property
    def where(self) -> str:
        """The log as shown in messages: its file, or its URL with the password masked."""
        return self.target.location

    def enable(self, on: bool = True) -> None:
        """Record calls (or not). A log we would refuse to write is refused now, before any
        call is sent (ConfigError: a folder not ours alone, a log that is a link, a team log
        whose URL is malformed or whose driver is not installed)."""
        if on:
            paths.check_log_location(self.path)
            from llmcli import logdb

            logdb.require_driver(self.target)
        self.enabled = on

    def log(self) -> CallLog:
        """The log, opened on first use and kept for the run (LogFailure when it cannot be).

        Public for what runs many calls through one journal and works on the log around them
        (`batch run` groups the commits of its rows)."""
        if self._down is not None:
            raise self._down  # tried once this run: the next call would wait as long again
        if self._log is None:
            from llmcli import logdb
            from llmcli.calllog import LogFailure

            try:
                self._log = logdb.open_log(self.target)
            except LogFailure as exc:
                if self.target.shared:
                    self._down = exc
                raise
        return self._log

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def record(
        self, call: Call, *, reservation: Reservation | None = None, **row: Any
    ) -> Logged | None:
        """Write one row for `call` (the `row` made of the keywords, which `row` names); None if
        not logged.

        A call that held a budget `reservation` settles it: the reservation becomes this row,
        in one transaction. With the log off the row keeps only what the budget counts (provider,
        model, tokens, cost, tag, status), no prompt or answer: otherwise `--no-log` would be a
        way around every budget.
        """
        record = self.row(call, reserved=reservation is not None, **row)
        return None if record is None else self.write(record, reservation)

    def row(
        self,
        call: Call,
        *,
        conversation_id: str | None,
        before: Conversation | None = None,
        response: Response | None = None,
        error: errors.LlmcliError | None = None,
        status: str = "ok",
        partial_text: str | None = None,
        request_uid: str | None = None,
        reserved: bool = False,
    ) -> CallRecord | None:
        """The row `record` writes (None: nothing to write), without writing it."""
        if not self.enabled and not reserved:
            return None

        from llmcli.calllog import CallRecord

        request = call.request
        parent, own = _own_messages(call, before)
        record = CallRecord(
            provider=request.provider,
            status=status,
            requested_model=request.model,
            conversation_id=conversation_id,
            parent_uid=parent,
            request_uid=request_uid,
            system_prompt=request.system,
            messages=own,
            tag=call.settings.tag,
            cached=response is not None and response.cached,
            host=who()[0],
            os_user=who()[1],
            source=self.source,
            batch_id=self.batch_id,
        )
        if response is not None:
            record.take_answer(response)
        if partial_text is not None and record.answer is None:
            record.answer = partial_text
        if error is not None:
            record.take_error(error)
        if not self.enabled:
            record.system_prompt = record.messages = record.answer = record.error_message = None
        return record

    def write(self, record: CallRecord, reservation: Reservation | None = None) -> Logged | None:
        """Write a row made by `row` (settling `reservation`); None when it could not be
        written (spooled for a team log, or `problem` says why)."""
        try:
            log = self.log()
            if reservation is not None:
                return Logged(log.settle(reservation, record), record.uid, record.request_uid)
            return Logged(log.add(record), record.uid, record.request_uid)
        except Exception as exc:  # the log must never cost the user an answer or its exit code
            self.not_written(record, exc)
            return None

    def not_written(self, record: CallRecord, exc: Exception) -> None:
        """A row the log refused with `exc`: kept in the spool for a team's log, else `problem`
        says why."""
        if self.target.shared and self._spool(record, exc):
            return
        self._trouble(exc, writing=True)

    def _spool(self, record: CallRecord, exc: Exception) -> bool:
        """Keep a call the team's log could not take in the local spool; whether it was kept.

        One warning however many calls a run spools (a chat may spool every turn).
        """
        from llmcli import logdb, logtrouble
        from llmcli.calllog import LogFailure, refused_for_its_data

        if isinstance(exc, LogFailure) and self.target.shared and not refused_for_its_data(exc):
            self._down = exc  # no second wait on a database that is away
        try:
            logdb.spool_call(self.target, record)
        except Exception:  # the spool cannot be written either: say what the team log said
            return False
        self._spooled += 1
        cause = exc.error if isinstance(exc, LogFailure) else exc
        why = logtrouble.describe(cause, self.where, writing=True).message
        calls = "the call is" if self._spooled == 1 else f"{self._spooled} calls are"
        self.problem = (
            f"{why}; {calls} kept in {self.target.spool} and will be sent with the next "
            "command that reaches it (or: llmcli log sync)"
        )
        return True

    def reserve(self, call: Call) -> Reservation | None:
        """Hold the call's worst case against every budget in force, before it is sent.

        None when no budget is set. BudgetExceeded (exit 10) when the call could pass a limit,
        or its price is unknown and unpriced calls are not allowed; a log that cannot be read
        cannot vouch for a budget, so it is a configuration error (exit 3), not a pass.
        """
        wanted = self.budget_of(call)
        return None if wanted is None else self.hold(call, *wanted)

    async def areserve(self, call: Call) -> Reservation | None:
        """`reserve` for `lifecycle.arun`: the same, at once (serve's journal awaits its
        writer thread instead, `llmcli.serve.writer`)."""
        return self.reserve(call)

    def budget_of(self, call: Call) -> tuple[Decimal, Budget] | None:
        """The call's worst case and the limits in force (None: no budget is set), read from
        the settings, not the log (BudgetExceeded for an unpriced call that may not pass)."""
        from llmcli import budget, endpoints

        limits = budget.resolve(self.env, endpoints.current().budget)
        if not limits.active:
            return None
        worst = budget.worst_case(call)
        if worst is None:
            if not limits.allow_unpriced:
                raise budget.unpriced(call)
            from decimal import Decimal

            worst = Decimal(0)
        return worst, limits

    def hold(self, call: Call, worst: Decimal, limits: Budget) -> Reservation:
        """Take `worst` against `limits` in the log (`reserve`'s part that reads and writes it)."""
        from llmcli import budget
        from llmcli.calllog import LogFailure, OverLimit

        if not self.target.shared:
            paths.private_folder(self.path.parent)
        try:
            return self.log().reserve(
                worst, limits.windows(), budget.reservation_ttl(call), tag=call.settings.tag
            )
        except OverLimit as over:
            raise budget.exceeded(over.spent, over.amount) from None
        except LogFailure as exc:
            from llmcli import logtrouble

            trouble = logtrouble.describe(exc.error, self.where, writing=True)
            raise errors.ConfigError(
                f"a budget is set, but {trouble.message}", trouble.hint
            ) from None

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was never sent (or is not to be recorded)."""
        try:
            self.log().release(reservation)
        except Exception as exc:  # it expires on its own; the user is told
            self.problem = f"could not release a budget reservation in {self.where}: {exc}"

    def cached(self, key: str, policy: Policy) -> Response | None:
        """The answer stored under `key` that is young enough for `policy`; None on a miss.

        The cache lives in the log's database, so a log folder we would refuse to write is
        refused here too (ConfigError), before anything is sent, even with the log off. A cache
        that cannot be read is a miss, with a warning: the call is then made and paid for, as
        it would be without the cache, rather than lost.
        """
        if not self.enabled:
            paths.check_log_location(self.path)
        from llmcli import cache

        since = None
        if policy.max_age_s is not None:
            import datetime as dt

            oldest = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=policy.max_age_s)
            since = oldest.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            if not self.target.shared and not self.path.is_file():
                return None  # nothing stored yet; a read must not create the log
            found = self.log().cache_get(key, since)
            return cache.answer(found) if found is not None else None
        except Exception as exc:  # a damaged entry or log: ask the provider instead
            self._trouble(exc, writing=False)
            return None

    def keep(self, key: str, response: Response) -> None:
        """Store a complete answer under `key`; a failure to store costs only a warning."""
        from llmcli import cache

        try:
            self.log().cache_put(cache.entry(key, response))
        except Exception as exc:
            self._trouble(exc, writing=True)

    def _trouble(self, exc: Exception, *, writing: bool) -> None:
        from llmcli import logtrouble
        from llmcli.calllog import LogFailure

        cause = exc.error if isinstance(exc, LogFailure) else exc
        self.problem = str(logtrouble.describe(cause, self.where, writing=writing))

    def conversation(self, conversation_id: str | None) -> Conversation:
        """A conversation to continue (None = the latest one)."""
        from llmcli.calllog import LogFailure

        if not self.target.shared and not self.path.is_file():
            # nothing logged yet; reading must not create the log
            raise errors.UsageError(
                "there is no conversation to continue yet", "start one without -c/--continue"
            )
        try:
            found = self.log().conversation(conversation_id)
        except LogFailure as exc:
            from llmcli import logtrouble

            trouble = logtrouble.describe(exc.error, self.where, writing=False)
            raise errors.ConfigError(trouble.message, trouble.hint) from None
        if found is None and conversation_id is None:
            raise errors.UsageError(
                "there is no conversation to continue yet", "start one without -c/--continue"
            )
        if found is None:
            raise errors.UsageError(
                f"no conversation with id {conversation_id!r} in the log",
                "see the ids with: llmcli logs",
            )
        return found


def messages_of(conversation: Conversation) -> list[Message]:
    """A logged conversation's messages as the request types them.

    Attachments are logged by reference only, so each is read again from where it came from
    and must still hash the same (`llmcli.attach.reload`), or continuing is a usage error.
    """
    from llmcli.types import Part, Text

    def part(item: dict[str, Any]) -> Part | None:
        if item.get("type") == "text":
            return Text(item["text"])
        if item.get("type") == "attachment":
            from llmcli import attach

            return attach.reload(item)
        return None

    def content(value: object) -> str | tuple[Part, ...]:
        if isinstance(value, str):
            return value
        parts = value if isinstance(value, list) else []
        found = (part(p) for p in parts if isinstance(p, dict))
        return tuple(p for p in found if p is not None)

    return [Message(m["role"], content(m["content"])) for m in conversation.messages]


def resume(
    journal: Journal, conversation_id: str | None, flags: dict[str, object], env: config.Environment
) -> Conversation:
    """A conversation to continue (None = the latest).

    It keeps its system prompt unless one is given now (a flag or LLM_SYSTEM_PROMPT): `flags`
    is updated in place.
    """
    found = journal.conversation(conversation_id)
    if flags.get("system") is None and env.lookup("LLM_SYSTEM_PROMPT") is None:
        flags["system"] = found.system
    return found
