"""The floor under `llmcli serve` in bench/serve.py: the openai SDK's async client behind uvicorn.

    python bench/bare_proxy.py PORT          # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
    python bench/bare_proxy.py PORT --raw    # no SDK: the body relayed by a bare httpx2 client

What a developer would write in a few lines to relay Chat Completions to OpenAI: uvicorn (with
httptools and uvloop, as serve runs), one `openai.AsyncOpenAI` client with its defaults, each
request's JSON passed to `chat.completions.create` and the SDK's answer (or each chunk, as an
SSE event) passed back. No checks, no retries of its own, no log, no prices: what serve adds
beyond this is what serve's features cost; what this adds over the fake is the SDK and the
server's floor.

`--raw` goes one floor lower: no SDK at all, the request's bytes posted by one
`httpx2.AsyncClient` (the HTTP client under the SDKs, with its defaults) and the reply's bytes
passed back as they arrive, not even parsed. What this adds over the fake is one more process
and one more HTTP hop in Python on this machine: no server that calls a provider through an
HTTP client in Python adds less.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import uvicorn

_client: Any = None
RAW = "--raw" in sys.argv[2:]


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def sdk(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] != "http":
        return
    request = json.loads(await _body(receive))
    request["model"] = request["model"].rsplit("/", 1)[-1]
    if _client is None:
        import openai

        _client = openai.AsyncOpenAI()
    if not request.get("stream"):
        reply = await _client.chat.completions.create(**request)
        data = reply.model_dump_json().encode()
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": data})
        return
    stream = await _client.chat.completions.create(**request)
    head = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    async for chunk in stream:
        event = b"data: " + chunk.model_dump_json().encode() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if _client is None:
        import httpx2

        _client = httpx2.AsyncClient()
    url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
    headers = {
        "content-type": "application/json",
        "authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
    }
    async with _client.stream("POST", url, content=body, headers=headers) as reply:
        kind = reply.headers.get("content-type", "application/json").encode()
        head = [(b"content-type", kind)]
        await send({"type": "http.response.start", "status": reply.status_code, "headers": head})
        async for piece in reply.aiter_raw():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        raw if RAW else sdk,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
