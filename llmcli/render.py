"""Everything llmcli writes: answers to stdout, diagnostics to stderr.

stdout carries only data (the answer, JSON, a table) so pipes stay clean; warnings, retries,
usage lines and errors go to stderr. Colour only on a terminal, never with NO_COLOR.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import IO, Any

from llmcli import errors, startup
from llmcli.types import FinishReason, Response
from llmcli.wording import plural


def _colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _style(text: str, stream: IO[str], **style: Any) -> str:
    if not _colour(stream):
        return text
    import click

    return click.style(text, **style)


def diag(message: str) -> None:
    """One line on stderr, flushed (it may interleave with a streaming answer).

    A waiting indicator on the terminal is erased first, so a retry line does not land on it.
    """
    erase = "\r\033[K" if Waiting.showing else ""
    sys.stderr.write(f"{erase}{message}\n")  # one write: the indicator's thread cannot cut in
    sys.stderr.flush()


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


def as_json_out(data: Any, indent: int | None = None) -> None:
    startup.settle()
    out = stdout()
    out.write(json.dumps(data, ensure_ascii=False, indent=indent) + "\n")
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


def cost_text(cost: float | None) -> str:
    """A cost for people: `$0.000031`; `n/a` when the price is unknown (never $0)."""
    if cost is None:
        return "n/a"
    return f"${cost:,.6f}"


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
        self.active = sys.stdout.isatty() and sys.stderr.isatty() and not os.environ.get("NO_COLOR")
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
            sys.stderr.write(f"\r{self.FRAMES[index % len(self.FRAMES)]} {self.label}")
            sys.stderr.flush()
            index += 1

    def done(self) -> None:
        """Stop and erase the indicator (safe to call more than once)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            Waiting.showing = False
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        self.done()


def stream_answer(stream: Any, *, quiet: bool = False, end_line: bool = False) -> Response:
    """Write each delta of a `core.Stream` to stdout the moment it arrives, flushed.

    On any failure or Ctrl-C, what was printed stays and the line is ended, so the shell prompt
    does not land mid-answer. `quiet` consumes the stream without printing (for `--json`);
    `end_line` writes the newline even after an empty answer (one line per reply, for chat).
    """
    out = stdout()
    last = ""
    request = stream.call.request
    try:
        with Waiting(f"waiting for {request.provider} {request.model}") as waiting:
            for text in stream:
                waiting.done()
                startup.settle()
                if not quiet:
                    out.write(text)
                    out.flush()
                    last = text[-1]
        if end_line and not quiet and not last:
            last = " "  # an empty reply still gets its line
    finally:
        if not quiet and last and last != "\n":
            with contextlib.suppress(BrokenPipeError, ValueError):
                out.write("\n")
                out.flush()
    return stream.response


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


def cost_decimal(cost: float) -> str:
    """A cost as a plain decimal for machines (CSV): `0.000022`, never `2.2e-05` or `0.30000000000000004`.

    Twelve significant digits: a sum of many float costs carries noise in the last of a float's
    ~16 digits, and twelve still keep every digit of a call's price, and a thousandth of a cent
    on a million-dollar total.
    """
    from decimal import Decimal

    text = format(Decimal(f"{cost:.12g}"), "f")
    return "0" if text in ("0", "-0") else text
