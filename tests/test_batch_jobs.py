"""`llmcli batch submit/status/list/cancel/fetch`: provider Batch API jobs (docs/batch.md).

The installed `llmcli` runs as a subprocess against the fake server's batch endpoints
(tests/fakebatch.py: `fake.batch_plan`, `fake.batches`), which answer each request of a job as
the live endpoint would, popping the provider's scripted replies in submission order.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest

from tests import pg
from tests.conftest import base_env, modules_loaded, run_cli, table_rows
from tests.fakeserver import Reply

PROVIDERS = ("openai", "anthropic", "gemini")
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Ids no provider would take as custom ids: spaces, a slash, unicode, a number, 80 characters.
IDS = ["ticket 1/a", "é-2", 3]


def _input(tmp_path, prompts=("first", "second", "third"), ids=IDS, name="in.jsonl"):
    path = tmp_path / name
    path.write_text(
        "".join(
            json.dumps({"id": i, "prompt": p}) + "\n" for i, p in zip(ids, prompts, strict=True)
        )
    )
    return path


def _submit(cli, path, provider, *extra):
    result = cli("batch", "submit", str(path), "-p", provider, *extra)
    assert result.code == 0, result.err
    job = result.out.strip()
    assert result.out == job + "\n" and len(result.err.strip().splitlines()) == 1
    return job


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _replies():
    return (
        Reply(text="one", input_tokens=1000, output_tokens=500),
        Reply(text="two", input_tokens=1000, output_tokens=500),
        Reply(text="three", input_tokens=1000, output_tokens=500),
    )


LIVE_KIND = {"openai": "chat", "anthropic": "messages", "gemini": "generate"}
LIVE_OPTIONS = ("-s", "be brief", "--max-tokens", "77", "-t", "0.3")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_submit_status_fetch_maps_answers_back_to_the_input_ids(cli, fake, tmp_path, provider):
    """One job's whole life: submitted with options, read while running, fetched with --wait,
    priced at half, cancelled once finished, and compared with a live call (one job for all of
    it: a `batch submit` imports the provider's SDK)."""
    from llmcli import pricing
    from llmcli.types import Usage

    fake.script(provider, *_replies())
    # Running for two reads: `status` sees one, `fetch --wait` the other and must poll again
    # (this test also holds what a test of `--wait` alone did: one submission fewer).
    fake.batch_plan(provider, polls=2, order="reverse")
    job = _submit(cli, _input(tmp_path), provider, *LIVE_OPTIONS)

    [held] = fake.batches(provider)
    assert job.endswith(held["id"].removeprefix("batches/"))
    assert len(held["requests"]) == 3 and all(CUSTOM_ID.match(c) for c in held["custom_ids"])
    assert len(set(held["custom_ids"])) == 3
    assert "stream" not in json.dumps(held["requests"])  # what a live call sends, not streamed

    status = cli("batch", "status", job, "--format", "json")
    assert status.code == 0, status.err
    shown = json.loads(status.out)
    assert (shown["id"], shown["provider"], shown["model"]) == (job, provider, MODELS[provider])
    assert shown["state"] in ("pending", "running") and shown["requests"] == 3
    assert 0 <= shown["age_s"] < 60 and shown["counts"] is not None

    out = tmp_path / "out.jsonl"
    reads = len([r for r in fake.requests if r.kind == "batch_get"])
    started = time.monotonic()
    fetched = cli("batch", "fetch", job, "-o", str(out), "--wait", "--timeout", "30")
    assert fetched.code == 0, fetched.err
    assert time.monotonic() - started < 20
    assert fetched.out == ""
    assert "3 answered, 0 failed" in fetched.err
    reads = len([r for r in fake.requests if r.kind == "batch_get"]) - reads
    assert reads >= 3, reads  # it polled: 2 when the first read finds the job ended
    lines = _lines(out)
    assert {line["id"]: line["content"] for line in lines} == {
        "ticket 1/a": "one",
        "é-2": "two",
        3: "three",
    }
    for line in lines:
        assert set(line) == {"id", "content", "finish_reason", "usage", "cost_usd", "provider",
                             "model"}  # fmt: skip
        assert (line["provider"], line["finish_reason"]) == (provider, "stop")
        assert line["usage"]["input_tokens"] == 1000 and line["cost_usd"] > 0

    # `cost --by batch`: the job at half the standard price of 3 x (1,000 in, 500 out), as
    # every provider bills batch work.
    rows = json.loads(cli("cost", "--by", "batch", "--format", "json").out)["rows"]
    [row] = [r for r in rows if r["batch"] == job]
    usage = Usage(input_tokens=3000, output_tokens=1500)
    standard = pricing.cost(provider, [MODELS[provider]], usage)
    assert row["calls"] == 3
    assert Decimal(str(row["cost_usd"])) == standard.usd / 2
    assert sum(Decimal(str(line["cost_usd"])) for line in lines) == standard.usd / 2

    # Cancelling the finished job: OpenAI refuses with a 409, Anthropic and Gemini return the
    # job unchanged; either way it had ended, nothing was cancelled, and that is not an error.
    cancelled = cli("batch", "cancel", job)
    assert cancelled.code == 0, (provider, cancelled.err)
    assert job in cancelled.out and "ended" in cancelled.out
    assert cancelled.err == f"{job} had already ended: nothing was cancelled\n"

    # Each request of the job is what a live call with the same options sends.
    fake.script(provider, Reply(text="live"))
    assert cli("ask", "-p", provider, *LIVE_OPTIONS, "first").code == 0
    [live] = [r for r in fake.requests_for(provider) if r.kind == LIVE_KIND[provider]]
    assert held["requests"][0] == live.body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_errored_and_expired_requests_are_error_lines_and_exit_8(cli, fake, tmp_path, provider):
    fake.script(provider, Reply(text="fine"), Reply(status=400, error_message="bad request x"),
                Reply(text="late"))  # fmt: skip
    fake.batch_plan(provider, expire=(2,))
    job = _submit(cli, _input(tmp_path), provider)

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8, fetched.err
    assert "1 answered, 2 failed" in fetched.err
    assert "Error: 2 of 3 requests failed" in fetched.err
    by_id = {line["id"]: line for line in _lines(out)}
    assert by_id["ticket 1/a"]["content"] == "fine"
    assert "bad request x" in by_id["é-2"]["error"] and by_id["é-2"]["exit_code"] == 9
    assert "expired" in by_id[3]["error"]
    assert by_id[3]["usage"] is None and by_id[3]["cost_usd"] is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_then_fetch_lists_the_unanswered_requests_as_cancelled(
    cli, fake, tmp_path, provider
):
    fake.script(provider, *_replies())
    fake.batch_plan(provider, polls=10, cancelled=(1, 2))
    job = _submit(cli, _input(tmp_path), provider)

    cancelled = cli("batch", "cancel", job)
    assert cancelled.code == 0, cancelled.err
    assert job in cancelled.out and ("cancel" in cancelled.out)
    status = json.loads(cli("batch", "status", job, "--format", "json").out)
    assert status["state"] == "cancelled"

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8, fetched.err
    by_id = {line["id"]: line for line in _lines(out)}
    assert by_id["ticket 1/a"]["content"] == "one"
    assert "cancelled" in by_id["é-2"]["error"] and "cancelled" in by_id[3]["error"]


def test_fetching_twice_adds_no_line_and_no_log_row_twice(cli, fake, tmp_path, log_backend):
    fake.script("anthropic", *_replies())
    fake.batch_plan("anthropic", order="shuffle")
    job = _submit(cli, _input(tmp_path), "anthropic", "--tag", "nightly", "-s", "be brief")

    out = tmp_path / "out.jsonl"
    assert cli("batch", "fetch", job, "-o", str(out)).code == 0
    again = cli("batch", "fetch", job, "-o", str(out))
    assert again.code == 0, again.err
    assert "3 already in" in again.err
    assert sorted(str(line["id"]) for line in _lines(out)) == ["3", "ticket 1/a", "é-2"]
    rows = table_rows()
    assert len(rows) == 3
    assert {(r["source"], r["batch_id"], r["tag"], r["status"]) for r in rows} == {
        ("batch", job, "nightly", "ok")
    }
    assert all(r["price_source"].endswith("(batch)") for r in rows)
    # Each row holds its prompt (read back from the unchanged input file) and system prompt.
    assert sorted(json.loads(r["messages"])[0]["content"] for r in rows) == [
        "first",
        "second",
        "third",
    ]
    assert {r["system_prompt"] for r in rows} == {"be brief"}
    # Into another file: the lines are written there, the log still has each result once.
    other = tmp_path / "other.jsonl"
    assert cli("batch", "fetch", job, "-o", str(other)).code == 0
    assert len(_lines(other)) == 3 and len(table_rows()) == 3
    assert [row["job_id"] for row in table_rows("batch_jobs")] == [job]


def test_list_shows_jobs_newest_first_and_refreshes_only_unfinished_ones(cli, fake, tmp_path):
    fake.script("openai", *_replies())
    first = _submit(cli, _input(tmp_path), "openai")
    assert cli("batch", "fetch", first, "-o", str(tmp_path / "a.jsonl")).code == 0
    # Listing finished jobs asks no provider: no SDK is loaded (nor by the help).
    sdks = {"openai", "anthropic", "google", "pydantic", "httpx2"}
    for args in (["batch", "list"], ["batch", "--help"], ["batch", "submit", "--help"]):
        loaded = modules_loaded(*args, env=base_env(fake))
        assert not {m for m in loaded if m.split(".")[0] in sdks}, args

    fake.script("openai", *_replies())
    fake.batch_plan("openai", polls=50)
    second = _submit(cli, _input(tmp_path), "openai")

    before = len([r for r in fake.requests if r.kind == "batch_get"])
    listed = cli("batch", "list")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert [line.split()[0] for line in lines] == [second, first]
    assert "ended" in lines[1] and "running" in lines[0]
    # Only the unfinished job was asked about.
    gets = [r for r in fake.requests if r.kind == "batch_get"][before:]
    assert len(gets) == 1
    data = json.loads(cli("batch", "list", "--format", "json").out)
    assert [job["id"] for job in data] == [second, first]

    # The unfinished job cannot be fetched yet (a test of its own needed one submission more).
    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", second, "-o", str(out))
    assert fetched.code == 11
    assert f"Error: {second} has not finished" in fetched.err and "--wait" in fetched.err
    assert not out.exists() or out.read_text() == ""
    waited = cli("batch", "fetch", second, "-o", str(out), "--wait", "--timeout", "1")
    assert waited.code == 11, waited.err


def test_an_unknown_job_id_is_a_clear_error(cli, fake):
    for command in ("status", "cancel"):
        result = cli("batch", command, "batch_nope")
        assert result.code == 2
        assert result.err.startswith("Error: no batch job 'batch_nope' in the log")
    result = cli("batch", "fetch", "batch_nope", "-o", "out.jsonl")
    assert result.code == 2 and "no batch job" in result.err
    assert fake.requests == []


def test_a_bad_line_is_refused_before_anything_is_sent(cli, fake, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 1, "prompt": "fine"}\n'
        '{"id": 2, "prompt": "other model", "model": "gpt-4o"}\n'
        '{"id": 3, "prompt": "hot", "temperature": 9}\n'
    )
    result = cli("batch", "submit", str(path), "-p", "openai")
    assert result.code == 2
    assert (
        "in.jsonl:2: asks for openai gpt-4o, but a batch job is one provider and model"
        in result.err
    )
    assert 'in.jsonl:3: invalid "temperature"' in result.err
    assert "nothing was sent" in result.err and result.out == ""
    assert fake.requests == [] and fake.batches() == []
    # --skip-bad submits the good line alone.
    job = cli("batch", "submit", str(path), "-p", "openai", "--skip-bad")
    assert job.code == 0, job.err
    [held] = fake.batches("openai")
    assert len(held["requests"]) == 1


def test_the_provider_limits_are_checked_before_anything_is_sent(cli, fake, tmp_path):
    many = tmp_path / "many.txt"
    many.write_text("".join(f"question {n}\n" for n in range(50_001)))
    result = cli("batch", "submit", str(many), "-p", "openai")
    assert result.code == 2
    assert "at most 50,000 requests" in result.err and "nothing was sent" in result.err
    assert fake.requests == []


def test_a_gemini_job_over_20_mb_goes_as_an_uploaded_file(cli, fake, tmp_path):
    big = tmp_path / "big.jsonl"
    prompts = [f"{n} " + "x" * (7 * 1024 * 1024) for n in range(3)]
    big.write_text("".join(json.dumps({"id": f"b{n}", "prompt": p}) + "\n"
                           for n, p in enumerate(prompts)))  # fmt: skip
    one, _, three = _replies()
    fake.script("gemini", one, _refused_with_google_details(), three)
    job = _submit(cli, big, "gemini")
    [held] = fake.batches("gemini")
    assert held["input"] == "file" and held["custom_ids"] == ["r0", "r1", "r2"]
    assert held["requests"][1]["contents"][0]["parts"][0]["text"] == prompts[1]

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8, fetched.err
    by_id = {line["id"]: line for line in _lines(out)}
    assert (by_id["b0"]["content"], by_id["b2"]["content"]) == ("one", "three")
    assert "not this one" in by_id["b1"]["error"] and by_id["b1"]["exit_code"] == 9


def _refused_with_google_details():
    """A 400 whose error carries a `google.rpc.ErrorInfo` object in `details`, as Google's do."""
    return Reply(status=400, error_message="not this one", error_code="BAD_THING")


def test_a_gemini_job_whose_errors_carry_google_details_is_still_read(cli, fake, tmp_path):
    """google-genai types those details as strings and refuses to read such a job at all
    (wire-wave2.md surprise 7): its status and the other answers must still come through."""
    one, _, three = _replies()
    fake.script("gemini", one, _refused_with_google_details(), three)
    job = _submit(cli, _input(tmp_path), "gemini")
    [held] = fake.batches("gemini")
    assert held["input"] == "inline"

    status = cli("batch", "status", job, "--format", "json")
    assert status.code == 0, status.err
    assert json.loads(status.out)["counts"] == {"succeeded": 2, "errored": 1}

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8, fetched.err
    by_id = {line["id"]: line for line in _lines(out)}
    assert (by_id["ticket 1/a"]["content"], by_id[3]["content"]) == ("one", "three")
    assert "not this one" in by_id["é-2"]["error"] and by_id["é-2"]["exit_code"] == 9


def test_a_named_openai_compatible_endpoint_holds_its_job(cli, fake, tmp_path):
    from tests.test_endpoints import ENDPOINT_KEYS, config_toml, write_config

    write_config(config_toml(fake.url))
    fake.script("openai", *_replies(), prefix="/ollama")
    env = dict(ENDPOINT_KEYS)
    result = cli("batch", "submit", str(_input(tmp_path)), "-p", "ollama", extra_env=env)
    assert result.code == 0, result.err
    job = result.out.strip()
    [held] = fake.batches("openai")
    assert (held["prefix"], held["model"]) == ("/ollama", "llama3.2")

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out), extra_env=env)  # no -p: from the log
    assert fetched.code == 0, fetched.err
    assert {line["provider"] for line in _lines(out)} == {"ollama"}
    assert sorted(line["content"] for line in _lines(out)) == ["one", "three", "two"]


def test_the_batch_apis_own_failures_keep_their_exit_codes(cli, fake, tmp_path):
    fake.script_batch_api("openai", Reply(status=401))
    refused = cli("batch", "submit", str(_input(tmp_path)), "-p", "openai")
    assert refused.code == 4 and refused.err.startswith("Error: authentication failed")
    assert fake.batches() == [] and cli("batch", "list").out == ""

    fake.script("openai", *_replies())
    job = _submit(cli, _input(tmp_path), "openai")
    fake.script_batch_api("openai", Reply(status=500))  # once: a status read is retried
    status = cli("batch", "status", job)
    assert status.code == 0, status.err
    assert job in status.out and "ended" in status.out


def test_a_job_the_provider_refused_gives_every_request_an_error_line(cli, fake, tmp_path):
    fake.script("openai", *_replies())
    fake.batch_plan("openai", fail="the input file is not valid")
    path = _input(tmp_path)
    job = _submit(cli, path, "openai")
    _input(tmp_path, prompts=("edited", "since", "then"))  # the log must not take these
    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8
    lines = _lines(out)
    assert len(lines) == 3
    assert all("the input file is not valid" in line["error"] for line in lines)
    rows = table_rows()
    assert len(rows) == 3 and {(r["status"], r["messages"]) for r in rows} == {("error", None)}
    status = json.loads(cli("batch", "status", job, "--format", "json").out)
    assert (status["state"], status["error"]) == ("failed", "the input file is not valid")


def test_fetch_wait_shows_its_progress_on_a_terminal_only(cli, fake, tmp_path):
    import pexpect

    from tests.conftest import LLMCLI

    fake.script("openai", *_replies())
    fake.batch_plan("openai", polls=2)
    job = _submit(cli, _input(tmp_path), "openai")
    out = tmp_path / "out.jsonl"
    child = pexpect.spawn(LLMCLI, ["batch", "fetch", job, "-o", str(out), "--wait"],
                          env=base_env(fake), timeout=20, cwd=str(tmp_path), encoding="utf-8")  # fmt: skip
    try:
        child.expect_exact(f"{job}: running, 3 requests")
        child.expect_exact(", waited ")
        child.expect_exact("\r\x1b[K")  # erased before the summary
        child.expect_exact("3 answered, 0 failed")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0

    fake.script("openai", *_replies())
    fake.batch_plan("openai", polls=2)
    job = _submit(cli, _input(tmp_path), "openai")
    piped = cli("batch", "fetch", job, "-o", str(tmp_path / "again.jsonl"), "--wait")
    assert piped.code == 0 and "\x1b" not in piped.err and piped.err.count("\n") == 1


def test_answers_are_checked_against_their_lines_schema(cli, fake, tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"id": "a", "prompt": "one", "schema": schema}) + "\n"
        + json.dumps({"id": "b", "prompt": "two", "schema": schema}) + "\n"
        + json.dumps({"id": "c", "prompt": "free text"}) + "\n"
    )  # fmt: skip
    fake.script("openai", Reply(text='{"n": 1}'), Reply(text='{"n": "x"}'), Reply(text="hi"))
    job = _submit(cli, path, "openai")
    [held] = fake.batches("openai")
    assert [("response_format" in r) for r in held["requests"]] == [True, True, False]

    out = tmp_path / "out.jsonl"
    fetched = cli("batch", "fetch", job, "-o", str(out))
    assert fetched.code == 8, fetched.err
    by_id = {line["id"]: line for line in _lines(out)}
    assert by_id["a"]["parsed"] == {"n": 1} and "error" not in by_id["a"]
    assert by_id["b"]["exit_code"] == 8 and "$.n" in by_id["b"]["error"]
    assert by_id["c"]["content"] == "hi" and "parsed" not in by_id["c"]


def test_log_migrate_takes_the_batch_jobs_to_the_team_log(cli, fake, tmp_path):
    """A job submitted before the team log existed is still found there after `log migrate`,
    once however often it runs."""
    name, url = pg.create_database()
    try:
        _migrate_a_job(cli, fake, tmp_path, url)
    finally:
        pg.drop_database(name)


def _migrate_a_job(cli, fake, tmp_path, url):
    fake.script("anthropic", *_replies())
    job = _submit(cli, _input(tmp_path), "anthropic")

    for new in (1, 0):
        migrated = cli("log", "migrate", "--to", url)
        assert migrated.code == 0, migrated.err
        assert migrated.out.rstrip().endswith(f"And 1 batch job: {new} new."), migrated.out

    team = {**base_env(fake), "LLMCLI_DB": url}
    listed = run_cli("batch", "list", "--format", "json", env=team)
    assert listed.code == 0, listed.err
    assert [entry["id"] for entry in json.loads(listed.out)] == [job]
    out = tmp_path / "out.jsonl"
    fetched = run_cli("batch", "fetch", job, "-o", str(out), env=team)
    assert fetched.code == 0, fetched.err
    assert sorted(line["content"] for line in _lines(out)) == ["one", "three", "two"]
