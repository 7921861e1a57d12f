"""Whole-process measurements for bench/: run a command N times, report median, min and max.

What one run measures (`run_once`):

* wall time: from just before the spawn to the moment `os.wait4` has reaped the process;
* CPU time: user + system of that process and of the children it waited for, from `os.wait4`
  (so it includes the GNU time wrapper below, well under a millisecond);
* peak RSS: `ru_maxrss` as GNU time (`/usr/bin/time -f %M`) reports it for the command it
  starts. Read straight from our own `os.wait4` it would be wrong for small commands: Linux
  carries the RSS of the process that forked a child into the child's `ru_maxrss` at `execve`,
  so every figure would be at least this benchmark's own RSS (25 MiB and more). GNU time is a
  small process, so its child starts from a small floor. The wrapper's own cost (an extra
  `execve`, about a millisecond) falls on both sides of every comparison alike. Without
  /usr/bin/time (Debian package `time`), RSS falls back to `os.wait4`, marked with `≥`;
* time to first byte: when the first non-empty read of its stdout returned, relative to the
  spawn (stdout is a pipe drained with `select`, never a terminal); and, read from
  /proc/PID/task/*/schedstat at that moment, the CPU time the process had used by then and the
  time it had spent waiting for a CPU (a busy machine shows here, not in the CPU figure);
* tail: from the last non-empty stdout read to the exit (work done after the answer is out).

Every process gets the same clean environment (`Sandbox`): a temporary HOME, LLMCLI_HOME and
working directory, `LLMCLI_LOG=0`, test keys, the fake server's base URLs and none of the
developer's OPENAI_*/ANTHROPIC_*/GEMINI_*/GOOGLE_*/LLM_*/LLMCLI_* variables.

The fake provider server runs in a process of its own (`ServerProcess`), so its work neither
competes for the measuring loop's GIL nor counts in the measured process's CPU time. It is the
test suite's `tests/fakeserver.py`, driven over a pipe (`python bench/_measure.py --serve`).

Nothing here reaches the network: the server binds 127.0.0.1 and every base URL points at it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakeserver import FakeServer, Reply  # noqa: E402

PYTHON = sys.executable
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
LLMCLI = str(Path(sys.executable).with_name("llmcli"))
PROVIDERS = ("openai", "anthropic", "gemini")
KEYS = {
    "OPENAI_API_KEY": "sk-bench-openai-key",
    "ANTHROPIC_API_KEY": "sk-ant-bench-anthropic-key",
    "GEMINI_API_KEY": "AIza-bench-gemini-key",
}
SCRUBBED_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "LLM_", "LLMCLI_", "NO_COLOR")


def bare(provider: str, mode: str, *prompt: str) -> list[str]:
    """The command line of the bare-SDK reference script for `provider` (mode: ask | stream)."""
    return [PYTHON, str(BENCH / f"bare_{provider}.py"), mode, *prompt]


def paused(provider: str, mode: str, *prompt: str) -> list[str]:
    """The same bare script with the collector paused as llmcli's start-up pauses it."""
    return [PYTHON, str(BENCH / "paused.py"), *bare(provider, mode, *prompt)[1:]]


def llmcli(*args: str) -> list[str]:
    """The installed `llmcli` script next to this interpreter."""
    return [LLMCLI, *args]


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One finished process. Times in seconds (monotonic clock), memory in bytes."""

    argv: list[str]
    started: float  # time.monotonic() just before the spawn
    wall: float
    user: float
    sys: float
    max_rss: int
    ttfb: float | None  # first non-empty stdout read, relative to `started`
    ttfb_cpu: float | None  # CPU time used by then (schedstat; None where unavailable)
    ttfb_wait: float | None  # time spent runnable but waiting for a CPU by then
    last_out: float | None  # the last non-empty stdout read, relative to `started`
    code: int
    out: bytes
    err: bytes
    #: Further figures a benchmark attaches (e.g. when the fake server saw the request).
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def tail(self) -> float | None:
        """From the last output to the exit: work done after the answer was out."""
        return None if self.last_out is None else self.wall - self.last_out

    def check(self, expect_code: int = 0) -> Run:
        """Raise unless the process exited with `expect_code`; returns self."""
        if self.code != expect_code:
            lines = self.err.decode(errors="replace").strip().splitlines() or ["(no stderr)"]
            raise RuntimeError(
                f"`{' '.join(self.argv)}` exited {self.code}: {lines[-1]}\n"
                + "\n".join(lines[-20:])
            )
        return self


def schedstat(pid: int) -> tuple[float | None, float | None]:
    """Seconds on a CPU and seconds runnable-but-waiting so far, summed over the threads of `pid`
    and of its live descendants (the command under the GNU time wrapper is its child)."""
    on_cpu = waiting = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue  # it has just exited
        except OSError:
            return None, None
        for task in tasks:
            base = f"/proc/{current}/task/{task}"
            try:
                with open(f"{base}/schedstat") as f:
                    fields = f.read().split()
                on_cpu += int(fields[0])
                waiting += int(fields[1])
                with open(f"{base}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
            except FileNotFoundError:
                continue  # that thread has just ended
            except (OSError, ValueError, IndexError):
                return None, None
    return on_cpu / 1e9, waiting / 1e9


def run_once(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
) -> Run:
    """Spawn `argv` (stdin /dev/null), drain stdout and stderr, reap with `os.wait4`, time it."""
    if GNU_TIME is None:
        return _run(list(argv), list(argv), env, cwd, timeout, None)
    handle, rss_file = tempfile.mkstemp(prefix="llmcli-bench-rss-")
    os.close(handle)
    try:
        command = [GNU_TIME, "-f", "%M", "-o", rss_file, *argv]
        return _run(list(argv), command, env, cwd, timeout, Path(rss_file))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(rss_file)


def _run(
    argv: list[str],
    command: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None,
    timeout: float,
    rss_file: Path | None,
) -> Run:
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        bufsize=0,
        start_new_session=True,  # one process group: a timeout kills the command under the wrapper
    )
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    open_fds = [out_fd, err_fd]
    ttfb: float | None = None
    ttfb_cpu = ttfb_wait = last_out = None
    deadline = started + timeout
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"`{' '.join(argv)}` still running after {timeout:.0f} s")
            ready, _, _ = select.select(open_fds, [], [], left)
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if not data:
                    open_fds.remove(fd)
                    continue
                if fd == out_fd and ttfb is None:
                    ttfb = time.monotonic() - started
                    ttfb_cpu, ttfb_wait = schedstat(proc.pid)
                if fd == out_fd:
                    last_out = time.monotonic() - started
                buffers[fd] += data
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    max_rss = usage.ru_maxrss * 1024  # KiB on Linux; a floor, see the module docstring
    if rss_file is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            max_rss = int(rss_file.read_text().split()[-1]) * 1024
    return Run(
        argv=argv,
        started=started,
        wall=wall,
        user=usage.ru_utime,
        sys=usage.ru_stime,
        max_rss=max_rss,
        ttfb=ttfb,
        ttfb_cpu=ttfb_cpu,
        ttfb_wait=ttfb_wait,
        last_out=last_out,
        code=proc.returncode,
        out=bytes(buffers[out_fd]),
        err=bytes(buffers[err_fd]),
    )


# --------------------------------------------------------------------------------------------
# Several runs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median, min and max of one figure over the measured runs (warm-ups excluded)."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values))


def summary(runs: Sequence[Run], figure: str) -> Summary | None:
    """`figure`: a Run attribute (wall, cpu, max_rss, ttfb, ttfb_cpu, tail...) or a `Run.extra` key."""
    values = [r.extra.get(figure) if figure in r.extra else getattr(r, figure, None) for r in runs]
    if not values or any(v is None for v in values):
        return None
    return Summary.of(values)


@dataclasses.dataclass
class Case:
    """One command to measure, and what must hold for a run of it to count."""

    name: str
    argv: list[str]
    expect_code: int = 0
    #: Called before every run with `warmup=True|False`, e.g. to script the server's reply.
    before: Callable[[bool], None] | None = None
    #: Called with every finished run (and `warmup`); raise to reject it, or fill `run.extra`.
    after: Callable[[Run, bool], None] | None = None
    runs: list[Run] = dataclasses.field(default_factory=list)
    #: Why the case stopped being measured (a run failed), or None.
    error: str | None = None

    def once(self, sandbox: Sandbox, *, warmup: bool = False, timeout: float = 120.0) -> Run:
        if self.before is not None:
            self.before(warmup)
        run = run_once(self.argv, sandbox.env, cwd=sandbox.cwd, timeout=timeout)
        run.check(self.expect_code)
        if self.after is not None:
            self.after(run, warmup)
        return run

    def figure(self, name: str) -> Summary | None:
        return None if self.error else summary(self.runs, name)


def measure(
    cases: Sequence[Case],
    sandbox: Sandbox,
    *,
    runs: int = 5,
    warmup: int = 1,
    timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run each case `warmup` times (discarded), then `runs` times, interleaved.

    Interleaving (A B A B ... rather than A A A B B B) spreads any drift of the machine, such as
    another process waking up, over every case alike. Results land in `case.runs`; a case whose
    run fails gets `case.error` and is dropped from the remaining rounds (the others go on).
    """

    def attempt(case: Case, warm: bool) -> None:
        try:
            run = case.once(sandbox, warmup=warm, timeout=timeout)
        except (RuntimeError, TimeoutError, OSError) as exc:
            case.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if progress is not None:
                progress(f"{case.name}: FAILED: {exc}")
            return
        if not warm:
            case.runs.append(run)

    for case in cases:
        case.runs.clear()
        case.error = None
    for index in range(warmup):
        for case in cases:
            if case.error is None:
                if progress is not None:
                    progress(f"{case.name}: warm-up {index + 1}/{warmup}")
                attempt(case, True)
    for index in range(runs):
        for case in cases:
            if case.error is None:
                if progress is not None:
                    progress(f"{case.name}: run {index + 1}/{runs}")
                attempt(case, False)


# --------------------------------------------------------------------------------------------
# The environment of every measured process
# --------------------------------------------------------------------------------------------


class Sandbox:
    """A temporary HOME / LLMCLI_HOME / working directory and the clean environment using them.

    `LLMCLI_LOG=0`: llmcli's call log is off, so llmcli does the same work as a bare SDK script.
    """

    def __init__(self, server_env: dict[str, str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="llmcli-bench-"))
        self.home = self.root / "home"
        self.cwd = self.root / "work"
        self.home.mkdir()
        self.cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
        env.pop("PYTHONSTARTUP", None)
        # Byte-code caching on, into a cache of our own: without it (PYTHONDONTWRITEBYTECODE=1
        # is set on some machines) llmcli, an editable install without .pyc files, would be
        # compiled from source on every run while the SDKs load from their cached .pyc files.
        # The warm-up run fills the cache for every module either side imports.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        env.update(KEYS)
        env.update(
            {
                "HOME": str(self.home),
                "LLMCLI_HOME": str(self.home / "llmcli"),
                "LLMCLI_LOG": "0",
                "ANTHROPIC_CONFIG_DIR": str(self.home / "anthropic"),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                "XDG_CACHE_HOME": str(self.home / ".cache"),
            }
        )
        env.update(server_env or {})
        self.env = env

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# The fake server, in a process of its own
# --------------------------------------------------------------------------------------------


class ServerProcess:
    """`tests.fakeserver.FakeServer` in a child process, scripted over its stdin/stdout.

    `script(provider, n, **reply)` queues `n` copies of `Reply(**reply)`; `requests(provider)`
    returns what the server recorded (its `started_at`/`finished_at` are `time.monotonic()`
    values, comparable with `Run.started` on Linux, where that clock is system-wide);
    `cpu()` is the server process's own CPU time so far.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.url: str = hello["url"]
        self.env: dict[str, str] = hello["env"]

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake server process exited")
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"fake server: {answer['error']}")
        return answer

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def script(self, provider: str, count: int = 1, **reply: Any) -> None:
        self.call("script", provider=provider, count=count, reply=reply)

    def reset(self) -> None:
        self.call("reset")

    def requests(self, provider: str | None = None) -> list[dict[str, Any]]:
        return self.call("requests", provider=provider)

    def cpu(self) -> float:
        return self.call("cpu")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, RuntimeError, ValueError):
                self.call("stop")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:
    """The child side of `ServerProcess`: one JSON command per stdin line, one answer per line."""
    server = FakeServer().start()
    out = sys.stdout

    def send(obj: Any) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    send({"url": server.url, "env": server.env()})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            try:
                if op == "script":
                    reply = Reply(**command["reply"])
                    server.script(command["provider"], *[reply] * command["count"])
                    send(True)
                elif op == "reset":
                    server.wait_idle()
                    server.reset()
                    send(True)
                elif op == "requests":
                    server.wait_idle()
                    records = server.requests
                    if command.get("provider"):
                        records = [r for r in records if r.provider == command["provider"]]
                    send(
                        [
                            {
                                "provider": r.provider,
                                "path": r.path,
                                "stream": r.stream,
                                "status": r.status,
                                "chunks_sent": r.chunks_sent,
                                "started_at": r.started_at,
                                "finished_at": r.finished_at,
                            }
                            for r in records
                        ]
                    )
                elif op == "cpu":
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    send(usage.ru_utime + usage.ru_stime)
                elif op == "stop":
                    send(True)
                    break
                else:
                    send({"error": f"unknown op {op!r}"})
            except Exception as exc:
                send({"error": f"{type(exc).__name__}: {exc}"})
        if server.errors:
            sys.stderr.write("fake server errors:\n" + "\n".join(server.errors))
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def mib(size: float) -> str:
    """Bytes as MiB; `≥` marks the floor `os.wait4` gives without GNU time (module docstring)."""
    return f"{'' if GNU_TIME else '≥'}{size / 2**20:.0f}"


def spread(s: Summary | None, unit: Callable[[float], str]) -> str:
    """`median (min–max)` in one cell."""
    if s is None:
        return "–"
    return f"{unit(s.median)} ({unit(s.min)}–{unit(s.max)})"


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or b.median <= 0:
        return None
    return a.median / b.median


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A Markdown (GitHub) table, readable on a terminal and pasteable into docs/."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def machine() -> str:
    """One line on where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    from importlib import metadata

    for dist in ("llmcli", "openai", "anthropic", "google-genai", "httpx2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", "llmcli"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if head:
            versions.append(f"llmcli at {head}" + (" with uncommitted changes" if dirty else ""))
    except (OSError, subprocess.SubprocessError):
        pass
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), "
        f"{platform.system()} {platform.release().split('-')[0]}, "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def conditions(load_before: float, elapsed: float) -> str:
    """The machine, the load average before and after, and how long the run took: the words
    every table's heading ends with, so a reader can judge how quiet the run was."""
    load_after = os.getloadavg()[0]
    return (
        f"{machine()}; load average {load_before:.1f} before, {load_after:.1f} after; "
        f"{elapsed:.0f} s in all."
    )


def warn_if_busy(say: Callable[[str], None]) -> float:
    """The 1-minute load average; warns through `say` when other work competes for the CPUs."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > cores / 2:
        say(
            f"warning: load average {load:.1f} on {cores} cores: other processes compete for the "
            "CPUs, so wall times will be noisy (CPU times are steadier); best run on a quiet machine"
        )
    return load


def replace_block(path: Path, name: str, text: str) -> None:
    """Replace what lies between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `path`."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
