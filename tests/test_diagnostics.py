"""Diagnostics never change the outcome: with stderr closed, full or broken, the answer on stdout
and the documented exit code stand.

Every case runs the installed `llmcli` against the fake server with its stderr

* closed (`2>&-`: Python then starts with `sys.stderr = None`),
* on /dev/full (every write fails with ENOSPC, as `2>>log` on a full disk does), or
* a pipe whose reader is gone (every write fails with EPIPE),

and checks stdout and the exit code. What stderr would have said is lost, as the user arranged;
each case makes llmcli write at least one diagnostic (a retry line, a warning, an error).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from tests.conftest import LLMCLI, base_env
from tests.fakeserver import Reply

OK = "All good."
FAST = {"retry-after-ms": "10"}  # a retry without a real wait
MODES = ("closed", "full", "broken-pipe")


def start(mode: str, argv: list[str], env: Mapping[str, str], **popen) -> subprocess.Popen:
    """`argv` with stdout piped and stderr closed, on /dev/full, or on a pipe nobody reads."""
    if mode == "closed":
        # `exec` keeps one process (a signal reaches llmcli itself); 2>&- closes descriptor 2.
        return subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 2>&-', *argv], stdout=subprocess.PIPE, env=env, **popen
        )
    if mode == "full":
        with open("/dev/full", "w") as full:
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=full, env=env, **popen)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=writer, env=env, **popen)
    finally:
        os.close(writer)


def run(mode: str, *args: str, env: Mapping[str, str], stdin: bytes = b"") -> tuple[int, str]:
    """Run `llmcli ARGS` to the end; its exit code and stdout."""
    proc = start(mode, [LLMCLI, *args], env, stdin=subprocess.PIPE)
    out, _ = proc.communicate(stdin, timeout=60)
    return proc.returncode, out.decode()


@dataclass(frozen=True)
class Case:
    """`llmcli COMMAND -p openai ARGS hi` while the server sends `replies`."""

    name: str
    replies: tuple[Reply, ...]
    args: tuple[str, ...]
    code: int
    out: str
    env: Mapping[str, str] = field(default_factory=dict)


# fmt: off
CASES = [
    Case("429-then-answer-with-a-retry-line", (Reply(status=429, headers=FAST), Reply(text=OK)), (), 0, OK + "\n"),
    Case("truncated-answer-with-a-warning", (Reply(text=OK, finish="length"),), (), 0, OK + "\n"),
    Case("answer-with-a-usage-line", (Reply(text=OK),), ("-u",), 0, OK + "\n"),
    Case("401", (Reply(status=401),), (), 4, ""),
    Case("500-after-retries", (Reply(status=500, headers=FAST),) * 3, ("--retries", "2"), 6, ""),
    Case("missing-key", (), (), 3, "", env={"OPENAI_API_KEY": ""}),
    Case("usage-error-by-click", (), ("--max-tokens", "lots"), 2, ""),
    Case("usage-error-by-llmcli", (), ("--max-tokens", "0"), 2, ""),
    Case("echo-with-a-usage-line", (), ("-p", "echo", "-u"), 0, "hi\n"),
]
# fmt: on


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("command", ["ask", "stream"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_answer_and_exit_code_stand_without_a_working_stderr(fake, case, command, mode):
    fake.script("openai", *case.replies)
    env = {**base_env(fake), **case.env}
    code, out = run(mode, command, "-p", "openai", *case.args, "hi", env=env)
    assert (code, out) == (case.code, case.out)
    assert len(fake.requests_for("openai")) == len(case.replies)


@pytest.mark.parametrize("mode", MODES)
def test_piped_chat_keeps_its_replies_and_its_exit_code(fake, mode):
    fake.script(
        "openai",
        Reply(status=429, headers=FAST),
        Reply(text=OK),
        Reply(status=401),
        Reply(text="Cut", finish="length"),
    )
    code, out = run(mode, "chat", "-p", "openai", env=base_env(fake), stdin=b"hi\nagain\nlast\n")
    assert (code, out) == (4, f"{OK}\nCut\n")  # the first failed turn's code, as documented


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("command", ["ask", "stream"])
def test_ctrl_c_exits_130(fake, command, mode):
    fake.script("openai", Reply(text=OK, delay=5))
    proc = start(mode, [LLMCLI, command, "-p", "openai", "hi"], base_env(fake))
    try:
        deadline = time.monotonic() + 20
        while not fake.requests_for("openai"):  # the request is out: llmcli waits on the reply
            assert time.monotonic() < deadline, "the request never reached the fake server"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:  # a failed assertion above: do not leave it running
            proc.kill()
            proc.communicate(timeout=10)
    assert (proc.returncode, out.decode()) == (130, "")


# A bug (any exception llmcli did not expect) in a command registered for this test only: no
# provider or input makes the real commands fail that way.
BUG = """
import sys, click
from llmcli import cli

@click.command()
def boom():
    raise RuntimeError("a bug")

cli.COMMANDS["boom"] = "__main__:boom"
sys.argv = ["llmcli", "--debug", "boom"]
cli.main()
"""


@pytest.mark.parametrize("mode", MODES)
def test_debug_traceback_never_lands_on_stdout(mode):
    proc = start(mode, [sys.executable, "-c", BUG], base_env())
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out.decode()) == (1, "")


def test_debug_traceback_and_error_line_on_a_working_stderr():
    proc = subprocess.run(
        [sys.executable, "-c", BUG], capture_output=True, env=base_env(), timeout=60
    )
    err = proc.stderr.decode()
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.splitlines()[-2] == "Error: internal error: RuntimeError: a bug"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_closed_stderr_descriptor_is_held_on_dev_null(fake):
    """With `2>&-`, descriptor 2 must not go to the next file opened (the call log, a socket):
    anything below Python writing to "stderr" would write into it."""
    fake.script("openai", Reply(text=OK, delay=5))
    proc = start("closed", [LLMCLI, "ask", "-p", "openai", "hi"], base_env(fake))
    try:
        deadline = time.monotonic() + 20
        while not fake.requests_for("openai"):
            assert time.monotonic() < deadline, "the request never reached the fake server"
            time.sleep(0.02)
        held = os.readlink(f"/proc/{proc.pid}/fd/2")
    finally:
        if proc.poll() is None:  # a failed assertion above: do not leave it running
            proc.kill()
            proc.communicate(timeout=10)
    assert held == os.devnull
