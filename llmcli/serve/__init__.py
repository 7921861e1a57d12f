"""`llmcli serve`: the command line's core behind HTTP (docs/serve.md).

An outer layer beside `cli.py`: it imports the core and FastAPI/uvicorn, never Click, and nothing
else imports it, so no other command pays for loading a web framework. `start` does the start-up
checks (the ones `ask` makes before calling a provider, for every provider), then serves until
SIGTERM or Ctrl-C, letting calls in flight finish for up to `grace` seconds.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from llmcli import config, errors, providers

# How `--env-file` and `--config` reach the worker processes `--workers N` starts (they build
# their own state: a log connection and SDK clients cannot cross a fork).
_ENV_FILE = "_LLMCLI_SERVE_ENV_FILE"
# The cyclic collector's youngest generation is collected after 30,000 allocations instead of
# Python's 700. A server's allocations are nearly all freed by reference counting when their
# request ends, so a pass finds about the same objects (those of the requests in flight) however
# rarely it runs: 40 times fewer passes, each about as long. Measured in bench/serve.py
# (docs/performance.md, "serve", fifth pass): 0.2 ms less CPU a streamed request and a lower tail.
GC_THRESHOLDS = (30_000, 10, 10)
_CONFIG_FILE = "_LLMCLI_SERVE_CONFIG_FILE"


class Readiness(NamedTuple):
    """One provider at start-up: usable or not, and why (never the key itself)."""

    provider: str
    ready: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.provider}: {'ready' if self.ready else 'not available'} ({self.detail})"


def readiness(env: config.Environment) -> list[Readiness]:
    """Each provider's key and endpoint checked as `ask` checks them before a call."""
    from llmcli import endpoints, redact

    endpoints.load(env)  # named endpoints join the list; a malformed config.toml is exit 3
    found = []
    for name in providers.names():
        try:
            creds = config.credentials(name, env)
        except errors.ConfigError as exc:
            found.append(Readiness(name, False, exc.message))
            continue
        detail = f"key from {creds.key_var}" if creds.key_var else "no key needed"
        if creds.base_url:
            detail += f", endpoint {redact.display_url(creds.base_url)}"
        found.append(Readiness(name, True, detail))
    return found


def loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost is not trusted)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token(env: config.Environment, host: str) -> str | None:
    """LLMCLI_SERVE_TOKEN, required off loopback: provider keys must not serve the network."""
    found = env.lookup("LLMCLI_SERVE_TOKEN")
    value = found[0].strip() if found else None
    if value and config.key_problem(value):
        raise errors.ConfigError(
            f"LLMCLI_SERVE_TOKEN {config.key_problem(value)}",
            "use a long random token, e.g.: export LLMCLI_SERVE_TOKEN=$(openssl rand -hex 32)",
        )
    if not value and not loopback(host):
        raise errors.ConfigError(
            f"refusing to serve on {host} without LLMCLI_SERVE_TOKEN: anyone who can reach it "
            "could spend on your provider keys",
            "set one (export LLMCLI_SERVE_TOKEN=$(openssl rand -hex 32)) or bind to 127.0.0.1",
        )
    return value or None


def check(env: config.Environment, host: str) -> tuple[list[Readiness], str | None, bool]:
    """Everything start-up refuses to serve without (ConfigError, exit 3): malformed settings,
    no token off loopback, no usable provider. Returns the providers, the token, and whether
    calls are logged."""
    settings = config.resolve({}, env)  # every LLM_* setting, as `ask` would read it
    secret = token(env, host)
    found = readiness(env)
    if not any(r.ready for r in found):
        raise errors.ConfigError(
            "no provider is usable: " + "; ".join(str(r) for r in found),
            "set at least one provider's key, e.g. export OPENAI_API_KEY=...",
        )
    return found, secret, settings.log


def warm(env: config.Environment, ready: list[str]) -> None:
    """Load now what a provider's first call would: its SDK and the price data.

    Imports run on the event loop's thread: done at a request, they would hold every other
    request for the second or so an SDK takes to import. Nothing is sent anywhere.
    """
    from llmcli import core
    from llmcli.types import Message, Response, Usage

    for name in ready:
        if not providers.spec(name).remote:
            continue  # nothing to load
        try:
            call = core.prepare([Message("user", "warm-up")], {"provider": name}, env)
            call.provider.client()
            core.priced(call, Response("", name, call.request.model, Usage(1, 1)))
        except errors.LlmcliError:  # its first request will say what is wrong
            continue


def event_loop(env: config.Environment) -> str:
    """uvloop where it is installed (about 0.2 ms less CPU a request than asyncio's own loop,
    docs/performance.md), else asyncio's; LLMCLI_SERVE_LOOP=asyncio keeps asyncio's anyway.

    Both end a read that outlives LLM_TIMEOUT alike (`llmcli.transport._cut`)."""
    found = env.lookup("LLMCLI_SERVE_LOOP")
    wanted = (found[0].strip().lower() if found else "") or "auto"
    if wanted not in ("auto", "asyncio", "uvloop"):
        raise errors.ConfigError(
            f"LLMCLI_SERVE_LOOP must be auto, asyncio or uvloop, not {wanted!r}",
            "unset it to use uvloop where it is installed",
        )
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise errors.ConfigError(
                "LLMCLI_SERVE_LOOP=uvloop, but uvloop is not installed", "pip install uvloop"
            ) from None
        return "asyncio"
    return "uvloop"


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's and our lines on stderr, one plain line each (no colours, no tracebacks of
    client errors: those are answered, not crashes)."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            # uvicorn's start and stop chatter stays out; our retry and fallback lines, one per
            # event as `ask` prints them, stay in.
            **{
                name: {"handlers": ["stderr"], "level": level, "propagate": False}
                for name in ("uvicorn", "uvicorn.error")
            },
            "llmcli.serve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def environment() -> config.Environment:
    """A worker's settings, read as the command that started it read them."""
    return config.Environment(
        env_file=os.environ.get(_ENV_FILE) or None, config_file=os.environ.get(_CONFIG_FILE) or None
    )


def worker_app() -> Any:
    """The application of one `--workers` process (uvicorn's factory)."""
    from llmcli.serve.app import build
    from llmcli.serve.state import State

    env = environment()
    found, secret, log = check(env, os.environ.get("_LLMCLI_SERVE_HOST", "127.0.0.1"))
    ready = [r.provider for r in found if r.ready]
    warm(env, ready)
    state = State(env, secret, ready, log=log)
    app = _closing_the_log(build(state), state)
    gc.collect()  # a worker is a fresh interpreter: start-up never paused its collector
    long_running()
    return app


def _closing_the_log(app: Any, state: Any) -> Any:
    """`app`, closing the log (the rows still queued written) at the ASGI lifespan's shutdown.

    A `--workers` process runs uvicorn's own server, which after a graceful stop raises the
    signal again with the default handler: the process dies there, before any exit hook, and
    the rows of the calls the stop cut short (logged `interrupted`) would die with it. The
    shutdown event comes after the calls in flight have finished or been cut, and before that."""

    async def closing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                state.journal.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return closing


def start(
    env: config.Environment,
    *,
    host: str,
    port: int,
    workers: int,
    grace: float,
    say: Callable[[str], None],
    env_file: str | None = None,
    config_file: str | None = None,
) -> int:
    """Check, print one line per provider and the URL, serve; the exit status once stopped."""
    import uvicorn

    ready, secret, log = check(env, host)
    loop = event_loop(env)
    for line in ready:
        say(str(line))
    shown = f"[{host}]" if ":" in host else host
    say(f"serving on http://{shown}:{port}" + ("" if secret else " (no token: loopback only)"))
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": _log_config("WARNING"),
        "access_log": False,  # one line per request costs more than the request on 2 cores
        "timeout_graceful_shutdown": grace,
        "lifespan": "off",
        "server_header": False,
        # httptools (a C parser) instead of h11: about 0.1-0.3 ms less CPU a request.
        "http": "httptools",
        "loop": loop,
    }
    if workers > 1:
        os.environ[_ENV_FILE] = env_file or ""
        os.environ[_CONFIG_FILE] = config_file or ""
        os.environ["_LLMCLI_SERVE_HOST"] = host
        # The lifespan's shutdown is where a worker writes its last rows (`_closing_the_log`).
        common["lifespan"] = "on"
        uvicorn.run("llmcli.serve:worker_app", factory=True, workers=workers, **common)
        return 0
    from llmcli import startup
    from llmcli.serve.app import build
    from llmcli.serve.state import State

    usable = [r.provider for r in ready if r.ready]
    warm(env, usable)
    state = State(env, secret, usable, log=log)
    server = _server(uvicorn.Config(build(state), **common))
    startup.settle()
    long_running()
    try:
        server.run()
    except SystemExit:  # uvicorn's way to say it could not bind (its reason is the line above)
        server.started = False
    finally:
        state.journal.close()  # the rows still queued are written before the exit
    if not server.started:
        raise errors.ConfigError(
            f"could not listen on {host}:{port}",
            "is another server using that port? choose another with --port",
        )
    return 130 if signal.SIGINT in server.stopped_by else 0


def long_running() -> None:
    """Set the collector for a server: start-up's objects (modules, SDK clients, the app) frozen
    out of every later pass, and the youngest generation collected every `GC_THRESHOLDS[0]`
    allocations. The same in the one process and in each `--workers` process."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _server(config: Any) -> Any:
    """uvicorn's server, minus one habit: after a graceful stop it raises the signal again,
    which would make a drained, clean SIGTERM exit look like a kill (143)."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: list[int]

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            self.stopped_by = self._captured_signals
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            watched = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in watched}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(config)
    server.stopped_by = []
    return server
