"""The response cache as a user meets it: `--cache [TTL]`, `--no-cache`, LLMCLI_CACHE and
`llmcli cache`, the installed `llmcli` against the fake provider server.

The fake counts requests: a hit is proven by a request that never reached it, and an answer
that was not cached by one that did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from llmcli import money
from tests.conftest import KEYS, PROVIDERS, base_env, modules_loaded, run_cli
from tests.fakeserver import Reply

ANSWER = "A cached answer, word by word, from the fake."
PROMPT = "What is a monad?"


def log_db() -> Path:
    return Path(os.environ["LLMCLI_HOME"]) / "logs.db"


def sent(fake, provider: str = "openai") -> int:
    """How many requests the fake has had for `provider` (every one waited for)."""
    assert fake.wait_idle(5)
    return len(fake.requests_for(provider))


def ask_twice(cli, fake, provider: str, *args: str, command: str = "ask", **kwargs):
    """The same command twice; the fake always answers ANSWER."""
    fake.script(provider, Reply(text=ANSWER), Reply(text=ANSWER))
    first = cli(command, "-p", provider, *args, PROMPT, **kwargs)
    second = cli(command, "-p", provider, *args, PROMPT, **kwargs)
    return first, second


# --- hits and misses ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ask", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_same_request_twice_is_sent_once(cli, fake, provider, command):
    first, second = ask_twice(cli, fake, provider, "--cache", command=command)
    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert first.out == second.out == ANSWER + "\n"
    assert second.err == ""
    assert sent(fake, provider) == 1


def test_without_the_cache_every_request_is_sent(cli, fake):
    first, second = ask_twice(cli, fake, "openai")
    assert first.out == second.out == ANSWER + "\n"
    assert sent(fake) == 2


def test_an_answer_stored_by_ask_is_given_to_stream_at_once(cli, fake):
    fake.script("openai", Reply(text=ANSWER))
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    result = cli("stream", "-p", "openai", "--cache", PROMPT)
    assert (result.code, result.out, result.err) == (0, ANSWER + "\n", "")
    assert sent(fake) == 1


@pytest.mark.usefixtures("log_backend")
def test_a_hit_is_logged_as_a_cached_call_that_cost_nothing(cli, fake):
    first, second = ask_twice(cli, fake, "openai", "--cache", "--json")
    paid, hit = json.loads(first.out), json.loads(second.out)
    assert (paid["cached"], paid["saved_usd"]) == (False, None)
    assert paid["cost_usd"] > 0
    assert hit["cached"] is True
    assert hit["content"] == paid["content"] == ANSWER
    assert hit["cost_usd"] == 0 and hit["saved_usd"] == paid["cost_usd"]
    assert hit["usage"]["input_tokens"] == hit["usage"]["output_tokens"] == 0
    assert hit["finish_reason"] == "stop" and hit["model"] == paid["model"]

    rows = json.loads(run_cli("logs", "--json").out)
    assert [(r["cached"], r["id"]) for r in rows] == [
        (False, paid["log_id"]),
        (True, hit["log_id"]),
    ]
    assert rows[1]["cost_usd"] == 0 and rows[1]["price_source"] == "cache"
    assert Decimal(str(rows[1]["saved_usd"])) == Decimal(str(paid["cost_usd"]))
    assert rows[1]["answer"] == ANSWER and rows[1]["status"] == "ok"


def test_usage_line_of_a_hit_says_what_it_saved(cli, fake):
    fake.script("openai", Reply(text=ANSWER))
    paid = json.loads(cli("ask", "-p", "openai", "--cache", "--json", PROMPT).out)
    result = cli("ask", "-p", "openai", "--cache", "-u", PROMPT)
    assert result.out == ANSWER + "\n"
    saved = money.usd(Decimal(str(paid["cost_usd"])))
    assert result.err.endswith(f"(cached, saved {saved})\n")
    assert "cost $0.000000" in result.err
    assert sent(fake) == 1


@pytest.mark.usefixtures("log_backend")
def test_cost_has_a_saved_column(cli, fake):
    first, _ = ask_twice(cli, fake, "openai", "--cache", "--json")
    paid = Decimal(str(json.loads(first.out)["cost_usd"]))

    data = json.loads(run_cli("cost", "--format", "json").out)
    assert data["total"]["calls"] == 2
    assert Decimal(str(data["total"]["cost_usd"])) == paid  # the hit cost nothing
    assert Decimal(str(data["total"]["saved_usd"])) == paid

    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(run_cli("cost", "--format", "csv").out)))
    assert rows[-1]["provider"] == "TOTAL" and Decimal(rows[-1]["saved_usd"]) == paid

    table = run_cli("cost").out.splitlines()
    assert table[0].split()[-2:] == ["saved", "(USD)"]
    assert table[-1].endswith(money.usd(paid))


# --- the key -----------------------------------------------------------------------------------


CHANGES = [
    ["-t", "0.5"],
    ["-s", "Answer in one line."],
    ["-m", "gpt-4o"],
    ["--max-tokens", "50"],
    ["--stop", "END"],
    ["--seed", "7"],
    ["--top-p", "0.5"],
    ["--response-format", "json"],
]


def test_an_option_that_changes_the_answer_changes_the_key(cli, fake):
    # One cache for every option (a test per option repeated the plain miss and its hit: 14
    # processes more): each option's first ask must still be a miss, so none of them shares
    # another's key or the plain request's.
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    for n, change in enumerate(CHANGES, start=2):
        assert cli("ask", "-p", "openai", "--cache", *change, PROMPT).code == 0, change
        assert sent(fake) == n, change
        assert cli("ask", "-p", "openai", "--cache", *change, PROMPT).code == 0  # its own entry
        assert sent(fake) == n, change
    # The plain request's entry is still there, whatever the others stored.
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    assert sent(fake) == len(CHANGES) + 1


def test_an_attachment_is_keyed_by_what_is_sent_not_where_it_was_read(cli, fake, tmp_path):
    from tests.test_attach import png

    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir(), there.mkdir()
    (here / "shot.png").write_bytes(png(2, 1))
    (there / "shot.png").write_bytes(png(2, 1))
    ask = ("ask", "-p", "openai", "--cache", "-a", "shot.png", PROMPT)
    for folder in (here, there):  # the same bytes and name read from another folder: a hit
        result = cli(*ask, cwd=folder)
        assert result.code == 0, result.err
    assert sent(fake) == 1
    (there / "shot.png").write_bytes(png(3, 1))  # other bytes: another request
    assert cli(*ask, cwd=there).code == 0
    assert sent(fake) == 2


def test_another_prompt_is_another_request(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    assert cli("ask", "-p", "openai", "--cache", PROMPT + "!").code == 0
    assert sent(fake) == 2


def test_another_endpoint_is_another_request(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    proxy = {"OPENAI_BASE_URL": fake.url + "/proxy/v1"}
    assert cli("ask", "-p", "openai", "--cache", PROMPT, extra_env=proxy).code == 0
    assert [r.prefix for r in fake.requests_for("openai")] == ["", "/proxy"]


def test_options_that_do_not_change_the_answer_still_hit(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    for same in (["--timeout", "30"], ["--retries", "0"], ["--tag", "nightly"]):
        result = cli("ask", "-p", "openai", "--cache", *same, PROMPT)
        assert (result.code, result.out) == (0, "Hello from the fake server.\n"), same
        assert sent(fake) == 1, same


def test_the_key_is_never_stored_and_another_key_still_hits(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    other = {"OPENAI_API_KEY": "sk-test-openai-OTHER-KEY-0009"}
    assert cli("ask", "-p", "openai", "--cache", PROMPT, extra_env=other).code == 0
    assert sent(fake) == 1
    stored = b"".join(p.read_bytes() for p in log_db().parent.glob("logs.db*"))
    assert stored and KEYS["OPENAI_API_KEY"].encode() not in stored


# --- TTL, switches and the environment ---------------------------------------------------------


@pytest.mark.usefixtures("log_backend")
def test_an_answer_older_than_the_ttl_is_asked_for_again(cli, fake):
    fake.script("openai", Reply(text="first"), Reply(text="second"))
    assert cli("ask", "-p", "openai", "--cache", "1s", PROMPT).out == "first\n"
    stored = time.monotonic()
    assert cli("ask", "-p", "openai", "--cache", "1h", PROMPT).out == "first\n"  # young enough
    time.sleep(max(0.0, 1.2 - (time.monotonic() - stored)))  # past the 1s TTL, whatever it took
    assert cli("ask", "-p", "openai", "--cache", "1s", PROMPT).out == "second\n"
    assert sent(fake) == 2
    # The stale entry was replaced; and the TTL is the reader's: no TTL takes any age.
    assert cli("ask", "-p", "openai", "--cache", PROMPT).out == "second\n"
    assert sent(fake) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--cache", PROMPT],
        [PROMPT, "--cache"],
        ["--cache", "--json", PROMPT],
        ["--cache=on", PROMPT],
        ["--cache", "2w", PROMPT],
        ["--cache=7d", PROMPT],
    ],
    ids=["before", "after", "before-option", "equals-on", "ttl", "equals-ttl"],
)
def test_a_bare_cache_switch_keeps_the_prompt(cli, fake, args):
    for _ in range(2):
        result = cli("ask", "-p", "openai", *args)
        assert result.code == 0, result.err
    assert sent(fake) == 1
    (request,) = fake.requests_for("openai")
    assert request.body["messages"][-1]["content"] == PROMPT


def test_cache_as_the_value_of_another_option_or_after_dashes_is_not_the_switch(cli, fake):
    assert cli("ask", "-p", "openai", "-s", "--cache", PROMPT).code == 0
    assert cli("ask", "-p", "openai", "-s", "--cache", PROMPT).code == 0
    assert cli("ask", "-p", "openai", "--", "--cache").code == 0
    assert cli("ask", "-p", "openai", "--", "--cache").code == 0
    requests = fake.requests_for("openai")
    assert len(requests) == 4  # nothing was cached
    assert requests[0].body["messages"][0] == {"role": "system", "content": "--cache"}
    assert requests[2].body["messages"][-1]["content"] == "--cache"


def test_no_cache_neither_reads_nor_stores(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", "--no-cache", PROMPT).code == 0
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0  # nothing was stored
    assert sent(fake) == 2
    on = {"LLMCLI_CACHE": "1"}
    assert cli("ask", "-p", "openai", "--no-cache", PROMPT, extra_env=on).code == 0
    assert cli("ask", "-p", "openai", "--cache", "--no-cache", PROMPT).code == 0
    assert sent(fake) == 4
    assert cli("ask", "-p", "openai", PROMPT, extra_env=on).code == 0  # the stored one
    assert sent(fake) == 4


@pytest.mark.parametrize("value", ["1", "on", "1h", "7d"])
def test_llmcli_cache_turns_it_on(cli, fake, value):
    first, second = ask_twice(cli, fake, "openai", extra_env={"LLMCLI_CACHE": value})
    assert first.out == second.out == ANSWER + "\n"
    assert sent(fake) == 1


@pytest.mark.parametrize("value", ["0", "off"])
def test_llmcli_cache_off(cli, fake, value):
    ask_twice(cli, fake, "openai", extra_env={"LLMCLI_CACHE": value})
    assert sent(fake) == 2


def test_the_flag_wins_over_llmcli_cache(cli, fake):
    fake.script("openai", Reply(text="first"), Reply(text="second"))
    off = {"LLMCLI_CACHE": "off"}
    assert cli("ask", "-p", "openai", "--cache", PROMPT, extra_env=off).out == "first\n"
    assert cli("ask", "-p", "openai", "--cache", PROMPT, extra_env=off).out == "first\n"
    assert sent(fake) == 1


def test_a_malformed_ttl_is_refused_before_anything_is_sent(cli, fake):
    result = cli("ask", "-p", "openai", "--cache=soon", PROMPT)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("Error: invalid value for --cache: 'soon' must be a TTL")
    result = cli("ask", "-p", "openai", PROMPT, extra_env={"LLMCLI_CACHE": "0s"})
    assert result.code == 3 and result.out == ""
    assert result.err.startswith("Error: invalid LLMCLI_CACHE='0s': must be a TTL above zero")
    assert "export LLMCLI_CACHE=1h" in result.err
    assert sent(fake) == 0


# --- what is never cached ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ask", "stream"])
@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(text=ANSWER, finish="length"), 0),
        (Reply(text=ANSWER, finish="content_filter"), 0),
        (Reply(refusal="I can't help with that."), 8),
    ],
    ids=["truncated", "filtered", "refused"],
)
def test_an_incomplete_answer_is_never_cached(cli, fake, command, reply, code):
    fake.script("openai", reply, Reply(text="complete"))
    first = cli(command, "-p", "openai", "--cache", PROMPT)
    assert first.code == code
    again = cli(command, "-p", "openai", "--cache", PROMPT)
    assert (again.code, again.out) == (0, "complete\n")
    assert sent(fake) == 2


def test_a_truncated_answer_under_strict_is_not_cached(cli, fake):
    fake.script("openai", Reply(text=ANSWER, finish="length"), Reply(text="complete"))
    assert cli("ask", "-p", "openai", "--cache", "--strict", PROMPT).code == 8
    assert cli("ask", "-p", "openai", "--cache", "--strict", PROMPT).out == "complete\n"


@pytest.mark.parametrize(
    "failure",
    [Reply(status=500), Reply(chunks=["one", " two", " three"], drop_after=1)],
    ids=["server-error", "stream-broken-off"],
)
def test_a_failed_answer_is_never_cached(cli, fake, failure):
    fake.script("openai", failure, Reply(text="complete"))
    first = cli("stream", "-p", "openai", "--cache", "--retries", "0", PROMPT)
    assert first.code == 6
    again = cli("stream", "-p", "openai", "--cache", "--retries", "0", PROMPT)
    assert (again.code, again.out) == (0, "complete\n")
    assert cli("stream", "-p", "openai", "--cache", PROMPT).out == "complete\n"
    assert sent(fake) == 2


# --- fallbacks, budgets, no log ----------------------------------------------------------------


def test_a_hit_on_the_first_provider_ends_the_call(cli, fake):
    fake.script("openai", Reply(text=ANSWER))
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    result = cli("ask", "-p", "openai", "--cache", "--fallback", "anthropic", PROMPT)
    assert (result.code, result.out) == (0, ANSWER + "\n")
    assert (sent(fake, "openai"), sent(fake, "anthropic")) == (1, 0)


def test_a_fallback_s_answer_is_not_looked_up_in_its_place(cli, fake):
    """The first provider's answer was asked for: a fallback's stored answer is no hit for it."""
    args = ("ask", "-p", "openai", "--retries", "0", "--cache", "--fallback", "anthropic", PROMPT)
    fake.script("openai", Reply(status=500), Reply(status=500))
    fake.script("anthropic", Reply(text="from anthropic"), Reply(text="from anthropic"))
    for _ in range(2):
        result = cli(*args)
        assert (result.code, result.out) == (0, "from anthropic\n")
    assert (sent(fake, "openai"), sent(fake, "anthropic")) == (2, 2)


def test_a_hit_needs_no_budget(cli, fake):
    fake.script("openai", Reply(text=ANSWER))
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    broke = {"LLMCLI_BUDGET_DAILY_USD": "0"}
    refused = cli("ask", "-p", "openai", "another prompt", extra_env=broke)
    assert refused.code == 10  # the budget is in force...
    hit = cli("ask", "-p", "openai", "--cache", PROMPT, extra_env=broke)
    assert (hit.code, hit.out) == (0, ANSWER + "\n")  # ...but a stored answer costs nothing
    assert sent(fake) == 1


def test_the_cache_works_with_the_log_off(cli, fake):
    first, second = ask_twice(cli, fake, "openai", "--cache", "--no-log")
    assert first.out == second.out == ANSWER + "\n"
    assert sent(fake) == 1
    assert run_cli("logs", "--json").out.strip() == "[]"


# --- llmcli cache ------------------------------------------------------------------------------


def test_cache_stats_on_no_log_creates_none():
    result = run_cli("cache", "stats", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert (data["entries"], data["size_bytes"], data["hits"], data["saved_usd"]) == (0, 0, 0, 0)
    assert data["oldest"] is None and not log_db().exists()


@pytest.mark.usefixtures("log_backend")
def test_cache_stats_counts_entries_and_what_they_saved(cli, fake):
    before = dt.datetime.now(dt.UTC).isoformat()
    first, _ = ask_twice(cli, fake, "openai", "--cache", "--json")
    ask_twice(cli, fake, "anthropic", "--cache")
    paid = Decimal(str(json.loads(first.out)["cost_usd"]))
    data = json.loads(run_cli("cache", "stats", "--json").out)
    assert (data["entries"], data["hits"]) == (2, 2)
    assert data["size_bytes"] > 2 * len(ANSWER)
    assert before < data["oldest"] <= data["newest"]
    anthropic_paid = Decimal(str(data["saved_usd"])) - paid
    assert anthropic_paid > 0  # both providers' hits saved their first call's cost

    table = run_cli("cache", "stats")
    assert table.code == 0 and table.err == ""
    lines = dict(line.split(None, 1) for line in table.out.splitlines())
    assert lines["entries"] == "2" and lines["saved"] == money.usd(paid + anthropic_paid)
    assert lines["hits"].startswith("2 ")


@pytest.mark.usefixtures("log_backend")
def test_cache_clear_older_than_removes_only_older_answers(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", "old question").code == 0
    between = dt.datetime.now(dt.UTC).isoformat()
    assert cli("ask", "-p", "openai", "--cache", "new question").code == 0

    kept = run_cli("cache", "clear", "--older-than", "7d")
    assert (kept.code, kept.out, kept.err) == (0, "Removed 0 cached answers.\n", "")
    result = run_cli("cache", "clear", "--older-than", between)
    assert (result.code, result.out) == (0, "Removed 1 cached answer.\n")

    assert cli("ask", "-p", "openai", "--cache", "new question").code == 0  # still stored
    assert sent(fake) == 2
    assert cli("ask", "-p", "openai", "--cache", "old question").code == 0  # asked again
    assert sent(fake) == 3

    assert run_cli("cache", "clear").out == "Removed 2 cached answers.\n"
    assert json.loads(run_cli("cache", "stats", "--json").out)["entries"] == 0
    # What the cache saved stays in the log.
    assert json.loads(run_cli("cache", "stats", "--json").out)["hits"] == 1


def test_cache_clear_with_a_bad_age_is_a_usage_error():
    result = run_cli("cache", "clear", "--older-than", "soon")
    assert result.code == 2 and result.err.startswith("Error: invalid value for --older-than")


def test_cache_help_has_examples():
    result = run_cli("cache", "--help")
    assert result.code == 0 and "llmcli cache clear --older-than 7d" in result.out


# --- a hit loads nothing it does not need ------------------------------------------------------

# A hit sends nothing: no provider SDK, no HTTP client, no price data (it costs $0).
HEAVY = {"openai", "anthropic", "google.genai", "httpx2", "httpx", "pydantic", "genai_prices"}


def test_a_hit_loads_no_sdk(cli, fake):
    assert cli("ask", "-p", "openai", "--cache", PROMPT).code == 0
    loaded = modules_loaded(
        "ask", "-p", "openai", "--cache", PROMPT,
        env=base_env(fake), expect_out="Hello from the fake server.\n",
    )  # fmt: skip
    assert sent(fake) == 1  # it was a hit
    assert [m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY] == []


# --- the async lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_arun_answers_from_the_cache(fake, stream):
    from llmcli import config, core, lifecycle
    from llmcli.cache import Policy
    from llmcli.journal import Journal
    from llmcli.types import Message

    env = config.Environment({**KEYS, **fake.env(), "LLMCLI_HOME": os.environ["LLMCLI_HOME"]})
    fake.script("openai", Reply(text=ANSWER))
    delivered: list[str] = []

    async def deliver(text: str) -> None:
        delivered.append(text)

    outcomes = []
    for _ in range(2):
        call = core.prepare([Message("user", PROMPT)], {"provider": "openai"}, env)
        journal = Journal(env)
        run = lifecycle.arun(
            call, journal, conversation_id="a", stream=stream, deliver=deliver, cache=Policy()
        )
        try:
            outcomes.append(asyncio.run(run))
        finally:
            journal.close()
    paid, hit = (o.response for o in outcomes)
    assert (paid.cached, hit.cached) == (False, True)
    assert hit.text == paid.text == ANSWER and hit.saved_usd == paid.cost_usd
    assert "".join(delivered) == ANSWER * 2
    assert delivered[-1] == ANSWER  # the hit was delivered at once
    assert sent(fake) == 1
    assert outcomes[1].log_id is not None
