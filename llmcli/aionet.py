"""The async SDK clients' network I/O on the event loop's own transports, not anyio's streams.

httpcore2 (under httpx2, under each SDK's async client) does its socket I/O through a "network
backend". Its default for asyncio is anyio's, which puts every read and every write in a
cancel scope with a timeout: a task lookup, a timer scheduled and cancelled, and a context
manager or two, for each read of a streamed reply. In `llmcli serve`, where every token is
such a read, that was about a seventh of the server's CPU time (docs/performance.md, "serve",
sixth pass). This backend reads from a buffer that an `asyncio.Protocol` fills as bytes arrive:
a read that finds bytes waiting returns them without a timer or a task switch, and one that
waits arms a single `call_later` for its timeout.

It speaks httpcore2's public backend interface (`httpcore2.AsyncNetworkBackend`) with its
exceptions (`ConnectError`, `ReadTimeout`, ...), so httpx2 and the SDKs see the same failures
as before. It is handed to the connection pool through the pool's private `_network_backend`
(httpx2 offers no way in): `install` leaves the client as it is if that attribute is gone. Only
a direct connection uses it: a proxy's tunnel keeps anyio's, whose TLS inside TLS is proven.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import socket
import ssl
from asyncio import staggered
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import httpcore2
from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream

T = TypeVar("T")
# Past this many unread bytes the connection stops reading until the reader catches up.
HIGH_WATER = 256 * 1024


class _Stream(asyncio.Protocol, AsyncNetworkStream):
    """One connection: the protocol the loop feeds, and the stream httpcore2 reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: Any = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False  # the peer has ended its side, or the connection is gone
        self._error: BaseException | None = None  # how the connection broke, if it did
        self._closed = False  # closed by us
        self._lost = False  # the loop has let go of the connection
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused
        self._paused = False

    # --- what the loop calls ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- what httpcore2 calls -----------------------------------------------------------------

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._chunks and not self._eof:
            if self._closed:
                raise httpcore2.ReadError("the connection is closed")
            await self._wait(timeout)
        if self._chunks:
            return self._take(max_bytes)
        if self._error is not None:
            raise httpcore2.ReadError(str(self._error) or type(self._error).__name__)
        if self._closed:
            raise httpcore2.ReadError("the connection is closed")
        return b""  # the peer's orderly end

    def _take(self, max_bytes: int) -> bytes:
        data = self._chunks.popleft()
        if len(data) > max_bytes:
            self._chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._buffered -= len(data)
        if self._paused and self._buffered <= HIGH_WATER // 4:
            self._paused = False
            _detached(self._transport.resume_reading)
        return data

    async def _wait(self, timeout: float | None) -> None:
        self._waiter = waiter = self._loop.create_future()
        timer = None
        if timeout is not None:
            # In an empty context: a cancelled timer stays in the loop's queue until it is due
            # (up to the read timeout, 600 s by default), and would keep the request's alive.
            timer = self._loop.call_later(timeout, _expire, waiter, context=contextvars.Context())
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._error is not None or self._closed or self._transport.is_closing():
            raise httpcore2.WriteError(str(self._error or "the connection is closed"))
        self._transport.write(buffer)
        drained = self._drained
        if drained is not None and not drained.done():
            try:
                # Not `asyncio.wait_for`: on Python 3.11 it drops a cancellation that arrives
                # as the awaited future completes (CPython gh-86296); `asyncio.timeout` does not.
                async with asyncio.timeout(timeout):
                    await asyncio.shield(drained)
            except TimeoutError:
                raise httpcore2.WriteTimeout("timed out writing the request") from None
        if self._error is not None:
            raise httpcore2.WriteError(str(self._error) or type(self._error).__name__)
        if self._lost or self._closed:  # the wait ended because the connection did
            raise httpcore2.WriteError("the connection is closed")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake()
            if self._transport is not None:
                # As anyio's backend: at once. `close()` would go on sending what is still
                # buffered (a request httpcore2 has given up on, to a peer that may never read
                # it) and wait for a TLS peer's goodbye, keeping the socket open meanwhile.
                self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        if self._chunks or self._eof:  # an HTTP server never speaks first
            await self.aclose()
            raise httpcore2.ConnectError("the server spoke or hung up before the TLS handshake")
        # Detached, as the connect is: asyncio's start_tls resumes reading in the caller's
        # context, which the connection would then keep for its whole life.
        handshake = _detached(
            self._loop.create_task,
            self._loop.start_tls(
                self._transport, self, ssl_context, server_hostname=server_hostname
            ),
        )
        try:
            async with asyncio.timeout(timeout):
                self._transport = await handshake
        except BaseException as exc:
            self._transport = _finished(handshake) or self._transport
            await self.aclose()
            if isinstance(exc, TimeoutError):
                raise httpcore2.ConnectTimeout("timed out in the TLS handshake") from None
            if isinstance(exc, OSError):  # ssl.SSLError and ConnectionError among them
                raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "is_readable":  # an idle pooled connection the server has closed or spoken on
            return bool(self._chunks) or self._eof or self._closed
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return _host_and_port(transport.get_extra_info("sockname"))
        if info == "server_addr":
            return _host_and_port(transport.get_extra_info("peername"))
        if info == "socket":
            return transport.get_extra_info("socket")
        return None


def _detached(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in an empty context. asyncio's transport keeps the context current
    when it starts (or resumes) reading, for as long as the connection lives; a pooled
    connection would otherwise keep the request that opened it (its `transport.guard`, reply
    and body) alive, and run every later reply's callbacks in that request's context."""
    return contextvars.Context().run(function, *args)


def _host_and_port(address: Any) -> Any:
    """(host, port), as anyio gives it, of an IPv4 or IPv6 socket address (IPv6's has four)."""
    return tuple(address[:2]) if isinstance(address, tuple) else address


def _finished(task: asyncio.Task[T]) -> T | None:
    """What `task` returned, if it did: a connection or transport made just as the caller was
    cancelled, which the caller must close."""
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpcore2.ReadTimeout("timed out waiting for the server"))


class Backend(AsyncNetworkBackend):
    """httpcore2's network backend on the running loop's transports."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        opening = _open(loop, host, port, local_address)
        return await _connected(loop, opening, timeout, f"{host}:{port}", socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        opening = loop.create_unix_connection(lambda: _Stream(loop), path)
        return await _connected(loop, opening, timeout, path, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    loop: asyncio.AbstractEventLoop,
    opening: Coroutine[Any, Any, tuple[Any, _Stream]],
    timeout: float | None,
    where: str,
    socket_options: Iterable[Any] | None,
) -> _Stream:
    """The stream `opening` makes, within `timeout`, in httpcore2's terms: its failures as
    `ConnectTimeout` and `ConnectError`, and `socket_options` set on its socket."""
    task = _detached(loop.create_task, opening)
    try:
        async with asyncio.timeout(timeout):  # not `wait_for`: see `_Stream.write`
            _, stream = await task
    except TimeoutError:
        raise httpcore2.ConnectTimeout(f"timed out connecting to {where}") from None
    except OSError as exc:
        raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
    except BaseException:
        made = _finished(task)
        if made is not None:
            made[0].abort()
        raise
    try:
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
    except OSError as exc:
        await stream.aclose()
        raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
    return stream


# How long an attempt at one address has before the next address is tried alongside it (RFC
# 8305's "Connection Attempt Delay"), as anyio does: a host whose first address is unreachable
# without a refusal (an IPv6 route that drops packets) still connects by the next one.
ATTEMPT_DELAY_S = 0.25


async def _open(
    loop: asyncio.AbstractEventLoop, host: str, port: int, local_address: str | None
) -> tuple[Any, _Stream]:
    """A connection to `host`, by the first of its addresses to answer, on a `_Stream`.

    Not `loop.create_connection(host=...)`: uvloop's tries one address after another, each
    until the whole connect timeout, and asyncio's resolves even an IP address in a thread."""
    addresses = await _addresses(loop, host, port)
    sock = await connect_any(loop, addresses, local_address)
    try:
        return await loop.create_connection(lambda: _Stream(loop), sock=sock)
    except BaseException:
        sock.close()
        raise


async def _addresses(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Any]:
    literal = host.strip("[]")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, literal)
        except OSError:
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (literal, port))]
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not found:
        raise OSError(f"no address found for {host}")
    # Families taken in turn, the resolver's first family first (RFC 8305).
    first = [a for a in found if a[0] == found[0][0]]
    other = [a for a in found if a[0] != found[0][0]]
    return [a for pair in itertools.zip_longest(first, other) for a in pair if a is not None]


async def connect_any(
    loop: asyncio.AbstractEventLoop, addresses: list[Any], local_address: str | None = None
) -> socket.socket:
    """A connected socket to the first of `addresses` (getaddrinfo's tuples) to accept; a new
    attempt starts every `ATTEMPT_DELAY_S`, or as soon as one fails, while earlier ones go on."""

    async def attempt(address: Any) -> socket.socket:
        family, kind, proto, _, where = address
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if local_address:
                sock.bind((local_address, 0))
            await loop.sock_connect(sock, where)
        except BaseException:
            sock.close()
            raise
        return sock

    if len(addresses) == 1:
        return await attempt(addresses[0])
    sock, _, failures = await staggered.staggered_race(
        [functools.partial(attempt, a) for a in addresses], ATTEMPT_DELAY_S
    )
    if sock is None:
        reasons = "; ".join(str(f) for f in failures if f is not None)
        raise OSError(f"could not connect to any address: {reasons}")
    return sock


def install(client: Any) -> None:
    """Give `client` (an httpx2.AsyncClient) this backend for its direct connections; a client
    whose requests go through a proxy is left as it is."""
    if any(transport is not None for transport in getattr(client, "_mounts", {}).values()):
        return
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if type(pool) is httpcore2.AsyncConnectionPool and hasattr(pool, "_network_backend"):
        pool._network_backend = Backend()
