"""Live batch jobs: many prompts from one file, answered concurrently, one result line each.

Each prompt goes through the same call lifecycle as `ask` (`lifecycle.arun`), so retries, prices,
the log, budgets and the cache apply to every line. What this module adds is the job around the
calls: reading the three input forms line by line (never the whole file: memory stays flat),
checking every line before anything is sent, adapting concurrency to rate limits, writing each
result as it arrives (so a killed job keeps what was paid for), and skipping what an earlier run
already answered. The provider Batch APIs (`batch submit` ...) are a separate mode; what they
share with this one is the input (`Source`) and the result line (`result_line`).

Nothing here imports Click or prints: the command gets `Progress` and notices through callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import string
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from llmcli import errors

if TYPE_CHECKING:
    from llmcli import config, core
    from llmcli.cache import Policy
    from llmcli.journal import Journal

FORMS = ("jsonl", "text", "csv")
# What a JSON Lines input line may set for itself, over the command's options.
LINE_OPTIONS = ("system", "provider", "model", "max_tokens", "temperature", "schema")
# Errors after which no other line can fare better: the job stops (their usual exit code).
FATAL = (
    errors.AuthError,
    errors.ConfigError,
    errors.BudgetExceeded,
    errors.QuotaExhausted,
    errors.UsageError,
)
# Successes in a row (at the current limit, at most this many) before one more call may run.
RECOVERY_RUN = 10
# Output lines wait at most this long (seconds), or until there are this many, to be written
# together after one commit of their log rows (`Job._write_out`).
WRITE_EVERY = 0.05
WRITE_LINES = 256
SHOWN_BAD_LINES = 20


class Item(NamedTuple):
    """One prompt of the input: where it is, its id, and its own options (`LINE_OPTIONS`)."""

    line: int
    id: str | int
    prompt: str
    options: Mapping[str, Any]


class BadLine(NamedTuple):
    line: int
    reason: str


def id_key(value: object) -> str:
    """An id as compared for resuming: `1` (a line number) and `"1"` (a CSV cell) stay apart."""
    return json.dumps(value, ensure_ascii=False)


def guess_form(path: Path) -> str:
    """The input form from the file's name: `.jsonl`/`.ndjson`, `.csv`, anything else text."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "csv" if suffix == ".csv" else "text"


class Template:
    """`--template 'Classify: {text}'`: a prompt filled from a line's fields.

    Only plain `{name}` fields: str.format's `{x.attr}` and `{x[0]}` would let a template reach
    into objects, and a format spec on text from a file is a trap (`{n:>5}` on a string)."""

    def __init__(self, text: str) -> None:
        self.parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise errors.UsageError(
                f"invalid --template: {exc}", "write {{ and }} for a brace"
            ) from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (
                not name or spec or conversion or any(c in name for c in ".[")
            ):
                raise errors.UsageError(
                    f"invalid --template field {{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}: only plain names such as {{text}}",
                    "write {{ and }} for a brace",
                )
            self.parts.append((literal, name))
        self.fields = [name for _, name in self.parts if name is not None]

    def fill(self, fields: Mapping[str, Any]) -> str:
        missing = [name for name in self.fields if name not in fields]
        if missing:
            raise ValueError(f"no field {missing[0]!r} for --template")
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = fields[name]
                out.append(value if isinstance(value, str) else "" if value is None
                           else json.dumps(value, ensure_ascii=False))  # fmt: skip
        return "".join(out)


class Source:
    """The input file, read one line at a time each time `items()` is called (checked once,
    then read again to send: two passes instead of holding 100,000 prompts in memory)."""

    def __init__(
        self,
        path: Path,
        form: str | None = None,
        *,
        column: str | None = None,
        id_column: str | None = None,
        template: str | None = None,
    ) -> None:
        self.path = path
        self.form = form or ("csv" if column or id_column else guess_form(path))
        if self.form != "csv" and (column or id_column):
            raise errors.UsageError("--column and --id-column are for CSV input")
        if self.form == "csv" and not (column or template):
            raise errors.UsageError(
                "CSV input needs --column NAME (the prompt's column) or --template",
                "e.g. llmcli batch run tickets.csv --column text -o out.jsonl",
            )
        self.column = column
        self.id_column = id_column
        self.template = Template(template) if template is not None else None
        self.sha256 = hashlib.sha256()  # of the bytes read by the first pass

    def _lines(self, hashing: bool) -> Iterator[tuple[int, bytes]]:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise errors.UsageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                if hashing:
                    self.sha256.update(raw)
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a Windows editor's byte-order mark
                yield number, raw

    def items(self, *, hashing: bool = False) -> Iterator[Item | BadLine]:
        lines = self._lines(hashing)
        if self.form == "csv":
            yield from self._csv(lines)
            return
        for number, raw in lines:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadLine(number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})")
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue  # blank lines are spacing, not prompts
            if self.form == "text":
                yield self._item(number, number, {"text": text}, text, {})
            else:
                yield self._json_line(number, text)

    def _item(
        self, number: int, id_: str | int, fields: Mapping[str, Any], prompt: Any, options: Any
    ) -> Item | BadLine:
        if self.template is not None:
            try:
                prompt = self.template.fill(fields)
            except ValueError as exc:
                return BadLine(number, str(exc))
        if not isinstance(prompt, str) or not prompt.strip():
            return BadLine(number, "no prompt (an empty or missing prompt)")
        if "\x00" in prompt:
            return BadLine(number, "the prompt contains NUL bytes")
        return Item(number, id_, prompt, options)

    def _json_line(self, number: int, text: str) -> Item | BadLine:
        try:
            data = json.loads(text)
        except ValueError as exc:
            return BadLine(number, f"not JSON ({exc})")
        if not isinstance(data, dict):
            return BadLine(number, 'not a JSON object such as {"id": "a1", "prompt": "..."}')
        id_ = data.get("id")
        if isinstance(id_, bool) or not isinstance(id_, str | int) or id_ == "":
            return BadLine(number, 'no "id" (a string or a whole number)')
        if self.template is None:
            unknown = sorted(set(data) - {"id", "prompt", *LINE_OPTIONS})
            if unknown:
                allowed = ", ".join(("prompt", *LINE_OPTIONS))
                return BadLine(number, f"unknown field {unknown[0]!r} (allowed: id, {allowed})")
        options = {k: data[k] for k in LINE_OPTIONS if data.get(k) is not None}
        problem = _option_problem(options)
        if problem:
            return BadLine(number, problem)
        return self._item(number, id_, data, data.get("prompt"), options)

    def _csv(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[Item | BadLine]:
        import csv

        # Decoded leniently so one bad byte spoils its row only, which is then reported.
        reader = csv.reader(raw.decode("utf-8", "surrogateescape") for _, raw in lines)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise errors.UsageError(f"{self.path}: not CSV ({exc})") from None
        for name in (self.column, self.id_column, *(self.template.fields if self.template else ())):
            if name is not None and name not in header:
                columns = ", ".join(header)
                raise errors.UsageError(f"{self.path} has no column {name!r} (it has: {columns})")
        row_number = 0
        end = reader.line_num
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadLine(start, f"not CSV ({exc})")
                return  # the reader cannot go on after a broken quote
            end = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            row_number += 1
            if any("\udc80" <= c <= "\udcff" for cell in row for c in cell):
                yield BadLine(start, "not valid UTF-8")
                continue
            if len(row) != len(header):
                yield BadLine(start, f"{len(row)} fields where the header has {len(header)}")
                continue
            fields = dict(zip(header, row, strict=True))
            id_: str | int = fields[self.id_column] if self.id_column else row_number
            if id_ == "":
                yield BadLine(start, f"an empty {self.id_column!r}")
                continue
            prompt = fields[self.column] if self.column else None
            yield self._item(start, id_, fields, prompt, {})


def _option_problem(options: Mapping[str, Any]) -> str | None:
    """Why a line's own options are the wrong type (their values are checked by `prepare`)."""
    for name in ("system", "provider", "model"):
        if name in options and not isinstance(options[name], str):
            return f'"{name}" must be a string'
    tokens = options.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        return '"max_tokens" must be a whole number'
    heat = options.get("temperature")
    if heat is not None and (isinstance(heat, bool) or not isinstance(heat, int | float)):
        return '"temperature" must be a number'
    if "schema" in options and not isinstance(options["schema"], str | dict):
        return '"schema" must be a JSON Schema object or a string'
    return None


def line_flags(base: Mapping[str, Any], item: Item) -> dict[str, Any]:
    """The command's flags with the line's own options over them.

    A line that picks another provider but no model gets that provider's default model: the
    command's `-m` names a model of the command's provider."""
    flags = dict(base)
    options = dict(item.options)
    if (
        "provider" in options
        and "model" not in options
        and options["provider"] != base.get("provider")
    ):
        flags["model"] = None
    if isinstance(options.get("schema"), dict):
        options["schema"] = json.dumps(options["schema"])
    flags.update(options)
    return flags


def prepare(
    item: Item, flags: Mapping[str, Any], env: config.Environment, *, require_key: bool
) -> core.Call:
    from llmcli import core
    from llmcli.types import Message

    return core.prepare([Message("user", item.prompt)], line_flags(flags, item), env,
                        require_key=require_key)  # fmt: skip


class Calls:
    """`prepare` for many lines, done once per distinct set of line options.

    Preparing a call (settings, checks, credentials, the provider, prices.toml) takes about a
    tenth of a millisecond, as long as everything else llmcli does for an answer; what it
    produces depends on the options only, never on the prompt. So the call prepared for the
    first line with given options serves every later one, with that line's prompt put in."""

    KEEP = 256  # distinct option sets remembered (a file may give each line its own)

    def __init__(
        self, flags: Mapping[str, Any], env: config.Environment, *, require_key: bool
    ) -> None:
        self.flags = flags
        self.env = env
        self.require_key = require_key
        self._made: dict[str, core.Call] = {}

    def __call__(self, item: Item) -> core.Call:
        from llmcli.types import Message

        key = json.dumps(item.options, sort_keys=True, default=str) if item.options else ""
        call = self._made.get(key)
        if call is None:
            call = prepare(item, self.flags, self.env, require_key=self.require_key)
            if len(self._made) >= self.KEEP:
                self._made.clear()
            self._made[key] = call
            return call
        return call._replace(
            request=call.request._replace(messages=(Message("user", item.prompt),))
        )


class Checked(NamedTuple):
    """What the first pass found: the lines to send, the bad ones, and the providers used."""

    total: int  # good lines to send
    bad: list[BadLine]
    providers: set[str]
    sha256: str


def check(
    source: Source, flags: Mapping[str, Any], env: config.Environment, skip: set[str]
) -> Checked:
    """Read every line once and check it as a call (options, provider, model, schema) without
    sending anything: a bad line is found before the first call, not after the thousandth.

    Duplicate ids are bad lines too: resuming goes by id, so two lines with one id could not both
    be answered. `total` counts the good lines not in `skip` (answered by an earlier run)."""
    bad: list[BadLine] = []
    used: set[str] = set()
    total = 0
    for item, call in good_lines(source, Calls(flags, env, require_key=False), bad):
        used.add(call.request.provider)
        total += id_key(item.id) not in skip
    return Checked(total, bad, used, source.sha256.hexdigest())


def good_lines(
    source: Source, calls: Callable[[Item], core.Call], bad: list[BadLine]
) -> Iterator[tuple[Item, core.Call]]:
    """Each good line of `source` with its call; the others are appended to `bad` with why: a
    line that cannot be read, an id an earlier line has (resuming goes by id), options that
    make no call. A ConfigError is the settings', not a line's: it is raised."""
    seen: set[str] = set()
    for item in source.items(hashing=True):
        if isinstance(item, BadLine):
            bad.append(item)
            continue
        key = id_key(item.id)
        if key in seen:
            bad.append(BadLine(item.line, f"the id {key} is used by an earlier line"))
            continue
        seen.add(key)
        try:
            call = calls(item)
        except errors.UsageError as exc:
            bad.append(BadLine(item.line, _own_words(exc.message, item)))
            continue
        yield item, call


def _own_words(message: str, item: Item) -> str:
    """`invalid value for --temperature` about a line's own "temperature" names the field."""
    for name in item.options:
        flag = f"invalid value for --{name.replace('_', '-')}:"
        if message.startswith(flag):
            return f'invalid "{name}":' + message.removeprefix(flag)
    return message


def wanted(item: Item | BadLine, skip: set[str], bad_lines: set[int]) -> bool:
    """Whether the job sends this line: a good one, not answered by an earlier run."""
    return isinstance(item, Item) and item.line not in bad_lines and id_key(item.id) not in skip


def check_keys(providers_used: set[str], env: config.Environment) -> None:
    """Every provider the lines use has its key, before the first call (exit 3 otherwise)."""
    from llmcli import config

    for name in sorted(providers_used):
        config.credentials(name, env, required=True)


def _grouped_log(journal: Journal) -> Any:
    """The journal's log when the job may group its commits (`Store.group_writes`): the local
    SQLite log, with the log on. None otherwise (a team's PostgreSQL log commits row by row;
    `--no-log` opens no log unless a budget needs it, and this must not open one)."""
    if not journal.enabled or journal.target.shared:
        return None
    from llmcli.calllog import LogFailure
    from llmcli.store import Store

    try:
        log = journal.log()
    except LogFailure:
        return None  # the first row will say why, as it would without grouping
    return log if isinstance(log, Store) else None


def batch_id(out: Path) -> str:
    """The job's name in the log (its tag). A job is its output file: a resumed run (even of
    an input that has grown since) writes to the same file, so it keeps the same name."""
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()
    return f"batch-{digest[:10]}"


# --- the output file ---------------------------------------------------------------------------


def answered(out: Path, *, retry_failed: bool = False) -> tuple[set[str], bool]:
    """The ids an earlier run wrote to `out` (the job skips them), and whether a last line cut
    short by a kill was dropped (the file is truncated to its last complete line).

    With `retry_failed`, an id whose last line is an error is not done: it is sent again, and
    its new line, appended, is its result (the last line of an id wins)."""
    done: set[str] = set()
    try:
        handle = out.open("rb+")
    except FileNotFoundError:
        return done, False
    except OSError as exc:
        raise errors.UsageError(f"cannot read {out}: {exc.strerror or exc}") from None
    with handle:
        good_end = 0
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break  # a write cut short: not a result
            try:
                data = json.loads(raw)
                key = id_key(data["id"])
            except (ValueError, KeyError, TypeError):
                raise errors.UsageError(
                    f"{out} line {number} is not a result line of llmcli batch",
                    "name another output file with -o",
                ) from None
            if retry_failed and "error" in data:
                done.discard(key)
            else:
                done.add(key)
            good_end = handle.tell()
        size = handle.seek(0, os.SEEK_END)
        if size != good_end:
            handle.truncate(good_end)
            return done, True
    return done, False


def _json(data: Mapping[str, Any]) -> str:
    """One JSON line; an exact amount (Decimal) written digit for digit, not as a float."""
    from llmcli import money

    amounts: list[str] = []
    token = os.urandom(8).hex()

    def value(item: Any) -> Any:
        if isinstance(item, Decimal):
            amounts.append(money.plain(item))
            return f"{token}:{len(amounts) - 1}"
        raise TypeError(f"{type(item).__name__} is not JSON serializable")

    text = json.dumps(data, ensure_ascii=False, default=value)
    for index, amount in enumerate(amounts):
        text = text.replace(f'"{token}:{index}"', amount, 1)
    return text


def result_line(
    item: Item, call: core.Call, outcome: Any = None, error: errors.LlmcliError | None = None
) -> dict[str, Any]:
    """The output line for one input line: its `content`, or its `error` (and exit code)."""
    request = call.request
    data: dict[str, Any] = {"id": item.id}
    response = outcome.response if outcome is not None else None
    problem = error or (outcome.problem if outcome is not None else None)
    if response is not None:
        data["content"] = response.text
        if request.schema is not None:
            data["parsed"] = response.parsed
    if problem is not None:
        data["error"] = problem.message
        data["exit_code"] = int(problem.exit_code)
    data.update(
        finish_reason=response.finish_reason.value if response else None,
        usage=response.usage.to_dict() if response else None,
        cost_usd=response.cost_usd if response else None,
        provider=response.provider if response else request.provider,
        model=response.model if response else request.model,
    )
    return data


# --- adaptive concurrency ------------------------------------------------------------------------


class Wakeup:
    """Waiters for a condition that synchronous code changes: `notify` wakes them to look
    again. Not asyncio.Condition, whose lock would make releasing a slot an `await`, which a
    cancelled task's `finally` might not get through."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Limiter:
    """How many calls may be in flight: halved on a rate limit, one more after a run of
    successes, never above `ceiling` nor below 1.

    One burst of 429s must halve the limit once, not once per call caught in it: a 429 counts
    only for a call started (or retried) since the last halving (`generation`)."""

    def __init__(self, ceiling: int, on_change: Callable[[int, str], None] | None = None) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.active = 0
        self.generation = 0
        self.streak = 0
        self.on_change = on_change
        self._free = Wakeup()

    async def acquire(self) -> int:
        """Wait for a free slot; returns the generation the call starts in."""
        await self._free.wait_for(lambda: self.active < self.limit)
        self.active += 1
        return self.generation

    def release(self) -> None:
        self.active -= 1
        self._free.notify()

    def rate_limited(self, generation: int) -> int:
        """A call of `generation` was rate limited; returns the generation it is now in."""
        self.streak = 0
        if generation == self.generation and self.limit > 1:
            self.limit = max(1, self.limit // 2)
            self.generation += 1
            if self.on_change:
                self.on_change(self.limit, "rate limited")
        return self.generation

    def succeeded(self) -> None:
        self.streak += 1
        if self.limit < self.ceiling and self.streak >= min(self.limit, RECOVERY_RUN):
            self.streak = 0
            self.limit += 1
            if self.on_change:
                self.on_change(self.limit, "recovering")
            self._free.notify()


# --- the job ---------------------------------------------------------------------------------------


class Progress(NamedTuple):
    """What the job has done so far, for a progress line and the summary."""

    total: int  # lines to send in this run
    done: int
    failed: int
    tokens: int
    cost: Decimal
    unpriced: int  # answers whose price is unknown (not in `cost`)
    elapsed: float
    limit: int
    failed_ids: tuple[Any, ...]  # the first few, for the summary


class Job:
    """One run of `batch run`: the options that do not change from line to line."""

    def __init__(
        self,
        source: Source,
        flags: Mapping[str, Any],
        env: config.Environment,
        journal: Journal,
        *,
        out: Path,
        total: int,
        skip: set[str],
        bad_lines: set[int] = frozenset(),  # type: ignore[assignment]
        concurrency: int = 8,
        ordered: bool = False,
        max_cost: Decimal | None = None,
        cache: Policy | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.flags = flags
        self.env = env
        self.journal = journal
        self.out = out
        self.total = total
        self.skip = skip
        self.bad_lines = bad_lines
        self.concurrency = concurrency
        self.ordered = ordered
        self.max_cost = max_cost
        self.cache = cache
        self.on_progress = on_progress
        self.on_notice = on_notice
        self.done = self.failed = self.tokens = self.unpriced = 0
        self.cost = Decimal(0)
        self.reserved = Decimal(0)  # the worst cases of the calls in flight (--max-cost)
        self.failed_ids: list[Any] = []
        self.started = time.monotonic()
        self.stop_error: errors.LlmcliError | None = None  # why no more lines are sent
        self.signal: int | None = None
        self.limiter: Limiter | None = None

    def progress(self) -> Progress:
        return Progress(self.total, self.done, self.failed, self.tokens, self.cost, self.unpriced,
                        time.monotonic() - self.started, self.limiter.limit if self.limiter else 0,
                        tuple(self.failed_ids))  # fmt: skip

    def _notice(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)

    def run(self) -> Progress:
        """Send every line not yet answered; raise what stopped the job, if anything did.

        SIGINT, SIGTERM and SIGHUP stop it between two lines of output: calls in flight are
        cancelled (logged as interrupted, sent again on resumption), what has been answered is
        written, and the signal is raised again as `errors.Terminated` (or KeyboardInterrupt)."""
        with self._signals():
            asyncio.run(self._main())
        if self.signal is not None:
            if self.signal == signal.SIGINT:
                raise KeyboardInterrupt
            raise errors.Terminated(self.signal)
        if self.stop_error is not None:
            raise self.stop_error
        return self.progress()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        # asyncio installs its own handlers through signal.signal; the command's are put back.
        names = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)]
        self._watched = [
            s for s in names if s is not None and signal.getsignal(s) != signal.SIG_IGN
        ]
        previous = {s: signal.getsignal(s) for s in self._watched}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)

    def _stop(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            for task in self._tasks:
                task.cancel()
            self._window.notify()  # a feeder waiting for --ordered's window looks again

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        for sig in self._watched:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, self._stop, sig)
        self.limiter = Limiter(self.concurrency, self._limit_changed)
        self._pending: dict[int, dict[str, Any]] = {}  # --ordered: finished, waiting their turn
        self._next = 0  # --ordered: the sequence number to write next
        self._window = Wakeup()  # --ordered: the feeder waits for the oldest answer
        self._unwritten: list[str] = []  # output lines waiting for their rows' commit
        self._flush_timer: asyncio.TimerHandle | None = None
        self._log = _grouped_log(self.journal)
        try:
            with (
                self._log.group_writes() if self._log is not None else contextlib.nullcontext(),
                self.out.open("a", encoding="utf-8") as self._handle,
            ):
                try:
                    await self._feed()
                    if self._tasks:
                        await asyncio.gather(*self._tasks, return_exceptions=True)
                    self._flush_pending(force=True)
                finally:
                    self._write_out()
        except OSError as exc:
            raise errors.LlmcliError(f"cannot write {self.out}: {exc.strerror or exc}") from None
        finally:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            for sig in self._watched:
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.remove_signal_handler(sig)

    def _limit_changed(self, limit: int, why: str) -> None:
        if why == "rate limited":
            self._notice(f"rate limited: concurrency lowered to {limit}")
        elif limit == self.concurrency:
            self._notice(f"concurrency back to {limit}")

    async def _feed(self) -> None:
        """Send the lines through `concurrency` workers, each taking the next line as soon as
        its last call has ended.

        Not a task per line started by one feeder: a call that ended would wait a turn or two
        of the event loop for the feeder to start the next, and its connection would sit idle
        meanwhile. At 64 calls in flight a quarter to a half of the connections were idle at
        any moment, and the HTTP client checks every idle connection (a system call) each time
        a request starts or ends: more CPU per answer than llmcli's own work."""
        lines = self._lines()
        workers = [asyncio.create_task(self._worker(lines)) for _ in range(self.concurrency)]
        self._tasks.update(workers)
        for worker in workers:
            worker.add_done_callback(self._tasks.discard)
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
        for outcome in outcomes:  # the input could not be read again, or a bug: raised
            if isinstance(outcome, Exception):
                raise outcome

    def _lines(self) -> Iterator[tuple[int, Item, core.Call]]:
        """The lines to send, numbered in input order, with their calls (shared by the
        workers: each takes the next)."""
        calls = Calls(self.flags, self.env, require_key=True)
        sequence = 0
        for item in self.source.items():
            if not wanted(item, self.skip, self.bad_lines):
                continue
            if self._stopping:
                return
            yield sequence, item, calls(item)
            sequence += 1

    async def _worker(self, lines: Iterator[tuple[int, Item, core.Call]]) -> None:
        assert self.limiter is not None
        for sequence, item, call in lines:
            if self._stopping:
                return
            if self.ordered:
                # Finished answers wait for an earlier slow one: only so many.
                await self._window.wait_for(
                    lambda n=sequence: n - self._next < 4 * self.concurrency or self._stopping
                )
            generation = await self.limiter.acquire()
            if self._stopping:
                self.limiter.release()
                return
            worst = self._afford(call)
            if worst is None:
                self.limiter.release()
                return
            self.reserved += worst
            with contextlib.suppress(Exception):
                # As when each line was a task of its own: an unforeseen failure of one call
                # loses that line only (no output line: the next run sends it again).
                await self._one(item, call, worst, generation, sequence)

    @property
    def _stopping(self) -> bool:
        return self.signal is not None or self.stop_error is not None

    def _afford(self, call: core.Call) -> Decimal | None:
        """The call's worst case when `--max-cost` allows it (0 without a limit); None when it
        would pass the limit, which then stops the job."""
        if self.max_cost is None:
            return Decimal(0)
        from llmcli import core, money

        worst = core.estimate(call).price.usd
        if worst is None:
            self.stop_error = errors.BudgetExceeded(
                f"--max-cost cannot be kept: {call.request.provider} {call.request.model} has no known price",
                "price it in prices.toml (docs/cost.md), or drop --max-cost",
            )
            return None
        if self.cost + self.reserved + worst > self.max_cost:
            spent = money.usd(self.cost)
            self.stop_error = errors.BudgetExceeded(
                f"--max-cost {money.usd(self.max_cost)} reached: {spent} spent, and the next call "
                f"could cost up to {money.usd(worst)}; {self.total - self.done} lines not sent",
                "run the same command again to go on (answered lines are skipped)",
            )
            return None
        return worst

    async def _one(
        self, item: Item, call: core.Call, worst: Decimal, generation: int, sequence: int
    ) -> None:
        from llmcli import lifecycle
        from llmcli.journal import new_conversation_id

        assert self.limiter is not None
        limiter = self.limiter
        state = {"generation": generation}

        def on_retry(notice: Any) -> None:
            if isinstance(notice.error, errors.RateLimitError):
                state["generation"] = limiter.rate_limited(state["generation"])

        line: dict[str, Any] | None = None
        try:
            outcome = await lifecycle.arun(
                call, self.journal, conversation_id=new_conversation_id(), on_retry=on_retry,
                cache=self.cache,
            )  # fmt: skip
            line = result_line(item, call, outcome)
            limiter.succeeded()
        except FATAL as exc:
            if self.stop_error is None:
                self.stop_error = exc
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()
        except errors.LlmcliError as exc:
            if isinstance(exc, errors.RateLimitError):
                limiter.rate_limited(state["generation"])
            line = result_line(item, call, error=exc)
        finally:
            # Nothing awaited here: a task cancelled now still writes the answer it paid for.
            self.reserved -= worst
            limiter.release()
            if line is not None:
                self._count(item, line)
                self._write(sequence, line)
            if self._stopping:
                self._window.notify()

    def _count(self, item: Item, line: dict[str, Any]) -> None:
        self.done += 1
        if "error" in line:
            self.failed += 1
            if len(self.failed_ids) < 5:
                self.failed_ids.append(item.id)
        usage = line.get("usage") or {}
        self.tokens += (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
        cost = line.get("cost_usd")
        if cost is not None:
            self.cost += cost
        elif line.get("content") is not None:
            self.unpriced += 1
        if self.on_progress is not None:
            self.on_progress(self.progress())

    def _write(self, sequence: int, line: dict[str, Any]) -> None:
        if not self.ordered:
            self._emit(line)
            return
        self._pending[sequence] = line
        self._flush_pending()

    def _flush_pending(self, *, force: bool = False) -> None:
        """--ordered: write every answer whose turn has come. At the end (`force`), after an
        interruption, the answers still waiting for a cancelled earlier line are written too:
        they are paid for, and the resumed run adds the missing ones after them."""
        if not self.ordered:
            return
        while self._next in self._pending:
            self._emit(self._pending.pop(self._next))
            self._next += 1
        if force:
            for sequence in sorted(self._pending):
                self._emit(self._pending.pop(sequence))
        self._window.notify()

    def _emit(self, line: dict[str, Any]) -> None:
        """Queue an output line; it is written, with the others, once their rows are committed
        (`_write_out`): at most WRITE_EVERY seconds or WRITE_LINES lines later."""
        self._unwritten.append(_json(line) + "\n")
        if len(self._unwritten) >= WRITE_LINES:
            self._write_out_now()
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(WRITE_EVERY, self._write_out_now)

    def _write_out_now(self) -> None:
        """`_write_out` from a task or a timer: a failure stops the job (as `_main` would)."""
        try:
            self._write_out()
        except OSError as exc:
            if self.stop_error is None:
                self.stop_error = errors.LlmcliError(
                    f"cannot write {self.out}: {exc.strerror or exc}"
                )
            for task in self._tasks:
                task.cancel()

    def _write_out(self) -> None:
        """Commit the log's rows of the queued lines, then write the lines.

        In that order, so that every line in the output has its row in the log: a job killed
        between the two has rows without lines (sent again when it is resumed), never lines
        without rows. One write of whole lines, flushed: a kill leaves complete lines (and at
        worst one cut short, which the next run drops)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._unwritten:
            return
        if self._log is not None:
            from llmcli.calllog import LogFailure

            try:
                self._log.commit()
            except LogFailure as exc:  # the log must never cost an answer: warned, written
                from llmcli import logtrouble

                self.journal.problem = str(
                    logtrouble.describe(exc.error, self.journal.where, writing=True)
                )
        lines, self._unwritten = self._unwritten, []
        handle: IO[str] = self._handle
        handle.write("".join(lines))
        handle.flush()
