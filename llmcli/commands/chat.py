"""`llmcli chat`: an interactive conversation on a terminal, one message per line from a pipe.

Line editing and the persistent input history come from the standard `readline` module: it is
always there on the platforms we target, costs nothing to import, and gives the arrow keys,
Ctrl-R search and emacs/vi bindings that people already know from their shell.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from llmcli import errors, render, startup
from llmcli.cli import CONTEXT, environment
from llmcli.commands.answer import (
    attach_options,
    attachments,
    command_flags,
    decode_input,
    model_options,
)

BLOCK = '"""'
HELP = """\
Commands:
  /help              this list
  /exit, /quit       leave (so do Ctrl-D, and Ctrl-C at an empty prompt)
  /clear             start a new conversation (settings and totals stay)
  /system [TEXT]     show or set the system prompt (/system - removes it)
  /model [NAME]      show or switch the model
  /provider [NAME]   show or switch the provider; the conversation carries over
  /usage             tokens and cost of this session so far
  /retry             send the last message again
  /attach [PATH|URL] attach a file to your next message (alone: list those attached)
A line with only \"\"\" starts a multi-line message; another \"\"\" line sends it.
Ctrl-C while a reply streams cancels that reply (it is not kept in the conversation)."""


def messages(lines: Iterable[str]) -> Iterator[str]:
    """Messages from input lines: blank lines skipped, a \"\"\" line opens and closes a block.

    A block the input ends inside (Ctrl-D, or a pipe that stops) is dropped with a note on
    stderr: nobody finished that message, so sending it would be a paid turn never asked for.
    """
    source = iter(lines)
    for line in source:
        text = line.rstrip("\n")
        if text.strip() == BLOCK:
            block = []
            for inner in source:
                if inner.rstrip("\n").strip() == BLOCK:
                    break
                block.append(inner.rstrip("\n"))
            else:
                count = f"{len(block)} line{'' if len(block) == 1 else 's'}"
                render.diag(f"unclosed {BLOCK} block discarded ({count})")
                return
            text = "\n".join(block)
        if text.strip():
            yield text


class Terminal:
    """Input lines from a person at a terminal, with readline's editing and saved history."""

    def __init__(self, history_path: Any) -> None:
        self.history_path = history_path
        self.prompt = "> "
        try:
            import readline
        except ImportError:  # pragma: no cover - platforms without readline still get a prompt
            self.readline = None
            return
        self.readline = readline
        readline.set_history_length(2000)
        with contextlib.suppress(OSError):
            readline.read_history_file(history_path)

    def save(self) -> None:
        """Write the input history, readable by its owner only: it holds everything typed.

        GNU readline writes the file 0600, but libedit (macOS, some Python builds) writes it
        with the umask, often 0644; so it is created (or tightened) 0600 first, and a history
        that cannot be made private is not written at all.
        """
        if self.readline is not None:
            from llmcli import paths

            with contextlib.suppress(OSError, errors.ConfigError):
                paths.private_folder(self.history_path.parent)  # the log's folder: ours alone
                self._make_private(self.history_path)
                self.readline.write_history_file(self.history_path)

    @staticmethod
    def _make_private(path: Path) -> None:
        """Create `path` 0600, or take group and other access off an existing file we own.

        Done through one descriptor so the file checked is the file changed (read-only: a
        file's owner may change its mode without write access). A file someone else owns is
        left as it is: its mode is not ours to decide.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
        try:
            info = os.fstat(fd)
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o077)
        finally:
            os.close(fd)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                line = input(self.prompt)
            except EOFError:
                render.diag("")
                return
            except KeyboardInterrupt as exc:
                if isinstance(exc, errors.Terminated):
                    raise  # SIGTERM or SIGHUP at the prompt ends the session, not a line
                typed = self.readline.get_line_buffer() if self.readline is not None else ""
                render.diag("")
                if not typed:
                    return  # Ctrl-C at an empty prompt leaves, as Ctrl-D does
                continue
            if line.strip() == BLOCK:  # inside a multi-line block, the prompt says so
                self.prompt = "... " if self.prompt == "> " else "> "
            yield line


def _show(session: Any) -> None:
    call = session.check()
    render.diag(
        f"provider {call.request.provider}, model {call.request.model}, system prompt: {call.request.system!r}"
    )


def _command(session: Any, line: str) -> str | None:
    """Run a slash command. Returns "exit" to leave, a message to send (for /retry), or None."""
    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if name in ("exit", "quit"):
        return "exit"
    if name == "help":
        render.diag(HELP)
    elif name == "clear":
        session.clear()
        render.diag(f"new conversation {session.conversation_id}")
    elif name == "usage":
        render.diag(str(session.totals))
    elif name == "attach":
        _attach(session, arg)
    elif name == "retry":
        prompt = session.retry_prompt()
        if prompt is None:
            render.diag("nothing to retry yet")
        return prompt
    elif name in ("system", "model", "provider"):
        if arg:
            value = "" if (name == "system" and arg == "-") else arg  # "" = no system prompt
            session.set(name, value.lower() if name == "provider" and value else value)
        _show(session)
    else:
        render.diag(f"unknown command /{name}; /help lists them")
    return None


def _attach(session: Any, spec: str) -> None:
    """`/attach PATH`: read and check the file now; it goes with the next message."""
    if spec:
        from llmcli import attach

        session.attach(attach.load(spec))
    for file in session.pending:
        render.diag(f"attached {file.name} ({file.media_type}, {len(file.data):,} bytes)")
    render.diag(
        "it goes with your next message" if session.pending else "nothing attached; /attach PATH"
    )


def _reply(session: Any, text: str, *, interactive: bool = True) -> errors.LlmcliError | None:
    """Send one message and stream its reply; a failure is shown and returned, never raised.

    Ctrl-C cancels the reply and, at a terminal, returns to the prompt; from a pipe it stops
    the whole run (exit 130), as it would any other command. SIGTERM and SIGHUP always stop it.
    """
    try:
        call = session.check()
        label = f"waiting for {call.request.provider} {call.request.model}"
        structured = call.request.schema is not None
        with render.AnswerWriter(label, end_line=True) as writer:
            # Under a schema a reply is shown once checked, as the JSON it parsed to.
            outcome = session.send(text, writer.write if not structured else _hold(writer))
            if structured and outcome.problem is None:
                from llmcli import schema

                writer.write(schema.dumps(outcome.response.parsed, pretty=terminal_out()))
    except errors.LlmcliError as exc:
        if isinstance(exc, errors.ContextTooLong) and session.history:
            exc.hint = (
                f"this conversation ({len(session.history)} messages) no longer fits the model's "
                "context window: "
                + ("/clear starts a new one" if interactive else "start a new one without -c/--cid")
            )
        render.error(exc)
        return exc
    except KeyboardInterrupt as exc:
        if not interactive or isinstance(exc, errors.Terminated):
            raise
        render.diag("(reply cancelled)")
        return None
    finally:
        # Start-up ends with the first turn, whatever became of it: a session goes on after a
        # failed or empty reply, and each attempt leaves objects only the collector frees.
        startup.settle()
    render.finish_warnings(outcome.response, call.request.max_tokens)
    if outcome.problem is not None:
        render.error(outcome.problem)
    return outcome.problem


def _hold(writer: Any) -> Any:
    """A delivery that prints nothing but ends the waiting indicator (the first piece is in)."""
    return lambda text: writer.waiting.done()


def terminal_out() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _interactive(session: Any, terminal: Terminal) -> None:
    render.diag(
        f"llmcli chat · {session.provider} {session.model} · /help for commands, Ctrl-D to leave"
    )
    if session.history:
        render.diag(f"continuing conversation {session.conversation_id}:")
        for message in session.history[-6:]:
            who = "you" if message.role == "user" else "assistant"
            render.diag(f"  {who}: {' '.join(message.text.split())[:200]}")
    for text in messages(terminal):
        if text.startswith("/"):
            try:
                outcome = _command(session, text.strip())
            except errors.LlmcliError as exc:
                render.error(exc)
                continue
            if outcome == "exit":
                break
            if outcome is None:
                continue
            text = outcome
        _reply(session, text)
    render.diag(f"session: {session.totals}")
    render.diag(f"continue with: llmcli chat --cid {session.conversation_id}")


def _piped_lines() -> Iterator[str]:
    """Standard input as UTF-8 lines; bad bytes are a usage error naming the line.

    A closed standard input (`llmcli chat <&-`: Python then sets `sys.stdin` to None) has no
    lines, like an empty pipe. A byte-order mark is dropped from the start of the input only.
    """
    if sys.stdin is None:
        return
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        yield decode_input(raw, f"line {number} of standard input", strip_bom=number == 1)


@click.command(context_settings=CONTEXT)
@model_options
@attach_options
def chat(**params: Any) -> None:
    """Talk with a model, turn after turn; every reply streams as it arrives.

    On a terminal: line editing and history (arrow keys, Ctrl-R), slash commands (/help),
    and \"\"\" on a line of its own to start and end a multi-line message. Ctrl-C cancels a
    reply; Ctrl-D (or Ctrl-C at an empty prompt) leaves and shows the session's totals.

    From a pipe, each non-blank line is one message and each reply is printed followed by a
    newline; the exit status is that of the first failed turn, or 0.

    Files given with -a go with the first message; /attach PATH adds one to the next.

    \b
    Examples:
      llmcli chat -p anthropic -s "You are a patient tutor"
      llmcli chat -c                      # continue the latest conversation
      printf 'hi\\nand again\\n' | llmcli chat -p echo
    """
    from llmcli import paths
    from llmcli.chat import ChatSession
    from llmcli.journal import Journal

    flags = command_flags(params)
    env = environment()
    # Reads a conversation to resume; records once enabled.
    journal = Journal(env, enabled=False, source="chat")
    try:
        session = ChatSession.start(
            env, flags, journal, resume=params["continue_"], conversation_id=params["cid"]
        )
        # Standard input carries the messages: it cannot also be a file (`-a -`).
        for file in attachments(params, stdin=False):
            session.attach(file)
        journal.enable(session.check().settings.log and not params["no_log"])
        session.on_retry = lambda notice: render.diag(str(notice))
        if sys.stdin is not None and sys.stdin.isatty():
            terminal = Terminal(paths.home(env) / "chat_history")
            try:
                _interactive(session, terminal)
            finally:
                terminal.save()
            return
        first_failure = None
        for text in messages(_piped_lines()):
            failure = _reply(session, text, interactive=False)
            first_failure = first_failure or failure
        if first_failure is not None:
            raise click.exceptions.Exit(int(first_failure.exit_code))
    finally:
        journal.close()
        if journal.problem:
            render.warn(journal.problem)
