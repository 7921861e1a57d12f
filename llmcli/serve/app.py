"""The HTTP application: routes, auth, and one call's life from a request to its last byte.

Every call goes through `lifecycle.arun`, the command line's own path (retries, pricing, budgets,
fallbacks, the log) on the providers' async SDK clients, which `providers.connect` keeps, one
per provider and event loop, so requests reuse their connections and the loop never waits on a
synchronous SDK call.

A response is written by `CallResponse`, not Starlette's `StreamingResponse`, for two reasons:
its status is chosen only when the first token (or the error before it) is known, so a rate
limit before any text is a real 429 rather than an error inside a 200 stream; and it watches for
the client going away, then cancels the call at once: `arun` closes the upstream stream and logs
the call `interrupted` with the text that had arrived.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from llmcli import core, lifecycle
from llmcli.journal import new_conversation_id
from llmcli.serve import wire
from llmcli.serve.state import State

log = logging.getLogger("llmcli.serve")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx would otherwise hold the tokens back
]


def error_response(error: wire.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _send_error(send: Send, error: wire.ApiError) -> None:
    await error_response(error)({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # a JSONResponse never reads
    return {"type": "http.disconnect"}


async def _body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


class CallResponse(Response):
    """Runs `produce(send)` and cancels it the moment the client disconnects."""

    def __init__(self, produce: Callable[[Send], Awaitable[None]]) -> None:
        self.produce = produce
        self.background = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self.produce(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                task.cancel()
            # The call records itself as interrupted on cancellation: wait for it to queue its row.
            await asyncio.gather(work, gone, return_exceptions=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Calls:
    """The two routes that make calls, answered straight from the ASGI scope; every other
    request goes to FastAPI.

    FastAPI's middleware, routing and parameter solving give these routes nothing (their bodies
    are read and checked by `wire`, every failure is answered by `guarded`), yet cost about a
    tenth of serve's own CPU time per request, and wrap every event of a stream in three more
    `send` layers (docs/performance.md, "serve").
    """

    def __init__(self, app: FastAPI, routes: dict[str, Callable[[Request], Awaitable[Any]]]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response = await route(Request(scope, receive))
        await response(scope, receive, send)


def build(state: State) -> Any:
    """The application for one worker's `State`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llmcli = state

    @app.exception_handler(wire.ApiError)
    async def api_error(request: Request, exc: wire.ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return error_response(wire.ApiError(exc.status_code, str(exc.detail), code=code))

    def guarded(route: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
        """Every failure of a route answered in OpenAI's shape, here: Starlette's own handler
        for unexpected errors answers, then re-raises, and uvicorn logs a traceback."""

        @functools.wraps(route)
        async def answer(request: Request) -> Any:
            try:
                return await route(request)
            except Exception as exc:
                return error_response(_failure(exc))

        return answer

    def authorize(request: Request) -> None:
        if state.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: how long the comparison takes says nothing about the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), state.token
        ):
            raise wire.ApiError(
                401,
                "missing or wrong token: send Authorization: Bearer <LLMCLI_SERVE_TOKEN>",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def read_json(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > wire.MAX_BODY:
            raise _too_large()
        pieces, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > wire.MAX_BODY:
                raise _too_large()
            pieces.append(piece)
        return wire.parse_json(b"".join(pieces))

    def tag_of(request: Request, flags: dict[str, Any]) -> None:
        header = request.headers.get("x-llmcli-tag")
        if header is not None:
            flags["tag"] = header

    def prepare(target: wire.Target, messages: Any, flags: dict[str, Any]) -> tuple[Any, Any]:
        flags = {**flags, "provider": target.provider, "model": target.model}
        call = core.prepare(messages, flags, state.env)
        return call, core.fallbacks(call, flags, state.env)

    async def run(call: Any, chain: Any, stream: bool, deliver: Any) -> lifecycle.Outcome:
        # A log that cannot be written is warned about by the journal's writer thread.
        return await lifecycle.arun(
            call,
            state.journal,
            conversation_id=new_conversation_id(),
            stream=stream,
            deliver=deliver,
            on_retry=lambda notice: log.info("%s: %s", call.request.provider, notice),
            fallbacks=chain,
            on_fallback=lambda notice: log.info("%s", notice),
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        # Open like /health: a static page with no data; the calls it makes need the token.
        return HTMLResponse(state.page())

    @app.get("/v1/models")
    @guarded
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "object": "list",
            "data": [
                {"id": f"{p}/{m}", "object": "model", "created": 0, "owned_by": p}
                for p, m in state.models()
            ],
        }

    @app.post("/v1/chat/completions")
    @guarded
    async def chat_completions(request: Request) -> Any:
        authorize(request)
        chat = wire.chat_request(await read_json(request))
        tag_of(request, chat.flags)
        call, chain = prepare(chat.target, chat.messages, chat.flags)
        cid, created = f"chatcmpl-{new_conversation_id()}{new_conversation_id()}", wire.now()
        if chat.stream:
            return CallResponse(_chat_stream(run, call, chain, cid, created, chat.include_usage))
        return CallResponse(_chat_whole(run, call, chain, cid, created))

    @app.post("/stream")
    @guarded
    async def stream(request: Request) -> Any:
        authorize(request)
        prompt = wire.stream_request(await read_json(request))
        tag_of(request, prompt.flags)
        call, chain = prepare(prompt.target, prompt.messages, prompt.flags)
        return CallResponse(_token_stream(run, call, chain))

    return _Calls(app, {"/v1/chat/completions": chat_completions, "/stream": stream})


def _too_large() -> wire.ApiError:
    return wire.ApiError(
        413, f"the body is larger than {wire.MAX_BODY // (1024 * 1024)} MB", code="body_too_large"
    )


Runner = Callable[..., Awaitable[lifecycle.Outcome]]


def _chat_whole(run: Runner, call: Any, chain: Any, cid: str, created: int) -> Any:
    async def produce(send: Send) -> None:
        try:
            outcome = await run(call, chain, False, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _send_error(send, _failure(exc))
            return
        body = wire.completion(cid, created, outcome.response, outcome.request_uid)
        await JSONResponse(body)({"type": "http"}, _no_receive, send)

    return produce


class _Opener:
    """Writes the stream, sending the response's head (and `first`, the events that open it)
    the first time there is something to send: the first token, or the end. `first` goes out
    with that first piece, in one write.

    Each token is one write. Joining the tokens decoded from one upstream read into one write
    was measured (docs/performance.md, "serve", fourth pass) and saved no CPU time here: the
    fake's events mostly reach serve one or two per read, and the writer task it needs costs
    what the writes saved."""

    def __init__(self, send: Send, first: bytes = b"") -> None:
        self.send = send
        self.first = first
        self.started = False

    async def write(self, data: bytes, more: bool = True) -> None:
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            data = self.first + data
        await _body(self.send, data, more)


def _chat_stream(
    run: Runner, call: Any, chain: Any, cid: str, created: int, include_usage: bool
) -> Any:
    model = call.request.model

    def tail(outcome: Any) -> bytes:
        response = outcome.response
        end = wire.sse(wire.chunk(cid, created, response.model, {}, wire.finish_reason(response)))
        if include_usage:
            last = wire.chunk(cid, created, response.model, {})
            last["choices"] = []
            last["usage"] = wire.usage(response.usage)
            last["llmcli"] = wire.extra(response, outcome.request_uid)
            end += wire.sse(last)
        return end

    async def produce(send: Send) -> None:
        opened = _Opener(
            send, wire.sse(wire.chunk(cid, created, model, {"role": "assistant", "content": ""}))
        )
        await _stream_events(
            send,
            opened,
            lambda deliver: run(call, chain, True, deliver),
            token=wire.sse_of_text(wire.chunk(cid, created, model, {"content": ""}), "content"),
            failed=lambda error: error.body(),
            tail=tail,
        )

    return produce


def _token_stream(run: Runner, call: Any, chain: Any) -> Any:
    """The tutorial's `/stream`: `{"token"}` events, one summary event, then `[DONE]`."""

    def tail(outcome: Any) -> bytes:
        response = outcome.response
        summary = {
            "finish_reason": wire.finish_reason(response),
            "usage": wire.usage(response.usage),
            "cost_usd": wire.cost(response),
            "provider": response.provider,
            "model": response.model,
            "request_id": outcome.request_uid,
        }
        return wire.sse(summary)

    async def produce(send: Send) -> None:
        await _stream_events(
            send,
            _Opener(send),
            lambda deliver: run(call, chain, True, deliver),
            token=wire.sse_of_text({"token": ""}, "token"),
            failed=lambda e: {"error": {"type": e.kind, "message": e.message, "code": e.code}},
            tail=tail,
        )

    return produce


async def _stream_events(
    send: Send,
    opened: _Opener,
    start: Callable[[Callable[[str], Awaitable[None]]], Awaitable[Any]],
    *,
    token: Callable[[str], bytes],
    failed: Callable[[wire.ApiError], Any],
    tail: Callable[[Any], bytes],
) -> None:
    """A streamed call as server-sent events, for both streaming routes: each piece as the
    event `token(text)`, then `tail(outcome)` and `[DONE]`. A failure before anything was sent is a
    plain error response with its status; after, it is one `failed(error)` event and `[DONE]`."""

    async def deliver(text: str) -> None:
        await opened.write(token(text))

    try:
        outcome = await start(deliver)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = _failure(exc)
        if not opened.started:
            await _send_error(send, error)
            return
        await _body(send, wire.sse(failed(error)) + wire.sse("[DONE]"), more=False)
        return
    await opened.write(tail(outcome) + wire.sse("[DONE]"), more=False)


def _failure(exc: BaseException) -> wire.ApiError:
    error = wire.from_error(exc)
    if error.status >= 500 and error.code is None:
        log.error("internal error: %s", type(exc).__name__)
    return error
