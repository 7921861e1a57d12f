"""Each provider through its real SDK against the loopback fake server: what goes over the wire,
and how the reply comes back (text, usage, finish reason, errors)."""

from __future__ import annotations

import socket

import pytest

from llmcli import config, core, errors
from llmcli.types import FinishReason, Message
from tests.conftest import KEYS, PROVIDERS
from tests.fakeserver import Reply


def make_call(fake, provider, messages=None, env_extra=None, **flags):
    environ = {**KEYS, **fake.env(), **(env_extra or {})}
    flags = {"provider": provider, "retries": 0, "timeout": 10, **flags}
    return core.prepare(messages or [Message("user", "Hello?")], flags, config.Environment(environ))


def ask(fake, provider, **kwargs):
    return core.complete(make_call(fake, provider, **kwargs))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_usage_and_finish(fake, provider):
    fake.script(provider, Reply(text="Paris is the capital.", input_tokens=12, output_tokens=5))
    response = ask(fake, provider, model="some-model")
    assert response.text == "Paris is the capital."
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == 17
    assert response.finish_reason is FinishReason.STOP
    assert response.provider == provider and response.requested_model == "some-model"
    assert response.attempts == 1
    recorded = fake.requests_for(provider)[-1]
    assert recorded.model == "some-model"
    assert (
        recorded.api_key
        == {
            "openai": KEYS["OPENAI_API_KEY"],
            "anthropic": KEYS["ANTHROPIC_API_KEY"],
            "gemini": KEYS["GEMINI_API_KEY"],
        }[provider]
    )


@pytest.mark.parametrize(
    ("provider", "raw"),
    [("openai", "length"), ("anthropic", "max_tokens"), ("gemini", "MAX_TOKENS")],
)
def test_length_finish_keeps_the_raw_value(fake, provider, raw):
    fake.script(provider, Reply(text="cut sh", finish="length"))
    response = ask(fake, provider)
    assert response.finish_reason is FinishReason.LENGTH
    assert response.raw_finish_reason == raw
    assert response.text == "cut sh"


@pytest.mark.parametrize(
    ("provider", "raw"),
    [("openai", "content_filter"), ("anthropic", "refusal"), ("gemini", "SAFETY")],
)
def test_content_filter_finish(fake, provider, raw):
    fake.script(provider, Reply(text="", finish="content_filter"))
    response = ask(fake, provider)
    assert response.finish_reason is FinishReason.CONTENT_FILTER
    assert response.raw_finish_reason == raw
    assert core.incomplete(response, strict=False) is not None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_usage_not_reported_is_none_not_zero(fake, provider):
    fake.script(provider, Reply(usage=False))
    response = ask(fake, provider)
    assert response.usage.input_tokens is None and response.usage.output_tokens is None
    assert response.usage.total_tokens is None


HISTORY = [
    Message("user", "My name is Ada."),
    Message("assistant", "Hello Ada."),
    Message("user", "Name?"),
]


def test_openai_wire_format(fake):
    ask(
        fake,
        "openai",
        messages=HISTORY,
        system="Be brief.",
        temperature=0.3,
        top_p=0.9,
        stop=("END", "STOP"),
        seed=7,
        response_format="json",
        max_tokens=50,
    )
    body = fake.requests_for("openai")[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "Name?"},
    ]
    assert body["max_completion_tokens"] == 50
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        0.3,
        0.9,
        ["END", "STOP"],
        7,
    )
    assert body["response_format"] == {"type": "json_object"}
    assert "stream" not in body or body["stream"] is False


def test_openai_sends_no_sampling_options_unless_set(fake):
    ask(fake, "openai")
    body = fake.requests_for("openai")[-1].body
    assert not {"temperature", "top_p", "stop", "seed", "response_format"} & set(body)
    assert body["max_completion_tokens"] == 1000


def test_anthropic_wire_format(fake):
    ask(
        fake,
        "anthropic",
        messages=HISTORY,
        system="Be brief.",
        temperature=0.3,
        top_p=0.9,
        stop=("END",),
        max_tokens=50,
    )
    recorded = fake.requests_for("anthropic")[-1]
    body = recorded.body
    assert body["system"] == "Be brief."
    assert all(m["role"] != "system" for m in body["messages"])
    assert body["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "Name?"},
    ]
    assert body["max_tokens"] == 50
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.3, 0.9, ["END"])
    assert "anthropic-version" in recorded.headers


def test_anthropic_max_tokens_always_sent_and_no_temperature_unless_set(fake):
    ask(fake, "anthropic")
    body = fake.requests_for("anthropic")[-1].body
    assert body["max_tokens"] == 1000
    assert "temperature" not in body and "system" not in body


def test_anthropic_multiple_text_blocks_are_joined_and_thinking_skipped(fake):
    fake.script("anthropic", Reply(blocks=["First part. ", "Second part."], thinking=True))
    assert ask(fake, "anthropic").text == "First part. Second part."


def test_gemini_wire_format(fake):
    ask(
        fake,
        "gemini",
        messages=HISTORY,
        system="Be brief.",
        temperature=0.3,
        top_p=0.9,
        stop=("END",),
        seed=7,
        response_format="json",
        max_tokens=50,
    )
    recorded = fake.requests_for("gemini")[-1]
    body = recorded.body
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "Hello Ada."}]
    generation = body["generationConfig"]
    assert generation["maxOutputTokens"] == 50
    assert (
        generation["temperature"],
        generation["topP"],
        generation["stopSequences"],
        generation["seed"],
    ) == (0.3, 0.9, ["END"], 7)
    assert generation["responseMimeType"] == "application/json"
    assert recorded.path.startswith("/v1/models/") and recorded.path.endswith(":generateContent")


# --- errors: each SDK's failures become our classes and exit codes ---------------------------------

STATUS_CASES = [
    (Reply(status=401), errors.AuthError, 4),
    (Reply(status=403), errors.AuthError, 4),
    (Reply(status=429), errors.RateLimitError, 5),
    (Reply(status=500), errors.ProviderError, 6),
    (Reply(status=503), errors.ProviderError, 6),
    (Reply(status=400), errors.RequestRejected, 9),
    (Reply(status=404), errors.RequestRejected, 9),
    (Reply(status=413), errors.RequestRejected, 9),
    (Reply(status=422), errors.RequestRejected, 9),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("reply", "kind", "code"), STATUS_CASES, ids=lambda v: str(getattr(v, "status", v))
)
def test_status_errors_map_to_our_classes(fake, provider, reply, kind, code):
    fake.script(provider, reply)
    with pytest.raises(kind) as info:
        ask(fake, provider)
    assert info.value.exit_code == code
    assert provider in info.value.message and str(reply.status) in info.value.message
    assert len(fake.requests_for(provider)) == 1  # --retries 0


def test_anthropic_529_overloaded_is_a_provider_error(fake):
    fake.script("anthropic", Reply(status=529))
    with pytest.raises(errors.ProviderError, match="overloaded"):
        ask(fake, "anthropic")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_key_is_an_auth_error_with_a_hint(fake, provider):
    var = {
        "openai": "OPENAI_API_KEY",
        "anthropic": "ANTHROPIC_API_KEY",
        "gemini": "GEMINI_API_KEY",
    }[provider]
    with pytest.raises(errors.AuthError) as info:
        ask(fake, provider, env_extra={var: "bad-key-0123456789"})
    assert var in (info.value.hint or "")
    assert "bad-key-0123456789" not in info.value.message + (info.value.hint or "")


def test_gemini_api_key_invalid_400_is_auth_not_rejected(fake):
    with pytest.raises(errors.AuthError):
        ask(fake, "gemini", env_extra={"GEMINI_API_KEY": "bad-gemini-key-000"})
    assert fake.requests_for("gemini")[-1].api_key == "bad-gemini-key-000"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_model_is_rejected_with_its_name(fake, provider):
    with pytest.raises(errors.RequestRejected) as info:
        ask(fake, provider, model="no-such-model-42")
    assert "404" in info.value.message and "no-such-model-42" in info.value.message
    assert "model name" in info.value.hint


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused_is_a_network_error(fake, provider):
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {"OPENAI_BASE_URL": url + "/v1", "ANTHROPIC_BASE_URL": url, "GOOGLE_GEMINI_BASE_URL": url}
    with pytest.raises(errors.NetworkError) as info:
        ask(fake, provider, env_extra=env)
    assert info.value.exit_code == 7


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_is_a_network_error(fake, provider):
    fake.script(provider, Reply(delay=3))
    with pytest.raises(errors.NetworkError, match="in time"):
        ask(fake, provider, timeout=0.5)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_json_is_a_provider_error(fake, provider):
    fake.script(provider, Reply(malformed=True))
    with pytest.raises(errors.ProviderError):
        ask(fake, provider)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropped_connection_without_reply_is_retried_then_succeeds(fake, provider):
    fake.script(provider, Reply(drop_after=0), Reply(text="second time lucky"))
    waits = []
    call = make_call(fake, provider, retries=2)
    response = core.complete(call, sleep=waits.append)
    assert response.text == "second time lucky"
    assert response.attempts == 2 and len(waits) == 1
    assert len(fake.requests_for(provider)) == 2


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_openai_refusal_is_kept_apart_from_the_text(fake, streamed):
    """A refusal is not answer text: it never reaches the printed deltas, only `refusal`."""
    fake.script("openai", Reply(refusal="I can't help with that."))
    call = make_call(fake, "openai")
    if streamed:
        stream = core.Stream(call)
        assert list(stream) == []
        response = stream.response
    else:
        response = core.complete(call)
    assert response.text == ""
    assert response.refusal == "I can't help with that."
    assert (response.finish_reason, response.raw_finish_reason) == (
        FinishReason.CONTENT_FILTER,
        "refusal",
    )
    problem = core.incomplete(response, strict=False)
    assert problem is not None and problem.exit_code == 8
    assert problem.message == "openai declined to answer: I can't help with that."
