"""`llmcli ask` and `llmcli stream`: one prompt in, one answer out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from llmcli import errors, providers, render
from llmcli.cli import CONTEXT, environment


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


def _run_answer(prompt: tuple[str, ...], params: dict[str, Any], *, stream: bool) -> None:
    from llmcli import core
    from llmcli.types import Message

    stdin_text = None if params.pop("no_stdin") else read_stdin()
    message = core.compose_prompt(prompt, stdin_text)
    flags = {name: params.get(name) for name in FLAG_NAMES}
    flags["stop"] = flags["stop"] or None
    call = core.prepare(
        [Message("user", message)], flags, environment(), require_key=not params["dry_run"]
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


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
