"""The `llmcli` command: thin Click commands over `llmcli.core`.

`main()` is the one place where errors become an `Error:` line on stderr and an exit code.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import click

from llmcli import __version__, errors, providers, render

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    """Options of the `llmcli` group that the error handler needs after Click has finished."""

    debug = False
    env_file: str | None = None


STATE = State()


def _environment():
    from llmcli import config

    return config.Environment(env_file=STATE.env_file)


def read_stdin() -> str | None:
    """Piped input as text, or None when stdin is a terminal (never block waiting on a person)."""
    stream = sys.stdin
    if stream is None or stream.closed:
        return None
    try:
        if stream.isatty():
            return None
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
    except (OSError, ValueError):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.UsageError(
            f"standard input is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "convert it first, e.g. iconv -f latin1 -t utf-8 file.txt | llmcli ask ...",
        ) from None


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options `ask`, `stream` and `chat` share, declared once so they cannot drift apart."""
    options = [
        click.option(
            "-p",
            "--provider",
            type=click.Choice(providers.names(), case_sensitive=False),
            help="Provider to ask.  [env: LLM_PROVIDER; default: openai]",
        ),
        click.option("-m", "--model", help="Model name.  [env: LLM_MODEL; default: per provider]"),
        click.option(
            "-s", "--system", help="System prompt.  [env: LLM_SYSTEM_PROMPT; default: none]"
        ),
        click.option(
            "-t",
            "--temperature",
            type=float,
            help="Sampling temperature, checked against the provider's range.  [env: LLM_TEMPERATURE]",
        ),
        click.option(
            "--max-tokens",
            type=int,
            help="Most tokens to generate.  [env: LLM_MAX_TOKENS; default: 1000]",
        ),
        click.option("--top-p", type=float, help="Nucleus sampling, 0 to 1."),
        click.option("--stop", multiple=True, help="Stop at this text (repeatable)."),
        click.option(
            "--seed", type=int, help="Seed for more repeatable sampling (openai, gemini)."
        ),
        click.option(
            "--response-format",
            type=click.Choice(["text", "json"]),
            help="`json` turns on the provider's JSON mode (openai, gemini).",
        ),
        click.option(
            "--timeout",
            type=float,
            help="Seconds to wait for each attempt.  [env: LLM_TIMEOUT; default: 60]",
        ),
        click.option(
            "--retries",
            type=int,
            help="Retries after the first attempt.  [env: LLM_MAX_RETRIES; default: 3]",
        ),
        click.option("--tag", help="A label kept with the call.  [env: LLM_TAG]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How one answer is shown, shared by `ask` and `stream`."""
    options = [
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print one JSON object with the answer and its details.",
        ),
        click.option("-u", "--usage", is_flag=True, help="Show tokens and cost on stderr."),
        click.option(
            "--strict", is_flag=True, help="Exit 8 when the answer is truncated or filtered."
        ),
        click.option(
            "--dry-run", is_flag=True, help="Print the request that would be sent; send nothing."
        ),
        click.option(
            "--no-stdin",
            is_flag=True,
            help="Do not read standard input (e.g. inside a `while read` loop).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


FLAG_NAMES = (
    "provider",
    "model",
    "system",
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "timeout",
    "retries",
    "tag",
)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="llmcli")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    help="Read settings from this file instead of ./.env.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
def cli(env_file: str | None, debug: bool) -> None:
    """Ask OpenAI, Anthropic or Gemini from the command line, or try it offline with `-p echo`.

    \b
      llmcli ask -p echo "Hello"                 # offline, no key needed
      llmcli ask "Why is the sky blue?"          # uses OPENAI_API_KEY
      git diff | llmcli ask -p anthropic "Write a commit message"
      llmcli ask --json "List three colours" | jq -r .content

    Settings come from flags, then the environment, then ./.env. Exit codes: 0 ok, 2 usage,
    3 configuration, 4 auth, 5 rate limit, 6 provider, 7 network, 8 incomplete, 9 rejected.
    """
    STATE.debug = debug
    STATE.env_file = env_file


def _run_answer(prompt: tuple[str, ...], params: dict[str, Any], *, stream: bool) -> None:
    from llmcli import core
    from llmcli.types import Message

    stdin_text = None if params.pop("no_stdin") else read_stdin()
    message = core.compose_prompt(prompt, stdin_text)
    flags = {name: params.get(name) for name in FLAG_NAMES}
    flags["stop"] = flags["stop"] or None
    call = core.prepare(
        [Message("user", message)], flags, _environment(), require_key=not params["dry_run"]
    )
    if params["dry_run"]:
        render.as_json_out(call.describe())
        return
    on_retry = lambda notice: render.diag(str(notice))  # noqa: E731
    if stream:
        response = render.stream_answer(
            core.Stream(call, on_retry=on_retry), as_json=params["as_json"]
        )
    else:
        response = core.complete(call, on_retry=on_retry)
        if params["as_json"]:
            render.as_json_out(response.to_dict())
        else:
            render.answer(response.text)
    render.finish_warnings(response, call.request.max_tokens)
    if params["usage"]:
        render.diag(render.usage_line(response))
    problem = core.incomplete(response, strict=params["strict"])
    if problem is not None:
        raise problem


@cli.command(context_settings=CONTEXT)
@click.argument("prompt", nargs=-1)
@model_options
@output_options
@click.option(
    "--stream", "stream", is_flag=True, help="Print the answer as it arrives (as `llmcli stream`)."
)
def ask(prompt: tuple[str, ...], stream: bool, **params: Any) -> None:
    """Ask once and print the whole answer when it is complete.

    The prompt is the words given, or piped standard input, or both: then the message is
    the piped text, a blank line, and the words.

    \b
    Examples:
      llmcli ask -p echo "Hello"
      llmcli ask -p anthropic -s "Answer in one line" "What is a monad?"
      cat error.log | llmcli ask "What went wrong?"
      llmcli ask --json -u "Name a prime" | jq .usage
    """
    _run_answer(prompt, params, stream=stream)


@cli.command(context_settings=CONTEXT)
@click.argument("prompt", nargs=-1)
@model_options
@output_options
def stream(prompt: tuple[str, ...], **params: Any) -> None:
    """Ask once and print the answer token by token as it arrives.

    Takes the same options and input as `ask`. With --json, one JSON object is printed
    at the end instead.

    \b
    Examples:
      llmcli stream -p echo "one two three"
      llmcli stream -p gemini "Write a haiku about pipes"
      tail -n 50 app.log | llmcli stream -p anthropic "Explain these errors"
    """
    _run_answer(prompt, params, stream=True)


def _fail(exc: errors.LlmcliError) -> int:
    render.error(exc)
    return int(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turn every failure into one stderr line and an exit code."""
    code = run(argv)
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="llmcli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except errors.LlmcliError as exc:
        return _fail(exc)
    except click.exceptions.Abort:
        return _interrupted()
    except KeyboardInterrupt:
        return _interrupted()
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as exc:  # the one place an unexpected failure becomes exit 1
        if STATE.debug:
            import traceback

            traceback.print_exc()
        return _fail(
            errors.LlmcliError(
                f"internal error: {type(exc).__name__}: {exc}",
                "run again with --debug for the traceback, and please report it",
            )
        )


def _interrupted() -> int:
    with contextlib.suppress(BrokenPipeError, ValueError):
        render.diag("interrupted")
    return int(errors.ExitCode.INTERRUPTED)


def _broken_pipe() -> int:
    """The reader went away (`| head`): stop quietly, as `cat` does."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0
