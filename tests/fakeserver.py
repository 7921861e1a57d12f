"""A loopback fake of the OpenAI, Anthropic and Gemini HTTP APIs for llmcli's tests.

Why it exists: llmcli talks to three providers through their official SDKs, and the interesting
behaviour (streaming, usage accounting, finish reasons, retries, error mapping, broken streams)
lives in how those SDKs parse the wire. Mocking the SDKs would test our assumptions about them;
this server instead speaks each provider's real HTTP protocol (see ``/work/shared/wire.md``) so the
*real* SDKs parse real bytes, in-process or in an ``llmcli`` subprocess.

Usage::

    from tests.fakeserver import FakeServer, Reply

    server = FakeServer().start()            # 127.0.0.1:<free port>, daemon thread
    env = server.env()                       # OPENAI_BASE_URL / ANTHROPIC_BASE_URL / GOOGLE_GEMINI_BASE_URL
    server.script("openai", Reply(text="hi"), Reply(status=429, headers={"Retry-After": "1"}))
    ...                                      # run llmcli with env
    rec = server.requests_for("openai")[0]   # what the client sent
    server.reset()                           # between tests
    server.stop()

Behaviour that tests may rely on (each request to a provider route pops one scripted ``Reply``
for that provider, or uses ``Reply()`` when the queue is empty; auxiliary routes such as model
lists and token counting pop too, so a script covers *every* request a provider receives;
the one exception is the Batch API's own calls, see tests/fakebatch.py):

* Named endpoints: any path prefix before a provider's own path is served like that path
  (``POST /ollama/v1/chat/completions`` is OpenAI's chat, ``/claude-proxy/v1/messages``
  Anthropic's), so a test can point an endpoint at ``server.url + "/ollama/v1"`` beside the
  provider itself. The record keeps the whole ``path``, the ``prefix`` (``"/ollama"``) and the
  key the request carried; ``script(..., prefix="/ollama")`` and ``requests_for(..., prefix=)``
  tell the two apart. A path with no provider's path at its end is still a 404.
* Order of decisions for one request: ``delay`` → non-stream ``drop_after`` (close, no response)
  → scripted ``status >= 400`` → an exact ``body`` or a 204/205 → built-in auth / validation /
  unknown-model errors → the reply.
* Built-in errors (only when no error status is scripted):
  no key → OpenAI 401 (code null), Anthropic 401 ``authentication_error``, Gemini 403
  ``PERMISSION_DENIED``; a key starting with ``bad`` → OpenAI 401 ``invalid_api_key``, Anthropic
  401 "invalid x-api-key", Gemini 400 ``INVALID_ARGUMENT`` + ErrorInfo ``API_KEY_INVALID``; a model
  starting with ``no-such`` → 404 in each provider's format. Anthropic also rejects a missing
  ``anthropic-version`` header, a ``messages[].role == "system"`` and a missing ``max_tokens``
  with 400 ``invalid_request_error``, like the real API.
* Gemini bad key on demand: ``Reply(status=400, error_type="API_KEY_INVALID")`` produces the real
  envelope (status ``INVALID_ARGUMENT`` with an ErrorInfo detail whose reason is
  ``API_KEY_INVALID``). Gemini 429 replies carry QuotaFailure, Help and RetryInfo details; the
  RetryInfo ``retryDelay`` is the scripted ``Retry-After`` header (seconds) if given, else ``20s``.
* Token counts are reported verbatim in each provider's field (``Reply.output_tokens`` becomes
  OpenAI ``completion_tokens``, Anthropic ``output_tokens``, Gemini ``candidatesTokenCount``). The
  optional ``cached_tokens`` / ``reasoning_tokens`` are omitted from the wire when ``None``
  (OpenAI ``*_tokens_details``, Anthropic ``cache_read_input_tokens`` /
  ``output_tokens_details.thinking_tokens``, Gemini ``cachedContentTokenCount`` /
  ``thoughtsTokenCount``); Gemini's ``totalTokenCount`` adds the thoughts, as the real API does.
  Each field means what the provider's does: Anthropic's ``input_tokens`` leaves out the cache
  reads and writes (``cache_write_tokens`` → ``cache_creation_input_tokens``), the others'
  prompt counts include the cached tokens; OpenAI's and Anthropic's output counts include the
  reasoning, Gemini's ``candidatesTokenCount`` does not.
* Streams use ``Transfer-Encoding: chunked``, and the connection stays open after a stream that
  ends normally, as the providers' do (a client reuses it). Chunked framing is what also
  makes an abrupt close detectable: without it an SSE body ends at EOF, so a dropped connection
  would look like a normal end of stream and the SDKs would raise nothing.
* Gemini ``content_filter`` (and other blocking raw reasons such as ``RECITATION``): a
  non-stream reply has no ``content`` at all (the real API withholds a blocked candidate, so
  ``response.text`` is ``None``); a stream sends the text chunks, then a final chunk with the
  finish reason, safety ratings and no parts. Gemini streams are always SSE (google-genai always
  asks for ``alt=sse``; the JSON-array stream format is not implemented).

SDK caveats found while building this (anthropic 2.14, openai 3.57, google-genai 3.6.1):

* ``Reply(usage=False)`` on an Anthropic *stream* makes the SDK's ``messages.stream()`` helper
  raise ``AttributeError`` (its accumulator reads ``usage.output_tokens``); iterating
  ``messages.create(stream=True)`` works. The real API always reports usage, so this only
  matters for tests of "usage not reported".
* anthropic 2.14 emits ``DeprecationWarning`` for ``claude-sonnet-4-5`` (and ``claude-opus-4-5``),
  which ``filterwarnings = error`` turns into a test failure: use other model names.
* A mid-stream drop surfaces as ``openai.APIConnectionError`` but as a raw
  ``httpx2.RemoteProtocolError`` from anthropic and google-genai; a bad stream line is a bare
  ``json.JSONDecodeError`` (openai, anthropic) or ``genai.errors.UnknownApiResponseError``.

Batch APIs (OpenAI files + batches, Anthropic message batches, Gemini batchGenerateContent and
its files) are served by ``tests/fakebatch.py``, whose docstring documents them; the test-facing
calls are ``FakeServer.batch_plan()``, ``batches()`` and ``script_batch_api()``, and
``Recorded.kind`` names every request's endpoint (``batch_item`` for each prompt inside a batch).
The Batch API's own calls pop no ``script`` reply: the script is for the prompts inside batches.

Besides the brief's API: ``FakeServer.pending()``, ``wait_idle()``, ``errors`` (tracebacks of bugs
in the fake), ``Recorded.status`` and ``Reply.error_code``/``Reply.thinking``/
``Reply.cache_write_tokens``, and for the ends of calls ``Reply(finish=None)`` (a stream cut
cleanly without a finish reason) and ``Reply(body=..., content_type=...)`` / ``Reply(status=204)``
(a 2xx that is not the API).

Standard library only, so it can run inside any test process without extra dependencies.
"""

from __future__ import annotations

import base64
import contextlib
import http
import json
import re
import socket
import socketserver
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["PROVIDERS", "FakeServer", "Recorded", "Reply", "decode_base64"]

PROVIDERS = ("openai", "anthropic", "gemini")

_FINISHES = ("stop", "length", "content_filter", "tool_calls")
_RAW_FINISH = {
    "openai": {
        "stop": "stop",
        "length": "length",
        "content_filter": "content_filter",
        "tool_calls": "tool_calls",
    },
    "anthropic": {
        "stop": "end_turn",
        "length": "max_tokens",
        "content_filter": "refusal",
        "tool_calls": "tool_use",
    },
    # Gemini has no tool-call finish reason: a function call ends with STOP.
    "gemini": {
        "stop": "STOP",
        "length": "MAX_TOKENS",
        "content_filter": "SAFETY",
        "tool_calls": "STOP",
    },
}
# Gemini finish reasons for which the real API withholds the (rest of the) candidate's content.
_GEMINI_BLOCKING = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

_GATE_LIMIT = 10.0  # seconds: a forgotten gate must not hang the test session
_HANDLER_IDLE_TIMEOUT = 60.0  # seconds: idle keep-alive connections release their thread


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """How the server answers one request. Every field is optional; ``Reply()`` is a success.

    Content:
        text: the answer.
        chunks: stream deltas; default ``text`` split into words that keep their leading spaces.
            A non-stream reply answers ``"".join(chunks)`` when chunks are given.
        blocks: Anthropic: several text content blocks (each streamed word by word; ``chunks`` is
            then ignored). Other providers answer ``"".join(blocks)``.
        thinking: put one non-text block before the text so clients are tested on skipping it:
            Anthropic a ``thinking`` block with a signature, Gemini a ``thought: true`` part
            (its own first chunk when streaming). OpenAI chat completions have no such block.
        finish: normalised finish reason: "stop" | "length" | "content_filter" | "tool_calls",
            or None: no finish reason at all, as when a proxy ends the stream cleanly (chunked
            terminator) in the middle of the answer. A stream then stops right after its last
            text chunk: OpenAI sends no chunk with a ``finish_reason``, no usage chunk and no
            ``[DONE]``; Anthropic no ``content_block_stop``, ``message_delta`` or
            ``message_stop``; Gemini's last chunk has no ``finishReason`` (and only the prompt
            count in its usage). A non-stream reply carries a null finish reason
            (``finish_reason``/``stop_reason`` null, no Gemini ``finishReason``).
        raw_finish: exact provider value instead (e.g. "stop_sequence", "RECITATION").
        input_tokens, output_tokens, cached_tokens, reasoning_tokens: usage numbers;
            ``usage=False`` sends no usage at all.
        cache_write_tokens: Anthropic only: ``cache_creation_input_tokens`` (prompt-cache
            writes, in the 5-minute cache unless ``cache_write_1h_tokens`` says how many of
            them are kept an hour; ``cache_creation`` breaks them down so).
        model: model name reported back (default: the requested one).
        refusal: OpenAI only: the model declines: ``message.refusal`` holds this text and
            ``content`` is null (streamed: ``delta.refusal`` pieces instead of ``delta.content``),
            with finish reason ``stop``, as OpenAI sends it. With ``chunks`` given too, those
            are the content (an answer in part), followed by the refusal. Other providers ignore it.

    HTTP behaviour:
        status, headers: status code and extra response headers (applied to every reply).
            ``status >= 400`` sends the provider's error envelope for that status.
        error_message, error_type: override the envelope's message and type (OpenAI ``type``,
            Anthropic ``error.type``, Gemini ``status``); also used by ``stream_error_after``.
        error_code: OpenAI ``error.code``, Anthropic ``error.details.error_code``, Gemini
            ErrorInfo ``reason`` (an addition to the original brief, for finer error mapping).
        error_body: exact bytes to send instead of the envelope.
        body, content_type: a reply that is not the API: exactly these bytes, with this
            ``Content-Type`` (default ``application/json``) and the scripted ``status``, for a
            stream request too (a captive portal's HTML page, a ``{}``). ``status=204`` (or
            205) sends no body and no content type at all, whatever ``body`` says.

    Faults:
        delay: seconds before the response headers (interruptible by ``FakeServer.stop``).
        chunk_delay: seconds between text chunks of a stream.
        drop_after: stream: close the TCP connection abruptly after this many text chunks
            (0 = right after the headers; more than there are = after the last text chunk).
            Non-stream: any value closes the connection without any response.
        stream_error_after: after this many text chunks send the provider's in-stream error
            event and end the stream cleanly (more than there are = after the last one).
        malformed: non-stream: a 200 whose JSON body is cut short; stream: one data line that
            is not valid JSON, right after the first text chunk.
        gate: the server waits (at most 10 s) on this event before the final text chunk, so a
            test can prove earlier chunks reached the user before the stream finished.

    Echo:
        echo: the answer (``text``) is the text of the request's last message, so a test of
            many concurrent requests can tell which answer belongs to which prompt. With
            ``FakeServer.set_default(Reply(echo=True))`` every unscripted request echoes.
    """

    text: str = "Hello from the fake server."
    chunks: list[str] | None = None
    blocks: list[str] | None = None
    thinking: bool = False
    finish: str | None = "stop"
    raw_finish: str | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage: bool = True
    model: str | None = None
    refusal: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_body: bytes | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    stream_error_after: int | None = None
    malformed: bool = False
    gate: threading.Event | None = None
    body: bytes | None = None
    content_type: str | None = None
    echo: bool = False

    def __post_init__(self) -> None:
        # Fail at scripting time, not as a confusing SDK error inside some subprocess.
        if self.finish is not None and self.finish not in _FINISHES:
            raise ValueError(f"finish must be one of {_FINISHES} or None, got {self.finish!r}")
        if self.body is not None and not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes, got {type(self.body).__name__}")

    def answer(self) -> str:
        """The complete answer text for a non-stream reply."""
        if self.chunks is not None:
            return "".join(self.chunks)
        if self.blocks is not None:
            return "".join(self.blocks)
        return self.text

    def pieces(self) -> list[str]:
        """The text deltas of a stream (for Anthropic ``blocks``, see ``block_pieces``)."""
        if self.chunks is not None:
            return list(self.chunks)
        return split_words(self.answer())

    def block_pieces(self) -> list[list[str]]:
        """Anthropic text blocks, each as its list of stream deltas."""
        if self.blocks is not None:
            return [split_words(block) for block in self.blocks]
        return [self.pieces()]

    def raw_finish_for(self, provider: str) -> str | None:
        """The provider's own finish/stop reason string for this reply (None: no finish)."""
        if self.raw_finish is not None:
            return self.raw_finish
        return None if self.finish is None else _RAW_FINISH[provider][self.finish]

    @property
    def cut(self) -> bool:
        """A stream that ends cleanly without a finish reason (``finish=None``)."""
        return self.finish is None and self.raw_finish is None


@dataclass
class Recorded:
    """One request as the server saw it, plus live progress of the reply.

    ``model`` and ``api_key`` are ``None`` when the request carried none. ``status`` is the HTTP
    status sent (``None`` if the connection was dropped before any response). ``client_port`` is
    the client's side of the TCP connection the request came over: two requests with the same
    port came over one kept-alive connection (a client reusing its connection pool). ``prefix``
    is the part of ``path`` before the provider's own path: ``"/ollama"`` for a named endpoint
    at ``/ollama/v1/chat/completions``, ``""`` at the provider's normal paths. ``kind`` names
    the endpoint: ``chat``, ``messages``, ``generate``, ``models``..., the Batch API's
    ``batch_create``, ``batch_get``..., and ``batch_item`` for one request inside a batch
    (tests/fakebatch.py).
    """

    provider: str  # "openai" | "anthropic" | "gemini" | "unknown" (no route matched)
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    stream: bool
    model: str | None
    api_key: str | None
    chunks_sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    status: int | None = None
    client_port: int | None = None
    prefix: str = ""
    kind: str = ""


def split_words(text: str) -> list[str]:
    """Split ``text`` into word deltas that keep their leading whitespace.

    ``"".join(split_words(t)) == t`` always holds; trailing whitespace joins the last piece.
    """
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class FakeServer:
    """A thread-safe fake of the three provider APIs on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (provider, path prefix) -> replies; ("openai", "") is the provider's own queue.
        self._queues: dict[tuple[str, str], deque[Reply]] = {(p, ""): deque() for p in PROVIDERS}
        # The same, for the Batch API's own calls (script_batch_api).
        self._api_queues: dict[tuple[str, str], deque[Reply]] = {}
        self._requests: list[Recorded] = []
        self._errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._default: Reply | None = None
        # Imported here: tests/fakebatch.py builds on this module's classes.
        from tests.fakebatch import BatchStore

        self._batch_store = BatchStore(self)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("FakeServer already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakeserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and cut open connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("FakeServer is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the three SDKs at this server."""
        return {
            "OPENAI_BASE_URL": self.url + "/v1",
            "ANTHROPIC_BASE_URL": self.url,
            "GOOGLE_GEMINI_BASE_URL": self.url,
        }

    # scripting and records ---------------------------------------------------------------------

    def script(self, provider: str, *replies: Reply, prefix: str = "") -> None:
        """Queue replies for the next requests of ``provider``; each request pops one.

        With ``prefix`` (``"/ollama"``), the replies are for the requests under that path
        prefix only: a named endpoint served beside the provider itself. Such a request pops
        its prefix's queue while it has replies, then the provider's own queue.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"prefix must start with / and not end with one, got {prefix!r}")
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"expected Reply, got {type(reply).__name__}")
        with self._lock:
            self._queues.setdefault((provider, prefix), deque()).extend(replies)

    def script_batch_api(self, provider: str, *replies: Reply, prefix: str = "") -> None:
        """Queue replies for the next Batch API / file calls of ``provider`` (create, get,
        list, cancel, results, uploads...; not the prompts inside a batch, which ``script``
        answers). A reply with ``status >= 400`` is that call's error in the provider's
        envelope; ``delay`` and ``drop_after`` apply as to a live call; any other reply lets
        the call be served normally. Same prefix rules as ``script``; ``pending()`` does not
        count these.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"expected Reply, got {type(reply).__name__}")
        with self._lock:
            self._api_queues.setdefault((provider, prefix), deque()).extend(replies)

    def set_default(self, reply: Reply | None) -> None:
        """The reply for a request with nothing scripted (``None``: ``Reply()``), until
        ``reset``; e.g. ``Reply(echo=True)``, or a ``delay`` for every request."""
        if reply is not None and not isinstance(reply, Reply):
            raise TypeError(f"expected Reply, got {type(reply).__name__}")
        with self._lock:
            self._default = reply

    def pending(self, provider: str | None = None, prefix: str | None = None) -> int:
        """How many scripted replies are still unused (for one provider, or all; for one
        path prefix, or every one)."""
        with self._lock:
            return sum(
                len(queue)
                for (name, at), queue in self._queues.items()
                if provider in (None, name) and prefix in (None, at)
            )

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of all recorded requests in arrival order (use ``reset()`` to clear)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, provider: str, prefix: str | None = None) -> list[Recorded]:
        """The recorded requests of one provider, in arrival order: every one, or only those
        under one path prefix (``""``: at the provider's own paths)."""
        with self._lock:
            return [
                r for r in self._requests if r.provider == provider and prefix in (None, r.prefix)
            ]

    @property
    def errors(self) -> list[str]:
        """Tracebacks of bugs inside the fake itself (should stay empty)."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget scripted replies and records. In-flight replies finish undisturbed."""
        with self._lock:
            self._queues = {(p, ""): deque() for p in PROVIDERS}
            self._api_queues = {}
            self._requests = []
            self._errors = []
            self._default = None
        self._batch_store.reset()

    def batch_plan(
        self,
        provider: str,
        *,
        polls: int = 0,
        order: str = "input",
        expire: Iterable[int] = (),
        cancelled: Iterable[int] = (),
        fail: str | None = None,
    ) -> None:
        """How the next batch created for ``provider`` behaves (tests/fakebatch.py)."""
        self._batch_store.plan(
            provider, polls=polls, order=order, expire=expire, cancelled=cancelled, fail=fail
        )

    def batches(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Every batch job the fake holds, oldest first, as submitted (tests/fakebatch.py)."""
        return self._batch_store.snapshot(provider)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded request has finished; False on timeout.

        A client may exit as soon as it has parsed the last event, before the server has
        written the stream's closing bytes, so tests asserting on ``finished_at`` should wait.
        """
        deadline = time.monotonic() + timeout
        return all(rec.done.wait(max(0.0, deadline - time.monotonic())) for rec in self.requests)

    # used by the handler ---------------------------------------------------------------------

    def _record(self, rec: Recorded, *, pop: bool = True) -> Reply:
        """Keep ``rec`` and take its reply: the next scripted one (``pop``) or the default.

        The Batch API's own calls do not pop (``pop=False``): the script is for the prompts,
        so ``script(p, a, b)`` answers a batch's first two items, whatever calls come between.
        """
        with self._lock:
            self._requests.append(rec)
            queues = self._queues if pop else self._api_queues
            for key in ((rec.provider, rec.prefix), (rec.provider, "")):
                queue = queues.get(key)
                if queue:
                    return queue.popleft()
            return (self._default or Reply()) if pop else Reply()

    def _note_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, so a delayed or gated reply never blocks other requests."""

    daemon_threads = True
    allow_reuse_address = True
    # Tests may open many connections at once (parallel subprocesses); the default is small.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, fake: FakeServer) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds on hosts with broken DNS; the name is only used for logging.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


@dataclass
class _Route:
    provider: str  # one of PROVIDERS or "unknown"
    kind: str  # chat | input_tokens | messages | count_tokens | generate | models | model | unknown
    model: str | None = None  # model named in the URL (Gemini, GET models/{id})
    api_version: str = "v1"
    action: str = ""  # Gemini: generateContent | streamGenerateContent | countTokens
    prefix: str = ""  # the path before the provider's own one ("/ollama" in /ollama/v1/...)
    resource: str = ""  # Batch API: the batch or file id named in the path


_GEMINI_ACTION = re.compile(
    r"^/(v1|v1beta|v1alpha)/(.+):"
    r"(generateContent|streamGenerateContent|countTokens|batchGenerateContent)$"
)
_MODELS_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models(?:/(.+))?$")
# Batch API paths (tests/fakebatch.py). OpenAI and Gemini share /v1/batches and /v1/files
# (wire-wave2.md surprise 3): the headers decide, as for /v1/models.
_V1_BATCH = re.compile(r"^/(v1|v1beta|v1alpha)/batches(?:/([^/:]+)(/cancel|:cancel)?)?$")
_V1_FILE = re.compile(r"^/(v1|v1beta|v1alpha)/files(?:/([^/:]+)(/content|:download)?)?$")
_ANTHROPIC_BATCH = re.compile(r"^/v1/messages/batches(?:/([^/]+)(/cancel|/results)?)?$")
_GEMINI_UPLOAD = re.compile(r"^/upload/(v1|v1beta|v1alpha)/files$")


def _sniff_provider(headers: dict[str, str], query: dict[str, str]) -> str:
    """Tell the providers apart on the shared ``GET /v1/models`` paths by their headers."""
    agent = headers.get("user-agent", "").lower()
    if (
        "x-goog-api-key" in headers
        or "x-goog-api-client" in headers
        or "key" in query
        or "google-genai" in agent
    ):
        return "gemini"
    if "anthropic-version" in headers or "x-api-key" in headers or agent.startswith("anthropic"):
        return "anthropic"
    return "openai"


def _route(method: str, path: str, headers: dict[str, str], query: dict[str, str]) -> _Route:
    """The provider route of ``path``, or of its tail after any leading segments.

    A named endpoint lives at its own base URL (``http://host/ollama/v1``): the request is
    served like the provider's own, and ``prefix`` keeps the part before its normal path.
    """
    path = path.rstrip("/") or "/"
    route = _provider_route(method, path, headers, query)
    rest = path
    while route.provider == "unknown" and rest.count("/") > 1:
        rest = "/" + rest.split("/", 2)[2]
        route = _provider_route(method, rest, headers, query)
        route.prefix = path[: len(path) - len(rest)]
    return route if route.provider != "unknown" else _Route("unknown", "unknown")


def _provider_route(
    method: str, path: str, headers: dict[str, str], query: dict[str, str]
) -> _Route:
    if method == "POST":
        if path == "/v1/chat/completions":
            return _Route("openai", "chat")
        if path == "/v1/responses/input_tokens":
            return _Route("openai", "input_tokens")
        if path == "/v1/messages":
            return _Route("anthropic", "messages")
        if path == "/v1/messages/count_tokens":
            return _Route("anthropic", "count_tokens")
        match = _GEMINI_ACTION.match(path)
        if match:
            version, name, action = match.groups()
            model = name.removeprefix("models/")
            kind = {"countTokens": "count_tokens", "batchGenerateContent": "batch_create"}.get(
                action, "generate"
            )
            return _Route("gemini", kind, model=model, api_version=version, action=action)
    elif method == "GET":
        match = _MODELS_PATH.match(path)
        if match:
            version, model = match.groups()
            provider = "gemini" if version != "v1" else _sniff_provider(headers, query)
            if model is not None and provider == "gemini":
                model = model.removeprefix("models/")
            kind = "models" if model is None else "model"
            return _Route(provider, kind, model=model, api_version=version)
    return _batch_route(method, path, headers, query)


def _batch_route(method: str, path: str, headers: dict[str, str], query: dict[str, str]) -> _Route:
    """The Batch API and file routes of the three providers (served by tests/fakebatch.py)."""
    unknown = _Route("unknown", "unknown")
    match = _ANTHROPIC_BATCH.match(path)
    if match:
        batch_id, action = match.groups()
        kind = {
            ("POST", False, None): "batch_create",
            ("GET", False, None): "batch_list",
            ("GET", True, None): "batch_get",
            ("DELETE", True, None): "batch_delete",
            ("POST", True, "/cancel"): "batch_cancel",
            ("GET", True, "/results"): "batch_results",
        }.get((method, batch_id is not None, action))
        return _Route("anthropic", kind, resource=batch_id or "") if kind else unknown
    match = _GEMINI_UPLOAD.match(path)
    if match and method == "POST":
        kind = "file_upload" if "upload_id" in query else "file_upload_start"
        return _Route(
            "gemini", kind, api_version=match.group(1), resource=query.get("upload_id", "")
        )
    for pattern, table in ((_V1_BATCH, _BATCH_KINDS), (_V1_FILE, _FILE_KINDS)):
        match = pattern.match(path)
        if not match:
            continue
        version, ident, action = match.groups()
        gemini = version != "v1" or _sniff_provider(headers, query) == "gemini"
        if (action or "").startswith(":" if not gemini else "/"):
            return unknown  # ":cancel" is Gemini's spelling, "/cancel" OpenAI's
        kind = table.get((method, ident is not None, (action or "").lstrip(":/")))
        if kind is None:
            return unknown
        provider = "gemini" if gemini else "openai"
        return _Route(provider, kind, api_version=version, resource=ident or "")
    return unknown


# (method, an id in the path?, action) -> kind, for /v1/batches... and /v1/files...
_BATCH_KINDS = {
    (
        "POST",
        False,
        "",
    ): "batch_create",  # OpenAI; Gemini creates at models/{m}:batchGenerateContent
    ("GET", False, ""): "batch_list",
    ("GET", True, ""): "batch_get",
    ("DELETE", True, ""): "batch_delete",
    ("POST", True, "cancel"): "batch_cancel",
}
_FILE_KINDS = {
    ("POST", False, ""): "file_upload",  # OpenAI multipart; Gemini uploads at /upload/{ver}/files
    ("GET", False, ""): "file_list",
    ("GET", True, ""): "file_get",
    ("DELETE", True, ""): "file_delete",
    ("GET", True, "content"): "file_content",
    ("GET", True, "download"): "file_content",
}
# Every kind tests/fakebatch.py serves: these calls pop no scripted reply (see FakeServer._record).
BATCH_ROUTE_KINDS = frozenset(
    {*_BATCH_KINDS.values(), *_FILE_KINDS.values(), "batch_results", "file_upload_start"}
)


# --------------------------------------------------------------------------------------------
# Helpers shared by the providers
# --------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the real APIs send (non-ASCII text is not escaped)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _new_id(prefix: str, n: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:n]


def _mask_key(key: str) -> str:
    """Mask a key the way OpenAI's 401 message does, so messages never echo full secrets."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return {529: "Overloaded", 499: "Client Closed Request"}.get(status, "Status")


class _Dropped(Exception):
    """Raised inside a handler to close the connection abruptly (fault injection or stop())."""


# --- error envelopes --------------------------------------------------------------------------

_DEFAULT = object()  # "use the per-status default" (distinct from an explicit None)

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: {key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}
_OPENAI_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "timeout_error": "Request timed out.",
    "conflict_error": "Conflict.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "This request would exceed the rate limit for your organization of 50 "
    "requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}

_GEMINI_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    ),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    501: ("UNIMPLEMENTED", "Method not implemented."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_GEMINI_CODE_FOR_STATUS = {status: code for code, (status, _) in _GEMINI_STATUS.items()}
_GEMINI_MESSAGE_FOR_STATUS = {status: message for status, message in _GEMINI_STATUS.values()}
_GEMINI_BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


def _openai_error(
    status: int,
    *,
    message: str | None = None,
    etype: str | None = None,
    code: Any = _DEFAULT,
    key: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    default_type, default_code, default_message = _OPENAI_ERRORS.get(
        status,
        ("server_error", None, _phrase(status))
        if status >= 500
        else ("invalid_request_error", None, _phrase(status)),
    )
    if etype == "insufficient_quota":
        # The real quota error carries the same string as type and code.
        default_code, default_message = "insufficient_quota", _OPENAI_QUOTA_MESSAGE
    if message is None:
        message = default_message.format(key=_mask_key(key or ""), model=model or "gpt-4o-mini")
    return {
        "error": {
            "message": message,
            "type": etype or default_type,
            "param": None,
            "code": default_code if code is _DEFAULT else code,
        }
    }


def _anthropic_error(
    status: int,
    *,
    message: str | None = None,
    etype: str | None = None,
    code: str | None = None,
    request_id: str,
) -> dict[str, Any]:
    etype = etype or _ANTHROPIC_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    error: dict[str, Any] = {
        "type": etype,
        "message": message or _ANTHROPIC_MESSAGES.get(etype, etype),
    }
    if code is not None:
        error["details"] = {"error_code": code}
    return {"type": "error", "error": error, "request_id": request_id}


def _gemini_error(
    status: int,
    *,
    message: str | None = None,
    etype: str | None = None,
    reason: str | None = None,
    retry_delay: str = "20s",
) -> dict[str, Any]:
    default_status, default_message = _GEMINI_STATUS.get(
        status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", _phrase(status))
    )
    if etype == "API_KEY_INVALID":
        # Shortcut documented in the module docstring: the real "bad key" envelope.
        etype, reason = "INVALID_ARGUMENT", reason or "API_KEY_INVALID"
        default_message = _GEMINI_BAD_KEY_MESSAGE
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
        if reason == "API_KEY_INVALID":
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": _GEMINI_BAD_KEY_MESSAGE,
                }
            )
    if status == 429:
        details += [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
                        "quotaValue": "15",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ]
    return {
        "error": {
            "code": status,
            "message": message or default_message,
            "status": etype or default_status,
            "details": details,
        }
    }


# --------------------------------------------------------------------------------------------
# Per-request work
# --------------------------------------------------------------------------------------------

# A stream plan is a sequence of events: ("raw", bytes) is sent as is, ("text", bytes) is one
# text chunk (counted, paced, gated), and exactly one ("end", b"") marks the spot right after the
# last text chunk, where drop_after / stream_error_after larger than the chunk count take effect.
# The events are produced while they are sent, not all before the headers: a 20,000-chunk
# stream would otherwise leave its first byte 100-300 ms after the request (bench/stream.py
# measures the time to the first token). `n_text` is the number of text events, for `gate`.
_Event = tuple[str, bytes]


@dataclass
class _StreamPlan:
    content_type: str
    events: Iterable[_Event]
    n_text: int
    error_event: bytes
    malformed_event: bytes


class _Exchange:
    """Builds and sends the reply for one recorded request."""

    def __init__(
        self,
        handler: _Handler | None,
        rec: Recorded,
        reply: Reply,
        route: _Route,
        fake: FakeServer,
    ) -> None:
        # handler is None for a request inside a batch: only `answer()` is used, no socket.
        self.h = handler
        self.rec = rec
        self.reply = reply
        self.route = route
        self.fake = fake
        self.request_id = _new_id("req_", 24)
        self.created = int(time.time())
        self.body: dict[str, Any] = rec.body if isinstance(rec.body, dict) else {}
        self._gemini_response_id = ""
        if reply.echo:
            self.reply = replace(reply, text=_last_message_text(self.body), echo=False)

    # --- top level ----------------------------------------------------------------------------

    def run(self) -> None:
        reply, route = self.reply, self.route
        if reply.delay > 0:
            self._sleep(reply.delay)
        if route.provider == "unknown":
            self._send_json(
                404,
                {
                    "error": {
                        "message": f"Invalid URL ({self.rec.method} {self.rec.path})",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if not self.rec.stream and reply.drop_after is not None:
            raise _Dropped
        if reply.status >= 400:
            self._send_scripted_error()
            return
        if reply.body is not None or reply.status in (204, 205):
            self._send_exact()
            return
        error = self._builtin_error()
        if error is not None:
            self._send_json(*error)
            return
        if route.kind in BATCH_ROUTE_KINDS:
            self.fake._batch_store.serve(self)
            return
        if reply.malformed and not self.rec.stream:
            self._send_json(reply.status, b'{"id": "broken", "choices": [{"index": 0, "mess')
            return
        handler = getattr(self, f"_{route.provider}_{route.kind}")
        handler()

    def answer(self) -> tuple[int, dict[str, Any]]:
        """The status and JSON body the live non-stream endpoint would send, without a socket.

        For one request inside a batch (tests/fakebatch.py): the same decisions as ``run``
        for a scripted error status, the built-in checks and the answer itself; the transport
        faults (delay, drop_after, malformed, gate) and exact ``body`` replies do not apply.
        """
        reply = self.reply
        if reply.status >= 400:
            if reply.error_body is not None:
                with contextlib.suppress(ValueError):
                    return reply.status, json.loads(reply.error_body)
            return reply.status, self._error_envelope(reply.status)
        error = self._builtin_error()
        if error is not None:
            return error
        builder = {
            "chat": self._openai_chat_body,
            "messages": self._anthropic_message_body,
            "generate": self._gemini_generate_body,
        }[self.route.kind]
        return 200, builder()

    # --- errors -------------------------------------------------------------------------------

    def _send_exact(self) -> None:
        """A reply that is not the API: the scripted bytes and type, or an empty 204/205."""
        reply = self.reply
        if reply.status in (204, 205):
            self._start_response(reply.status, [])
            return
        data = reply.body or b""
        self._start_response(
            reply.status,
            [
                ("Content-Type", reply.content_type or "application/json"),
                ("Content-Length", str(len(data))),
            ],
        )
        self.h.wfile.write(data)

    def _send_scripted_error(self) -> None:
        reply = self.reply
        if reply.error_body is not None:
            self._send_json(reply.status, reply.error_body)
            return
        self._send_json(reply.status, self._error_envelope(reply.status))

    def _error_envelope(
        self,
        status: int,
        message: str | None = None,
        etype: str | None = None,
        code: Any = _DEFAULT,
    ) -> dict[str, Any]:
        """The provider's error body; scripted overrides win over the built-in defaults."""
        reply = self.reply
        message = reply.error_message or message
        etype = reply.error_type or etype
        if reply.error_code is not None:
            code = reply.error_code
        provider = self.route.provider
        if provider == "openai":
            return _openai_error(
                status,
                message=message,
                etype=etype,
                code=code,
                key=self.rec.api_key,
                model=self.rec.model,
            )
        if provider == "anthropic":
            return _anthropic_error(
                status,
                message=message,
                etype=etype,
                code=None if code is _DEFAULT else code,
                request_id=self.request_id,
            )
        retry_after = _header(reply.headers, "retry-after")
        retry_delay = f"{retry_after}s" if retry_after else "20s"
        return _gemini_error(
            status,
            message=message,
            etype=etype,
            reason=None if code is _DEFAULT else code,
            retry_delay=retry_delay,
        )

    def _builtin_error(self) -> tuple[int, dict[str, Any]] | None:
        """Auth, validation and unknown-model errors, as the real APIs would return them."""
        rec, route = self.rec, self.route
        key = rec.api_key
        kind = route.kind
        model = rec.model or ""
        generating = kind in ("chat", "messages", "generate", "count_tokens", "input_tokens")

        if route.provider == "openai":
            if not key:
                return 401, self._error_envelope(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                    "or as the password field (with blank username) if you're accessing the API "
                    "from your browser and are prompted for a username. You can obtain an API key "
                    "from https://platform.openai.com/account/api-keys.",
                    code=None,
                )
            if key.startswith("bad"):
                return 401, self._error_envelope(401)
            if generating:
                if not isinstance(rec.body, dict):
                    return 400, self._error_envelope(
                        400,
                        "We could not parse the JSON body of your request. (HINT: This likely "
                        "means you aren't using your HTTP library correctly.)",
                    )
                if not rec.model:
                    return 400, self._error_envelope(400, "you must provide a model parameter")
                if kind == "chat" and "messages" not in self.body:
                    return 400, self._error_envelope(
                        400,
                        "Missing required parameter: 'messages'.",
                        code="missing_required_parameter",
                    )
                if kind == "chat":
                    problem = _openai_content_problem(self.body.get("messages"))
                    if problem is not None:
                        return 400, self._error_envelope(400, problem, code="invalid_value")
                    problem = _openai_format_problem(self.body.get("response_format"))
                    if problem is not None:
                        return 400, self._error_envelope(400, problem, code="invalid_value")
            if model.startswith("no-such"):
                return 404, self._error_envelope(404)
            return None

        if route.provider == "anthropic":
            if not key:
                return 401, self._error_envelope(
                    401, "x-api-key header is required", "authentication_error"
                )
            if key.startswith("bad"):
                return 401, self._error_envelope(401, "invalid x-api-key", "authentication_error")
            if "anthropic-version" not in rec.headers:
                return 400, self._error_envelope(400, "anthropic-version: header is required")
            if generating:
                problem = self._anthropic_body_problem()
                if problem is not None:
                    return 400, self._error_envelope(400, problem, "invalid_request_error")
            if model.startswith("no-such"):
                return 404, self._error_envelope(404, f"model: {model}", "not_found_error")
            return None

        # gemini
        if kind == "file_upload":
            return None  # the upload URL itself is the credential, like Google's signed URLs
        if not key:
            return 403, self._error_envelope(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
                "PERMISSION_DENIED",
            )
        if key.startswith("bad"):
            return 400, self._error_envelope(
                400, _GEMINI_BAD_KEY_MESSAGE, "INVALID_ARGUMENT", code="API_KEY_INVALID"
            )
        if generating and not isinstance(rec.body, dict):
            return 400, self._error_envelope(400, "Invalid JSON payload received.")
        if kind == "generate":
            problem = _gemini_content_problem(self.body.get("contents")) or _gemini_format_problem(
                self.body.get("generationConfig") or self.body.get("generation_config")
            )
            if problem is not None:
                return 400, self._error_envelope(400, problem, "INVALID_ARGUMENT")
        if model.startswith("no-such"):
            what = f" or is not supported for {route.action}" if route.action else ""
            return 404, self._error_envelope(
                404,
                f"models/{model} is not found for API version {route.api_version},{what}. "
                "Call ListModels to see the list of available models and their supported "
                "methods.",
            )
        return None

    def _anthropic_body_problem(self) -> str | None:
        rec = self.rec
        if not isinstance(rec.body, dict):
            return "Could not parse the request body as JSON."
        if not rec.model:
            return "model: Field required"
        messages = self.body.get("messages")
        if not isinstance(messages, list):
            return "messages: Field required"
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "system":
                return (
                    f'messages.{i}.role: Unexpected role "system". The Messages API accepts a '
                    'top-level `system` parameter, not "system" as an input message role.'
                )
        if self.route.kind == "messages" and "max_tokens" not in self.body:
            return "max_tokens: Field required"
        return _anthropic_content_problem(messages) or _anthropic_format_problem(self.body)

    # --- OpenAI -------------------------------------------------------------------------------

    def _openai_usage(self) -> dict[str, Any]:
        r = self.reply
        usage: dict[str, Any] = {
            "prompt_tokens": r.input_tokens,
            "completion_tokens": r.output_tokens,
            "total_tokens": r.input_tokens + r.output_tokens,
        }
        if r.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": r.cached_tokens, "audio_tokens": 0}
        if r.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {
                "reasoning_tokens": r.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return usage

    def _openai_chat_body(self) -> dict[str, Any]:
        """A non-stream ``chat.completion``."""
        reply = self.reply
        body: dict[str, Any] = {
            "id": _new_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": self.created,
            "model": reply.model or self.rec.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.answer()
                        if not reply.refusal or reply.chunks is not None
                        else None,
                        "refusal": reply.refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": reply.raw_finish_for("openai"),
                }
            ],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if reply.usage:
            body["usage"] = self._openai_usage()
        return body

    def _openai_chat(self) -> None:
        reply = self.reply
        if not self.rec.stream:
            self._send_json(reply.status, self._openai_chat_body())
            return
        model = reply.model or self.rec.model
        completion_id = _new_id("chatcmpl-", 29)
        finish = reply.raw_finish_for("openai")

        options = self.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                obj["usage"] = usage
            return b"data: " + _dumps(obj) + b"\n\n"

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        # (delta field, piece): the content, then the refusal, as far as the reply has them.
        pieces: list[tuple[str, str]] = []
        if not reply.refusal or reply.chunks is not None:
            pieces += [("content", piece) for piece in reply.pieces()]
        if reply.refusal:
            pieces += [("refusal", piece) for piece in split_words(reply.refusal)]

        def events() -> Iterator[_Event]:
            yield ("raw", chunk([choice({"role": "assistant", "content": "", "refusal": None})]))
            for field_name, piece in pieces:
                yield ("text", chunk([choice({field_name: piece})]))
            yield ("end", b"")
            if reply.cut:
                return
            yield ("raw", chunk([choice({}, finish)]))
            if include_usage and reply.usage:
                yield ("raw", chunk([], self._openai_usage()))
            yield ("raw", b"data: [DONE]\n\n")

        error = _openai_error(
            500,
            message=reply.error_message,
            etype=reply.error_type,
            code=reply.error_code,
        )
        self._send_stream(
            _StreamPlan(
                content_type="text/event-stream; charset=utf-8",
                events=events(),
                n_text=len(pieces),
                error_event=b"data: " + _dumps(error) + b"\n\n",
                malformed_event=b'data: {"id": "chatcmpl-broken", "choices": [\n\n',
            )
        )

    def _openai_input_tokens(self) -> None:
        self._send_json(
            self.reply.status,
            {"object": "response.input_tokens", "input_tokens": self.reply.input_tokens},
        )

    def _openai_models(self) -> None:
        data = [
            {"id": mid, "object": "model", "created": 1721172741, "owned_by": "system"}
            for mid in _OPENAI_MODELS
        ]
        self._send_json(self.reply.status, {"object": "list", "data": data})

    def _openai_model(self) -> None:
        mid = self.route.model
        self._send_json(
            self.reply.status,
            {"id": mid, "object": "model", "created": 1721172741, "owned_by": "system"},
        )

    # --- Anthropic ----------------------------------------------------------------------------

    def _anthropic_usage(self, *, start: bool) -> dict[str, Any]:
        r = self.reply
        usage: dict[str, Any] = {"input_tokens": r.input_tokens}
        if r.cached_tokens is not None or r.cache_write_tokens is not None:
            # The real API sends both counts (0 when unused); a message (not a stream's
            # message_delta, whose type has no such field) also breaks the writes down by TTL.
            written = r.cache_write_tokens or 0
            usage["cache_creation_input_tokens"] = written
            usage["cache_read_input_tokens"] = r.cached_tokens or 0
            if start or not self.rec.stream:
                hour = r.cache_write_1h_tokens or 0
                usage["cache_creation"] = {
                    "ephemeral_5m_input_tokens": written - hour,
                    "ephemeral_1h_input_tokens": hour,
                }
        # message_start reports the output so far (the real API says 1); message_delta the total.
        usage["output_tokens"] = 1 if start else r.output_tokens
        if r.reasoning_tokens is not None and not start:
            usage["output_tokens_details"] = {"thinking_tokens": r.reasoning_tokens}
        if start or not self.rec.stream:
            usage["service_tier"] = "standard"
        return usage

    def _anthropic_stop_sequence(self, stop_reason: str) -> str | None:
        if stop_reason != "stop_sequence":
            return None
        stops = self.body.get("stop_sequences")
        return stops[0] if isinstance(stops, list) and stops else "\n\nHuman:"

    def _anthropic_message_body(self) -> dict[str, Any]:
        """A non-stream ``message``."""
        reply = self.reply
        stop_reason = reply.raw_finish_for("anthropic")
        content: list[dict[str, Any]] = []
        if reply.thinking:
            content.append(
                {"type": "thinking", "thinking": _THINKING_TEXT, "signature": _signature()}
            )
        texts = reply.blocks if reply.blocks is not None else [reply.answer()]
        content += [{"type": "text", "text": t} for t in texts]
        body: dict[str, Any] = {
            "id": _new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": reply.model or self.rec.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": self._anthropic_stop_sequence(stop_reason),
        }
        if reply.usage:
            body["usage"] = self._anthropic_usage(start=False)
        return body

    def _anthropic_messages(self) -> None:
        reply = self.reply
        if not self.rec.stream:
            self._send_json(reply.status, self._anthropic_message_body())
            return
        model = reply.model or self.rec.model
        message_id = _new_id("msg_01", 22)
        stop_reason = reply.raw_finish_for("anthropic")
        stop_sequence = self._anthropic_stop_sequence(stop_reason)
        thinking_text = _THINKING_TEXT
        signature = _signature()

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

        def raw(name: str, data: dict[str, Any]) -> _Event:
            return ("raw", event(name, data))

        start_message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if reply.usage:
            start_message["usage"] = self._anthropic_usage(start=True)
        blocks = reply.block_pieces()
        last_text_block = max((b for b, pieces in enumerate(blocks) if pieces), default=None)

        def events() -> Iterator[_Event]:
            yield raw("message_start", {"type": "message_start", "message": start_message})
            ping = raw("ping", {"type": "ping"})
            index = 0
            if reply.thinking:
                yield from [
                    raw(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                        },
                    ),
                    ping,
                    raw(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "thinking_delta", "thinking": thinking_text},
                        },
                    ),
                    raw(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "signature_delta", "signature": signature},
                        },
                    ),
                    raw("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ]
                index = 1
            for block_number, pieces in enumerate(blocks):
                yield raw(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                if block_number == 0 and not reply.thinking:
                    yield ping
                for piece in pieces:
                    delta = {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                    yield ("text", event("content_block_delta", delta))
                if block_number == last_text_block:
                    yield ("end", b"")
                    if reply.cut:
                        return
                yield raw("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            message_delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            }
            if reply.usage:
                message_delta["usage"] = self._anthropic_usage(start=False)
            if last_text_block is None:
                yield ("end", b"")
                if reply.cut:
                    return
            yield raw("message_delta", message_delta)
            yield raw("message_stop", {"type": "message_stop"})

        error_type = reply.error_type or "overloaded_error"
        error = {
            "type": "error",
            "error": {
                "type": error_type,
                "message": reply.error_message or _ANTHROPIC_MESSAGES.get(error_type, error_type),
            },
        }
        self._send_stream(
            _StreamPlan(
                content_type="text/event-stream; charset=utf-8",
                events=events(),
                n_text=sum(len(pieces) for pieces in blocks),
                error_event=event("error", error),
                malformed_event=b'event: content_block_delta\ndata: {"type": "content_block_delta'
                b'", "index": 0, "delta": \n\n',
            )
        )

    def _anthropic_count_tokens(self) -> None:
        self._send_json(self.reply.status, {"input_tokens": self.reply.input_tokens})

    def _anthropic_model_info(self, model_id: str) -> dict[str, Any]:
        display = " ".join(part.capitalize() for part in model_id.split("-"))
        return {
            "type": "model",
            "id": model_id,
            "display_name": display,
            "created_at": "2025-09-29T00:00:00Z",
        }

    def _anthropic_models(self) -> None:
        data = [self._anthropic_model_info(m) for m in _ANTHROPIC_MODELS]
        self._send_json(
            self.reply.status,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"],
                "last_id": data[-1]["id"],
            },
        )

    def _anthropic_model(self) -> None:
        self._send_json(self.reply.status, self._anthropic_model_info(self.route.model or ""))

    # --- Gemini -------------------------------------------------------------------------------

    def _gemini_usage(self, *, final: bool) -> dict[str, Any]:
        r = self.reply
        if not final:
            # Intermediate stream chunks carry the prompt count only.
            return {"promptTokenCount": r.input_tokens, "totalTokenCount": r.input_tokens}
        usage: dict[str, Any] = {
            "promptTokenCount": r.input_tokens,
            "candidatesTokenCount": r.output_tokens,
            "totalTokenCount": r.input_tokens + r.output_tokens + (r.reasoning_tokens or 0),
        }
        if r.cached_tokens is not None:
            usage["cachedContentTokenCount"] = r.cached_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": r.input_tokens}]
        if r.reasoning_tokens is not None:
            usage["thoughtsTokenCount"] = r.reasoning_tokens
        return usage

    def _gemini_response(self, candidate: dict[str, Any], *, final: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"candidates": [candidate]}
        if self.reply.usage:
            body["usageMetadata"] = self._gemini_usage(final=final)
        body["modelVersion"] = self.reply.model or self.rec.model
        body["responseId"] = self._gemini_response_id
        return body

    @staticmethod
    def _gemini_safety_ratings(finish: str) -> list[dict[str, Any]]:
        blocked = finish == "SAFETY"
        return [
            {
                "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                "probability": "HIGH" if blocked else "NEGLIGIBLE",
                **({"blocked": True} if blocked else {}),
            },
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ]

    def _gemini_generate_body(self) -> dict[str, Any]:
        """A non-stream ``GenerateContentResponse``."""
        reply = self.reply
        self._gemini_response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode()
        finish = reply.raw_finish_for("gemini")
        blocked = finish in _GEMINI_BLOCKING
        candidate: dict[str, Any] = {}
        if not blocked:
            parts = [_gemini_thought_part()] if reply.thinking else []
            parts.append({"text": reply.answer()})
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
        if blocked:
            candidate["safetyRatings"] = self._gemini_safety_ratings(finish)
        candidate["index"] = 0
        return self._gemini_response(candidate, final=True)

    def _gemini_generate(self) -> None:
        reply = self.reply
        if not self.rec.stream:
            self._send_json(reply.status, self._gemini_generate_body())
            return
        self._gemini_response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode()
        finish = reply.raw_finish_for("gemini")
        blocked = finish in _GEMINI_BLOCKING

        def data(obj: dict[str, Any]) -> bytes:
            return b"data: " + _dumps(obj) + b"\r\n\r\n"

        def content(text_part: dict[str, Any]) -> dict[str, Any]:
            return {"parts": [text_part], "role": "model"}

        pieces = reply.pieces()

        def events() -> Iterator[_Event]:
            if reply.thinking:
                thought = {"content": content(_gemini_thought_part()), "index": 0}
                yield ("raw", data(self._gemini_response(thought, final=False)))
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1 and not blocked and not reply.cut
                candidate: dict[str, Any] = {"content": content({"text": piece})}
                if last:
                    candidate["finishReason"] = finish
                candidate["index"] = 0
                yield ("text", data(self._gemini_response(candidate, final=last)))
            yield ("end", b"")
            if reply.cut:
                return
            if blocked or not pieces:
                candidate = {} if blocked else {"content": content({"text": ""})}
                candidate["finishReason"] = finish
                if blocked:
                    candidate["safetyRatings"] = self._gemini_safety_ratings(finish)
                candidate["index"] = 0
                yield ("raw", data(self._gemini_response(candidate, final=True)))

        status = reply.error_type or "UNAVAILABLE"
        error = {
            "error": {
                "code": _GEMINI_CODE_FOR_STATUS.get(status, 500),
                "message": reply.error_message
                or _GEMINI_MESSAGE_FOR_STATUS.get(status, "An internal error has occurred."),
                "status": status,
            }
        }
        self._send_stream(
            _StreamPlan(
                content_type="text/event-stream",
                events=events(),
                n_text=len(pieces),
                error_event=data(error),
                malformed_event=b'data: {"candidates": [{"content": \r\n\r\n',
            )
        )

    def _gemini_count_tokens(self) -> None:
        n = self.reply.input_tokens
        self._send_json(
            self.reply.status,
            {"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]},
        )

    @staticmethod
    def _gemini_model_info(model_id: str) -> dict[str, Any]:
        display = " ".join(part.capitalize() for part in model_id.split("-"))
        return {
            "name": f"models/{model_id}",
            "version": "001",
            "displayName": display,
            "description": f"Fake {display}",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
        }

    def _gemini_models(self) -> None:
        self._send_json(
            self.reply.status, {"models": [self._gemini_model_info(m) for m in _GEMINI_MODELS]}
        )

    def _gemini_model(self) -> None:
        self._send_json(self.reply.status, self._gemini_model_info(self.route.model or ""))

    # --- transport ----------------------------------------------------------------------------

    def _base_headers(self) -> list[tuple[str, str]]:
        provider = self.route.provider
        if provider == "openai":
            return [
                ("x-request-id", self.request_id),
                ("openai-processing-ms", "1"),
                ("openai-version", "2020-10-01"),
            ]
        if provider == "anthropic":
            return [("request-id", self.request_id)]
        return []

    def _start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        merged = headers + self._base_headers()
        overridden = {name.lower() for name in self.reply.headers}
        merged = [(k, v) for k, v in merged if k.lower() not in overridden]
        merged += list(self.reply.headers.items())
        self.h.send_response(status, _phrase(status))
        for name, value in merged:
            self.h.send_header(name, value)
        self.h.end_headers()
        self.rec.status = status

    def _send_json(self, status: int, body: dict[str, Any] | bytes) -> None:
        data = body if isinstance(body, bytes) else _dumps(body)
        content_type = "application/json"
        if self.route.provider == "gemini":
            content_type = "application/json; charset=UTF-8"
        self._start_response(
            status, [("Content-Type", content_type), ("Content-Length", str(len(data)))]
        )
        self.h.wfile.write(data)

    def _send_raw(
        self,
        status: int,
        data: bytes,
        content_type: str | None = "application/octet-stream",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Exactly these bytes (a file's content, a JSONL result set, an empty upload answer)."""
        head = [("Content-Type", content_type)] if content_type else []
        self._start_response(status, [*head, ("Content-Length", str(len(data))), *headers])
        self.h.wfile.write(data)

    def _send_stream(self, plan: _StreamPlan) -> None:
        """Send an SSE stream with chunked framing, applying the reply's stream faults."""
        reply, rec = self.reply, self.rec
        self._start_response(
            200,
            [
                ("Content-Type", plan.content_type),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "chunked"),
            ],
        )
        if reply.drop_after == 0:
            raise _Dropped
        n_text = plan.n_text
        sent = 0
        malformed_pending = reply.malformed
        for kind, payload in plan.events:
            if kind == "raw":
                self._write_chunk(payload)
                continue
            final = kind == "end"
            error_after, drop_after = reply.stream_error_after, reply.drop_after
            if error_after is not None and (error_after == sent or (final and error_after > sent)):
                self._write_chunk(plan.error_event)
                break
            if drop_after is not None and (drop_after == sent or (final and drop_after > sent)):
                raise _Dropped
            if malformed_pending and (sent == 1 or (final and sent == 0)):
                self._write_chunk(plan.malformed_event)
                malformed_pending = False
            if final:
                continue
            if sent > 0 and reply.chunk_delay > 0:
                self._sleep(reply.chunk_delay)
            if reply.gate is not None and sent == n_text - 1:
                self._wait_gate(reply.gate)
            self._write_chunk(payload)
            sent += 1
            rec.chunks_sent = sent
        self.h.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, payload: bytes) -> None:
        # One write per event: the socket is unbuffered with TCP_NODELAY, so it leaves now.
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _sleep(self, seconds: float) -> None:
        if self.fake._stopping.wait(seconds):
            raise _Dropped

    def _wait_gate(self, gate: threading.Event) -> None:
        deadline = time.monotonic() + _GATE_LIMIT
        while not gate.wait(0.05):
            if self.fake._stopping.is_set():
                raise _Dropped
            if time.monotonic() >= deadline:
                return


# --- request-body checks: message content parts ----------------------------------------------
#
# Each API accepts text and attachments only in its own shapes, and answers any other shape with
# a 400 in its own words, as below. Attachments are accepted as the real APIs take them inline:
# OpenAI an `image_url` data URL (png, jpeg, gif, webp) or a `file` whose `file_data` is a PDF
# data URL; Anthropic an `image` (png, jpeg, gif, webp) or `document` (PDF) block with a base64
# source; Gemini an `inlineData`/`inline_data` part with `mimeType`/`mime_type` and base64 data
# (standard or URL-safe alphabet, as protobuf's JSON reader takes it). A test reads the bytes
# back with `decode_base64`.

_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_OPENAI_PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_ANTHROPIC_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
)
# Part fields Gemini's JSON reader knows (protobuf accepts the camelCase and the proto name).
_GEMINI_PART_FIELDS = frozenset(
    {
        "text",
        "inlineData",
        "inline_data",
        "fileData",
        "file_data",
        "functionCall",
        "function_call",
        "functionResponse",
        "function_response",
        "executableCode",
        "executable_code",
        "codeExecutionResult",
        "code_execution_result",
        "videoMetadata",
        "video_metadata",
        "thought",
        "thoughtSignature",
        "thought_signature",
    }
)
# Gemini takes these inline (its image understanding lists no GIF).
_GEMINI_INLINE_TYPES = re.compile(
    r"image/(png|jpeg|webp|heic|heif)|application/pdf|text/[\w.+-]+|audio/[\w.+-]+|video/[\w.+-]+"
)


def decode_base64(data: object, *, url_safe: bool = True) -> bytes | None:
    """The bytes of base64 text, None if it is not base64. `url_safe` (protobuf's reading) also
    takes the URL-safe alphabet and missing padding; otherwise only the standard, padded form."""
    if not isinstance(data, str) or not data:
        return None
    text = data
    if url_safe:
        text = data.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def _last_message_text(body: dict[str, Any]) -> str:
    """The text of a request's last message, in any of the three providers' formats."""
    messages = body.get("messages") or body.get("contents") or []
    last = messages[-1] if isinstance(messages, list) and messages else {}
    content = last.get("content", last.get("parts")) if isinstance(last, dict) else None
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _quoted(names: Iterable[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _openai_content_problem(messages: Any) -> str | None:
    """The 400 message OpenAI sends for a content part it cannot take, or None."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _OPENAI_PART_TYPES:
                return (
                    f"Invalid value: {kind!r}. Supported values are: "
                    f"{_quoted(_OPENAI_PART_TYPES)}. ({where}.type)"
                )
            if kind == "text" and not isinstance(part.get("text"), str):
                return f"Invalid type for '{where}.text': expected a string."
            if kind == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if not isinstance(url, str):
                    return f"Missing required parameter: '{where}.image_url.url'."
                if url.startswith(("http://", "https://")):
                    continue
                data_url = _DATA_URL.fullmatch(url)
                if data_url is None or data_url.group(1) not in _IMAGE_TYPES:
                    return (
                        f"Invalid image URL: '{where}.image_url.url'. Expected a base64-encoded "
                        "data URL with an image MIME type (e.g. 'data:image/png;base64,...')."
                    )
                if decode_base64(data_url.group(2), url_safe=False) is None:
                    return (
                        "You uploaded an unsupported image. Please make sure your image is valid."
                    )
            if kind == "file":
                file = part.get("file") if isinstance(part.get("file"), dict) else {}
                if "file_id" in file:
                    continue
                data_url = _DATA_URL.fullmatch(str(file.get("file_data", "")))
                if (
                    data_url is None
                    or data_url.group(1) != "application/pdf"
                    or decode_base64(data_url.group(2), url_safe=False) is None
                ):
                    return (
                        f"Invalid file data: '{where}.file.file_data'. Expected a base64-encoded "
                        "data URL with an application/pdf MIME type."
                    )
    return None


def _anthropic_content_problem(messages: list[Any]) -> str | None:
    """The 400 message Anthropic sends for a content block it cannot take, or None."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in _ANTHROPIC_BLOCK_TYPES:
                expected = ", ".join(f"'{t}'" for t in _ANTHROPIC_BLOCK_TYPES)
                return (
                    f"{where}: Input tag {kind!r} found using 'type' does not match any of the "
                    f"expected tags: {expected}"
                )
            if kind == "text" and not isinstance(block.get("text"), str):
                return f"{where}.text.text: Input should be a valid string"
            if kind not in ("image", "document"):
                continue
            source = block.get("source") if isinstance(block.get("source"), dict) else {}
            if source.get("type") in ("url", "file") or (
                kind == "document" and source.get("type") == "text"
            ):
                continue
            if source.get("type") != "base64":
                return f"{where}.{kind}.source: Input tag {source.get('type')!r} does not match"
            allowed = _IMAGE_TYPES if kind == "image" else ("application/pdf",)
            if source.get("media_type") not in allowed:
                expected = " or ".join(f"'{t}'" for t in allowed)
                return f"{where}.{kind}.source.base64.media_type: Input should be {expected}"
            if decode_base64(source.get("data"), url_safe=False) is None:
                return f"{where}.{kind}.source.base64.data: invalid base64 data"
    return None


def _gemini_content_problem(contents: Any) -> str | None:
    """The 400 message Gemini sends for a part it cannot take, or None."""
    for i, content in enumerate(contents if isinstance(contents, list) else ()):
        parts = content.get("parts") if isinstance(content, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            where = f"contents[{i}].parts[{j}]"
            if not isinstance(part, dict):
                return f"Invalid JSON payload received. Expected an object at '{where}'."
            for name in part:
                if name not in _GEMINI_PART_FIELDS:
                    return (
                        f"Invalid JSON payload received. Unknown name {name!r} at '{where}': "
                        "Cannot find field."
                    )
            blob = part.get("inlineData", part.get("inline_data"))
            if blob is None:
                continue
            blob = blob if isinstance(blob, dict) else {}
            mime = blob.get("mimeType", blob.get("mime_type"))
            if not isinstance(mime, str) or not mime:
                return "Request contains an invalid argument."
            if not _GEMINI_INLINE_TYPES.fullmatch(mime):
                return f"Unsupported MIME type: {mime}"
            if decode_base64(blob.get("data")) is None:
                return (
                    f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding "
                    "failed"
                )
    return None


def _schema_objects(node: Any, path: str = "root") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema in a JSON Schema, with where it is (properties, items, anyOf, $defs)."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        yield path, node
    for key in ("properties", "$defs"):
        for name, child in (node.get(key) or {}).items():
            yield from _schema_objects(child, f"{path}.{key}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schema_objects(node["items"], f"{path}.items")
    for index, child in enumerate(node.get("anyOf") or ()):
        yield from _schema_objects(child, f"{path}.anyOf.{index}")


def _openai_format_problem(response_format: Any) -> str | None:
    """What OpenAI says of a `json_schema` response format it refuses (wire-wave2.md §1.1):
    a missing or badly formed name, no schema, and in strict mode an object without
    `additionalProperties: false` or a property left out of `required`."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        return "Missing required parameter: 'response_format.json_schema.schema'."
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return "Invalid 'response_format.json_schema.name': string does not match pattern."
    if spec.get("strict") is not True:
        return None
    for path, node in _schema_objects(spec["schema"]):
        if node.get("additionalProperties") is not False:
            return (
                f"Invalid schema for response_format '{name}': In context=({path}), "
                "'additionalProperties' is required to be supplied and to be false."
            )
        missing = [k for k in node.get("properties") or {} if k not in (node.get("required") or ())]
        if missing:
            return (
                f"Invalid schema for response_format '{name}': In context=({path}), 'required' "
                f"is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
    return None


def _anthropic_format_problem(body: dict[str, Any]) -> str | None:
    """Anthropic's refusals of `output_config.format` (wire-wave2.md §1.2): the old top-level
    `output_format` gone from `create()`, a format that is not `json_schema` with a schema, and
    objects that allow extra properties."""
    config = body.get("output_config")
    if config is None:
        return None
    form = config.get("format") if isinstance(config, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    if not isinstance(form.get("schema"), dict):
        return "output_config.format.schema: Field required"
    for path, node in _schema_objects(form["schema"]):
        if node.get("additionalProperties") is not False:
            return (
                f"output_config.format.schema: For '{path}', 'additionalProperties' must be "
                "explicitly set to false"
            )
    return None


def _gemini_format_problem(config: Any) -> str | None:
    """Gemini's refusals of a response schema (wire-wave2.md §1.3): JSON Schema without the
    JSON mime type, or both schema fields at once."""
    if not isinstance(config, dict):
        return None
    json_schema = config.get("responseJsonSchema", config.get("response_json_schema"))
    google_schema = config.get("responseSchema", config.get("response_schema"))
    if json_schema is None:
        return None
    if google_schema is not None:
        return "response_schema and response_json_schema cannot both be set."
    mime = config.get("responseMimeType", config.get("response_mime_type"))
    if mime != "application/json":
        return (
            "Invalid argument: response_json_schema requires response_mime_type to be "
            "application/json."
        )
    return None


_THINKING_TEXT = "The user wants a short answer."


def _signature() -> str:
    """An opaque Anthropic thinking-block signature."""
    return base64.b64encode(b"fake-signature-" + uuid.uuid4().bytes).decode()


def _gemini_thought_part() -> dict[str, Any]:
    """A Gemini thought-summary part: text that ``response.text`` must not include."""
    return {"text": "**Planning** The user wants a short answer.", "thought": True}


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o3-mini")
# Not "claude-sonnet-4-5": anthropic 2.14 lists it in DEPRECATED_MODELS and warns when it is used,
# which pytest's filterwarnings=error turns into a failure.
_ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-8")
_GEMINI_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")


# --------------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Parses and records each request, then hands it to an ``_Exchange``.

    HTTP/1.1 keep-alive, for JSON replies (they carry Content-Length) and for streams (chunked)
    alike; a fault that drops the connection closes it.
    """

    protocol_version = "HTTP/1.1"
    server_version = "fakeserver/1.0"
    sys_version = ""
    timeout = _HANDLER_IDLE_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, small SSE events can sit in Nagle's buffer for up to 40 ms,
        # which would make "chunks arrive incrementally" tests flaky.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.request, add=True)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.server.fake._track(self.request, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log; tests inspect ``FakeServer.requests`` instead."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        started = time.monotonic()
        raw = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        route = _route(self.command, split.path, headers, query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(
            provider=route.provider,
            method=self.command,
            path=split.path,
            query=query,
            headers=headers,
            body=body,
            raw_body=raw,
            stream=_wants_stream(route, body),
            model=_requested_model(route, body),
            api_key=_api_key(route.provider, headers, query),
            started_at=started,
            client_port=self.client_address[1],
            prefix=route.prefix,
            kind=route.kind,
        )
        reply = fake._record(rec, pop=route.kind not in BATCH_ROUTE_KINDS)
        try:
            _Exchange(self, rec, reply, route, fake).run()
        except _Dropped:
            self._abort()
        except OSError:
            # The client went away (timeout, closed stream early): nothing left to tell it.
            self.close_connection = True
        except Exception:
            fake._note_error(traceback.format_exc())
            self._abort()
        finally:
            rec.finished_at = time.monotonic()
            rec.done.set()

    def _abort(self) -> None:
        """Close the connection without finishing the response (FIN, not a clean HTTP end)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


def _wants_stream(route: _Route, body: Any) -> bool:
    if route.provider == "gemini":
        return route.action == "streamGenerateContent"
    if route.kind in ("chat", "messages") and isinstance(body, dict):
        return body.get("stream") is True
    return False


def _requested_model(route: _Route, body: Any) -> str | None:
    if route.model is not None:
        return route.model
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return body["model"]
    return None


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _api_key(provider: str, headers: dict[str, str], query: dict[str, str]) -> str | None:
    """The key as each provider reads it (anthropic 2.x sends Bearer, older SDKs x-api-key)."""
    if provider == "openai":
        return _bearer(headers)
    if provider == "anthropic":
        return headers.get("x-api-key") or _bearer(headers)
    if provider == "gemini":
        return headers.get("x-goog-api-key") or query.get("key") or None
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or _bearer(headers)
