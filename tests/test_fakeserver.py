"""Self-test of tests/fakeserver.py: the real SDKs, in-process, must parse what the fake sends.

If these fail, every llmcli test built on the fake is suspect, so they check the fake against the
SDKs themselves (not against llmcli): text, usage and finish reasons, error classes, and the
fault injections (drops, in-stream errors, malformed data, delays, gates).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import threading
import time

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakeserver import FakeServer, Reply, decode_base64, split_words

MESSAGES = [{"role": "user", "content": "Hello?"}]
WORDS = ["Hello", " from", " the", " fake", " server."]


@pytest.fixture(scope="module")
def srv():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(srv):
    srv.reset()
    yield
    assert srv.errors == []  # no exception inside the fake itself


@pytest.fixture(scope="module")
def oai(srv):
    client = openai.OpenAI(api_key="sk-test-1", base_url=srv.url + "/v1", max_retries=0, timeout=5)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ant(srv):
    client = anthropic.Anthropic(
        api_key="sk-ant-test-2", base_url=srv.url, max_retries=0, timeout=5
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def gem(srv):
    client = genai.Client(
        api_key="AIza-test-3",
        http_options=genai_types.HttpOptions(base_url=srv.url, timeout=5000),
    )
    yield client
    client.close()


def raw_request(srv, method, path, body=None, headers=None):
    """One request without any SDK, for cases the SDKs refuse to send (e.g. no key)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]), timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# --- success paths ----------------------------------------------------------------------------


def test_split_words_keeps_spaces():
    assert split_words("Hello from the fake server.") == WORDS
    assert split_words("  a b  ") == ["  a", " b  "]
    assert split_words("") == []


def test_env_points_sdks_at_the_server(srv):
    assert srv.env() == {
        "OPENAI_BASE_URL": srv.url + "/v1",
        "ANTHROPIC_BASE_URL": srv.url,
        "GOOGLE_GEMINI_BASE_URL": srv.url,
    }
    assert srv.url.startswith("http://127.0.0.1:")


def test_openai_non_stream(srv, oai):
    srv.script("openai", Reply(text="Paris.", cached_tokens=3, reasoning_tokens=2, finish="length"))
    result = oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.3, max_tokens=50
    )
    assert result.choices[0].message.content == "Paris."
    assert result.choices[0].finish_reason == "length"
    assert result.model == "gpt-4o-mini"
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details.reasoning_tokens == 2

    (rec,) = srv.requests_for("openai")
    assert (rec.method, rec.path, rec.model, rec.api_key) == (
        "POST",
        "/v1/chat/completions",
        "gpt-4o-mini",
        "sk-test-1",
    )
    assert rec.body["messages"] == MESSAGES and rec.body["temperature"] == 0.3
    # The client may have the answer before the server thread marks the request done.
    assert rec.stream is False and rec.status == 200 and rec.done.wait(5)
    assert rec.headers["authorization"] == "Bearer sk-test-1"


def test_openai_stream_with_usage(srv, oai):
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == WORDS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 18
    assert all(c.usage is None for c in chunks[:-1])
    srv.wait_idle()
    (rec,) = srv.requests_for("openai")
    assert rec.stream is True and rec.chunks_sent == len(WORDS)


def test_openai_stream_without_include_usage_has_no_usage(srv, oai):
    stream = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_openai_usage_false(srv, oai):
    srv.script("openai", Reply(usage=False))
    result = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert result.usage is None


def test_anthropic_non_stream_blocks_and_thinking(srv, ant):
    srv.script(
        "anthropic",
        Reply(blocks=["One. ", "Two."], thinking=True, cached_tokens=5, reasoning_tokens=3),
    )
    message = ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="Be brief.", messages=MESSAGES
    )
    assert [b.type for b in message.content] == ["thinking", "text", "text"]
    assert message.content[0].signature
    assert "".join(b.text for b in message.content if b.type == "text") == "One. Two."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.output_tokens_details.thinking_tokens == 3

    (rec,) = srv.requests_for("anthropic")
    assert rec.api_key == "sk-ant-test-2"  # anthropic 2.x sends it as a Bearer token
    assert rec.headers["anthropic-version"]
    assert rec.body["system"] == "Be brief." and rec.body["max_tokens"] == 100
    assert rec.model == "claude-sonnet-4-6"


def test_anthropic_stream(srv, ant):
    srv.script("anthropic", Reply(thinking=True, finish="length", raw_finish=None))
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == WORDS
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    assert [b.type for b in final.content] == ["thinking", "text"]


def test_anthropic_raw_stream_events_and_stop_sequence(srv, ant):
    srv.script("anthropic", Reply(raw_finish="stop_sequence", blocks=["a", "b c"]))
    events = list(
        ant.messages.create(
            model="claude-x",
            max_tokens=10,
            messages=MESSAGES,
            stop_sequences=["END"],
            stream=True,
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_start") == 2
    assert events[-2].delta.stop_reason == "stop_sequence"
    assert events[-2].delta.stop_sequence == "END"


def test_gemini_non_stream(srv, gem):
    srv.script("gemini", Reply(text="Bonjour.", thinking=True, cached_tokens=2, reasoning_tokens=4))
    response = gem.models.generate_content(
        model="models/gemini-2.0-flash",
        contents="Hello?",
        config=genai_types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2),
    )
    assert response.text == "Bonjour."  # the thought part is skipped by the SDK
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (11, 7)
    assert (usage.cached_content_token_count, usage.thoughts_token_count) == (2, 4)
    assert usage.total_token_count == 22
    assert response.model_version == "gemini-2.0-flash" and response.response_id

    (rec,) = srv.requests_for("gemini")
    assert rec.path == "/v1/models/gemini-2.0-flash:generateContent"
    assert rec.model == "gemini-2.0-flash" and rec.api_key == "AIza-test-3"
    assert rec.body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert rec.body["generationConfig"]["temperature"] == 0.2


def test_gemini_stream(srv, gem):
    srv.script("gemini", Reply(finish="length"))
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello?"))
    assert [c.text for c in chunks] == WORDS
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.candidates_token_count == 7
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    (rec,) = srv.requests_for("gemini")
    assert rec.stream is True and rec.query == {"alt": "sse"}


def test_gemini_content_filter_stream_ends_without_parts(srv, gem):
    srv.script("gemini", Reply(finish="content_filter", usage=False))
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello?"))
    assert [c.text for c in chunks[:-1]] == WORDS
    last = chunks[-1]
    assert last.candidates[0].finish_reason == genai_types.FinishReason.SAFETY
    assert last.text is None
    assert all(c.usage_metadata is None for c in chunks)


def test_auxiliary_endpoints(srv, oai, ant, gem):
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]
    assert {m.type for m in ant.models.list()} == {"model"}
    assert "models/gemini-2.5-flash" in [m.name for m in gem.models.list()]
    srv.script("anthropic", Reply(input_tokens=42))
    assert ant.messages.count_tokens(model="claude-x", messages=MESSAGES).input_tokens == 42
    srv.script("gemini", Reply(input_tokens=9))
    assert gem.models.count_tokens(model="gemini-2.0-flash", contents="hi").total_tokens == 9
    assert [r.provider for r in srv.requests] == [
        "openai",
        "anthropic",
        "gemini",
        "anthropic",
        "gemini",
    ]


# --- errors -----------------------------------------------------------------------------------


def test_openai_rate_limit_with_retry_after(srv, oai):
    srv.script("openai", Reply(status=429, headers={"Retry-After": "2"}))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.request_id


def test_openai_quota_error_type_sets_code(srv, oai):
    srv.script("openai", Reply(status=429, error_type="insufficient_quota"))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.code == caught.value.type == "insufficient_quota"


def test_anthropic_overloaded(srv, ant):
    srv.script("anthropic", Reply(status=529, error_message="Busy."))
    with pytest.raises(anthropic.OverloadedError) as caught:
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Busy."}
    assert caught.value.request_id == caught.value.body["request_id"]


def test_gemini_429_has_retry_info(srv, gem):
    srv.script("gemini", Reply(status=429, headers={"Retry-After": "3"}))
    with pytest.raises(genai_errors.ClientError) as caught:
        gem.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"} in details


def test_error_body_bytes_are_sent_verbatim(srv, oai):
    srv.script("openai", Reply(status=502, error_body=b"<html>Bad gateway</html>"))
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.response.text == "<html>Bad gateway</html>"


def test_bad_keys(srv):
    url = srv.url
    with openai.OpenAI(api_key="bad-key-openai", base_url=url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.code == "invalid_api_key"
        assert "bad-key-openai" not in str(caught.value)  # masked like the real API
    with (
        anthropic.Anthropic(api_key="bad-ant", base_url=url, max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"),
    ):
        client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    client = genai.Client(api_key="bad-gem", http_options=genai_types.HttpOptions(base_url=url))
    try:
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model="gemini-2.0-flash", contents="hi")
        assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
        reasons = [d.get("reason") for d in caught.value.details["error"]["details"]]
        assert "API_KEY_INVALID" in reasons
    finally:
        client.close()
    assert [r.api_key for r in srv.requests] == ["bad-key-openai", "bad-ant", "bad-gem"]


def test_scripted_gemini_bad_key(srv, gem):
    srv.script("gemini", Reply(status=400, error_type="API_KEY_INVALID"))
    with pytest.raises(genai_errors.ClientError) as caught:
        gem.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_missing_keys_raw(srv):
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 5}
    status, _, data = raw_request(srv, "POST", "/v1/chat/completions", body)
    assert status == 401 and json.loads(data)["error"]["code"] is None
    status, headers, data = raw_request(
        srv, "POST", "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    )
    assert status == 401 and json.loads(data)["error"]["message"] == "x-api-key header is required"
    assert headers["request-id"].startswith("req_")
    status, _, data = raw_request(srv, "POST", "/v1/models/gemini-2.0-flash:generateContent", {})
    assert status == 403 and json.loads(data)["error"]["status"] == "PERMISSION_DENIED"
    assert [r.api_key for r in srv.requests] == [None, None, None]


def test_unknown_models_are_404(srv, oai, ant, gem):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="no-such-gpt", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError, match="model: no-such-claude"):
        ant.messages.create(model="no-such-claude", max_tokens=10, messages=MESSAGES)
    with pytest.raises(genai_errors.ClientError, match="is not found for API version v1"):
        gem.models.generate_content(model="no-such-gemini", contents="hi")


def test_anthropic_validation(srv, ant):
    with pytest.raises(anthropic.BadRequestError, match='Unexpected role "system"'):
        ant.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "system", "content": "x"}]
        )
    headers = {"x-api-key": "sk-ant-raw", "content-type": "application/json"}
    status, _, data = raw_request(
        srv, "POST", "/v1/messages", {"model": "claude-x", "messages": MESSAGES}, headers
    )
    assert status == 400 and "anthropic-version" in json.loads(data)["error"]["message"]
    headers["anthropic-version"] = "2023-06-01"
    status, _, data = raw_request(
        srv, "POST", "/v1/messages", {"model": "claude-x", "messages": MESSAGES}, headers
    )
    assert status == 400 and json.loads(data)["error"]["message"] == "max_tokens: Field required"
    assert srv.requests[-1].api_key == "sk-ant-raw"


def test_unknown_route_is_404_json(srv):
    status, _, data = raw_request(srv, "POST", "/v2/whatever?x=1", {"a": 1})
    assert status == 404 and "error" in json.loads(data)
    (rec,) = srv.requests
    assert (rec.provider, rec.path, rec.query, rec.body) == (
        "unknown",
        "/v2/whatever",
        {"x": "1"},
        {"a": 1},
    )


# --- faults -----------------------------------------------------------------------------------


def collect_until_error(iterator, text_of):
    """Consume a stream; return the texts seen before the exception, and the exception."""
    seen = []
    with pytest.raises(Exception) as caught:  # each SDK raises a different class
        for item in iterator:
            text = text_of(item)
            if text:
                seen.append(text)
    return seen, caught.value


def openai_text(chunk):
    return chunk.choices[0].delta.content if chunk.choices else None


def anthropic_text(event):
    return event.delta.text if event.type == "content_block_delta" else None


def test_drop_mid_stream(srv, oai, ant, gem):
    for provider in ("openai", "anthropic", "gemini"):
        srv.script(provider, Reply(drop_after=2))
    seen, error = collect_until_error(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True), openai_text
    )
    assert seen == WORDS[:2] and isinstance(error, openai.APIConnectionError)
    seen, error = collect_until_error(
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES, stream=True),
        anthropic_text,
    )
    assert seen == WORDS[:2] and isinstance(error, httpx2.RemoteProtocolError)
    seen, error = collect_until_error(
        gem.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"),
        lambda c: c.text,
    )
    assert seen == WORDS[:2] and isinstance(error, httpx2.RemoteProtocolError)
    assert srv.wait_idle()
    assert [r.chunks_sent for r in srv.requests] == [2, 2, 2]


def test_drop_non_stream_sends_nothing(srv, oai):
    srv.script("openai", Reply(drop_after=0), Reply(text="second"))
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert srv.requests[0].status is None
    # The next request (new connection) works.
    result = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert result.choices[0].message.content == "second"


def test_stream_error_events(srv, oai, ant, gem):
    srv.script("openai", Reply(stream_error_after=1))
    srv.script("anthropic", Reply(stream_error_after=1))
    srv.script("gemini", Reply(stream_error_after=1))
    seen, error = collect_until_error(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True), openai_text
    )
    assert seen == WORDS[:1] and type(error) is openai.APIError
    seen, error = collect_until_error(
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES, stream=True),
        anthropic_text,
    )
    assert seen == WORDS[:1] and isinstance(error, anthropic.APIStatusError)
    assert error.status_code == 200 and error.body["error"]["type"] == "overloaded_error"
    seen, error = collect_until_error(
        gem.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"),
        lambda c: c.text,
    )
    assert seen == WORDS[:1] and isinstance(error, genai_errors.ServerError)
    assert error.code == 503 and error.status == "UNAVAILABLE"


def test_malformed(srv, oai, ant, gem):
    srv.script("openai", Reply(malformed=True), Reply(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    seen, error = collect_until_error(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True), openai_text
    )
    assert seen == WORDS[:1] and isinstance(error, json.JSONDecodeError)
    srv.script("anthropic", Reply(malformed=True))
    seen, error = collect_until_error(
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES, stream=True),
        anthropic_text,
    )
    assert seen == WORDS[:1] and isinstance(error, json.JSONDecodeError)
    srv.script("gemini", Reply(malformed=True))
    seen, error = collect_until_error(
        gem.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"),
        lambda c: c.text,
    )
    assert seen == WORDS[:1] and isinstance(error, ValueError)  # UnknownApiResponseError


def test_delay_times_out_without_blocking_other_requests(srv, oai):
    srv.script("openai", Reply(delay=2))
    outcome = {}

    def slow():
        try:
            oai.with_options(timeout=0.5).chat.completions.create(model="m", messages=MESSAGES)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    fast = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert fast.choices[0].message.content and time.monotonic() - started < 0.4
    thread.join(timeout=5)
    assert isinstance(outcome["error"], openai.APITimeoutError)


def test_gate_holds_the_final_chunk(srv, oai):
    gate = threading.Event()
    srv.script("openai", Reply(chunks=["a", "b", "c"], gate=gate))
    stream = oai.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    seen = []
    for chunk in stream:
        text = openai_text(chunk)
        if text:
            seen.append(text)
        if seen == ["a", "b"] and not gate.is_set():
            rec = srv.requests[-1]
            time.sleep(0.1)
            assert rec.chunks_sent == 2 and not rec.done.is_set()
            gate.set()
    assert seen == ["a", "b", "c"]


def test_chunk_delay_paces_chunks(srv, ant):
    srv.script("anthropic", Reply(chunks=["x", "y", "z"], chunk_delay=0.15))
    arrivals = []
    for event in ant.messages.create(model="c", max_tokens=5, messages=MESSAGES, stream=True):
        if anthropic_text(event):
            arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 3 and all(0.1 < gap < 1.0 for gap in gaps)


def test_keep_alive_and_stream_framing(srv):
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]), timeout=5)
    try:
        headers = {"Authorization": "Bearer sk-raw"}
        for _ in range(2):  # two requests on one connection: Content-Length framing works
            conn.request("GET", "/v1/models", headers=headers)
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Content-Length")
            assert json.loads(response.read())["object"] == "list"
        body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True})
        for _ in range(2):  # a stream that ended keeps its connection, as the providers' do
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            assert response.getheader("Transfer-Encoding") == "chunked"
            assert response.getheader("Connection") is None
            assert response.read().endswith(b"data: [DONE]\n\n")
        ports = {rec.client_port for rec in srv.requests}
        assert len(ports) == 1 and len(srv.requests) == 4
    finally:
        conn.close()


# --- bookkeeping ------------------------------------------------------------------------------


def test_script_reset_and_pending(srv):
    srv.script("gemini", Reply(), Reply())
    assert srv.pending("gemini") == 2 and srv.pending() == 2
    with pytest.raises(ValueError):
        srv.script("mistral", Reply())
    with pytest.raises(ValueError):
        Reply(finish="done")
    srv.reset()
    assert srv.pending() == 0 and srv.requests == []


def test_stop_is_prompt_with_a_delayed_request_in_flight():
    server = FakeServer().start()
    server.script("openai", Reply(delay=30))
    client = openai.OpenAI(api_key="sk-x", base_url=server.url + "/v1", max_retries=0, timeout=10)
    failure = {}

    def call():
        try:
            client.chat.completions.create(model="m", messages=MESSAGES)
        except Exception as exc:
            failure["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    thread.join(timeout=5)
    client.close()
    assert time.monotonic() - started < 2
    assert isinstance(failure["error"], openai.APIConnectionError)
    assert server.requests[0].done.is_set()


def test_anthropic_cache_writes_and_thinking_tokens_as_the_real_api_reports_them(srv, ant):
    usage_reply = Reply(
        thinking=True,
        input_tokens=10,
        cached_tokens=200,
        cache_write_tokens=30,
        output_tokens=40,
        reasoning_tokens=25,
    )
    srv.script("anthropic", usage_reply)
    usage = ant.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (10, 200)
    assert usage.cache_creation_input_tokens == 30
    assert usage.cache_creation.ephemeral_5m_input_tokens == 30
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert (usage.output_tokens, usage.output_tokens_details.thinking_tokens) == (40, 25)

    srv.script("anthropic", usage_reply)
    events = list(
        ant.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES, stream=True
        )
    )
    start = events[0].message.usage
    assert (start.input_tokens, start.cache_read_input_tokens) == (10, 200)
    assert (start.cache_creation_input_tokens, start.output_tokens) == (30, 1)
    assert start.output_tokens_details is None  # the thinking is counted at the end
    delta = next(e for e in events if e.type == "message_delta").usage
    assert (delta.input_tokens, delta.cache_read_input_tokens) == (10, 200)
    assert delta.cache_creation_input_tokens == 30
    assert (delta.output_tokens, delta.output_tokens_details.thinking_tokens) == (40, 25)


def test_anthropic_without_cache_counts_sends_no_cache_fields(srv, ant):
    srv.script("anthropic", Reply())
    usage = ant.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES).usage
    assert usage.cache_read_input_tokens is None and usage.cache_creation_input_tokens is None
    assert usage.cache_creation is None and usage.output_tokens_details is None


# --- the client's connection, and attachment parts -------------------------------------------


def test_client_port_tells_one_kept_alive_connection_from_another(srv, oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    raw_request(srv, "GET", "/v1/models", headers={"Authorization": "Bearer sk-test-1"})
    first, second, other = srv.requests
    assert first.client_port is not None
    assert second.client_port == first.client_port  # the SDK's pool kept the connection
    assert other.client_port != first.client_port  # a connection of its own


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PNG_B64 = base64.b64encode(PNG_BYTES).decode()


def _openai_with(part):
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]


def test_openai_takes_images_and_pdfs_as_data_urls(srv, oai):
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {
            "type": "file",
            "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PNG_B64}"},
        },
    ]
    for part in parts:
        oai.chat.completions.create(model="gpt-4o-mini", messages=_openai_with(part))
    assert [r.status for r in srv.requests] == [200, 200, 200]


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"type": "image", "image": "x"}, "Invalid value: 'image'"),
        ({"type": "image_url", "image_url": {"url": f"data:audio/wav;base64,{PNG_B64}"}}, "Invalid image URL"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}, "unsupported image"),
        ({"type": "file", "file": {"filename": "a.wav", "file_data": f"data:audio/wav;base64,{PNG_B64}"}}, "Invalid file data"),
    ],
)  # fmt: skip
def test_openai_refuses_other_content_parts_with_a_400(srv, oai, part, words):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=_openai_with(part))
    assert words in info.value.message


def _anthropic_with(block):
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, block]}]


def test_anthropic_takes_base64_images_and_pdfs(srv, ant):
    for block in (
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG_B64}},
    ):  # fmt: skip
        ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=_anthropic_with(block)
        )
    assert [r.status for r in srv.requests] == [200, 200]


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"type": "picture", "source": {}}, "Input tag 'picture'"),
        ({"type": "image", "source": {"type": "base64", "media_type": "audio/wav", "data": PNG_B64}}, "media_type: Input should be 'image/jpeg'"),
        ({"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}, "Input should be 'application/pdf'"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "-_-_"}}, "invalid base64"),
    ],
)  # fmt: skip
def test_anthropic_refuses_other_content_blocks_with_a_400(srv, ant, block, words):
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=_anthropic_with(block)
        )
    assert words in info.value.message


def test_gemini_takes_inline_data_and_reads_its_bytes_back(srv, gem):
    for mime in ("image/png", "application/pdf"):
        part = genai_types.Part.from_bytes(data=PNG_BYTES, mime_type=mime)
        gem.models.generate_content(model="gemini-2.5-flash", contents=["what is this?", part])
    for request, mime in zip(srv.requests, ("image/png", "application/pdf"), strict=True):
        blob = request.body["contents"][0]["parts"][1]["inlineData"]
        assert blob.get("mimeType", blob.get("mime_type")) == mime
        assert decode_base64(blob["data"]) == PNG_BYTES


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"inlineData": {"mimeType": "image/gif", "data": PNG_B64}}, "Unsupported MIME type: image/gif"),
        ({"inline_data": {"data": PNG_B64}}, "invalid argument"),
        ({"inlineData": {"mimeType": "image/png", "data": "not base64!"}}, "Base64 decoding failed"),
        ({"image": {"mimeType": "image/png", "data": PNG_B64}}, "Unknown name 'image'"),
    ],
)  # fmt: skip
def test_gemini_refuses_other_parts_with_a_400(srv, part, words):
    body = {"contents": [{"role": "user", "parts": [{"text": "what is this?"}, part]}]}
    status, _, raw = raw_request(
        srv,
        "POST",
        "/v1/models/gemini-2.5-flash:generateContent",
        body,
        {"x-goog-api-key": "AIza-test-3", "Content-Type": "application/json"},
    )
    error = json.loads(raw)["error"]
    assert (status, error["status"]) == (400, "INVALID_ARGUMENT")
    assert words in error["message"]


# --- the ends of calls: a stream cut without a finish reason, a 2xx that is not the API -------


def test_openai_stream_cut_without_finish_reason(srv, oai):
    srv.script("openai", Reply(finish=None))
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [openai_text(c) for c in chunks if openai_text(c)] == WORDS
    assert all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)  # the usage chunk comes after the finish
    srv.wait_idle()
    assert srv.requests_for("openai")[0].chunks_sent == len(WORDS)
    # The body ends cleanly (chunked terminator) with no [DONE] and no finish reason in it.
    srv.script("openai", Reply(finish=None))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    status, _, data = raw_request(
        srv, "POST", "/v1/chat/completions", body, {"authorization": "Bearer sk-test-1"}
    )
    assert status == 200 and b"[DONE]" not in data and b'"finish_reason":"' not in data


def test_anthropic_stream_cut_without_message_delta_or_stop(srv, ant):
    srv.script("anthropic", Reply(finish=None, blocks=["a b", "c d"]))
    events = list(
        ant.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES, stream=True)
    )
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert not {"message_delta", "message_stop"} & set(types)
    assert types[-1] == "content_block_delta"  # cut right after the last text, mid-block
    assert "".join(anthropic_text(e) or "" for e in events) == "a bc d"


def test_gemini_stream_cut_without_finish_reason(srv, gem):
    srv.script("gemini", Reply(finish=None))
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello?"))
    assert [c.text for c in chunks] == WORDS
    assert all(c.candidates[0].finish_reason is None for c in chunks)
    assert chunks[-1].usage_metadata.candidates_token_count is None  # no final usage either


def test_a_stream_cut_before_any_text_sends_no_text(srv, oai, ant, gem):
    srv.script("openai", Reply(chunks=[], finish=None))
    srv.script("anthropic", Reply(chunks=[], finish=None))
    srv.script("gemini", Reply(chunks=[], finish=None))
    chunks = list(oai.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert not any(openai_text(c) for c in chunks)
    assert all(c.choices[0].finish_reason is None for c in chunks)
    events = list(ant.messages.create(model="m", max_tokens=5, messages=MESSAGES, stream=True))
    assert "message_delta" not in [e.type for e in events]
    assert list(gem.models.generate_content_stream(model="gemini-2.5-flash", contents="x")) == []


def test_non_stream_without_finish_reason(srv, oai, ant, gem):
    for provider in ("openai", "anthropic", "gemini"):
        srv.script(provider, Reply(text="Half an", finish=None))
    reply = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].finish_reason is None
    assert reply.choices[0].message.content == "Half an"
    message = ant.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert message.stop_reason is None and message.content[0].text == "Half an"
    response = gem.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert response.candidates[0].finish_reason is None and response.text == "Half an"


HTML = b"<!DOCTYPE html><html><title>Sign in</title><body>Log in to the Wi-Fi</body></html>"
ROUTES = {
    "openai": ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}),
    "anthropic": ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": MESSAGES}),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", {"contents": []}),
}
KEY_HEADERS = {
    "openai": {"authorization": "Bearer sk-test-1"},
    "anthropic": {"x-api-key": "sk-ant-test-2", "anthropic-version": "2023-06-01"},
    "gemini": {"x-goog-api-key": "AIza-test-3"},
}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_exact_body_with_its_content_type(srv, provider, stream):
    path, body = ROUTES[provider]
    if stream and provider == "gemini":
        path = path.replace(":generateContent", ":streamGenerateContent")
    elif stream:
        body = {**body, "stream": True}
    srv.script(provider, Reply(body=HTML, content_type="text/html; charset=utf-8"))
    status, headers, data = raw_request(srv, "POST", path, body, KEY_HEADERS[provider])
    assert (status, data) == (200, HTML)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    srv.script(provider, Reply(body=b"{}"))
    status, headers, data = raw_request(srv, "POST", path, body, KEY_HEADERS[provider])
    assert (status, headers["Content-Type"], data) == (200, "application/json", b"{}")
    # Whatever the key: a captive portal answers before the API could check it.
    srv.script(provider, Reply(body=HTML, content_type="text/html"))
    assert raw_request(srv, "POST", path, body)[2] == HTML


def test_a_204_has_no_body_and_no_content_type(srv):
    for provider, (path, body) in ROUTES.items():
        srv.script(provider, Reply(status=204, body=b"ignored"))
        status, headers, data = raw_request(srv, "POST", path, body, KEY_HEADERS[provider])
        assert (status, data) == (204, b"")
        assert "Content-Type" not in headers and "Content-Length" not in headers
    assert srv.wait_idle(5)  # the server notes a reply's status after sending it
    assert [r.status for r in srv.requests] == [204, 204, 204]


def test_new_reply_options_are_checked_when_scripted():
    with pytest.raises(TypeError):
        Reply(body="text, not bytes")
    with pytest.raises(ValueError):
        Reply(finish="cut")
    assert Reply(finish=None).raw_finish_for("gemini") is None
    assert Reply(finish=None, raw_finish="OTHER").raw_finish_for("gemini") == "OTHER"


# --- named endpoints: a provider's wire on another path, with its own key ----------------------


def test_a_path_prefix_is_served_like_the_provider_and_kept_in_the_record(srv):
    ollama = openai.OpenAI(
        api_key="ollama-key-9", base_url=srv.url + "/ollama/v1", max_retries=0, timeout=5
    )
    proxy = anthropic.Anthropic(
        api_key="sk-ant-proxy-8", base_url=srv.url + "/team/claude", max_retries=0, timeout=5
    )
    gem = genai.Client(
        api_key="AIza-proxy-7",
        http_options=genai_types.HttpOptions(base_url=srv.url + "/gem", timeout=5000),
    )
    try:
        srv.script("openai", Reply(text="Local."))
        result = ollama.chat.completions.create(model="llama3.2", messages=MESSAGES)
        assert result.choices[0].message.content == "Local."
        chunks = list(
            ollama.chat.completions.create(model="llama3.2", messages=MESSAGES, stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "Hello from the fake server."
        )
        answer = proxy.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
        assert answer.content[0].text == "Hello from the fake server."
        reply = gem.models.generate_content(model="gemini-2.0-flash", contents="hi")
        assert reply.text == "Hello from the fake server."
        assert [m.id for m in ollama.models.list()] != []
    finally:
        for client in (ollama, proxy, gem):
            client.close()

    first, second, third, fourth, fifth = srv.requests
    assert (first.provider, first.path, first.prefix, first.model, first.api_key) == (
        "openai",
        "/ollama/v1/chat/completions",
        "/ollama",
        "llama3.2",
        "ollama-key-9",
    )
    assert first.headers["authorization"] == "Bearer ollama-key-9"
    assert (second.stream, second.prefix) == (True, "/ollama")
    assert (third.provider, third.path, third.prefix, third.api_key) == (
        "anthropic",
        "/team/claude/v1/messages",
        "/team/claude",
        "sk-ant-proxy-8",
    )
    assert (fourth.provider, fourth.prefix, fourth.model, fourth.api_key) == (
        "gemini",
        "/gem",
        "gemini-2.0-flash",
        "AIza-proxy-7",
    )
    assert fourth.path == "/gem/v1/models/gemini-2.0-flash:generateContent"
    assert (fifth.provider, fifth.path, fifth.prefix) == ("openai", "/ollama/v1/models", "/ollama")
    assert srv.requests_for("openai", prefix="/ollama") == [first, second, fifth]
    assert srv.requests_for("openai", prefix="") == []


def test_the_providers_own_paths_have_no_prefix_and_unknown_paths_stay_404(srv, oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (rec,) = srv.requests_for("openai", prefix="")
    assert (rec.path, rec.prefix) == ("/v1/chat/completions", "")
    for path in ("/ollama/chat/completions", "/ollama/v2/chat/completions", "/x/y/z"):
        status, _, data = raw_request(
            srv, "POST", path, {"model": "m"}, {"authorization": "Bearer k"}
        )
        assert status == 404 and "Invalid URL" in json.loads(data)["error"]["message"]
        assert (srv.requests[-1].provider, srv.requests[-1].path) == ("unknown", path)


def test_a_prefixed_endpoint_checks_its_own_key(srv):
    body = {"model": "llama3.2", "messages": MESSAGES}
    status, _, data = raw_request(srv, "POST", "/ollama/v1/chat/completions", body)
    assert status == 401 and "didn't provide an API key" in json.loads(data)["error"]["message"]
    headers = {"authorization": "Bearer bad-key-1"}
    status, _, _ = raw_request(srv, "POST", "/ollama/v1/chat/completions", body, headers)
    assert status == 401
    assert [(r.prefix, r.api_key) for r in srv.requests] == [
        ("/ollama", None),
        ("/ollama", "bad-key-1"),
    ]


def test_replies_scripted_for_a_prefix_go_to_it_first_then_the_providers_queue(srv, oai):
    ollama = openai.OpenAI(api_key="k", base_url=srv.url + "/ollama/v1", max_retries=0, timeout=5)
    try:
        srv.script("openai", Reply(text="for anyone"), Reply(text="second"))
        srv.script("openai", Reply(status=429), prefix="/ollama")
        assert (srv.pending("openai"), srv.pending("openai", prefix="/ollama")) == (3, 1)
        assert srv.pending("openai", prefix="") == 2
        # The built-in path never takes the endpoint's reply.
        answer = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content == "for anyone"
        with pytest.raises(openai.RateLimitError):
            ollama.chat.completions.create(model="llama3.2", messages=MESSAGES)
        answer = ollama.chat.completions.create(model="llama3.2", messages=MESSAGES)
        assert answer.choices[0].message.content == "second"
    finally:
        ollama.close()
    assert srv.pending() == 0
    assert [(r.prefix, r.status) for r in srv.requests] == [
        ("", 200),
        ("/ollama", 429),
        ("/ollama", 200),
    ]
    srv.script("openai", Reply(), prefix="/ollama")
    srv.reset()
    assert srv.pending() == 0
    with pytest.raises(ValueError):
        srv.script("openai", Reply(), prefix="ollama/")
