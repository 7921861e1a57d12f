"""`llmcli serve`: the HTTP gateway (llmcli.serve), started from the command line."""

from __future__ import annotations

import click

from llmcli import render
from llmcli.cli import CONTEXT, FLOAT, INTEGER, STATE, environment


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=INTEGER, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--workers",
    type=INTEGER,
    default=1,
    show_default=True,
    help="Processes serving in parallel (each with its own connections and event loop).",
)
@click.option(
    "--grace",
    type=FLOAT,
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds that calls in flight may take to finish before they are cut.",
)
def serve(host: str, port: int, workers: int, grace: float) -> int:
    """Serve the providers over HTTP: OpenAI's API, an SSE stream and a chat page.

    Endpoints: POST /v1/chat/completions and GET /v1/models (OpenAI's shapes; model
    `provider/model`), POST /stream (Server-Sent Events), GET /health, and a chat page at /.
    Every call goes through the same retries, prices, budgets and log as `ask`.
    With LLMCLI_SERVE_TOKEN set, requests need `Authorization: Bearer <token>`; without it
    only a loopback address may be used.

    \b
    Examples:
      llmcli serve                          # http://127.0.0.1:8080
      LLMCLI_SERVE_TOKEN=$(openssl rand -hex 32) llmcli serve --host 0.0.0.0
      curl -N localhost:8080/stream -d '{"message": "hi", "provider": "echo"}'
    """
    from llmcli import errors

    if not 0 <= port <= 65535:
        raise errors.UsageError(f"invalid value for --port: {port} is not from 0 to 65535")
    if workers < 1:
        raise errors.UsageError(f"invalid value for --workers: {workers} is less than 1")
    if grace < 0:
        raise errors.UsageError(f"invalid value for --grace: {grace:g} is negative")
    from llmcli import serve as server

    return server.start(
        environment(),
        host=host,
        port=port,
        workers=workers,
        grace=grace,
        say=render.diag,
        env_file=STATE.env_file,
        config_file=STATE.config_file,
    )
