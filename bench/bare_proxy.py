"""The floor under `llmcli serve` in bench/serve.py: the openai SDK's async client behind uvicorn.

    python bench/bare_proxy.py PORT     # OPENAI_BASE_URL and OPENAI_API_KEY from the environment

What a developer would write in a few lines to relay Chat Completions to OpenAI: uvicorn (with
httptools and uvloop, as serve runs), one `openai.AsyncOpenAI` client with its defaults, each
request's JSON passed to `chat.completions.create` and the SDK's answer (or each chunk, as an
SSE event) passed back. No checks, no retries of its own, no log, no prices: what serve adds
beyond this is what serve's features cost; what this adds over the fake is the SDK and the
server's floor.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai
import uvicorn

_client: openai.AsyncOpenAI | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    request["model"] = request["model"].rsplit("/", 1)[-1]
    if _client is None:
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


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
