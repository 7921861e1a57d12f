"""`llmcli stream` (and `ask --stream`) as a user meets it: text arrives while the server is still
sending, failures keep what was printed, Ctrl-C and a closed pipe end cleanly."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import LLMCLI, PROVIDERS, base_env, run_cli
from tests.fakeserver import Reply

CHUNKS = ["Once", " upon", " a", " time", " there", " was"]


class Running:
    """An `llmcli` subprocess whose stdout is read incrementally, with bounded waits."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [LLMCLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.out = b""

    def read_until(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while needle.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen within {timeout}s; got {self.out!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise AssertionError(f"stdout closed before {needle!r}; got {self.out!r}")
                self.out += data
        return self.out.decode()

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        rest, err = self.proc.communicate(timeout=timeout)
        self.out += rest
        return self.proc.returncode, self.out.decode(), err.decode()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_first_chunk_is_printed_before_the_server_sends_the_last(fake, provider):
    gate = threading.Event()
    fake.script(provider, Reply(chunks=CHUNKS, gate=gate, input_tokens=5, output_tokens=6))
    running = Running(
        "stream", "-p", provider, "-u", "--retries", "0", "Tell me a story", env=base_env(fake)
    )
    try:
        running.read_until("Once upon")
        # The server is held before its final chunk: what we read cannot be a buffered whole.
        assert not fake.requests_for(provider)[-1].done.is_set()
    finally:
        gate.set()
    code, out, err = running.finish()
    assert code == 0, err
    assert out == "Once upon a time there was\n"
    assert "tokens: 5 in, 6 out, 11 total" in err


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_json_has_usage_finish_and_time_to_first_token(cli, fake, provider):
    fake.script(provider, Reply(chunks=CHUNKS, finish="length", input_tokens=4, output_tokens=6))
    result = cli("stream", "-p", provider, "--json", "--retries", "0", "story")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["content"] == "".join(CHUNKS)
    assert data["finish_reason"] == "length"
    assert (data["usage"]["input_tokens"], data["usage"]["output_tokens"]) == (4, 6)
    assert data["ttft_ms"] is not None and data["ttft_ms"] <= data["duration_ms"]
    assert "truncated" in result.err


def test_stream_request_asks_openai_for_usage(cli, fake):
    cli("stream", "-p", "openai", "hi")
    body = fake.requests_for("openai")[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_stream_warns_and_strict_exits_8(cli, fake, provider):
    fake.script(
        provider, Reply(chunks=CHUNKS, finish="length"), Reply(chunks=CHUNKS, finish="length")
    )
    result = cli("stream", "-p", provider, "hi")
    assert (result.code, result.out) == (0, "Once upon a time there was\n")
    assert "warning: the answer was truncated" in result.err
    strict = cli("stream", "-p", provider, "--strict", "hi")
    assert strict.code == 8 and strict.out == "Once upon a time there was\n"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["drop", "error-event"])
def test_failure_mid_stream_keeps_printed_text_and_is_not_retried(cli, fake, provider, fault):
    reply = (
        Reply(chunks=CHUNKS, drop_after=2)
        if fault == "drop"
        else Reply(chunks=CHUNKS, stream_error_after=2)
    )
    fake.script(provider, reply)
    result = cli("stream", "-p", provider, "--retries", "2", "hi")
    assert result.code == 6, result.err
    assert result.out == "Once upon\n"
    lines = result.err.splitlines()
    assert lines[0].startswith("Error: stream broken off after 9 characters: ")
    assert len(lines) <= 2 and "Traceback" not in result.err
    assert len(fake.requests_for(provider)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failure_before_any_text_is_retried(cli, fake, provider):
    fake.script(provider, Reply(chunks=CHUNKS, drop_after=0), Reply(chunks=["fine"]))
    result = cli("stream", "-p", provider, "--retries", "1", "hi")
    assert (result.code, result.out) == (0, "fine\n"), result.err
    assert "retrying in" in result.err
    assert len(fake.requests_for(provider)) == 2


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_ctrl_c_mid_stream_keeps_text_and_exits_130(fake, provider):
    gate = threading.Event()
    fake.script(provider, Reply(chunks=CHUNKS, gate=gate))
    running = Running("stream", "-p", provider, "hi", env=base_env(fake))
    try:
        running.read_until("Once upon")
        running.proc.send_signal(signal.SIGINT)
        code, out, err = running.finish()
    finally:
        gate.set()
    assert code == 130
    assert out.startswith("Once upon") and out.endswith("\n")
    assert "Traceback" not in err


def test_closed_pipe_ends_quietly(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text(" ".join(f"word{i}" for i in range(20000)))
    script = f'"{LLMCLI}" stream -p echo --max-tokens 20000 < "{words}" | head -c 20; echo "rc=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, env=base_env(), timeout=60)
    assert proc.stdout == b"word0 word1 word2 wo"
    assert proc.stderr.decode().strip() == "rc=0"


def test_ask_stream_flag_streams_too(cli, fake):
    fake.script("gemini", Reply(chunks=CHUNKS))
    result = cli("ask", "--stream", "-p", "gemini", "hi")
    assert (result.code, result.out) == (0, "Once upon a time there was\n")
    assert fake.requests_for("gemini")[-1].stream


def test_echo_streams_word_by_word():
    result = run_cli("stream", "-p", "echo", "-u", "one two three")
    assert (result.code, result.out) == (0, "one two three\n")
    assert result.err.startswith("tokens: 3 in, 3 out")


def test_no_ansi_codes_on_a_pipe(cli, fake):
    fake.script("openai", Reply(chunks=CHUNKS))
    result = cli("stream", "-p", "openai", "hi")
    assert "\x1b" not in result.out + result.err


def test_waiting_indicator_on_a_terminal_is_cleared_by_the_first_token(fake):
    import pexpect

    gate = threading.Event()
    fake.script("openai", Reply(chunks=["Hello", " terminal"], delay=1.0, gate=gate))
    child = pexpect.spawn(LLMCLI, ["stream", "-p", "openai", "hi"], env=base_env(fake), timeout=20)
    try:
        child.expect_exact("waiting for openai gpt-4o-mini")
        child.expect_exact("\r\x1b[K")  # erased before the answer is written
        child.expect_exact("Hello")
        gate.set()
        child.expect_exact(" terminal")
        child.expect(pexpect.EOF)
    finally:
        gate.set()
        child.close()
    assert child.exitstatus == 0
