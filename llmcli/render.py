"""Everything llmcli writes: answers to stdout, diagnostics to stderr.

stdout carries only data (the answer, JSON, a table) so pipes stay clean; warnings, retries,
usage lines and errors go to stderr. Colour only on a terminal, never with NO_COLOR.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import IO, Any

from llmcli import errors, startup
from llmcli.types import FinishReason, Response
from llmcli.wording import plural


def _colour(stream: IO[str]) -> bool:
    return not os.environ.get("NO_COLOR") and is_terminal(stream)


def _style(text: str, stream: IO[str], **style: Any) -> str:
    if not _colour(stream):
        return text
    import click

    return click.style(text, **style)


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether `stream` is a terminal; False when it is missing (`2>&-`) or closed."""
    try:
        return bool(stream is not None and stream.isatty())
    except (OSError, ValueError, AttributeError):
        return False


def _discard(stream: IO[str]) -> None:
    """Point a failing stderr's descriptor at /dev/null, and flush what it still buffers there.

    A failed flush leaves the text in the buffer: the interpreter would flush it again at exit,
    fail again, print "Exception ignored" and exit 120 whatever the command's outcome.
    Later diagnostics are lost, as they would be anyway on a full disk or a closed pipe.
    """
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        if fd in (0, 1):  # stderr made an alias of stdout: never silence the answer
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        stream.flush()


def _write(stream: IO[str] | None, text: str) -> None:
    """Write `text` to `stream` and flush it, or nowhere: diagnostics never change the outcome.

    The answer on stdout and the exit code are what scripts rely on; a stderr the shell closed
    (`2>&-`: Python then has none), filled (`2>/dev/full`, a full disk) or whose reader went
    away must not cost either, so every failure to write here is ignored.
    """
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except ValueError:  # closed, or text it cannot encode: nothing was buffered
        pass
    except OSError:
        _discard(stream)


def write_stderr(text: str) -> None:
    """`text` on stderr, flushed; silently nowhere when stderr is missing or failing."""
    _write(sys.stderr, text)


class GuardedStream:
    """A text stream over `stream` (None: no stream at all) whose writes and flushes never fail.

    For writers we do not own: Click's usage errors and its newline on Ctrl-C, Python's warnings,
    an SDK's logging. Anything else is the wrapped stream's own.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        _write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        _write(self.stream, "")

    def isatty(self) -> bool:
        return is_terminal(self.stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def guard_stderr() -> None:
    """Make `sys.stderr` safe for every writer in the `llmcli` process, not only ours.

    With stderr closed (`2>&-`), descriptor 2 is held open on /dev/null: otherwise the next file
    opened (the call log, a socket) would get it, and anything writing to "stderr" below Python
    would write into it; and `sys.stderr` becomes a stream on it, because Click and `print`
    write to stdout when it is None. A failing stderr is wrapped in a `GuardedStream`, so that
    neither Click's newline on Ctrl-C nor the interpreter's final flush (which would exit 120)
    can fail. The library never calls this: the program that imports it owns `sys.stderr`.
    """
    if sys.stderr is None:
        sys.stderr = _null_stderr()
    if sys.stderr is not None and not isinstance(sys.stderr, GuardedStream):
        sys.stderr = GuardedStream(sys.stderr)  # type: ignore[assignment]


def _null_stderr() -> IO[str] | None:
    """A text stream on descriptor 2, reopened on /dev/null; None if that cannot be done."""
    try:
        os.fstat(2)
        return None  # something else holds descriptor 2 now: leave it alone
    except OSError:
        pass
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != 2:  # stdin or stdout was closed too, and got the lowest descriptor
            os.dup2(null, 2)
            os.close(null)
        return open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    except OSError:
        return None


def diag(message: str) -> None:
    """One line on stderr, flushed (it may interleave with a streaming answer).

    A waiting indicator on the terminal is erased first, so a retry line does not land on it.
    """
    erase = "\r\033[K" if Waiting.showing else ""
    write_stderr(f"{erase}{message}\n")  # one write: the indicator's thread cannot cut in


def warn(message: str) -> None:
    diag(_style("warning: ", sys.stderr, fg="yellow") + message)


def error(exc: errors.LlmcliError) -> None:
    """`Error: what happened` and, on the next line, what to do about it."""
    diag(_style("Error: ", sys.stderr, fg="red", bold=True) + exc.message)
    if exc.hint:
        diag(exc.hint)


def stdout() -> IO[str]:
    """sys.stdout, or BrokenPipeError when the shell closed it (`>&-`): handled as a closed pipe."""
    if sys.stdout is None:
        raise BrokenPipeError("standard output is closed")
    return sys.stdout


def answer(text: str) -> None:
    """The answer on stdout, ending with exactly one newline (nothing at all if empty)."""
    if not text:
        return
    startup.settle()
    out = stdout()
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()


def structured(value: Any) -> None:
    """A checked structured answer on stdout: indented for a person at a terminal, one
    compact line for a pipe (`jq`, `while read`)."""
    from llmcli import schema

    answer(schema.dumps(value, pretty=is_terminal(sys.stdout)))


def json_text(data: Any, indent: int | None = None) -> str:
    """`data` as JSON, exact amounts (Decimal) as JSON numbers written digit for digit.

    `json` writes a number only from a float, which keeps 15 to 17 digits; an amount is
    exact to the picodollar at any size. So each is written as a placeholder string, then the
    placeholder, quotes and all, is replaced by the amount's plain digits (`0.0000003`).
    """
    amounts: list[str] = []
    token = os.urandom(8).hex()  # no text in the data can be mistaken for a placeholder

    def value(item: Any) -> Any:
        from decimal import Decimal

        from llmcli import money

        if isinstance(item, Decimal):
            amounts.append(money.plain(item))
            return f"{token}:{len(amounts) - 1}"
        raise TypeError(f"{type(item).__name__} is not JSON serializable")

    text = json.dumps(data, ensure_ascii=False, indent=indent, default=value)
    if amounts:
        text = re.sub(f'"{token}:(\\d+)"', lambda m: amounts[int(m.group(1))], text)
    return text


def as_json_out(data: Any, indent: int | None = None) -> None:
    startup.settle()
    out = stdout()
    out.write(json_text(data, indent) + "\n")
    out.flush()


def table(
    rows: list[list[Any]], headers: list[str] | tuple[str, ...], *, numeric: tuple[int, ...] = ()
) -> str:
    """A plain aligned table (tabulate's `simple` look) without importing tabulate.

    `config validate` runs at every deploy and `cost`/`logs` in shell loops: tabulate's import
    (it loads importlib.metadata to read its own version) costs more than all of llmcli's own
    start-up, so the default format is drawn here and tabulate is loaded only for the others.
    Columns listed in `numeric` are right-aligned and their integers get thousands separators.
    Control characters are shown escaped (`printable`): cells hold prompts and names from the
    log, and a raw escape sequence in one would clear the screen or retitle the terminal.
    """

    def text(value: Any, column: int) -> str:
        if value is None:
            return ""
        if column in numeric and isinstance(value, int):
            return f"{value:,}"
        return printable(str(value))

    cells = [[printable(str(h)) for h in headers]] + [
        [text(v, i) for i, v in enumerate(row)] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = (
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def cost_text(cost: Any) -> str:
    """A cost for people: `$0.000031`, `$0.00000015`, or `n/a` when unknown (`money.usd`)."""
    from llmcli import money

    return money.usd(cost)


def usage_line(response: Response) -> str:
    """`tokens: 12 in, 40 out, 52 total · cost $0.000031` (and how long it took)."""
    usage = response.usage
    parts = [
        f"tokens: {_count(usage.input_tokens)} in, {_count(usage.output_tokens)} out, "
        f"{_count(usage.total_tokens)} total",
        f"cost {cost_text(response.cost_usd)}",
    ]
    if response.duration_ms is not None:
        parts.append(f"{response.duration_ms / 1000:.2f}s")
    if response.attempts > 1:
        parts.append(f"{response.attempts} attempts")
    return " · ".join(parts)


def finish_warnings(response: Response, max_tokens: int) -> None:
    """Say on stderr when an answer is not the whole answer."""
    if response.finish_reason is FinishReason.LENGTH:
        warn(
            f"the answer was truncated at {plural(max_tokens, 'token')} (finish reason: {response.raw_finish_reason}); "
            "raise --max-tokens for the rest"
        )
    elif response.finish_reason is FinishReason.CONTENT_FILTER and response.text:
        warn(
            f"{response.provider} filtered part of the answer (finish reason: {response.raw_finish_reason})"
        )
    if response.refusal and response.text:  # answered in part, then declined the rest
        warn(f"{response.provider} declined part of it: {' '.join(response.refusal.split())}")


class Waiting:
    """A small indicator on a terminal's stderr until the first token arrives; nothing otherwise."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    showing = False  # one is on screen now (class-wide: there is one terminal)

    def __init__(self, label: str) -> None:
        self.label = label
        self.active = (
            is_terminal(sys.stdout) and is_terminal(sys.stderr) and not os.environ.get("NO_COLOR")
        )
        self._stop: Any = None
        self._thread: Any = None

    def __enter__(self) -> Waiting:
        if self.active:
            import threading

            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._spin, daemon=True)
            Waiting.showing = True
            self._thread.start()
        return self

    def _spin(self) -> None:
        index = 0
        while not self._stop.wait(0.08):
            write_stderr(f"\r{self.FRAMES[index % len(self.FRAMES)]} {self.label}")
            index += 1

    def done(self) -> None:
        """Stop and erase the indicator (safe to call more than once)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            Waiting.showing = False
            write_stderr("\r\033[K")

    def __exit__(self, *exc: object) -> None:
        self.done()


class AnswerWriter:
    """Writes a streamed answer to stdout the moment each piece arrives, flushed.

    Used as a context manager around the call: a waiting indicator shows on a terminal until
    the first piece, and on the way out (an answer complete, a failure, Ctrl-C or a signal) what
    was printed stays and the line is ended, so the shell prompt does not land mid-answer.
    `quiet` prints nothing (for `--json`); `end_line` writes the newline even after an empty
    answer (one line per reply, for chat).
    """

    def __init__(self, label: str | None, *, quiet: bool = False, end_line: bool = False) -> None:
        self.quiet = quiet
        self.end_line = end_line
        self.out = None if quiet else stdout()
        # No label, no indicator: a complete answer (`ask`) is printed whole, not streamed.
        self.waiting = Waiting(label or "")
        self.waiting.active = self.waiting.active and label is not None
        self.last = ""

    def __enter__(self) -> AnswerWriter:
        self.waiting.__enter__()
        return self

    def write(self, text: str) -> None:
        self.waiting.done()
        startup.settle()
        if self.out is not None and text:
            self.out.write(text)
            self.out.flush()
            self.last = text[-1]

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        self.waiting.done()
        if self.quiet:
            return
        if kind is None and self.end_line and not self.last:
            self.last = " "  # an empty reply still gets its line
        if self.last and self.last != "\n":
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                assert self.out is not None
                self.out.write("\n")
                self.out.flush()


# Escapes for what a terminal would act on: C0 and C1 controls and DEL (category Cc), the line
# and paragraph separators, and the bidirectional overrides that make text display in another
# order than it reads ("Trojan Source"). Backslashes stay as they are, so escaping twice changes
# nothing and ordinary text (C:\Users) reads as typed.
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(char: str) -> str:
    import unicodedata

    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    if char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def printable(text: str) -> str:
    """`text` with control characters shown escaped (`\\x1b`, `\\r`, `\\t`), for a table cell.

    For tables only: JSON and CSV output keep the logged text exactly.
    """
    if text.isprintable():  # the common case, and fast (isprintable is False for any control)
        return text
    return "".join(map(_escape, text))


def cost_decimal(cost: Any) -> str:
    """A cost as a plain decimal for machines (CSV): `0.000022`, never `2.2e-05` or float noise.

    Costs are exact decimals (`llmcli.money`): every digit is kept, none invented.
    """
    from llmcli import money

    return money.plain(cost)
