"""`llmcli serve` as its users see it: one real server process for the module, the project's fake
provider server behind it, the official `openai` SDK (and raw HTTP for `/stream`) in front.

The server is started once (`served`): each test scripts the fake for what it needs. Tests that
stop a server (SIGTERM) start their own.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import KEYS, LLMCLI, base_env, run_cli
from tests.fakeserver import Reply

# On one xdist worker: the module's server (`served`) then starts once, not once per worker.
pytestmark = pytest.mark.xdist_group("serve")

TOKEN = "serve-test-token-0123456789abcdef"
TIMEOUT = 3  # LLM_TIMEOUT of the server: long enough for a loaded machine, short for the 504 test
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "echo": "echo",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """A running `llmcli serve`: its URL, its home (log), its stderr so far."""

    def __init__(self, proc: subprocess.Popen, port: int, home: Path, errfile: Path) -> None:
        self.proc = proc
        self.port = port
        self.home = home
        self.errfile = errfile
        self.url = f"http://127.0.0.1:{port}"

    @property
    def stderr(self) -> str:
        return self.errfile.read_text("utf-8", "replace")

    def client(self, token: str = TOKEN) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=token, max_retries=0, timeout=20)

    def http(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def rows(self) -> list[dict[str, Any]]:
        """The log, newest first, as `llmcli logs --json` shows it."""
        env = base_env(keys=False)
        env["LLMCLI_HOME"] = str(self.home)
        result = run_cli("logs", "--json", "-n", "200", env=env)
        assert result.code == 0, result.err
        return json.loads(result.out)

    def row_where(self, test: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The newest row passing `test`, waited for (a row lands as its call ends)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.rows() if test(r)]
            if found or time.monotonic() > deadline:
                assert found, "no such row in the log"
                return found[0]
            time.sleep(0.1)


def start_server(fake, home: Path, *args: str, **extra: str) -> Served:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env(fake)
    env.update(
        {
            "LLMCLI_HOME": str(home),
            "LLMCLI_SERVE_TOKEN": TOKEN,
            "LLM_MAX_RETRIES": "0",
            "LLM_TIMEOUT": str(TIMEOUT),
            **extra,
        }
    )
    # A tag with a budget of nothing: its calls are refused before they are sent (429).
    (home / "config.toml").write_text("[budget]\ntags = { broke = 0 }\n")
    errfile = home / "serve.err"
    with open(errfile, "wb") as err:
        proc = subprocess.Popen(
            [LLMCLI, "serve", "--port", str(port), *args],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    served = Served(proc, port, home, errfile)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {served.stderr}")
        try:
            if served.http("GET", "/health")[0] == 200:
                return served
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"serve did not start: {served.stderr}")


def stop_server(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.kill()
    served.proc.wait(10)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    running = start_server(server, tmp_path_factory.mktemp("serve") / "home")
    yield running
    stop_server(running)


@pytest.fixture
def api(served, fake):
    """The module's server, with the fake cleared for this test."""
    return served


# --- start-up -----------------------------------------------------------------------------------


def test_start_up_says_which_providers_are_ready_and_where_it_listens(api, server):
    lines = api.stderr.splitlines()
    assert lines[0] == f"openai: ready (key from OPENAI_API_KEY, endpoint {server.url}/v1)"
    assert [line.split(":")[0] for line in lines[:4]] == ["openai", "anthropic", "gemini", "echo"]
    assert all(": ready (" in line for line in lines[:4])
    assert lines[3] == "echo: ready (no key needed)"
    assert lines[4] == f"serving on http://127.0.0.1:{api.port}"
    assert not any(key in api.stderr for key in KEYS.values())


def test_a_provider_without_a_key_is_named_at_start_and_answered_404(fake, tmp_path):
    env = base_env(fake)
    del env["ANTHROPIC_API_KEY"]
    port = free_port()
    proc = subprocess.Popen(
        [LLMCLI, "serve", "--port", str(port)],
        env={**env, "LLMCLI_HOME": str(tmp_path / "h")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(proc, port, tmp_path / "h", tmp_path / "none")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if served.http("GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        status, _, body = served.http(
            "POST",
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": "anthropic/claude-haiku-4-5",
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ),
        )
        assert status == 404
        assert json.loads(body)["error"]["code"] == "provider_not_configured"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert out == ""
    assert (
        "anthropic: not available (Missing required environment variable: ANTHROPIC_API_KEY)" in err
    )
    assert fake.requests_for("anthropic") == []


def test_refuses_a_network_address_without_a_token():
    result = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert result.code == 3
    assert result.out == ""
    assert result.err.startswith("Error: refusing to serve on 0.0.0.0 without LLMCLI_SERVE_TOKEN")


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), timeout=30)
    assert result.code == 3
    assert result.out == ""
    assert f"Error: could not listen on 127.0.0.1:{port}\n" in result.err


# --- the OpenAI API ------------------------------------------------------------------------------


def test_health_needs_no_token(api):
    status, _, body = api.http("GET", "/health", headers={"Authorization": ""})
    assert (status, json.loads(body)) == (200, {"status": "ok"})


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_requests_need_the_token(api, token):
    headers = {"Authorization": f"Bearer {token}" if token else ""}
    for method, path in (
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/stream"),
    ):
        status, got, body = api.http(method, path, "{}", headers=headers)
        assert status == 401, path
        assert got["www-authenticate"] == "Bearer"
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        api.client("wrong-token").chat.completions.create(
            model="echo/echo", messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize("provider", list(MODELS))
def test_chat_completion_through_each_provider(api, fake, provider):
    if provider != "echo":
        fake.script(
            provider, Reply(text=f"Hello from {provider}.", input_tokens=9, output_tokens=4)
        )
    reply = api.client().chat.completions.create(
        model=f"{provider}/{MODELS[provider]}",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to me"},
        ],
        max_tokens=50,
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    if provider == "echo":
        assert choice.message.content == "Say hello to me"
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
            6,
            4,
        )  # words, system too
        return
    assert choice.message.content == f"Hello from {provider}."
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        9,
        4,
        13,
    )
    assert reply.model == MODELS[provider]
    sent = fake.requests_for(provider)
    assert len(sent) == 1
    # The server's own key went upstream; the client's token never leaves the server.
    assert (
        sent[0].api_key
        == {
            "openai": KEYS["OPENAI_API_KEY"],
            "anthropic": KEYS["ANTHROPIC_API_KEY"],
            "gemini": KEYS["GEMINI_API_KEY"],
        }[provider]
    )
    assert TOKEN not in sent[0].raw_body.decode() + json.dumps(sent[0].headers)


@pytest.mark.parametrize("provider", list(MODELS))
def test_streamed_chat_completion_through_each_provider(api, fake, provider):
    if provider != "echo":
        fake.script(
            provider,
            Reply(text="one two three four", input_tokens=6, output_tokens=4, finish="length"),
        )
    stream = api.client().chat.completions.create(
        model=f"{provider}/{MODELS[provider]}",
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=4 if provider == "echo" else 50,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == "one two three four"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 4
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    if provider == "echo":
        assert finishes == ["stop"]
        assert (usage.prompt_tokens, usage.completion_tokens) == (4, 4)
    else:
        assert finishes == ["length"]
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 4, 10)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-haiku-4-5", "anthropic"),
        ("gemini-2.5-flash", "gemini"),
        ("o3-mini", "openai"),
        ("anthropic", "anthropic"),
    ],
)
def test_a_bare_model_name_goes_to_its_family(api, fake, model, provider):
    fake.script(provider, Reply(text="routed"))
    reply = api.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "routed"
    assert len(fake.requests_for(provider)) == 1


def test_options_reach_the_provider(api, fake):
    api.client().chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Q2"},
        ],
        max_completion_tokens=77,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        seed=7,
        response_format={"type": "json_object"},
    )
    body = fake.requests_for("openai")[0].body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["stop"] == ["END"] and body["response_format"] == {"type": "json_object"}
    assert 77 in (body.get("max_tokens"), body.get("max_completion_tokens"))


def test_models_lists_the_usable_providers(api):
    ids = [m.id for m in api.client().models.list()]
    assert "echo/echo" in ids and "openai/gpt-4o-mini" in ids
    assert {i.split("/")[0] for i in ids} == {"openai", "anthropic", "gemini", "echo"}


def test_every_call_is_a_log_row_with_its_tag(api, fake):
    api.client().chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "tagged by user"}], user="alice"
    )
    api.http(
        "POST",
        "/stream",
        json.dumps({"message": "tagged by header", "provider": "echo"}),
        headers={"X-Llmcli-Tag": "nightly"},
    )
    assert api.row_where(lambda r: r["answer"] == "tagged by user")["tag"] == "alice"
    assert api.row_where(lambda r: r["answer"] == "tagged by header")["tag"] == "nightly"
    assert api.row_where(lambda r: r["answer"] == "tagged by user")["source"] == "serve"


# --- /stream -------------------------------------------------------------------------------------


def _events(response: http.client.HTTPResponse) -> Any:
    """Each `data:` payload of an SSE response, as it arrives."""
    while True:
        line = response.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            payload = line[6:].strip().decode()
            yield payload if payload == "[DONE]" else json.loads(payload)


def _open_stream(api: Served, body: dict[str, Any]) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request(
        "POST", "/stream", body=json.dumps(body), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return conn, conn.getresponse()


def test_stream_sends_each_token_as_it_arrives(api, fake):
    gate = threading.Event()
    fake.script(
        "openai", Reply(text="alpha beta gamma delta", input_tokens=5, output_tokens=4, gate=gate)
    )
    conn, response = _open_stream(api, {"message": "go", "provider": "openai"})
    try:
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        assert response.getheader("Cache-Control") == "no-cache"
        assert response.getheader("X-Accel-Buffering") == "no"
        events = _events(response)
        assert next(events) == {"token": "alpha"}
        rec = fake.requests_for("openai")[0]
        assert not rec.done.is_set() and rec.chunks_sent < 4  # the fake has not finished
        gate.set()
        rest = list(events)
    finally:
        gate.set()
        conn.close()
    assert [e["token"] for e in rest[:3]] == [" beta", " gamma", " delta"]
    summary = rest[3]
    assert summary["finish_reason"] == "stop"
    assert summary["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert summary["cost_usd"] > 0
    assert rest[4:] == ["[DONE]"]


def test_a_failure_after_the_stream_began_is_an_error_event(api, fake):
    fake.script("anthropic", Reply(text="one two three", stream_error_after=2))
    conn, response = _open_stream(api, {"message": "go", "provider": "anthropic"})
    try:
        events = list(_events(response))
    finally:
        conn.close()
    assert events[:2] == [{"token": "one"}, {"token": " two"}]
    assert set(events[2]["error"]) == {"type", "message", "code"}
    assert events[2]["error"]["type"] == "upstream_error"
    assert events[3:] == ["[DONE]"]
    row = api.row_where(lambda r: r["provider"] == "anthropic" and r["answer"] == "one two")
    assert row["status"] == "error"


def test_a_failure_inside_an_openai_stream_raises_in_the_sdk(api, fake):
    fake.script("gemini", Reply(text="one two three", stream_error_after=1))
    stream = api.client().chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_client_gone_mid_stream_stops_the_upstream_call(api, fake, provider):
    # Gemini's async stream is a chain of generators that nothing closes when serve stops
    # reading it: the attempt's guard cuts the body it left open.
    words = [f" w{i}" for i in range(60)]
    fake.script(provider, Reply(chunks=words, chunk_delay=0.05))  # three seconds if read whole
    conn, response = _open_stream(api, {"message": "go", "provider": provider})
    events = _events(response)
    assert next(events) == {"token": " w0"}
    assert next(events) == {"token": " w1"}
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    gone = time.monotonic()
    rec = fake.requests_for(provider)[0]
    assert rec.done.wait(5)
    assert rec.finished_at - gone < 1.0  # the upstream connection closed within a second
    assert rec.chunks_sent < len(words)
    row = api.row_where(lambda r: r["provider"] == provider and r["status"] == "interrupted")
    assert row["answer"].startswith(" w0 w1")
    assert len(row["answer"].split()) < len(words)


def test_fifty_concurrent_streams_all_complete(api, fake):
    texts = [f"answer {i} has words" for i in range(50)]
    fake.script("openai", *[Reply(text=t, chunk_delay=0.01) for t in texts])
    client = api.client()

    def one(i: int) -> tuple[str, str | None]:
        stream = client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": str(i)}], stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, next(
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        )

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert sorted(t for t, _ in results) == sorted(texts)
    assert {f for _, f in results} == {"stop"}
    assert len(fake.requests_for("openai")) == 50


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (Reply(status=429, headers={"Retry-After": "7"}), 429, "rate_limited"),
        (Reply(status=500), 502, "upstream_error"),
        (Reply(status=503), 502, "upstream_error"),
        (Reply(status=401), 502, "upstream_auth_refused"),
        (Reply(status=404), 404, "model_not_found"),
        (Reply(status=400), 400, None),
        (Reply(delay=TIMEOUT + 1.5), 504, "upstream_timeout"),
    ],
    ids=["429", "500", "503", "401", "404", "400", "timeout"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_upstream_failures_become_statuses(api, fake, reply, status, code, stream):
    if reply.delay and stream:
        pytest.skip("one timeout is enough: it costs seconds")
    fake.script("openai", reply)
    got, headers, body = api.http(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {
                "model": "openai/gpt-4o-mini",
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }
        ),
    )
    assert got == status
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    if status == 429:
        assert headers["retry-after"] == "7"
    for secret in (*KEYS.values(), TOKEN, "Traceback"):
        assert secret not in body.decode()
    assert "Traceback" not in api.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_llm_timeout_cuts_a_silent_upstream_under_either_event_loop(fake, tmp_path, loop):
    pytest.importorskip(loop)
    served = start_server(fake, tmp_path / "home", LLM_TIMEOUT="2", LLMCLI_SERVE_LOOP=loop)
    gate = threading.Event()
    # "a" at once, "b" at 1.8 s, then silence: each read may wait 2 s, the attempt may not.
    fake.script("openai", Reply(chunks=["a", "b", "c"], chunk_delay=1.8, gate=gate))
    try:
        conn, response = _open_stream(served, {"message": "go", "provider": "openai"})
        events = list(_events(response))
        ended = time.monotonic()
        conn.close()
    finally:
        gate.set()
    try:
        (request,) = fake.requests_for("openai")
        assert ended - request.started_at < 3.0  # 2 s, not 1.8 + 2
        assert events[:2] == [{"token": "a"}, {"token": "b"}]
        assert events[2]["error"]["code"] == "upstream_timeout"
        assert events[3:] == ["[DONE]"]
        row = served.row_where(lambda r: r["provider"] == "openai")
        assert (row["status"], row["answer"]) == ("error", "ab")
        assert "Traceback" not in served.stderr and "Exception" not in served.stderr
    finally:
        stop_server(served)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_read_the_alarm_cut_is_a_timeout_even_before_the_clock_reaches_the_deadline(fake, loop):
    """uvloop's timers keep whole milliseconds, so the alarm may ring a little before
    `time.monotonic()` reaches the deadline: the read it cut is still our timeout, never a
    dropped connection (`upstream_error`). The alarm is rung by hand here, seconds early."""
    import asyncio

    from llmcli import errors, transport

    module = pytest.importorskip(loop)
    gate = threading.Event()
    fake.script("openai", Reply(chunks=["a", "b"], gate=gate))  # "a", then held
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    async def call() -> list[bytes]:
        got: list[bytes] = []
        async with transport.async_client() as client:
            with transport.guard("openai", 30, expect="stream"):
                request = client.build_request(
                    "POST",
                    fake.url + "/v1/chat/completions",
                    json={**body, "stream": True},
                    headers={"Authorization": f"Bearer {KEYS['OPENAI_API_KEY']}"},
                )
                response = await client.send(request, stream=True)
                watch = response.stream
                asyncio.get_running_loop().call_later(0.3, watch._ring)
                try:
                    async for chunk in response.aiter_bytes():
                        got.append(chunk)
                finally:
                    await response.aclose()
        return got

    runner = asyncio.run if loop == "asyncio" else module.run
    try:
        with pytest.raises(errors.Timeout, match="still arriving after 30s"):
            runner(asyncio.wait_for(call(), 10))
    finally:
        gate.set()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_guarded_reply_is_freed_without_the_cyclic_collector(fake, stream):
    """Every call's reply, request and connection streams go when the SDK drops them: left in a
    reference loop for the cyclic collector, they made its full passes pause a busy serve for
    tens of milliseconds (the streamed p99 of docs/performance.md, "serve")."""
    import asyncio
    import gc
    import weakref

    from llmcli import transport

    fake.script("openai", Reply(text="hi there"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True

    async def call() -> weakref.ref:
        async with transport.async_client() as client:
            with transport.guard("openai", 10, expect="stream" if stream else "json"):
                request = client.build_request(
                    "POST",
                    fake.url + "/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {KEYS['OPENAI_API_KEY']}"},
                )
                response = await client.send(request, stream=stream)
                if stream:
                    async for _ in response.aiter_bytes():
                        pass
                    await response.aclose()
                assert response.status_code == 200
                gone = weakref.ref(response)
            del response, request
            return gone

    gc.collect()
    gc.disable()
    try:
        gone = asyncio.run(call())
        assert gone() is None
    finally:
        gc.enable()


def test_a_stream_read_by_the_openai_sdk_is_let_go_once_closed_not_at_its_deadline(fake):
    """The SDK reads a stream up to `[DONE]`, then iterates its body again to drain it. Each
    iteration armed the deadline's alarm, and only the second was disarmed: the first held the
    body, its reply and connection until `LLM_TIMEOUT` (ten minutes by default), thousands of
    streams' objects in a busy serve, which every full pass of the cyclic collector walked (the
    streamed p99 of docs/performance.md, "serve")."""
    import asyncio
    import gc
    import weakref

    from llmcli import transport

    fake.script("openai", Reply(text="hi there"))

    async def one(client: openai.AsyncOpenAI) -> weakref.ref:
        """A request of serve's: a task of its own (its context, the guard's, goes with it)."""
        with transport.guard("openai", 600, expect="stream"):
            events = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            body = weakref.ref(events.response.stream)
            async with events:
                text = [e.choices[0].delta.content async for e in events if e.choices]
        assert "".join(t or "" for t in text) == "hi there"
        return body

    async def call() -> bool:
        async with transport.async_client() as http:
            client = openai.AsyncOpenAI(
                base_url=fake.url + "/v1", api_key=KEYS["OPENAI_API_KEY"], http_client=http
            )
            body = await asyncio.create_task(one(client))
            for _ in range(3):  # the SDK's suspended generators: garbage, closed by the loop
                gc.collect()
                await asyncio.sleep(0.01)
            return body() is None  # asked while the loop (and any alarm on it) still runs

    assert asyncio.run(call())


def test_an_unknown_event_loop_is_refused_at_start(fake, tmp_path):
    env = base_env(fake)
    env.update({"LLMCLI_HOME": str(tmp_path), "LLMCLI_SERVE_LOOP": "trio"})
    result = run_cli("serve", "--port", str(free_port()), env=env, timeout=20)
    assert result.code == 3
    assert result.err.startswith("Error: LLMCLI_SERVE_LOOP must be auto, asyncio or uvloop")


def test_a_retry_is_one_line_in_the_server_log(fake, tmp_path):
    served = start_server(fake, tmp_path / "home", LLM_MAX_RETRIES="1")
    try:
        fake.script("openai", Reply(status=503, headers={"Retry-After": "0"}), Reply(text="fine"))
        reply = served.client().chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content == "fine"
        assert "openai: server error (503); retrying in 0.0s (attempt 2 of 2)" in served.stderr
        assert reply.model_extra["llmcli"]["attempts"] == 2
    finally:
        stop_server(served)


def test_the_sdk_raises_its_own_errors(api, fake):
    fake.script("openai", Reply(status=429, headers={"Retry-After": "1"}), Reply(status=404))
    client = api.client()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_a_budget_refusal_is_429_budget_exceeded(api, fake):
    got, _, body = api.http(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {
                "model": "openai/gpt-4o-mini",
                "user": "broke",
                "messages": [{"role": "user", "content": "hi"}],
            }
        ),
    )
    assert got == 429
    assert json.loads(body)["error"]["type"] == "budget_exceeded"
    assert fake.requests_for("openai") == []  # nothing was sent


def test_unknown_provider_and_unknown_route_are_404(api):
    status, _, body = api.http("POST", "/stream", json.dumps({"message": "x", "provider": "nope"}))
    assert status == 404 and json.loads(body)["error"]["code"] == "provider_not_found"
    status, _, body = api.http("GET", "/v2/nothing")
    assert status == 404 and "error" in json.loads(body)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/stream"])
def test_a_call_route_asked_with_get_is_405_in_openais_shape(api, path):
    # The call routes are answered before FastAPI; any other method still reaches its router.
    status, _, body = api.http("GET", path)
    assert status == 405
    assert json.loads(body)["error"]["message"] == "Method Not Allowed"


BAD_BODIES = {
    "malformed JSON": (b'{"messages": [', "not valid JSON"),
    "not UTF-8": (b'{"messages": "\xff\xfe"}', "not valid UTF-8"),
    "not an object": (b"[1, 2]", "must be a JSON object"),
    # Valid JSON, but no text: half a surrogate pair. It once reached the log, whose insert
    # failed, and with it the rows of every other request written in the same group.
    "half a surrogate pair": (
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "x \\ud800 y"}]}',
        "half of a UTF-16 surrogate pair",
    ),
    "messages not a list": (b'{"messages": "hi"}', "'messages' must be an array"),
    "empty messages": (b'{"messages": []}', "must not be empty"),
    "unknown role": (
        b'{"messages": [{"role": "tool", "content": "x"}]}',
        "'tool' is not supported",
    ),
    "content of the wrong type": (
        b'{"messages": [{"role": "user", "content": 5}]}',
        "content must be",
    ),
    "model not a string": (
        b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
        "'model' must be a string",
    ),
    "temperature a string": (
        b'{"temperature": "hot", "messages": [{"role": "user", "content": "x"}]}',
        "'temperature' must be a number",
    ),
    "max_tokens zero": (
        b'{"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}',
        "'max_tokens' must be at least 1",
    ),
    "stream not a boolean": (
        b'{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
        "'stream' must be a boolean",
    ),
    "temperature out of range": (
        b'{"model": "echo/echo", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}',
        "temperature",
    ),
}


@pytest.mark.parametrize(("body", "words"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_is_a_400_and_the_server_goes_on(api, fake, body, words):
    status, _, answer = api.http("POST", "/v1/chat/completions", body)
    assert status == 400
    error = json.loads(answer)["error"]
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"
    assert fake.requests == []
    assert api.http("GET", "/health")[0] == 200


def test_a_whole_surrogate_pair_escaped_is_text_like_any_other(api):
    body = (
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    )
    status, _, answer = api.http("POST", "/v1/chat/completions", body)
    assert status == 200
    assert json.loads(answer)["choices"][0]["message"]["content"] == "smile \U0001f600"


def test_a_body_over_10_mb_is_413(api):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (10 * 1024 * 1024) + b'"}]}'
    status, _, body = api.http("POST", "/v1/chat/completions", big)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert api.http("GET", "/health")[0] == 200


def test_the_stream_endpoint_checks_its_body_too(api):
    for body, words in (
        (b'{"message": "x \\uDFFF", "provider": "echo"}', "half of a UTF-16 surrogate pair"),
        (b"{}", "'message' must be a non-empty string"),
        (b'{"message": "x", "max_tokens": "many"}', "'max_tokens' must be an integer"),
    ):
        status, _, answer = api.http("POST", "/stream", body)
        assert status == 400
        assert words in json.loads(answer)["error"]["message"]


# --- stopping ------------------------------------------------------------------------------------


def test_sigterm_lets_streams_in_flight_finish_then_exits_0(fake, tmp_path):
    served = start_server(fake, tmp_path / "home", "--grace", "5")
    try:
        gate = threading.Event()
        fake.script("openai", Reply(text="first second third", gate=gate))
        conn, response = _open_stream(served, {"message": "go", "provider": "openai"})
        events = _events(response)
        assert next(events) == {"token": "first"}
        served.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # new connections are refused while it drains
            try:
                socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("still accepting connections after SIGTERM")
        assert served.proc.poll() is None  # still draining the stream
        gate.set()
        rest = list(events)
        conn.close()
        assert [e["token"] for e in rest[:2]] == [" second", " third"]
        assert rest[-1] == "[DONE]"
        assert served.proc.wait(10) == 0
        assert served.row_where(lambda r: r["answer"] == "first second third")["status"] == "ok"
    finally:
        stop_server(served)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_cuts_what_outlives_the_grace_and_logs_it(fake, tmp_path, workers):
    # A `--workers` process runs uvicorn's own server, which kills its process by raising
    # SIGTERM again once stopped: the row was lost with it until the log was closed at the
    # application's shutdown.
    served = start_server(fake, tmp_path / "home", "--grace", "0.5", "--workers", workers)
    try:
        fake.script("openai", Reply(chunks=[f" w{i}" for i in range(100)], chunk_delay=0.05))
        conn, response = _open_stream(served, {"message": "go", "provider": "openai"})
        events = _events(response)
        assert next(events) == {"token": " w0"}
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0
        conn.close()
        row = served.row_where(lambda r: r["provider"] == "openai")
        assert row["status"] == "interrupted"
        assert row["answer"].startswith(" w0")
    finally:
        stop_server(served)


def test_workers_serve_and_stop_cleanly(fake, tmp_path):
    served = start_server(fake, tmp_path / "home", "--workers", "2")
    try:
        for n in range(4):
            reply = served.client().chat.completions.create(
                model="echo/echo", messages=[{"role": "user", "content": f"call {n}"}]
            )
            assert reply.choices[0].message.content == f"call {n}"
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0
        assert {r["answer"] for r in served.rows()} == {f"call {n}" for n in range(4)}
        assert "Traceback" not in served.stderr
    finally:
        stop_server(served)


def test_a_worker_process_sets_its_collector_as_a_single_server_does(tmp_path):
    # `--workers N` processes are fresh interpreters built by uvicorn's factory: without this
    # they kept Python's default thresholds and scanned their start-up objects on every pass.
    from llmcli import serve

    env = base_env(keys=False)
    env["LLMCLI_HOME"] = str(tmp_path / "home")
    code = (
        "import gc; from llmcli import serve; serve.worker_app(); "
        "print(list(gc.get_threshold()), gc.get_freeze_count())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    threshold, frozen = proc.stdout.split("] ")
    assert json.loads(threshold + "]") == list(serve.GC_THRESHOLDS)
    assert int(frozen) > 10_000  # start-up's objects (modules, the app, its state): set aside


def test_json_schema_response_format_is_sent_as_structured_output(api, fake):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fake.script("openai", Reply(text='{"name": "Ada"}'))
    reply = api.client().chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Invent a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content) == {"name": "Ada"}
    sent = fake.requests_for("openai")[0].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["required"] == ["name"]


# How serve reads an OpenAI-wire reply is held to how `ask` reads the same reply (the SDK's own
# models): serve's async path reads the JSON without building them (docs/performance.md).
ODD_REPLIES = {
    "refusal": Reply(refusal="I can't help with that."),
    "token details": Reply(cached_tokens=3, reasoning_tokens=2),
    "no usage": Reply(usage=False),
    "other model": Reply(model="gpt-4o-mini-2024-07-18"),
    "length": Reply(finish="length"),
    "no finish": Reply(finish=None),
    "empty object": Reply(body=b"{}"),
    "no choices": Reply(body=b'{"id": "x", "model": "m", "choices": []}'),
    "not an object": Reply(body=b"[1, 2]"),
    "cut short": Reply(malformed=True),
    "error event": Reply(stream_error_after=1),
}


def _asked(fake: Any, reply: Reply, stream: bool) -> tuple[dict[str, Any] | None, str]:
    """What `ask` (or `stream`) makes of `reply`: its --json answer, or its error line."""
    fake.script("openai", reply)
    env = base_env(fake)
    env["LLM_MAX_RETRIES"] = "0"
    command = "stream" if stream else "ask"
    result = run_cli(command, "-p", "openai", "--json", "--no-log", "x", env=env)
    if result.out.startswith("{"):
        return json.loads(result.out.splitlines()[-1]), ""
    assert result.code != 0
    return None, result.err.splitlines()[0].removeprefix("Error: ")


def _served(api: Served, fake: Any, reply: Reply, stream: bool) -> tuple[int, Any]:
    """serve's answer to the same reply: (status, the answer or the error message)."""
    fake.script("openai", reply)
    body: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    status, _, raw = api.http("POST", "/v1/chat/completions", json.dumps(body))
    if status != 200:
        return status, json.loads(raw)["error"]["message"]
    if not stream:
        answer = json.loads(raw)
        choice = answer["choices"][0]
        return 200, (
            choice["message"]["content"],
            choice["finish_reason"],
            answer["model"],
            answer["usage"],
        )
    events = [
        json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")
    ]
    if "error" in events[-1]:
        return 200, events[-1]["error"]["message"]
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    finish = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    return 200, (text, finish[-1], events[-1]["model"], events[-1]["usage"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("reply", list(ODD_REPLIES.values()), ids=list(ODD_REPLIES))
def test_serve_reads_an_openai_reply_as_ask_does(api, fake, reply, stream):
    asked, error = _asked(fake, reply, stream)
    status, served = _served(api, fake, reply, stream)
    if asked is None:
        # The same words (what the reply began with differs: ids and times are the fake's own).
        assert isinstance(served, str) and served.startswith(error.split(" (200 ")[0]), served
        return
    assert status == 200, served
    usage = asked["usage"]
    tokens = None
    if usage["input_tokens"] is not None:
        tokens = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        }
        if usage["cached_input_tokens"] is not None:
            tokens["prompt_tokens_details"] = {"cached_tokens": usage["cached_input_tokens"]}
        if usage["reasoning_tokens"] is not None:
            tokens["completion_tokens_details"] = {"reasoning_tokens": usage["reasoning_tokens"]}
    finish = {"error": "stop", "other": "stop"}.get(asked["finish_reason"], asked["finish_reason"])
    assert served == (asked["content"], finish, asked["model"], tokens)
