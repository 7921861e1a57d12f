"""`llmcli ask` and `llmcli stream`: one prompt in, one answer out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, FLOAT, INTEGER, PROVIDER, environment


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
    return decode_input(data, "standard input")


def decode_input(data: bytes, where: str, *, strip_bom: bool = True) -> str:
    """Piped bytes as UTF-8 text; anything else is a usage error saying where the bad byte is.

    With `strip_bom` (for the start of the input), one leading byte-order mark is dropped:
    Windows editors and PowerShell put one there, and the provider would be sent an invisible
    U+FEFF as part of the prompt. A mark anywhere else is the user's text and stays.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.UsageError(
            f"{where} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "convert it first, e.g. iconv -f latin1 -t utf-8 file.txt | llmcli ...",
        ) from None
    return text.removeprefix("\ufeff") if strip_bom else text


def _with_options(func: Callable[..., Any], options: list[Any]) -> Callable[..., Any]:
    """`func` decorated with `options`, which `--help` then lists in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options `ask`, `stream` and `chat` share, declared once so they cannot drift apart."""
    options = [
        click.option(
            "-p",
            "--provider",
            type=PROVIDER,
            help="Provider to ask: openai, anthropic, gemini or echo.  [env: LLM_PROVIDER; default: openai]",
        ),
        click.option("-m", "--model", help="Model name.  [env: LLM_MODEL; default: per provider]"),
        click.option(
            "-s", "--system", help="System prompt.  [env: LLM_SYSTEM_PROMPT; default: none]"
        ),
        click.option(
            "-t",
            "--temperature",
            type=FLOAT,
            help="Sampling temperature, checked against the provider's range.  [env: LLM_TEMPERATURE]",
        ),
        click.option(
            "--max-tokens",
            type=INTEGER,
            help="Most tokens to generate.  [env: LLM_MAX_TOKENS; default: 1000]",
        ),
        click.option("--top-p", type=FLOAT, help="Nucleus sampling, 0 to 1."),
        click.option("--stop", multiple=True, help="Stop at this text (repeatable)."),
        click.option(
            "--seed", type=INTEGER, help="Seed for more repeatable sampling (openai, gemini)."
        ),
        click.option(
            "--response-format",
            type=click.Choice(["text", "json"]),
            help="`json` turns on the provider's JSON mode (openai, gemini).",
        ),
        click.option(
            "--schema",
            metavar="SCHEMA",
            help="Answer with JSON matching this JSON Schema: a file, inline JSON, or fields "
            "such as 'name, age int, tags list, score float: 0 to 1'; checked, exit 8 if not.  "
            "[env: LLM_SCHEMA]",
        ),
        click.option(
            "--schema-multi",
            is_flag=True,
            help='With --schema: a list of such objects, as {"items": [...]}.',
        ),
        click.option(
            "--timeout",
            type=FLOAT,
            help="Seconds each attempt may take, whole.  [env: LLM_TIMEOUT; default: 600]",
        ),
        click.option(
            "--retries",
            type=INTEGER,
            help="Retries after the first attempt.  [env: LLM_MAX_RETRIES; default: 3]",
        ),
        click.option(
            "--tag", help="A label kept with the call, for `cost --by tag`.  [env: LLM_TAG]"
        ),
        click.option(
            "-c",
            "--continue",
            "continue_",
            is_flag=True,
            help="Continue the latest conversation from the log.",
        ),
        click.option("--cid", help="Continue the conversation with this id (see `llmcli logs`)."),
        click.option(
            "--no-log",
            is_flag=True,
            help="Do not record this call in the log.  [env: LLMCLI_LOG=0]",
        ),
        click.option(
            "--fallback",
            multiple=True,
            metavar="PROVIDER[/MODEL]",
            help="Ask this provider (or alias) next if the first fails after its retries with a "
            "rate limit, a server error, a timeout or a network error; repeatable.  "
            "[env: LLM_FALLBACK, comma-separated]",
        ),
    ]
    return _with_options(func, options)


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
        click.option(
            "--raw",
            is_flag=True,
            help="With --schema: print the answer as the model wrote it (streamed by `stream`), "
            "even when it does not match; the exit code still says.",
        ),
    ]
    return _with_options(func, options)


def cache_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The response cache's switches, for `ask` and `stream`."""
    options = [
        click.option(
            "--cache",
            "cache",
            metavar="[TTL]",
            # Optional value: a bare `--cache` is made `--cache=on` before Click parses the
            # command line (llmcli.cli), so that it never swallows the prompt that follows it.
            is_flag=False,
            flag_value="on",
            default=None,
            help="Reuse the stored answer to this exact request (no network call, no cost), "
            "or store this one; with a TTL (30s, 10m, 1h, 7d, 2w), only an answer that young.  "
            "[env: LLMCLI_CACHE: a TTL, 1/on or 0/off]",
        ),
        click.option(
            "--no-cache",
            is_flag=True,
            help="Neither reuse nor store an answer (wins over --cache and LLMCLI_CACHE).",
        ),
    ]
    return _with_options(func, options)


def attach_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attachments, for `ask`, `stream` and `chat` (docs/usage.md#attachments)."""
    options = [
        click.option(
            "-a",
            "--attach",
            multiple=True,
            metavar="PATH|URL|-",
            help="Send a file with the message: a png, jpeg, webp or gif image, a PDF or a text "
            "file; an http(s) URL; or - for standard input (then not the prompt). Repeatable.",
        ),
        click.option(
            "--attach-type",
            multiple=True,
            metavar="TYPE",
            help="Take the attachments as png, jpeg, webp, gif, pdf or text instead of the type "
            "read from their bytes: once for every -a, or once per -a in the same order.",
        ),
    ]
    return _with_options(func, options)


def attachments(params: dict[str, Any], *, stdin: bool = True) -> list[Any]:
    """The `-a` files, read now (before anything is sent); `-` reads standard input when
    `stdin` allows it. A URL must arrive within --timeout, if shorter than 30 seconds."""
    if not params.get("attach"):
        if params.get("attach_type"):
            raise errors.UsageError("--attach-type without -a/--attach")
        return []
    from llmcli import attach

    timeout = min(params.get("timeout") or attach.FETCH_TIMEOUT, attach.FETCH_TIMEOUT)
    return attach.load_all(
        params["attach"],
        params["attach_type"],
        stdin=_stdin_bytes if stdin else None,
        timeout=timeout,
    )


def _stdin_bytes() -> bytes:
    stream = sys.stdin
    if stream is None or stream.closed or stream.isatty():
        raise errors.UsageError(
            "-a - attaches standard input, but nothing is piped in",
            "pipe the file in: cat photo.png | llmcli ask -a - 'Describe it'",
        )
    return stream.buffer.read()


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
    "fallback",
    "schema",
    "schema_multi",
)


def command_flags(params: dict[str, Any]) -> dict[str, Any]:
    """The shared model options as `core.prepare` flags (None = not given)."""
    if params["continue_"] and params["cid"]:
        raise errors.UsageError("use -c/--continue or --cid, not both")
    flags = {name: params.get(name) for name in FLAG_NAMES}
    flags["stop"] = flags["stop"] or None
    flags["fallback"] = flags["fallback"] or None  # none given: LLM_FALLBACK, if set
    return flags


def _conversation(params: dict[str, Any], env: Any, flags: dict[str, Any]) -> tuple[str, Any]:
    """The conversation id and, with -c or --cid, the logged conversation it continues."""
    from llmcli.journal import Journal, new_conversation_id, resume

    if not (params["continue_"] or params["cid"]):
        return new_conversation_id(), None
    journal = Journal(env)
    try:
        before = resume(journal, params["cid"], flags, env)
    finally:
        journal.close()
    return before.conversation_id, before


def _dry_run(call: Any, chain: Any) -> None:

    data = call.describe()
    if chain:
        data["fallbacks"] = [c.describe() for c in chain]
    request = call.request
    from llmcli import core

    worst = core.estimate(call)
    estimated, price = worst.input_tokens, worst.price
    note = (
        "input tokens estimated offline at about 4 characters per token; "
        "cost if the answer used all of --max-tokens"
    )
    files = [a for m in request.messages for a in m.attachments]
    if files:
        from llmcli import attach

        data = attach.elided(data, files)
        note += "; attachments included: text files as text, images by their size"
        if worst.uncounted:
            names = ", ".join(a.name or a.media_type for a in worst.uncounted)
            note += f" (not counted: {names}, whose tokens cannot be told offline)"
    data["worst_case"] = {
        "input_tokens_estimate": estimated,
        "output_tokens": request.max_tokens,
        "cost_usd": price.usd,
        "note": note,
    }
    render.as_json_out(data, indent=2)


def _run_answer(prompt: tuple[str, ...], params: dict[str, Any], *, stream: bool) -> None:
    from llmcli import cache, core, lifecycle
    from llmcli.journal import Journal, messages_of
    from llmcli.types import Message, Text

    flags = command_flags(params)
    env = environment()
    caching = cache.resolve(params["cache"], params["no_cache"], env)
    files = attachments(params, stdin=not params["no_stdin"])
    # `-a -` is the file: standard input is then not the prompt.
    piped = params["no_stdin"] or "-" in params["attach"]
    stdin_text = None if piped else read_stdin()
    message = core.compose_prompt(prompt, stdin_text)
    cid, before = _conversation(params, env, flags)
    history = messages_of(before) if before is not None else []
    # The files before the words, as Anthropic advises for the best answers.
    messages = [*history, Message("user", (*files, Text(message)) if files else message)]
    call = core.prepare(messages, flags, env, require_key=not params["dry_run"])
    chain = core.fallbacks(call, flags, env, require_key=not params["dry_run"])
    request = call.request
    structured = request.schema is not None
    if params["raw"] and not structured:
        raise errors.UsageError("--raw goes with --schema (or LLM_SCHEMA)")
    if params["dry_run"]:
        _dry_run(call, chain)
        return
    journal = Journal(
        env,
        enabled=call.settings.log and not params["no_log"],
        source="stream" if stream else "ask",
    )
    # Under a schema the answer is printed once checked, unless --raw asks for it as written.
    quiet = params["as_json"] or (structured and not params["raw"])
    try:
        label = f"waiting for {request.provider} {request.model}" if stream else None
        with render.AnswerWriter(label, quiet=quiet or not stream) as writer:
            outcome = lifecycle.run(
                call,
                journal,
                conversation_id=cid,
                before=before,
                stream=stream,
                # A stream's pieces go through the writer even with --json (it prints nothing then,
                # but ends the waiting indicator and start-up's pause of the collector).
                deliver=writer.write if stream else (None if quiet else render.answer),
                strict=params["strict"],
                # Priced once the answer is out, and only if the cost is shown, logged or stored
                # with the answer (what a later hit saves).
                price=journal.enabled or params["usage"] or params["as_json"] or bool(caching),
                on_retry=_retry_line,
                fallbacks=chain,
                on_fallback=lambda notice: _fallback_line(notice, writer),
                cache=caching,
            )
        response = outcome.response
        if params["as_json"]:
            extra = {"parsed": response.parsed} if structured else {}
            render.as_json_out(
                {
                    **response.to_dict(),
                    **extra,
                    "log_id": outcome.log_id,
                    "conversation_id": cid,
                    "fell_back_from": [f.to_dict() for f in outcome.fell_back_from],
                }
            )
        elif structured and not params["raw"] and outcome.problem is None:
            render.structured(response.parsed)
        render.finish_warnings(response, request.max_tokens)
        if params["usage"]:
            line = render.usage_line(response)
            if response.cached:
                line += f" (cached, saved {render.cost_text(response.saved_usd)})"
            render.diag(line)
        if outcome.problem is not None:
            raise outcome.problem
    finally:
        journal.close()
        if journal.problem:
            render.warn(journal.problem)


def _retry_line(notice: Any) -> None:
    render.diag(str(notice))


def _fallback_line(notice: Any, writer: Any) -> None:
    """`falling back to ...` on stderr; a terminal's waiting indicator now names the provider
    being waited for, not the one that failed."""
    render.diag(str(notice))
    writer.waiting.label = f"waiting for {notice.next.request.provider} {notice.next.request.model}"


@click.command(context_settings=CONTEXT)
@click.argument("prompt", nargs=-1)
@model_options
@attach_options
@output_options
@cache_options
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
      llmcli ask -p anthropic -a chart.png -a report.pdf "Do these agree?"
      llmcli ask --json -u "Name a prime" | jq .usage
      llmcli ask --cache 7d "Explain git rebase"   # asked again within 7 days: free, instant
    """
    _run_answer(prompt, params, stream=stream)


@click.command(context_settings=CONTEXT)
@click.argument("prompt", nargs=-1)
@model_options
@attach_options
@output_options
@cache_options
def stream(prompt: tuple[str, ...], **params: Any) -> None:
    """Ask once and print the answer token by token as it arrives.

    Takes the same options and input as `ask`. With --json, one JSON object is printed
    at the end instead.

    \b
    Examples:
      llmcli stream -p echo "one two three"
      llmcli stream -p gemini "Write a haiku about pipes"
      tail -n 50 app.log | llmcli stream -p anthropic "Explain these errors"
      llmcli stream --cache "Write a haiku about pipes"   # the same haiku again, at once
    """
    _run_answer(prompt, params, stream=True)
