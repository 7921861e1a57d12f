"""The `llmcli` command: thin Click commands over `llmcli.core`.

`main()` is the one place where errors become an `Error:` line on stderr and an exit code.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from llmcli import __version__, errors, render

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    """Options of the `llmcli` group that the error handler needs after Click has finished."""

    debug = False
    env_file: str | None = None
    config_file: str | None = None
    environment: Any = None


STATE = State()


def environment():
    """The settings a command reads: the process environment, `.env` (or `--env-file`), and
    where `config.toml` is (`--config`). Made once per run: every command reads the same."""
    if STATE.environment is None:
        from llmcli import config

        STATE.environment = config.Environment(
            env_file=STATE.env_file, config_file=STATE.config_file
        )
    return STATE.environment


class ProviderName(click.ParamType):
    """A provider's name, checked when the command runs against the registry (built-in providers
    and any registered endpoint), case-insensitively: `-p OpenAI` is `-p openai` everywhere."""

    name = "provider"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from llmcli import endpoints, providers

        name = str(value).strip().lower()
        if not providers.known(name):
            endpoints.load(environment())  # the names config.toml adds (read only when needed)
        if not providers.known(name):
            choices = ", ".join(repr(n) for n in providers.names())
            self.fail(f"{value!r} is not one of {choices}.", param, ctx)
        return name


PROVIDER = ProviderName()


class Number(click.ParamType):
    """A whole or decimal number. Unlike Click's own types, a refused value is not echoed when
    it looks like a key (`--max-tokens sk-proj-...`, pasted into the wrong option)."""

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind
        self.name = "integer" if kind is int else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            return value
        try:
            return self.kind(str(value).strip())
        except ValueError:
            from llmcli import redact

            shown = redact.mask_keys(str(value))
            self.fail(f"{shown!r} is not a valid {self.name}.", param, ctx)


INTEGER = Number(int)
FLOAT = Number(float)


class PipeClosed(Exception):
    """stdout's reader went away; not an OSError, so Click does not turn it into exit 1."""


# name -> "module:attribute"; a command family is one module under llmcli/commands/, imported
# only when the command runs or help lists it (Click's lazy-loading pattern).
COMMANDS: dict[str, str] = {
    "ask": "llmcli.commands.answer:ask",
    "batch": "llmcli.commands.batch:batch",
    "cache": "llmcli.commands.cache:cache",
    "stream": "llmcli.commands.answer:stream",
    "chat": "llmcli.commands.chat:chat",
    "config": "llmcli.commands.config:config",
    "cost": "llmcli.commands.log:cost",
    "log": "llmcli.commands.log:log_group",
    "logs": "llmcli.commands.log:logs",
    "models": "llmcli.commands.models:models",
    "schema": "llmcli.commands.schema:schema",
    "serve": "llmcli.commands.serve:serve",
}


class Group(click.Group):
    """The top-level group: lazy subcommands, and a closed stdout that is not Click's exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        import importlib

        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed() from None
        except errors.Terminated as exc:
            # Not through Click's Ctrl-C handling: it writes a blank line (to close a terminal's
            # ^C echo, which a signal has not printed) and forgets which signal it was.
            return _interrupted(exc)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="llmcli")
@click.option(
    "--env-file",
    # No checks here: the library reads any file but a folder (a pipe from <(...), /dev/null)
    # and reports every problem with the file as a configuration error, exit 3.
    type=click.Path(dir_okay=True, readable=False),
    metavar="FILE",
    help="Read settings from this file instead of ./.env.",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="Read named endpoints and aliases from this file.  [env: LLMCLI_CONFIG; "
    "default: $LLMCLI_HOME/config.toml]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
def cli(env_file: str | None, config_file: str | None, debug: bool) -> None:
    """Ask OpenAI, Anthropic or Gemini from the command line, or try it offline with `-p echo`.

    \b
      llmcli ask -p echo "Hello"                 # offline, no key needed
      llmcli ask "Why is the sky blue?"          # uses OPENAI_API_KEY
      git diff | llmcli ask -p anthropic "Write a commit message"
      llmcli ask --json "List three colours" | jq -r .content

    Settings come from flags, then the environment, then ./.env. Exit codes: 0 ok, 2 usage,
    3 configuration, 4 auth, 5 rate limit, 6 provider, 7 network, 8 incomplete (or not the
    JSON --schema asked for), 9 rejected,
    10 budget exceeded (nothing sent), 129/130/143 stopped by SIGHUP/Ctrl-C/SIGTERM.
    """
    STATE.debug = debug
    STATE.env_file = env_file
    STATE.config_file = config_file
    STATE.environment = None


def _fail(exc: errors.LlmcliError) -> int:
    render.error(exc)
    return int(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turn every failure into one stderr line and an exit code.

    A closed, full or broken stderr changes neither the answer nor the exit code.
    """
    render.guard_stderr()
    sys.exit(run(argv))


def _check_arguments(argv: list[str]) -> None:
    """Every argument must be text: undecodable bytes arrive as lone surrogates and crash later."""
    for number, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise errors.UsageError(
                f"argument {number} is not valid UTF-8",
                "check your terminal's encoding (LANG / LC_ALL should name UTF-8)",
            ) from None


@contextlib.contextmanager
def _stopping_signals() -> Any:
    """SIGTERM and SIGHUP (`timeout`, CI cancelling a job, `docker stop`, a closed terminal)
    stop the command the way Ctrl-C does, so the call is logged and the line ended; the exit
    status is then 128 + the signal's number, as the shell would report."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise errors.Terminated(signum)

    # A signal ignored on purpose stays ignored: under `nohup` a closed terminal is no reason
    # to stop.
    watched = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, stop) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(argv: list[str] | None = None) -> int:
    with _stopping_signals():
        return _run(argv)


# The group's own options that take a value: the word after one is not the command's name.
_GROUP_VALUE_OPTIONS = ("--env-file", "--config")


def _cache_switch(argv: list[str]) -> list[str]:
    """`ask`/`stream`'s bare `--cache` written `--cache=on`, unless a TTL follows it.

    `--cache` takes an optional value (`--cache 7d`), and Click gives such an option the next
    word whatever it is: `llmcli ask --cache "What is X"` would take the prompt for a TTL and
    fail with a usage error (or, with a prompt such as `1h`, ask nothing). So the word after a
    bare `--cache` is its value only when it looks like a TTL; otherwise it stays an argument
    and the switch gets its value here, before Click parses anything. Words after `--`, and the
    value of an option such as `-s`, are never taken for the switch.
    """
    if "--cache" not in argv:
        return argv
    args = list(argv)
    at = 0
    while at < len(args) and args[at].startswith("-") and args[at] != "--":
        at += 2 if args[at] in _GROUP_VALUE_OPTIONS else 1
    if at >= len(args) or args[at] not in ("ask", "stream"):
        return argv
    from llmcli.cache import looks_like_ttl

    command = cli.get_command(click.Context(cli), args[at])
    assert command is not None
    takes_value = {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and param.name != "cache"
        for name in (*param.opts, *param.secondary_opts)
    }
    at += 1
    while at < len(args) and args[at] != "--":
        if args[at] in takes_value:
            at += 1  # its value, whatever it says
        elif args[at] == "--cache":
            if at + 1 < len(args) and looks_like_ttl(args[at + 1]):
                at += 1
            else:
                args[at] = "--cache=on"
        at += 1
    return args


def _run(argv: list[str] | None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        _check_arguments(argv)
        argv = _cache_switch(argv)
        result = cli.main(args=argv, prog_name="llmcli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except errors.LlmcliError as exc:
        return _fail(exc)
    except click.exceptions.Abort:
        return _interrupted()
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except click.ClickException as exc:
        # Click would write to stdout when stderr is missing (`2>&-`), and fail on a full one.
        exc.show(file=render.GuardedStream(sys.stderr))
        return exc.exit_code
    except (BrokenPipeError, PipeClosed):
        return _broken_pipe()
    except OSError as exc:  # e.g. stdout on a full disk: the system's words, not "internal error"
        return _fail(errors.LlmcliError(f"input/output error: {exc.strerror or exc}"))
    except Exception as exc:  # the one place an unexpected failure becomes exit 1
        if STATE.debug:
            import traceback

            from llmcli.secret import scrub

            # Not print_exc(): with no stderr it prints to stdout, among the answer. Scrubbed:
            # a frame's line may quote a key.
            render.write_stderr(scrub(traceback.format_exc()))
        return _fail(
            errors.LlmcliError(
                f"internal error: {type(exc).__name__}: {exc}",
                "run again with --debug for the traceback, and please report it",
            )
        )


def _interrupted(exc: KeyboardInterrupt | None = None) -> int:
    """Say why the command stopped; the status is 130 for Ctrl-C, 128 + N for signal N."""
    if exc is None:
        # Click turns a KeyboardInterrupt (or our Terminated) into Abort, raised from it.
        cause = sys.exc_info()[1]
        cause = cause.__cause__ if cause is not None else None
        exc = cause if isinstance(cause, KeyboardInterrupt) else None
    error = errors.interruption(exc or KeyboardInterrupt())
    render.diag(error.message)
    return int(error.exit_code)


def _broken_pipe() -> int:
    """The reader went away (`| head`): stop quietly, as `cat` does."""
    import os

    # Point stdout at /dev/null so the interpreter's final flush cannot fail loudly.
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
