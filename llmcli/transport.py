"""The HTTP client every provider SDK is given: a real deadline per attempt, and replies vetted.

The three SDKs share one weakness: a timeout is a limit per read, so a reply that trickles a
few bytes at a time never times out, and each treats a 200 that is not its API (a proxy's HTML
login page, a 204, a JSON body of the wrong shape) differently: a crash, an empty answer, a
string where an object was expected. All three accept an httpx2 client of our making, so this
module gives them one whose `send` does, for every request made inside `guard(...)`:

* shrinks each phase's timeout to what is left of the attempt's deadline, checks the deadline
  again whenever bytes of the body arrive, and shuts the connection down when it passes while
  the body is still coming, so an attempt ends when `--timeout` says, even if the server falls
  silent just before (the clock starts when the first request is sent: importing the SDK and
  building its client on a first call is not the provider's time);
* refuses a 2xx whose content type is not what was asked for (`expect="json"` or `"stream"`)
  or that has no body, with `errors.MalformedReply` saying what came back;
* remembers the reply, so a provider that finds its body of the wrong shape can say what it
  was (`describe()`).

The SDK is imported by the provider before this module is, so httpx2 costs nothing extra here.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2

from llmcli import errors

HEAD_BYTES = 120  # how much of an unexpected body an error message quotes
CONNECT_TIMEOUT = 30.0  # seconds to make a connection, whatever the attempt's deadline


class _Guard:
    """What one attempt expects of its replies, and the last one it received."""

    __slots__ = ("bodies", "deadline", "expect", "head", "provider", "response", "timeout")

    def __init__(self, provider: str, timeout: float | None, expect: str) -> None:
        self.provider = provider
        self.timeout = timeout
        self.deadline: float | None = None  # set when the first request is sent
        self.expect = expect
        self.response: httpx2.Response | None = None
        self.head = bytearray()
        self.bodies: list[_Watch] = []  # every reply body of the attempt, closed or not

    def end(self) -> None:
        """The attempt is over: a body still open was left by whoever read it (an SDK's
        stream that nothing closed), so its connection is ended now, not when the collector
        finds it: until then the provider goes on generating, and billing."""
        for body in self.bodies:
            body.abandon()
        self.bodies.clear()


# What a closed body points at instead of its attempt's guard (`_Watch._release`): no deadline,
# nothing to keep.
_SPENT = _Guard("", None, "json")

_CURRENT: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "llmcli_guard", default=None
)
# The guard of the attempt that ended last, so the caller can still say what came back.
_LAST: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("llmcli_last", default=None)


@contextlib.contextmanager
def guard(provider: str, timeout: float | None, expect: str = "json") -> Iterator[None]:
    """Requests made inside get vetted replies, and a deadline `timeout` seconds after the
    first of them is sent.

    `expect` is `"json"` for a complete reply, `"stream"` for server-sent events.
    """
    current = _Guard(provider, timeout, expect)
    token = _CURRENT.set(current)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a generator closed from another context
            _CURRENT.reset(token)
        _LAST.set(current)
        current.end()


def describe() -> str:
    """What the last reply of this attempt (or of the last one) was:
    `200 text/html, 1,234 bytes: '<!doctype ...'`."""
    current = _CURRENT.get() or _LAST.get()
    if current is None or current.response is None:
        return "no reply"
    return _describe(current.response, bytes(current.head))


def reply_json() -> Any:
    """The last complete reply of this attempt as parsed JSON; None if there is none or it is
    not JSON. For a provider to check a field the SDK quietly defaults when it is missing."""
    import json

    current = _CURRENT.get() or _LAST.get()
    if current is None or current.response is None:
        return None
    try:
        return json.loads(current.response.content)
    except (httpx2.ResponseNotRead, ValueError):
        return None


def _describe(response: httpx2.Response, head: bytes) -> str:
    kind = response.headers.get("content-type") or "no content type"
    try:
        body, whole = response.content, True  # a complete reply, read and decoded
    except httpx2.ResponseNotRead:  # a stream: what passed by, as it came off the wire
        body, whole = head, False
        if response.headers.get("content-encoding"):
            kind += f", {response.headers['content-encoding']}-encoded"
    if not body:
        return f"{response.status_code} {kind}, empty"
    shown = " ".join(body[:HEAD_BYTES].decode("utf-8", "replace").split())
    more = "..." if len(body) > HEAD_BYTES or not whole else ""
    size = f"{len(body):,} bytes" if whole else "beginning"
    return f"{response.status_code} {kind}, {size}: {shown!r}{more}"


def _timeouts(request: httpx2.Request, default: httpx2.Timeout, remaining: float) -> None:
    """Every phase of `request` waits at most what is left of the deadline, and the connection
    at most CONNECT_TIMEOUT: an address that never answers is not worth a long deadline."""
    current = request.extensions.get("timeout") or default.as_dict()
    left = max(remaining, 0.001)
    limits = {k: left if v is None else min(v, left) for k, v in current.items()}
    limits["connect"] = min(limits.get("connect") or left, CONNECT_TIMEOUT)
    request.extensions = {**request.extensions, "timeout": limits}


def _expected(current: _Guard, response: httpx2.Response) -> bool:
    kind = (response.headers.get("content-type") or "").lower()
    if current.expect == "stream":
        return "event-stream" in kind
    return "json" in kind


def _late(current: _Guard, what: str) -> errors.Timeout:
    """The attempt's deadline passed. Our own error, not an httpx2 timeout: an SDK lets it
    through or keeps it as the cause of its own, and the provider's translation finds it either
    way (google-genai lets a raw httpx2 error out of a stream, which no translation would name)."""
    return errors.Timeout(
        f"{current.provider} did not finish in time: {what}",
        "try again, or raise --timeout / LLM_TIMEOUT (seconds for each attempt)",
        provider=current.provider,
    )


def _malformed(current: _Guard, response: httpx2.Response) -> errors.MalformedReply:
    wanted = "a stream of events" if current.expect == "stream" else "JSON"
    return errors.MalformedReply(
        f"{current.provider} sent a reply that is not its API (expected {wanted}; got "
        f"{_describe(response, response.content)})",
        "check the base URL: a proxy, captive portal or wrong endpoint may have answered",
        provider=current.provider,
        status=response.status_code,
    )


def _vetted(current: _Guard, response: httpx2.Response) -> bool:
    """Whether a successful reply is of the kind asked for (read its head when it is not)."""
    current.response = response
    if not 200 <= response.status_code < 300:
        return True  # an error status: the SDK reports it, with the provider's own words
    return response.status_code not in (204, 205) and _expected(current, response)


def _socket(response: httpx2.Response) -> Any:
    """The reply's socket (sync: a `socket.socket`; async: the event loop's stand-in for it),
    if any."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return sock if hasattr(sock, "fileno") else None


def _cut(sock: Any) -> None:
    """End the connection under a read that is waiting on it: the read returns at once.

    `socket.socket.shutdown`, not an `ssl.SSLSocket`'s own method: that one also drops the TLS
    state that the blocked read is using. An event loop's socket (asyncio's `TransportSocket`,
    uvloop's `PseudoSocket`, which refuses `shutdown` with a TypeError) is shut down through a
    duplicate of its descriptor: the duplicate shares the connection, so shutting it down ends
    the loop's read too, and closing it leaves the loop's own descriptor open for it to close.
    """
    with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
        if isinstance(sock, socket.socket):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
            return
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as twin:
            twin.shutdown(socket.SHUT_RDWR)


def _overdue(current: _Guard) -> bool:
    return current.deadline is not None and time.monotonic() >= current.deadline


def _still_arriving(current: _Guard) -> errors.Timeout:
    return _late(current, f"the reply was still arriving after {current.timeout:g}s")


class _Watch:
    """What the sync and async bodies share: the first bytes kept, the deadline checked, the
    alarm that ends a read left waiting at the deadline.

    A body may be iterated twice (so far only seen of an async one): the openai SDK's async
    client reads a stream up to `[DONE]`, then iterates the body again to drain it. There is
    one alarm per body, armed by the first iteration and disarmed by whichever ends first or by
    `aclose`: an alarm armed by each iteration left the first one set until the deadline
    (`LLM_TIMEOUT`, ten minutes by default), holding the body, its reply and its connection; in
    serve, thousands of streams' objects that every full pass of the cyclic collector then
    walked (the streamed p99 of docs/performance.md, "serve").
    """

    def __init__(self, inner: Any, current: _Guard, sock: Any) -> None:
        self.inner = inner
        self.current = current
        self.sock = sock
        self.alarm: Any = None  # a threading.Timer, or an event loop's TimerHandle
        self.rang = False  # the alarm went off and cut the connection

    def _left(self) -> float | None:
        """Seconds to the deadline, if there is one and a socket an alarm can cut."""
        if self.current.deadline is None or self.sock is None:
            return None
        return max(self.current.deadline - time.monotonic(), 0.0)

    def _arm(self, start: Callable[[float], Any]) -> None:
        """Set the alarm for the deadline (`start(seconds left)` makes it), once per body
        however often the body is iterated (see above): a second alarm would leave the first
        set, and ringing, it would cut a connection the pool may have lent to another request."""
        left = self._left()
        if left is not None and self.alarm is None:
            self.alarm = start(left)

    def _seen(self, chunk: bytes) -> None:
        current = self.current
        if len(current.head) < HEAD_BYTES:
            current.head += chunk[: HEAD_BYTES - len(current.head)]

    def _check(self) -> None:
        if _overdue(self.current):
            raise _still_arriving(self.current)

    def _ring(self) -> None:
        """The alarm: note that it rang, then cut the read. The note, not the clock, says the
        failure that follows was ours: uvloop's timers keep whole milliseconds of loop time, so
        one may ring a fraction of a millisecond before `time.monotonic()` reaches the
        deadline, and the read it cut would otherwise be reported as a dropped connection."""
        self.rang = True
        _cut(self.sock)

    def _failed(self) -> None:
        """After a read failed: the deadline's doing (the alarm cut it, or it timed out at the
        deadline) is our Timeout; anything else is re-raised by the caller."""
        if self.rang or _overdue(self.current):
            raise _still_arriving(self.current) from None

    def _disarm(self) -> None:
        if self.alarm is not None:
            self.alarm.cancel()
            self.alarm = None

    def abandon(self) -> None:
        """Still open when its attempt ended: cut its connection (the pool never lends a
        connection whose reply is open, so it is this body's alone), and let go."""
        if self.current is not _SPENT:
            if self.sock is not None:
                _cut(self.sock)
            self._release()

    def _release(self) -> None:
        """Closed: let go of the guard, which holds the reply, which holds this body. Kept, that
        loop would leave every request's objects (reply, request, connection streams: about 30
        a request) to the cyclic collector, whose full passes over them paused a busy `serve`
        for tens of milliseconds (docs/performance.md, "serve"); let go, they are freed as soon
        as the SDK drops the reply. The guard keeps the reply and its first bytes for
        `describe()`."""
        self._disarm()
        self.current = _SPENT


class _Watched(_Watch, httpx2.SyncByteStream):
    """A body that checks the deadline as its bytes arrive and keeps the first ones.

    Each read's own timeout was set when the request went out, so a read that began just before
    the deadline could wait nearly a whole `--timeout` more; an alarm ends it at the deadline.
    """

    def __iter__(self) -> Iterator[bytes]:
        self._arm(self._timer)
        try:
            for chunk in self.inner:
                self._seen(chunk)
                yield chunk
                self._check()
        except errors.Timeout:
            raise
        except Exception:
            self._failed()
            raise
        finally:
            self._disarm()

    def _timer(self, left: float) -> threading.Timer:
        alarm = threading.Timer(left, self._ring)
        alarm.daemon = True
        alarm.start()
        return alarm

    def close(self) -> None:
        self._release()
        self.inner.close()


class _AsyncWatched(_Watch, httpx2.AsyncByteStream):
    """`_Watched` for the async client; the alarm is a callback on the event loop."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import asyncio

        self._arm(lambda left: asyncio.get_running_loop().call_later(left, self._ring))
        try:
            async for chunk in self.inner:
                self._seen(chunk)
                yield chunk
                self._check()
        except errors.Timeout:
            raise
        except Exception:
            self._failed()
            raise
        finally:
            self._disarm()

    async def aclose(self) -> None:
        self._release()
        await self.inner.aclose()


# Callbacks waiting for the next request to be on the wire (`when_sent`).
_on_sent: list[Callable[[], None]] = []


def when_sent(callback: Callable[[], None]) -> None:
    """Call `callback` once, as soon as the next request through a guarded client has been sent
    and its answer is awaited: the moment work in another thread overlaps the provider's answer
    without holding back the request (`logdb.open_early`). Called from the sending thread."""
    _on_sent.append(callback)


def _trace(name: str, info: dict[str, Any]) -> None:
    """httpcore's trace hook: the response headers are awaited once the request is out."""
    if name.endswith("receive_response_headers.started"):
        while _on_sent:
            _on_sent.pop(0)()


def _before(client: Any, request: httpx2.Request) -> _Guard | None:
    current = _CURRENT.get()
    if current is not None and current.timeout is not None:
        if current.deadline is None:
            current.deadline = time.monotonic() + current.timeout
        remaining = current.deadline - time.monotonic()
        if remaining <= 0:
            raise _late(current, f"no time left of the {current.timeout:g}s attempt")
        _timeouts(request, client.timeout, remaining)
    return current


class Client(httpx2.Client):
    """An httpx2 client whose requests obey the current `guard`."""

    def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> Any:
        if _on_sent:
            request.extensions.setdefault("trace", _trace)
        current = _before(self, request)
        if current is None:
            return super().send(request, stream=stream, **kwargs)
        response = super().send(request, stream=True, **kwargs)
        try:
            if not _vetted(current, response):
                response.read()
                raise _malformed(current, response)
            response.stream = _Watched(response.stream, current, _socket(response))
            current.bodies.append(response.stream)
            if not stream:
                response.read()
        except BaseException:
            response.close()
            raise
        return response


class AsyncClient(httpx2.AsyncClient):
    """The async twin of `Client`."""

    async def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> Any:
        current = _before(self, request)
        if current is None:
            return await super().send(request, stream=stream, **kwargs)
        response = await super().send(request, stream=True, **kwargs)
        try:
            if not _vetted(current, response):
                await response.aread()
                raise _malformed(current, response)
            response.stream = _AsyncWatched(response.stream, current, _socket(response))
            current.bodies.append(response.stream)
            if not stream:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


def client(**options: Any) -> Client:
    """A guarded sync client with the SDKs' own defaults (generous pool, redirects followed)."""
    return Client(**_defaults(options))


def async_client(**options: Any) -> AsyncClient:
    """The async twin of `client`, its direct connections on the event loop's own transports
    (`aionet`: anyio's streams cost a timer per read)."""
    from llmcli import aionet

    found = AsyncClient(**_defaults(options))
    aionet.install(found)
    return found


def _defaults(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "timeout": httpx2.Timeout(600, connect=5.0),
        "limits": httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        "follow_redirects": True,
        **options,
    }


def find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` or the first exception of `kind` in its causes (SDKs wrap what our client raises)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
