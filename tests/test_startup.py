"""The command line's start-up: the garbage collector waits until the first bytes of the answer.

Each case runs in a fresh interpreter, so pausing and freezing the collector there cannot
disturb the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import llmcli
from tests.conftest import LLMCLI, base_env


def _python(code: str, *, stdin: str | None = None, **env: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**base_env(), **env},
        timeout=60,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


AFTER_COMMAND = """
import gc, json, sys
from llmcli import startup
startup.pause()
from llmcli.cli import run
code = run({args!r})
sys.stdout.write("\\n" + json.dumps({{"code": code, "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count()}}) + "\\n")
"""


@pytest.mark.parametrize(
    "args",
    [["ask", "-p", "echo", "hi"], ["stream", "-p", "echo", "hi there"], ["config", "show"]],
    ids=["ask", "stream", "config-show"],
)
def test_collection_resumes_once_output_starts(args):
    state = _python(AFTER_COMMAND.format(args=args))
    assert state["code"] == 0
    assert state["enabled"] is True
    assert state["frozen"] > 10_000  # start-up's objects (Click, llmcli) set aside


def test_a_command_that_fails_before_any_output_never_resumes():
    state = _python(AFTER_COMMAND.format(args=["ask", "-p", "nope", "hi"]))
    assert state["code"] == 2
    assert state["enabled"] is False  # the process ends next: nothing to collect for
    assert state["frozen"] == 0


def test_a_stream_resumes_at_its_first_chunk_not_its_end():
    code = """
import gc, json
from llmcli import render, startup
seen = []
def deltas():
    seen.append(gc.isenabled())  # the request is out, nothing printed yet
    yield "first"
    seen.append(gc.isenabled())  # the first chunk has been written
    yield " second"
startup.pause()
before = gc.isenabled()
with render.AnswerWriter("waiting") as writer:
    for text in deltas():
        writer.write(text)
print()
print(json.dumps({"before": before, "at_first_chunk": seen[0], "at_second_chunk": seen[1]}))
"""
    state = _python(code)
    assert state == {"before": False, "at_first_chunk": False, "at_second_chunk": True}


def test_the_library_never_touches_the_collector():
    code = """
import gc, json
import llmcli
import llmcli.render  # the command line's modules, imported but not run, pause nothing either
answer = llmcli.ask("hello there", provider="echo")
print(json.dumps({"text": answer.text, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""
    assert _python(code) == {"text": "hello there", "enabled": True, "frozen": 0}


def test_the_console_script_and_python_dash_m_both_enter_through_startup():
    for command in ([LLMCLI], [sys.executable, "-m", "llmcli"]):
        proc = subprocess.run(
            [*command, "ask", "-p", "echo", "one two"],
            capture_output=True,
            text=True,
            env=base_env(),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "one two\n", "")
    with open(LLMCLI) as script:
        assert "from llmcli.startup import main" in script.read()
    main_module = Path(llmcli.__file__).with_name("__main__.py").read_text()
    assert "from llmcli.startup import main" in main_module


def test_chat_resumes_after_a_first_turn_that_failed():
    """A session goes on after a failed turn: the collector must not stay off for all of it."""
    code = AFTER_COMMAND.format(args=["chat", "-p", "openai", "--retries", "0", "--timeout", "5"])
    state = _python(code, stdin="hello\n", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert state["code"] == 7  # nothing listens on port 9: a network error
    assert state["enabled"] is True
