"""llmcli.aionet: the async clients' socket I/O on the event loop's transports.

Every served and batched call already goes through it (test_serve, test_batch); these are the
paths the fake provider server does not take: TLS, as every real provider speaks it (the real
openai SDK through a TLS relay in front of the fake), an untrusted certificate, a silent
server, a refused connection, a reset in the middle of a body, a body larger than the read
buffer, a pooled connection the server closed, and a proxy (left to anyio). Under asyncio's
loop and uvloop alike, since serve runs on either.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import ssl
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
import uvloop

from llmcli import aionet, transport
from tests.fakeserver import Reply

LOOPS = ["asyncio", "uvloop"]


def run(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """`main()` on a fresh loop of that kind, bounded to 20 s."""
    runner = uvloop.run if loop == "uvloop" else asyncio.run
    return runner(asyncio.wait_for(main(), 20))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


async def tls_relay(certificate: tuple[str, str], target: str) -> asyncio.Server:
    """A TLS server on 127.0.0.1 that relays each connection's bytes to `target` (host:port)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    host, port = target.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)


def port_of(server: asyncio.Server) -> int:
    return server.sockets[0].getsockname()[1]


def ours(client: httpx2.AsyncClient) -> bool:
    return isinstance(client._transport._pool._network_backend, aionet.Backend)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_real_sdk_over_tls_whole_and_streamed(loop, fake, certificate):
    import openai

    fake.script("openai", Reply(text="Over TLS, whole."), Reply(text="Over TLS, streamed."))

    async def main() -> tuple[str, str, int]:
        relay = await tls_relay(certificate, fake.url.split("://", 1)[1])
        http = transport.async_client(verify=ssl.create_default_context(cafile=certificate[0]))
        assert ours(http)
        client = openai.AsyncOpenAI(
            api_key="sk-test", base_url=f"https://127.0.0.1:{port_of(relay)}/v1", http_client=http
        )
        async with relay, client:
            messages = [{"role": "user", "content": "hi"}]
            whole = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            pieces = []
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
            return whole.choices[0].message.content, "".join(pieces), len(fake.requests)

    whole, streamed, sent = run(loop, main)
    assert (whole, streamed, sent) == ("Over TLS, whole.", "Over TLS, streamed.", 2)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_untrusted_certificate_is_a_connect_error(loop, fake, certificate):
    async def main() -> None:
        relay = await tls_relay(certificate, fake.url.split("://", 1)[1])
        async with relay, transport.async_client() as http:
            await http.get(f"https://127.0.0.1:{port_of(relay)}/v1/models")

    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        run(loop, main)
    assert fake.requests == []


async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, host, 0, ssl=tls)


async def request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize("loop", LOOPS)
def test_a_silent_server_is_a_read_timeout(loop):
    async def main() -> None:
        async def silent(reader, writer):
            await request_head(reader)
            await reader.read()  # until the client gives up

        server = await raw_server(silent)
        async with server, transport.async_client(timeout=httpx2.Timeout(0.3)) as http:
            await http.get(f"http://127.0.0.1:{port_of(server)}/")

    with pytest.raises(httpx2.ReadTimeout):
        run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_is_a_connect_error(loop):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused

        async def main() -> None:
            async with transport.async_client() as http:
                await http.get(f"http://127.0.0.1:{port}/")

        with pytest.raises(httpx2.ConnectError):
            run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reset_in_the_middle_of_a_body_is_a_read_error(loop):
    async def main() -> None:
        async def reset(reader, writer):
            await request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN

        server = await raw_server(reset)
        async with server, transport.async_client() as http:
            await http.get(f"http://127.0.0.1:{port_of(server)}/")

    with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
        run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_body_larger_than_the_buffer_arrives_whole_and_in_order(loop):
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB: reading pauses and resumes many times

    async def main() -> bytes:
        async def big(reader, writer):
            await request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for start in range(0, len(body), 100_000):
                writer.write(body[start : start + 100_000])
                await writer.drain()
            await reader.read()

        server = await raw_server(big)
        async with server, transport.async_client() as http:
            received = bytearray()
            async with http.stream("GET", f"http://127.0.0.1:{port_of(server)}/") as reply:
                async for piece in reply.aiter_raw():
                    received += piece
                    await asyncio.sleep(0)  # a slow reader: the buffer fills
            return bytes(received)

    assert run(loop, main) == body


@pytest.mark.parametrize("loop", LOOPS)
def test_a_pooled_connection_the_server_closed_is_replaced(loop):
    async def main() -> tuple[list[int], list[str]]:
        connections: list[int] = []

        async def once(reader, writer):
            connections.append(writer.get_extra_info("peername")[1])
            await request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # keep-alive was implied, yet the server hangs up

        server = await raw_server(once)
        texts = []
        async with server, transport.async_client() as http:
            for _ in range(3):
                texts.append((await http.get(f"http://127.0.0.1:{port_of(server)}/")).text)
                await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
        return connections, texts

    connections, texts = run(loop, main)
    assert texts == ["ok", "ok", "ok"]
    assert len(set(connections)) == 3


def test_a_proxied_client_keeps_anyio():
    assert ours(transport.async_client())
    proxied = transport.async_client(proxy="http://127.0.0.1:9")
    pools = [proxied._transport._pool]
    pools += [t._pool for t in proxied._mounts.values() if t is not None]
    assert len(pools) == 2
    assert not any(isinstance(p._network_backend, aionet.Backend) for p in pools)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_address_that_never_answers_does_not_hold_up_the_next(loop):
    """A host's first address drops the connection attempt (no refusal, as a broken IPv6 route
    does): the next address is tried after `ATTEMPT_DELAY_S`, not after the connect timeout."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # its queue, once full, drops new SYNs: a connect there waits, unanswered
    silent = full.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(silent)
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        with pytest.raises(TimeoutError):  # the premise: this address does not answer
            probe.connect(silent)

        async def main() -> tuple[int, float]:
            server = await raw_server(lambda reader, writer: reader.read())
            addresses = [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", where)
                for where in (silent, ("127.0.0.1", port_of(server)))
            ]
            async with server:
                started = time.monotonic()
                sock = await aionet.connect_any(asyncio.get_running_loop(), addresses)
                took = time.monotonic() - started
                peer = sock.getpeername()[1]
                sock.close()
                return peer, took

        peer, took = run(loop, main)
    finally:
        for sock in (probe, full, *fillers):
            sock.close()
    assert peer != silent[1]
    assert aionet.ATTEMPT_DELAY_S <= took < 3


HELD: contextvars.ContextVar[object] = contextvars.ContextVar("held")


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_pooled_connection_keeps_nothing_of_the_request_that_opened_it(loop, scheme, certificate):
    """A request's context (in llmcli: its guard, reply and body) is let go when the request
    ends, though its connection stays in the pool and its read timer (600 s) was cancelled,
    not run: over TLS too, where asyncio's start_tls resumes reading in the caller's context."""

    class Request:
        pass

    async def main() -> tuple[bool, int]:
        async def answer(reader, writer):
            while True:
                await request_head(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

        tls = None
        if scheme == "https":
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(*certificate)
        server = await raw_server(answer, tls)
        verify = ssl.create_default_context(cafile=certificate[0])
        async with server, transport.async_client(verify=verify) as http:

            async def request() -> weakref.ref[Request]:
                held = Request()
                HELD.set(held)
                assert (await http.get(f"{scheme}://127.0.0.1:{port_of(server)}/")).text == "ok"
                return weakref.ref(held)

            ended = await asyncio.create_task(request())
            await asyncio.sleep(0)  # the loop lets go of the finished task
            gc.collect()
            return ended() is None, len(http._transport._pool.connections)

    assert run(loop, main) == (True, 1)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_given_up_on_is_not_sent_on_after_the_client_closes(loop):
    """A peer that stops reading: the write times out, and closing the client drops what was
    still buffered (anyio's backend aborts too) instead of sending it on, socket kept open,
    for as long as the peer takes to read 32 MiB it was never meant to get."""
    body = b"x" * (32 << 20)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    given_up = threading.Event()
    got: dict[str, Any] = {}

    def peer() -> None:
        conn, _ = listener.accept()
        with conn:
            given_up.wait(15)  # not reading until the client has closed
            conn.settimeout(5)
            received, ending = 0, "still open after 5 s"
            try:
                while data := conn.recv(1 << 20):
                    received += len(data)
                ending = "closed"
            except ConnectionResetError:
                ending = "closed"
            except TimeoutError:
                pass
            got.update(received=received, ending=ending)

    reader = threading.Thread(target=peer, daemon=True)
    reader.start()

    async def main() -> None:
        timeout = httpx2.Timeout(5, write=0.5)
        http = transport.async_client(timeout=timeout)
        with pytest.raises(httpx2.WriteTimeout):
            await http.post(f"http://127.0.0.1:{listener.getsockname()[1]}/", content=body)
        await http.aclose()
        given_up.set()
        await asyncio.to_thread(reader.join, 15)  # the loop runs while the peer reads

    try:
        run(loop, main)
    finally:
        given_up.set()
        listener.close()
    assert got["ending"] == "closed"
    assert got["received"] < len(body) // 2  # what the kernels' buffers held, no more


class _FullThenDrained:
    """The loop's side of a connection whose send buffer is full (`pause_writing` called)."""

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("turns", [0, 1, 2])
def test_a_cancel_that_arrives_as_a_write_drains_is_not_lost(loop, turns):
    """Python 3.11's `asyncio.wait_for` returned normally when cancelled in the loop turn its
    future completed, and the cancellation was gone (CPython gh-86296)."""

    async def main() -> str:
        stream = aionet._Stream(asyncio.get_running_loop())
        stream.connection_made(_FullThenDrained())
        stream.pause_writing()

        async def write() -> str:
            await stream.write(b"x", timeout=30)
            await asyncio.sleep(0.05)  # a cancellation not lost lands here at the latest
            return "carried on"

        task = asyncio.create_task(write())
        await asyncio.sleep(0.01)  # the write is waiting for the buffer to drain
        stream.resume_writing()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    assert run(loop, main) == "cancelled"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_addresses_are_a_host_and_a_port_as_anyio_gives_them(loop, host):
    if host == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")

    async def main() -> tuple[Any, Any, int]:
        async def answer(reader, writer):
            await request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

        server = await raw_server(answer, host=host)
        port = port_of(server)
        async with server, transport.async_client() as http:
            url = f"http://{'[::1]' if ':' in host else host}:{port}/"
            async with http.stream("GET", url) as reply:
                stream = reply.extensions["network_stream"]
                return (
                    stream.get_extra_info("server_addr"),
                    stream.get_extra_info("client_addr"),
                    port,
                )

    server_addr, client_addr, port = run(loop, main)
    assert server_addr == (host, port)
    assert len(client_addr) == 2 and client_addr[0] == host
