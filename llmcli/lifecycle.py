"""One call's life, the same for every command: send, deliver, price, judge, record.

`ask`, `stream` and `chat` (and the server and batch jobs after them) all go through `run` (or
`arun`), so there is one rule for what reaches the log whatever happens:

* an answer is delivered first (printed, sent to a client), priced after, then judged (filtered,
  or truncated under `--strict`) and recorded with its verdict;
* a provider failure is recorded with its class and exit code, and any text a stream had given;
* Ctrl-C or a stopping signal (`errors.Terminated`) records the call as interrupted with what had
  arrived, once it may have been sent (a stream counts from its start); a call stopped before
  that leaves no row;
* a delivery that fails (stdout closed or full) records the call as answered if the answer was
  complete (it was paid for), else as interrupted with what had arrived;
* with the response cache on (`cache`), the first provider's request is looked up before
  anything is sent or reserved: a stored answer is delivered at once (a stream too) and recorded
  as a cached call that cost $0 and saved what the answer first cost; a complete answer paid
  for is stored (`llmcli.cache`).

The exception then goes on to the caller, who decides the exit code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from llmcli import core, errors
from llmcli.retry import RetryNotice
from llmcli.types import Response

if TYPE_CHECKING:
    from llmcli.cache import Policy
    from llmcli.calllog import Conversation, Reservation
    from llmcli.journal import Journal, Logged


class Failure(NamedTuple):
    """An attempt that failed before another provider answered (`--fallback`)."""

    provider: str
    model: str
    error: errors.LlmcliError

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "model": self.model,
            "error": self.error.message,
            "exit_code": int(self.error.exit_code),
        }


class FallbackNotice(NamedTuple):
    """What the caller is told before the next provider is tried, to print one stderr line."""

    error: errors.LlmcliError
    failed: core.Call
    next: core.Call

    def __str__(self) -> str:
        from llmcli.retry import reason

        to = f"{self.next.request.provider}/{self.next.request.model}"
        why = reason(self.error)
        if isinstance(self.error, errors.QuotaExhausted):
            # Not "rate limited": waiting will not help, which is why nothing was retried.
            status = f" ({self.error.status})" if self.error.status else ""
            why = f"quota exhausted{status}"
        return f"falling back to {to} after {why} from {self.failed.request.provider}"


def may_fall_back(error: errors.LlmcliError) -> bool:
    """Whether another provider might do better: a rate limit or exhausted quota, a provider's
    failure (5xx, 529, a broken or malformed reply), a timeout or a network failure. Never a
    request the provider refused (400, 401, 403, 404), a filter, or a usage or config error."""
    return isinstance(error, errors.RateLimitError | errors.ProviderError | errors.NetworkError)


class Outcome(NamedTuple):
    """A call that produced an answer: the answer, its verdict, and where it was logged."""

    response: Response
    problem: errors.IncompleteAnswer | None  # the answer was delivered, but exits 8
    logged: Logged | None
    fell_back_from: tuple[Failure, ...] = ()  # providers that failed first, in order

    @property
    def log_id(self) -> int | None:
        return self.logged.id if self.logged else None

    @property
    def request_uid(self) -> str | None:
        """The logged row's `request_uid`: known before the row is written (serve's answers)."""
        return self.logged.request_uid if self.logged else None


class _Recorder:
    """The recording rules of one call, shared by `run` and `arun`."""

    def __init__(
        self,
        call: core.Call,
        journal: Journal,
        conversation_id: str | None,
        before: Conversation | None,
        strict: bool,
        price: bool,
        request_uid: str | None = None,
        cache: Policy | None = None,
        look_up: bool = True,
    ) -> None:
        self.call = call
        self.request_uid = request_uid
        self.journal = journal
        self.conversation_id = conversation_id
        self.before = before
        self.strict = strict
        self.price = price
        self.sent = False  # a request went out (a stream: once it has started)
        self.response: Response | None = None
        self.partial: str | None = None  # what a stream had given when it stopped
        self.reservation: Reservation | None = None  # the budget held for this call
        self.cache = cache
        self.look_up = look_up  # a fallback's own key is never looked up, only stored
        self.cache_key: str | None = None
        if cache is not None:
            from llmcli import cache as cached

            self.cache_key = cached.key(call)

    def from_cache(self) -> Response | None:
        """The stored answer to this very request, when the cache is on and holds one."""
        if self.cache is None or self.cache_key is None or not self.look_up:
            return None
        started = time.monotonic()
        found = self.journal.cached(self.cache_key, self.cache)
        if found is None:
            return None
        return found._replace(
            requested_model=self.call.request.model,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def reserve(self) -> None:
        """Hold the call's worst case against the budgets (BudgetExceeded: nothing is sent)."""
        self.reservation = self.journal.reserve(self.call)

    async def areserve(self) -> None:
        """`reserve` on the async path: serve's journal takes the hold on its writer thread,
        after the rows queued before it, and the loop goes on meanwhile."""
        self.reservation = await self.journal.areserve(self.call)

    def _record(self, **kwargs: object) -> Logged | None:
        reservation, self.reservation = self.reservation, None  # the row takes its place
        return self.journal.record(
            self.call,
            conversation_id=self.conversation_id,
            before=self.before,
            request_uid=self.request_uid,
            reservation=reservation,
            **kwargs,
        )

    def failed(self, error: errors.LlmcliError) -> None:
        self._record(error=error, status="error", partial_text=self.partial)

    def stopped(self, exc: BaseException) -> None:
        """Ctrl-C, a signal, a delivery that failed, or a fault of llmcli's own: keep what was
        paid for, and settle a budget's hold, before the error goes on."""
        if self.response is not None:
            response = self.response
            # A cached answer cost nothing: pricing its (empty) usage would only load the prices.
            self._record(response=response if response.cached else core.priced(self.call, response))
        elif self.sent:
            error = errors.interruption(exc) if isinstance(exc, KeyboardInterrupt) else None
            self._record(error=error, status="interrupted", partial_text=self.partial)
        elif self.reservation is not None:  # never sent: nothing to pay for
            self.journal.release(self.reservation)
            self.reservation = None

    def finished(self, response: Response) -> Outcome:
        # A call that held a budget is priced even if nothing shows the cost: the budget counts it.
        if (self.price or self.reservation is not None) and not response.cached:
            response = core.priced(self.call, response)
        problem = core.incomplete(response, strict=self.strict)
        outcome = Outcome(response, problem, self._record(response=response, error=problem))
        if self.cache_key is not None and not response.cached:
            from llmcli import cache

            if cache.cacheable(response, problem):
                self.journal.keep(self.cache_key, response)
        return outcome


def _fall_back(
    error: errors.LlmcliError,
    calls: Sequence[core.Call],
    index: int,
    recorder: _Recorder,
    failures: list[Failure],
    on_fallback: Callable[[FallbackNotice], None] | None,
) -> None:
    """After `calls[index]` failed: note it and go on to the next, or raise its error (the last
    call, something already delivered, or a failure no other provider could fix)."""
    if index + 1 == len(calls) or recorder.partial or not may_fall_back(error):
        raise error
    failed = calls[index]
    failures.append(Failure(failed.request.provider, failed.request.model, error))
    if on_fallback is not None:
        on_fallback(FallbackNotice(error, failed, calls[index + 1]))


def run(
    call: core.Call,
    journal: Journal,
    *,
    conversation_id: str | None,
    before: Conversation | None = None,
    stream: bool = False,
    deliver: Callable[[str], object] | None = None,
    strict: bool = False,
    price: bool = True,
    on_retry: Callable[[RetryNotice], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    fallbacks: Sequence[core.Call] = (),
    on_fallback: Callable[[FallbackNotice], None] | None = None,
    cache: Policy | None = None,
) -> Outcome:
    """Make one call: `deliver` gets each piece of text as it arrives (`stream`) or the whole
    answer once, before it is priced and recorded. Failures are recorded, then raised.

    `price=False` skips pricing (nothing will show or keep the cost); `before` is the logged
    conversation this call continues, so its row refers to it instead of repeating it. When a
    provider fails after its retries in a way another might not (`may_fall_back`) and nothing has
    been delivered yet, the same request goes to each of `fallbacks` in turn; every attempt is its
    own log row, all linked by one `request_uid`. The last failure is raised if every one fails.

    With `cache` on, a stored answer to the first call's exact request ends the call at once
    (fallbacks' requests are never looked up: the first provider's answer was asked for); every
    complete answer paid for is stored under its own request's key.
    """
    from llmcli.calllog import new_uid

    request_uid = new_uid()
    calls = [call, *fallbacks]
    failures: list[Failure] = []
    for index, current in enumerate(calls):
        recorder = _Recorder(
            current, journal, conversation_id, before, strict, price, request_uid,
            cache=cache, look_up=index == 0,
        )  # fmt: skip
        try:
            outcome = _run_one(
                recorder, stream=stream, deliver=deliver, on_retry=on_retry, sleep=sleep
            )
        except errors.LlmcliError as error:
            _fall_back(error, calls, index, recorder, failures, on_fallback)
            continue
        return outcome._replace(fell_back_from=tuple(failures))
    raise AssertionError("unreachable: the last call returns or raises")


async def arun(
    call: core.Call,
    journal: Journal,
    *,
    conversation_id: str | None,
    before: Conversation | None = None,
    stream: bool = False,
    deliver: Callable[[str], Awaitable[object]] | None = None,
    strict: bool = False,
    price: bool = True,
    on_retry: Callable[[RetryNotice], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    fallbacks: Sequence[core.Call] = (),
    on_fallback: Callable[[FallbackNotice], None] | None = None,
    cache: Policy | None = None,
) -> Outcome:
    """`run` on the provider's async client; `deliver` and `sleep` (default `asyncio.sleep`)
    are awaited. Cancellation (a client that went away) is recorded as an interruption, with
    what had arrived."""
    from llmcli.calllog import new_uid

    request_uid = new_uid()
    calls = [call, *fallbacks]
    failures: list[Failure] = []
    for index, current in enumerate(calls):
        recorder = _Recorder(
            current, journal, conversation_id, before, strict, price, request_uid,
            cache=cache, look_up=index == 0,
        )  # fmt: skip
        try:
            outcome = await _arun_one(
                recorder, stream=stream, deliver=deliver, on_retry=on_retry, sleep=sleep
            )
        except errors.LlmcliError as error:
            _fall_back(error, calls, index, recorder, failures, on_fallback)
            continue
        return outcome._replace(fell_back_from=tuple(failures))
    raise AssertionError("unreachable: the last call returns or raises")


def _open_log_early(recorder: _Recorder) -> None:
    """A team's log (PostgreSQL) takes a fresh process tens of milliseconds to open: start it
    in the background now, so that it overlaps the provider's answer instead of following it
    (`logdb.open_early`; its failures reach the user when the row is written, as before).
    The local log opens in a few milliseconds, after the answer, as it always did."""
    journal = recorder.journal
    if not journal.enabled or not journal.target.shared:
        return
    from llmcli import logdb, providers

    if not providers.spec(recorder.call.request.provider).remote:
        return  # no request goes out (echo): nothing to overlap, and no HTTP client to load
    from llmcli import transport

    logdb.open_early(journal.target, transport.when_sent)


def _run_one(
    recorder: _Recorder,
    *,
    stream: bool,
    deliver: Callable[[str], object] | None,
    on_retry: Callable[[RetryNotice], None] | None,
    sleep: Callable[[float], None],
) -> Outcome:
    """One provider's attempt at the call (with its retries): `run` for one call."""
    call = recorder.call
    hit = recorder.from_cache()  # before the reservation: a stored answer costs nothing
    if hit is not None:
        recorder.response = hit
        try:
            if deliver is not None:
                deliver(hit.text)  # a stream too: all of it at once
        except BaseException as exc:  # Ctrl-C, a signal, a delivery that failed, a fault of ours
            recorder.stopped(exc)
            raise
        return recorder.finished(hit)
    recorder.reserve()
    _open_log_early(recorder)
    streamer: core.Stream | None = None
    pieces = None
    try:
        if stream:
            streamer = core.Stream(call, on_retry=on_retry, sleep=sleep, price=False)
            pieces = iter(streamer)
            for text in pieces:
                recorder.sent = True
                if deliver is not None:
                    deliver(text)
            recorder.response = streamer.response
        else:
            recorder.sent = True
            recorder.response = core.complete(call, on_retry=on_retry, sleep=sleep, price=False)
            if deliver is not None:
                deliver(recorder.response.text)
    except errors.LlmcliError as exc:
        recorder.partial = streamer.text if streamer is not None else None
        recorder.failed(exc)
        raise
    except BaseException as exc:  # Ctrl-C, a signal, a delivery that failed, a fault of ours
        if streamer is not None:
            recorder.sent = recorder.sent or streamer.started is not None
            recorder.partial = streamer.text
        recorder.stopped(exc)
        raise
    finally:
        if pieces is not None:
            pieces.close()  # a stream left midway closes its connection now, not at exit
    assert recorder.response is not None
    return recorder.finished(recorder.response)


async def _arun_one(
    recorder: _Recorder,
    *,
    stream: bool,
    deliver: Callable[[str], Awaitable[object]] | None,
    on_retry: Callable[[RetryNotice], None] | None,
    sleep: Callable[[float], Awaitable[None]] | None,
) -> Outcome:
    """`_run_one` on the provider's async client."""
    import asyncio

    call = recorder.call
    hit = recorder.from_cache()  # before the reservation: a stored answer costs nothing
    if hit is not None:
        recorder.response = hit
        try:
            if deliver is not None:
                await deliver(hit.text)  # a stream too: all of it at once
        except BaseException as exc:  # Ctrl-C, a signal, a delivery that failed, a fault of ours
            recorder.stopped(exc)
            raise
        return recorder.finished(hit)
    await recorder.areserve()
    streamer: core.AsyncStream | None = None
    try:
        if stream:
            streamer = core.AsyncStream(
                call, on_retry=on_retry, sleep=sleep or asyncio.sleep, price=False
            )
            # Closed at once when delivery fails or the caller goes away (not at the loop's end).
            async with contextlib.aclosing(streamer.__aiter__()) as pieces:
                async for text in pieces:
                    recorder.sent = True
                    if deliver is not None:
                        await deliver(text)
            recorder.response = streamer.response
        else:
            recorder.sent = True
            recorder.response = await core.acomplete(
                call, on_retry=on_retry, sleep=sleep, price=False
            )
            if deliver is not None:
                await deliver(recorder.response.text)
    except errors.LlmcliError as exc:
        recorder.partial = streamer.text if streamer is not None else None
        recorder.failed(exc)
        raise
    except BaseException as exc:  # Ctrl-C, a signal, a delivery that failed, a fault of ours
        if streamer is not None:
            recorder.sent = recorder.sent or streamer.started is not None
            recorder.partial = streamer.text
        recorder.stopped(exc)
        raise
    assert recorder.response is not None
    return recorder.finished(recorder.response)
