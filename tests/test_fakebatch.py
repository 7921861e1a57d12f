"""Self-test of tests/fakebatch.py: the real SDKs' batch calls, in-process, against the fake.

llmcli's ``batch`` commands are tested against these endpoints, so this file checks the fake
against the SDKs themselves: the life of a job (create, polls, results), per-item errors from
the script, expiry, cancellation, failure, paging and result order, per provider.
"""

from __future__ import annotations

import io
import json

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakeserver import Reply

MODEL_OPENAI = "gpt-4o-mini"


@pytest.fixture(autouse=True)
def no_fake_errors(fake):
    yield
    assert fake.errors == []  # no exception inside the fake itself


@pytest.fixture
def oai(fake):
    client = openai.OpenAI(api_key="sk-test-1", base_url=fake.url + "/v1", max_retries=0, timeout=5)
    yield client
    client.close()


# --- OpenAI ------------------------------------------------------------------------------------


def openai_input(n: int, model: str = MODEL_OPENAI, **overrides) -> bytes:
    """An OpenAI batch input file of ``n`` chat requests r0..r{n-1}."""
    lines = []
    for i in range(n):
        line = {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
        }
        line.update(overrides)
        lines.append(json.dumps(line))
    return "".join(line + "\n" for line in lines).encode()


def openai_submit(client: openai.OpenAI, data: bytes):
    upload = client.files.create(file=("in.jsonl", data, "application/jsonl"), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "t"},
    )


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    assert "\n\n" not in text and text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_openai_create_poll_and_results(fake, oai):
    fake.script(
        "openai",
        Reply(text="first", input_tokens=5, output_tokens=3),
        Reply(status=429),
        Reply(text="third", input_tokens=7, output_tokens=2, finish="length"),
    )
    fake.batch_plan("openai", polls=2)
    batch = openai_submit(oai, openai_input(3))
    assert batch.status == "validating"
    assert batch.request_counts.total == 3
    assert [oai.batches.retrieve(batch.id).status for _ in range(2)] == ["in_progress"] * 2
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 5)

    out = jsonl(oai, done.output_file_id)
    assert [line["custom_id"] for line in out] == ["r0", "r2"]
    first, third = (line["response"] for line in out)
    assert first["status_code"] == 200 and out[0]["error"] is None
    assert first["body"]["choices"][0]["message"]["content"] == "first"
    assert first["body"]["usage"]["prompt_tokens"] == 5
    assert third["body"]["choices"][0]["finish_reason"] == "length"
    (err,) = jsonl(oai, done.error_file_id)
    assert err["custom_id"] == "r1" and err["response"]["status_code"] == 429
    assert err["response"]["body"]["error"]["code"] == "rate_limit_exceeded"

    (job,) = fake.batches("openai")
    assert job["id"] == batch.id and job["state"] == "completed"
    assert job["custom_ids"] == ["r0", "r1", "r2"] and job["model"] == MODEL_OPENAI
    assert job["requests"][1]["messages"][0]["content"] == "question 1"
    kinds = [r.kind for r in fake.requests_for("openai")]
    assert kinds.count("batch_item") == 3
    assert kinds[:2] == ["file_upload", "batch_create"] and kinds.count("batch_get") == 3
    assert fake.pending("openai") == 0


def test_openai_item_checks_are_the_live_ones(fake, oai):
    """An unknown model is the live endpoint's 404, per item, with the other items answered."""
    fake.script("openai", Reply(text="ok"))
    data = openai_input(1, model="no-such-model")
    batch = openai_submit(oai, data)
    done = oai.batches.retrieve(batch.id)
    (err,) = jsonl(oai, done.error_file_id)
    assert err["response"]["status_code"] == 404
    assert err["response"]["body"]["error"]["code"] == "model_not_found"
    assert done.output_file_id is None
    assert fake.pending("openai") == 0  # the item popped its reply, as a live call would


def test_openai_expire_cancel_and_fail(fake, oai):
    fake.batch_plan("openai", expire=(1,))
    fake.batch_plan("openai", polls=3, cancelled=(0, 2))
    fake.batch_plan("openai", polls=1, fail="input file too large")

    expired = oai.batches.retrieve(openai_submit(oai, openai_input(3)).id)
    assert expired.status == "expired"
    assert [line["custom_id"] for line in jsonl(oai, expired.output_file_id)] == ["r0", "r2"]
    (err,) = jsonl(oai, expired.error_file_id)
    assert err["custom_id"] == "r1" and err["error"]["code"] == "batch_expired"
    assert err["response"] is None

    batch = openai_submit(oai, openai_input(3))
    assert oai.batches.retrieve(batch.id).status == "in_progress"
    assert oai.batches.cancel(batch.id).status == "cancelling"
    cancelled = oai.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert [line["custom_id"] for line in jsonl(oai, cancelled.output_file_id)] == ["r1"]
    errors = jsonl(oai, cancelled.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("r0", "batch_cancelled"),
        ("r2", "batch_cancelled"),
    ]
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)  # already done

    batch = openai_submit(oai, openai_input(2))
    assert oai.batches.retrieve(batch.id).status == "in_progress"
    failed = oai.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors.data[0].message == "input file too large"
    assert failed.output_file_id is None and failed.error_file_id is None
    assert [job["state"] for job in fake.batches()] == ["expired", "cancelled", "failed"]


def test_openai_bad_input_lines_fail_the_job(fake, oai):
    good = openai_input(1)
    data = good + b"not json\n" + good + openai_input(1, url="/v1/embeddings").replace(b"r0", b"x")
    batch = openai_submit(oai, data)
    failed = oai.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert [(e.line, e.code) for e in failed.errors.data] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_endpoint"),
    ]
    assert not [r for r in fake.requests if r.kind == "batch_item"]  # nothing was answered


@pytest.mark.parametrize(
    ("order", "expected"),
    [("reverse", ["r3", "r2", "r1", "r0"]), ("shuffle", None)],
)
def test_openai_result_order(fake, oai, order, expected):
    fake.batch_plan("openai", order=order)
    done = oai.batches.retrieve(openai_submit(oai, openai_input(4)).id)
    ids = [line["custom_id"] for line in jsonl(oai, done.output_file_id)]
    assert sorted(ids) == ["r0", "r1", "r2", "r3"]
    assert ids == expected if expected else ids != sorted(ids)


def test_openai_list_pages_newest_first(fake, oai):
    ids = [openai_submit(oai, openai_input(1)).id for _ in range(3)]
    first = oai.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    assert [b.id for b in oai.batches.list(limit=2)] == ids[::-1]  # auto-paging ends
    assert [r.query.get("after") for r in fake.requests if r.kind == "batch_list"][-2:] == [
        None,
        ids[1],
    ]


def test_openai_named_endpoint_keeps_its_own_batches(fake, oai):
    fake.script("openai", Reply(text="proxied"), prefix="/ollama")
    proxy = openai.OpenAI(api_key="sk-x", base_url=fake.url + "/ollama/v1", max_retries=0)
    with proxy:
        batch = openai_submit(proxy, openai_input(1))
        done = proxy.batches.retrieve(batch.id)
        (line,) = jsonl(proxy, done.output_file_id)
        assert line["response"]["body"]["choices"][0]["message"]["content"] == "proxied"
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve(batch.id)
    assert fake.batches()[0]["prefix"] == "/ollama"
    items = [r for r in fake.requests_for("openai", prefix="/ollama") if r.kind == "batch_item"]
    assert [r.path for r in items] == ["/ollama/v1/chat/completions"]


def test_openai_batch_calls_check_the_key(fake):
    client = openai.OpenAI(api_key="bad-key", base_url=fake.url + "/v1", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError):
        client.batches.list()


# --- Anthropic ---------------------------------------------------------------------------------

MODEL_ANTHROPIC = "claude-haiku-4-5"


@pytest.fixture
def ant(fake):
    client = anthropic.Anthropic(
        api_key="sk-ant-test-2", base_url=fake.url, max_retries=0, timeout=5
    )
    yield client
    client.close()


def anthropic_requests(n: int, **params) -> list[dict]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": MODEL_ANTHROPIC,
                "max_tokens": 100,
                "messages": [{"role": "user", "content": f"question {i}"}],
                **params,
            },
        }
        for i in range(n)
    ]


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, object]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def test_anthropic_create_poll_and_results(fake, ant):
    fake.script(
        "anthropic",
        Reply(text="first", input_tokens=5, output_tokens=3),
        Reply(status=529),
        Reply(text="third", finish="length"),
    )
    fake.batch_plan("anthropic", polls=2, order="reverse")
    batches = ant.messages.batches
    batch = batches.create(requests=anthropic_requests(3))
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 3
    assert batch.results_url is None
    for _ in range(2):
        polled = batches.retrieve(batch.id)
        assert polled.processing_status == "in_progress" and polled.results_url is None
    done = batches.retrieve(batch.id)
    assert done.processing_status == "ended" and done.ended_at is not None
    assert (done.request_counts.succeeded, done.request_counts.errored) == (2, 1)
    assert done.results_url == f"/v1/messages/batches/{batch.id}/results"  # relative

    lines = list(batches.results(batch.id))
    assert [line.custom_id for line in lines] == ["r2", "r1", "r0"]
    got = {line.custom_id: line.result for line in lines}
    assert got["r0"].type == "succeeded" and got["r0"].message.content[0].text == "first"
    assert (got["r0"].message.usage.input_tokens, got["r0"].message.usage.output_tokens) == (5, 3)
    assert got["r2"].message.stop_reason == "max_tokens"
    assert got["r1"].type == "errored" and got["r1"].error.error.type == "overloaded_error"
    results_call = [r for r in fake.requests_for("anthropic") if r.kind == "batch_results"]
    assert [r.path for r in results_call] == [done.results_url]

    (job,) = fake.batches("anthropic")
    assert job["custom_ids"] == ["r0", "r1", "r2"] and job["model"] == MODEL_ANTHROPIC
    assert job["requests"][0]["max_tokens"] == 100 and job["state"] == "ended"
    assert [r.kind for r in fake.requests_for("anthropic")].count("batch_item") == 3


def test_anthropic_item_checks_are_the_live_ones(fake, ant):
    """A request without max_tokens is errored, as /v1/messages would refuse it."""
    reqs = anthropic_requests(2)
    del reqs[1]["params"]["max_tokens"]
    batch = ant.messages.batches.create(requests=reqs)
    ant.messages.batches.retrieve(batch.id)
    got = results(ant, batch.id)
    assert got["r0"].type == "succeeded"
    assert got["r1"].type == "errored"
    assert got["r1"].error.error.message == "max_tokens: Field required"


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "", "dup"])
def test_anthropic_bad_custom_id_refuses_the_whole_batch(fake, ant, bad):
    reqs = anthropic_requests(2)
    reqs[1]["custom_id"] = bad if bad != "dup" else "r0"
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant.messages.batches.create(requests=reqs)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert fake.batches() == [] and fake.pending() == 0
    assert not [r for r in fake.requests if r.kind == "batch_item"]


def test_anthropic_expire_cancel_and_delete(fake, ant):
    batches = ant.messages.batches
    fake.batch_plan("anthropic", expire=(0,), fail="ignored: Anthropic has no failed state")
    fake.batch_plan("anthropic", polls=5, cancelled=(1,))
    expired = batches.create(requests=anthropic_requests(2))
    counts = batches.retrieve(expired.id).request_counts
    assert (counts.expired, counts.succeeded) == (1, 1)
    assert {k: r.type for k, r in results(ant, expired.id).items()} == {
        "r0": "expired",
        "r1": "succeeded",
    }

    batch = batches.create(requests=anthropic_requests(3))
    with pytest.raises(anthropic.BadRequestError):
        batches.delete(batch.id)  # still in progress
    canceling = batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
    assert {k: r.type for k, r in results(ant, batch.id).items()} == {
        "r0": "succeeded",
        "r1": "canceled",
        "r2": "succeeded",
    }
    assert batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        batches.retrieve(batch.id)
    assert [job["state"] for job in fake.batches()] == ["ended", "deleted"]


def test_anthropic_list_pages_and_prefix(fake, ant):
    ids = [ant.messages.batches.create(requests=anthropic_requests(1)).id for _ in range(3)]
    page = ant.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    assert [b.id for b in ant.messages.batches.list(limit=2)] == ids[::-1]

    fake.script("anthropic", Reply(text="proxied"), prefix="/claude-proxy")
    proxy = anthropic.Anthropic(api_key="sk-ant-x", base_url=fake.url + "/claude-proxy")
    with proxy:
        batch = proxy.messages.batches.create(requests=anthropic_requests(1))
        assert [b.id for b in proxy.messages.batches.list()] == [batch.id]
        (line,) = proxy.messages.batches.results(batch.id)  # results_url joined to the prefix
        assert line.result.message.content[0].text == "proxied"
    calls = fake.requests_for("anthropic", prefix="/claude-proxy")
    assert [r.path for r in calls if r.kind == "batch_results"] == [
        f"/claude-proxy/v1/messages/batches/{batch.id}/results"
    ]


# --- Gemini ------------------------------------------------------------------------------------

MODEL_GEMINI = "gemini-2.5-flash"


def gemini_client(fake, path: str = "", version: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(base_url=fake.url + path, timeout=5000)
    if version:
        options.api_version = version
    return genai.Client(api_key="AIza-test-3", http_options=options)


def gemini_inline(n: int) -> list[dict]:
    return [{"contents": f"question {i}", "metadata": {"key": f"r{i}"}} for i in range(n)]


def states(client: genai.Client, name: str, n: int) -> list[str]:
    return [client.batches.get(name=name).state.name for _ in range(n)]


@pytest.mark.parametrize("version", [None, "v1beta"])
def test_gemini_inline_create_poll_and_results(fake, version):
    fake.script(
        "gemini",
        Reply(text="first", input_tokens=5, output_tokens=3),
        Reply(status=503),
        Reply(text="third", finish="length"),
    )
    fake.batch_plan("gemini", polls=2, order="reverse")  # Gemini keeps the request order anyway
    client = gemini_client(fake, version=version)
    job = client.batches.create(
        model=MODEL_GEMINI, src=gemini_inline(3), config={"display_name": "job1"}
    )
    assert job.name.startswith("batches/") and job.state.name == "JOB_STATE_PENDING"
    assert states(client, job.name, 2) == ["JOB_STATE_RUNNING"] * 2
    done = client.batches.get(name=job.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED" and done.done
    assert done.display_name == "job1" and done.model == f"models/{MODEL_GEMINI}"
    first, second, third = done.dest.inlined_responses
    assert [r.metadata["key"] for r in (first, second, third)] == ["r0", "r1", "r2"]
    assert first.response.text == "first" and first.error is None
    usage = first.response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (5, 3)
    assert third.response.candidates[0].finish_reason.name == "MAX_TOKENS"
    assert second.response is None
    assert (second.error.code, second.error.details) == (503, [])

    (record,) = fake.batches("gemini")
    assert record["custom_ids"] == ["r0", "r1", "r2"] and record["model"] == MODEL_GEMINI
    assert record["requests"][1]["contents"][0]["parts"][0]["text"] == "question 1"
    assert record["input"] == "inline" and record["state"] == "BATCH_STATE_SUCCEEDED"
    items = [r for r in fake.requests_for("gemini") if r.kind == "batch_item"]
    expected = f"/{version or 'v1'}/models/{MODEL_GEMINI}:generateContent"
    assert [r.path for r in items] == [expected] * 3


def test_gemini_file_upload_input_and_file_output(fake):
    fake.script("gemini", Reply(text="from file"), Reply(status=400))
    client = gemini_client(fake, "/gemini")  # a named endpoint: the upload URL keeps its prefix
    lines = [
        {"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"q{i}"}], "role": "user"}]}}
        for i in range(2)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": "in"}
    )
    assert upload.name.startswith("files/") and upload.size_bytes == len(data)
    assert client.files.get(name=upload.name).state.name == "ACTIVE"
    job = client.batches.create(model=MODEL_GEMINI, src=upload.name)
    done = client.batches.get(name=job.name)
    assert done.dest.inlined_responses is None
    out = [
        json.loads(line) for line in client.files.download(file=done.dest.file_name).splitlines()
    ]
    assert [line["key"] for line in out] == ["k0", "k1"]
    assert out[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "from file"
    assert out[1]["error"] == {"code": 400, "message": out[1]["error"]["message"], "details": []}

    (record,) = fake.batches("gemini")
    assert record["input"] == "file" and record["custom_ids"] == ["k0", "k1"]
    assert record["prefix"] == "/gemini"
    kinds = [r.kind for r in fake.requests_for("gemini", prefix="/gemini")]
    assert kinds[:4] == ["file_upload_start", "file_upload", "file_get", "batch_create"]
    assert "file_content" in kinds


def test_gemini_expire_cancel_fail_and_delete(fake):
    client = gemini_client(fake)
    fake.batch_plan("gemini", expire=(1,))
    fake.batch_plan("gemini", polls=3, cancelled=(0,))
    fake.batch_plan("gemini", fail="quota exhausted")

    expired = client.batches.get(
        name=client.batches.create(model=MODEL_GEMINI, src=gemini_inline(3)).name
    )
    assert expired.state.name == "JOB_STATE_EXPIRED"
    answers = expired.dest.inlined_responses
    assert [r.response is not None for r in answers] == [True, False, True]
    assert answers[1].error.code == 504 and answers[1].metadata == {"key": "r1"}

    job = client.batches.create(model=MODEL_GEMINI, src=gemini_inline(2))
    assert states(client, job.name, 1) == ["JOB_STATE_RUNNING"]
    client.batches.cancel(name=job.name)
    cancelled = client.batches.get(name=job.name)
    assert cancelled.state.name == "JOB_STATE_CANCELLED"
    first, second = cancelled.dest.inlined_responses
    assert first.error.code == 499 and second.response.text == "Hello from the fake server."

    failed = client.batches.get(
        name=client.batches.create(model=MODEL_GEMINI, src=gemini_inline(1)).name
    )
    assert failed.state.name == "JOB_STATE_FAILED" and failed.dest is None

    client.batches.delete(name=job.name)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.get(name=job.name)
    assert caught.value.code == 404
    assert [b["state"] for b in fake.batches()] == [
        "BATCH_STATE_EXPIRED",
        "deleted",
        "BATCH_STATE_FAILED",
    ]


def test_gemini_list_pages_and_shares_v1_paths_with_openai(fake, oai):
    client = gemini_client(fake)
    names = [client.batches.create(model=MODEL_GEMINI, src=gemini_inline(1)).name for _ in range(3)]
    openai_batch = openai_submit(oai, openai_input(1))
    assert [b.name for b in client.batches.list(config={"page_size": 2})] == names[::-1]
    tokens = [
        r.query.get("pageToken") for r in fake.requests_for("gemini") if r.kind == "batch_list"
    ]
    assert tokens == [None, "2"]
    # Same /v1/batches paths: the headers tell the providers apart (wire-wave2.md surprise 3).
    assert [b.id for b in oai.batches.list()] == [openai_batch.id]
    assert client.batches.get(name=names[0]).state.name == "JOB_STATE_SUCCEEDED"
    assert oai.batches.retrieve(openai_batch.id).status == "completed"


def test_gemini_unknown_model_is_refused_at_create(fake):
    client = gemini_client(fake)  # kept: a dropped client closes its connection pool
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.create(model="no-such-model", src=gemini_inline(1))
    assert caught.value.code == 404
    assert fake.batches() == []


# --- common ------------------------------------------------------------------------------------


def test_batch_api_calls_have_their_own_script(fake, oai):
    """script() answers the prompts; script_batch_api() the calls around them."""
    fake.script("openai", Reply(text="the answer"))
    fake.script_batch_api("openai", Reply(), Reply(), Reply(status=503))
    batch = openai_submit(oai, openai_input(1))  # upload + create: served normally
    with pytest.raises(openai.InternalServerError):
        oai.batches.retrieve(batch.id)  # the scripted 503
    done = oai.batches.retrieve(batch.id)
    (line,) = jsonl(oai, done.output_file_id)
    assert line["response"]["body"]["choices"][0]["message"]["content"] == "the answer"
    assert [r.status for r in fake.requests if r.kind == "batch_get"] == [503, 200]


def test_batch_items_use_the_default_reply_and_reset_forgets_all(fake, ant):
    fake.set_default(Reply(echo=True))
    batch = ant.messages.batches.create(requests=anthropic_requests(2))
    got = results(ant, batch.id)
    assert [got[k].message.content[0].text for k in ("r0", "r1")] == ["question 0", "question 1"]
    fake.batch_plan("anthropic", polls=3)
    fake.reset()
    assert fake.batches() == [] and fake.requests == []
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.batches.retrieve(batch.id)
    later = ant.messages.batches.create(requests=anthropic_requests(1))
    assert ant.messages.batches.retrieve(later.id).processing_status == "ended"  # no plan left


def test_live_requests_keep_their_kind(fake, oai):
    oai.chat.completions.create(model=MODEL_OPENAI, messages=[{"role": "user", "content": "hi"}])
    oai.models.list()
    assert [r.kind for r in fake.requests] == ["chat", "models"]


def test_openai_input_file_needs_purpose_batch(fake, oai):
    upload = oai.files.create(file=("in.jsonl", openai_input(1)), purpose="assistants")
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert oai.files.retrieve(upload.id).purpose == "assistants"


def test_cancel_stops_every_item_by_default(fake, oai):
    fake.batch_plan("openai", polls=1)
    batch = openai_submit(oai, openai_input(2))
    assert oai.batches.cancel(batch.id).status == "cancelling"
    done = oai.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.output_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 0)
    codes = [line["error"]["code"] for line in jsonl(oai, done.error_file_id)]
    assert codes == ["batch_cancelled"] * 2
