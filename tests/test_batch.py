"""`llmcli batch run`: many prompts from a file, answered live against the fake provider server.

The fake echoes each prompt back (`Reply(echo=True)`), so every test can check that each answer
landed on its own id, however the concurrent calls finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import LLMCLI, base_env, table_rows
from tests.fakeserver import Reply


@pytest.fixture
def echo(fake):
    fake.set_default(Reply(echo=True))
    return fake


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_id(path: Path) -> dict:
    rows = results(path)
    found = {row["id"]: row for row in rows}
    assert len(found) == len(rows), "an id was written twice"
    return found


def prompts_sent(fake, provider: str = "openai") -> Counter:
    return Counter(r.body["messages"][-1]["content"] for r in fake.requests_for(provider))


def test_jsonl_every_line_answered_under_its_own_id_with_its_own_options(cli, echo, tmp_path):
    rows = [{"id": f"q{n}", "prompt": f"prompt number {n}"} for n in range(12)]
    rows[3].update(system="Be terse.", model="gpt-4.1-mini", max_tokens=50, temperature=0.5)
    source = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "4")

    assert (r.code, r.out) == (0, ""), r.err
    found = by_id(out)
    assert set(found) == {f"q{n}" for n in range(12)}
    for n in range(12):
        row = found[f"q{n}"]
        assert row["content"] == f"prompt number {n}"
        assert row["finish_reason"] == "stop" and row["provider"] == "openai"
        assert row["usage"]["input_tokens"] == 11 and row["cost_usd"] > 0
    assert found["q3"]["model"] == "gpt-4.1-mini" and found["q0"]["model"] == "gpt-4o-mini"
    sent = {r.body["messages"][-1]["content"]: r.body for r in echo.requests_for("openai")}
    special = sent["prompt number 3"]
    assert special["messages"][0] == {"role": "system", "content": "Be terse."}
    assert special["temperature"] == 0.5 and special["max_completion_tokens"] == 50
    assert "12 answered, 0 failed" in r.err and r.err.count("\n") == 1


def test_plain_text_lines_are_prompts_numbered_by_line(cli, echo, tmp_path):
    source = tmp_path / "questions.txt"
    source.write_text("first question\n\n  \nsecond question\r\nthird\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "anthropic", "--ordered")

    assert r.code == 0, r.err
    assert [(row["id"], row["content"]) for row in results(out)] == [
        (1, "first question"),
        (4, "second question"),
        (5, "third"),
    ]
    assert len(echo.requests_for("anthropic")) == 3


def test_csv_column_and_id_column_with_a_multiline_cell(cli, echo, tmp_path):
    source = tmp_path / "tickets.csv"
    source.write_text(
        'ticket,text,lang\nT-1,"Refund, please",en\nT-2,"two\nlines",en\nT-3,Bonjour,fr\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "--column", "text", "--id-column", "ticket",
            "-o", str(out), "-p", "gemini")  # fmt: skip

    assert r.code == 0, r.err
    found = by_id(out)
    assert {k: v["content"] for k, v in found.items()} == {
        "T-1": "Refund, please",
        "T-2": "two\nlines",
        "T-3": "Bonjour",
    }
    assert len(echo.requests_for("gemini")) == 3


def test_template_fills_prompts_from_csv_columns_and_json_fields(cli, echo, tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("text,lang\nHello,en\nHallo,de\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = cli("batch", "run", str(source), "--template", "Translate from {lang}: {text}",
            "-o", str(out), "-p", "openai", "--ordered")  # fmt: skip
    assert r.code == 0, r.err
    assert [(row["id"], row["content"]) for row in results(out)] == [
        (1, "Translate from en: Hello"),
        (2, "Translate from de: Hallo"),
    ]

    source = jsonl(tmp_path / "rows.jsonl", [{"id": "a", "text": "ok", "n": 3, "model": "gpt-4.1"}])
    out = tmp_path / "out2.jsonl"
    r = cli(
        "batch", "run", str(source), "--template", "{text} x{n}", "-o", str(out), "-p", "openai"
    )
    assert r.code == 0, r.err
    assert results(out)[0]["content"] == "ok x3" and results(out)[0]["model"] == "gpt-4.1"


def test_bad_lines_are_reported_by_number_and_nothing_is_sent(cli, echo, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": 1, "prompt": "fine"}\n'
        "not json\n"
        '{"id": 1, "prompt": "the same id again"}\n'
        '{"id": 2, "prompt": "hot", "temperature": 9}\n'
        '{"id": 3, "promt": "misspelt"}\n'
        '{"id": 4, "prompt": "last good one"}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai")

    assert r.code == 2 and r.out == ""
    for number in (2, 3, 4, 5):
        assert f"in.jsonl:{number}: " in r.err
    assert "in.jsonl:1:" not in r.err and "in.jsonl:6:" not in r.err
    assert "Error: 4 bad lines" in r.err and "--skip-bad" in r.err
    assert echo.requests == [] and not out.exists()

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--skip-bad")

    assert r.code == 0, r.err
    assert "skipping 4 bad lines" in r.err
    assert {row["id"]: row["content"] for row in results(out)} == {1: "fine", 4: "last good one"}


def test_rate_limit_bursts_lower_concurrency_and_every_line_is_still_answered(cli, fake, tmp_path):
    limited = Reply(status=429, headers={"Retry-After": "0"})
    fake.set_default(Reply(echo=True, delay=0.05))
    fake.script("openai", *[limited] * 4)
    rows = [{"id": n, "prompt": f"line {n}"} for n in range(40)]
    source = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "4")

    assert r.code == 0, r.err
    assert {k: v["content"] for k, v in by_id(out).items()} == {n: f"line {n}" for n in range(40)}
    # One burst halves the limit once per round of retries, not once per call caught in it.
    assert "rate limited: concurrency lowered to 2" in r.err
    assert "concurrency back to 4" in r.err
    assert "retrying" not in r.err  # thousands of lines would bury the summary
    # Never more than --concurrency in flight, and fewer while the limit is lowered.
    fake.wait_idle()
    spans = sorted((q.started_at, q.finished_at) for q in fake.requests_for("openai"))
    overlap = [sum(1 for s, e in spans if s <= start < e) for start, _ in spans]
    assert max(overlap) <= 4
    assert min(overlap[4:12]) < 4


def test_some_lines_failing_exit_8_with_a_summary(cli, fake, tmp_path):
    fake.set_default(Reply(echo=True))
    fake.script(
        "openai",
        Reply(echo=True),
        Reply(status=400, error_message="bad request for this one"),
        Reply(echo=True),
        Reply(finish="content_filter", text=""),
    )
    rows = [{"id": name, "prompt": f"about {name}"} for name in "abcde"]
    source = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "1",
            "--ordered")  # fmt: skip

    assert r.code == 8 and r.out == ""
    rows = results(out)
    assert [row["id"] for row in rows] == list("abcde")
    assert "error" not in rows[0] and rows[0]["content"] == "about a"
    assert "bad request for this one" in rows[1]["error"] and rows[1]["exit_code"] == 9
    assert rows[1]["usage"] is None and rows[1]["cost_usd"] is None
    assert rows[3]["exit_code"] == 8 and rows[3]["finish_reason"] == "content_filter"
    assert "3 answered, 2 failed" in r.err
    assert "Error: 2 of 5 lines failed (ids b, d)" in r.err


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines in {seconds} s")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_job_resumes_without_sending_an_answered_line_twice(fake, tmp_path, how):
    fake.script("openai", *[Reply(echo=True)] * 3)
    fake.set_default(Reply(echo=True, delay=8))  # the 4th call hangs until the job is stopped
    rows = [{"id": n, "prompt": f"line {n}"} for n in range(8)]
    source = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = [LLMCLI, "batch", "run", str(source), "-o", str(out), "-p", "openai",
            "--concurrency", "1"]  # fmt: skip

    proc = subprocess.Popen(
        args, env=base_env(fake), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_lines(out, 3, proc)
        time.sleep(0.2)  # the 4th call is in flight
        proc.send_signal(how)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 128 + how, err
    assert [row["id"] for row in results(out)] == [0, 1, 2]  # whole lines only
    assert b"3 answered" in err

    fake.set_default(Reply(echo=True))
    proc = subprocess.run([*args, "--concurrency", "4"], env=base_env(fake), capture_output=True,
                          timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {k: v["content"] for k, v in by_id(out).items()} == {n: f"line {n}" for n in range(8)}
    assert b"3 already in" in proc.stderr
    sent = prompts_sent(fake)
    assert all(sent[f"line {n}"] == 1 for n in (0, 1, 2, 5, 6, 7))
    assert sent["line 3"] == 2  # cancelled in flight, so sent again: never written twice


def test_a_line_cut_short_by_a_kill_is_dropped_and_sent_again(cli, echo, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(3)])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 0, "content": "line 0"}\n{"id": 1, "conte', encoding="utf-8")

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--ordered")

    assert r.code == 0, r.err
    assert "cut short" in r.err
    assert [row["id"] for row in results(out)] == [0, 1, 2]
    assert sorted(prompts_sent(echo)) == ["line 1", "line 2"]


def test_max_cost_stops_before_a_call_could_pass_it(cli, fake, tmp_path):
    # gpt-4o-mini: $0.60 per million output tokens. Each call's worst case is 10,000 tokens
    # ($0.006); each answer uses 5,000 ($0.003): after two calls, a third could pass $0.01.
    fake.set_default(Reply(output_tokens=5000, input_tokens=10))
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(6)])
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "-m", "gpt-4o-mini",
            "--max-tokens", "10000", "--max-cost", "0.01", "--concurrency", "1")  # fmt: skip

    assert r.code == 10, r.err
    assert len(fake.requests_for("openai")) == 2 and len(results(out)) == 2
    assert "Error: --max-cost $0.010000 reached" in r.err and "4 lines not sent" in r.err
    assert sum(row["cost_usd"] for row in results(out)) <= 0.01


def test_a_refused_key_stops_the_job_with_its_own_exit_code(cli, fake, tmp_path):
    fake.set_default(Reply(status=401, error_code="invalid_api_key"))
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(20)])
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "2")

    assert r.code == 4, r.err
    assert len(fake.requests_for("openai")) <= 2
    assert results(out) == [] if out.exists() else True
    assert "OPENAI_API_KEY" in r.err and "sk-test" not in r.err


def test_each_answer_is_a_logged_call_of_the_job(cli, echo, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(3)])
    out = tmp_path / "out.jsonl"
    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--tag", "nightly")
    assert r.code == 0, r.err
    job = r.err.split(":")[0]
    assert job.startswith("batch-")
    assert cli("ask", "-p", "openai", "one more").code == 0  # not part of the job

    r = cli("cost", "--by", "batch", "--format", "json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert sorted((row["batch"] or "", row["calls"]) for row in rows) == [("", 1), (job, 3)]
    by_source = json.loads(cli("cost", "--by", "source", "--format", "json").out)["rows"]
    assert sorted((row["source"], row["calls"]) for row in by_source) == [("ask", 1), ("batch", 3)]
    by_tag = json.loads(cli("cost", "--by", "tag", "--format", "json").out)["rows"]
    assert [(row["tag"], row["calls"]) for row in by_tag if row["tag"]] == [("nightly", 3)]


def test_help_and_ask_do_not_load_the_batch_job():
    from tests.conftest import modules_loaded

    for args in (["--help"], ["batch", "--help"], ["batch", "run", "--help"],
                 ["ask", "-p", "echo", "hi"]):  # fmt: skip
        assert "llmcli.batch" not in modules_loaded(*args), args


def test_a_progress_line_on_a_terminal_and_only_the_summary_on_a_pipe(cli, echo, tmp_path):
    import pexpect

    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(5)])
    out = tmp_path / "out.jsonl"
    child = pexpect.spawn(LLMCLI, ["batch", "run", str(source), "-o", str(out), "-p", "openai"],
                          env=base_env(echo), timeout=20, cwd=str(tmp_path), encoding="utf-8")  # fmt: skip
    try:
        child.expect_exact("5/5 · 0 failed · ")  # the last redraw: done/total, failures, ...
        child.expect_exact(" tokens · $")
        child.expect_exact("/s · ETA ")
        child.expect_exact("\r\x1b[K")  # erased before the summary
        child.expect_exact("5 answered, 0 failed")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0

    r = cli("batch", "run", str(source), "-o", str(tmp_path / "again.jsonl"), "-p", "openai")
    assert r.code == 0 and "\x1b" not in r.err and "5/5" not in r.err
    assert r.err.count("\n") == 1


def test_retry_failed_sends_only_the_failed_lines_again(cli, fake, tmp_path):
    fake.set_default(Reply(echo=True))
    fake.script("openai", Reply(echo=True), Reply(status=400), Reply(echo=True))
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(3)])
    out = tmp_path / "out.jsonl"
    args = ("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "1")
    r = cli(*args)
    assert r.code == 8 and "--retry-failed" in r.err

    r = cli(*args)  # a plain resumption: every id has its line, nothing is sent
    assert r.code == 0 and len(fake.requests_for("openai")) == 3

    r = cli(*args, "--retry-failed")

    assert r.code == 0, r.err
    assert prompts_sent(fake) == Counter({"line 0": 1, "line 1": 2, "line 2": 1})
    assert [(row["id"], "error" in row) for row in results(out)] == [
        (0, False), (1, True), (2, False), (1, False)
    ]  # fmt: skip


@pytest.mark.parametrize("ordered", [False, True])
def test_answers_that_finish_out_of_order_keep_their_ids(cli, fake, tmp_path, ordered):
    fake.set_default(Reply(echo=True))
    fake.script("openai", Reply(echo=True, delay=0.6))  # the first to arrive answers last
    source = jsonl(tmp_path / "in.jsonl", [{"id": f"k{n}", "prompt": f"p{n}"} for n in range(6)])
    out = tmp_path / "out.jsonl"

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai", "--concurrency", "3",
            *(["--ordered"] if ordered else []))  # fmt: skip

    assert r.code == 0, r.err
    rows = results(out)
    assert all(row["content"] == "p" + row["id"][1:] for row in rows)
    order = [row["id"] for row in rows]
    slow = "k" + fake.requests_for("openai")[0].body["messages"][-1]["content"][1:]
    if ordered:
        assert order == [f"k{n}" for n in range(6)]
    else:
        assert order[-1] == slow


def test_the_cache_answers_a_second_job_with_the_same_prompts_for_free(cli, echo, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"line {n}"} for n in range(3)])
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    r = cli("batch", "run", str(source), "-o", str(first), "-p", "openai", "--cache", "1h")
    assert r.code == 0, r.err
    assert len(echo.requests_for("openai")) == 3

    r = cli("batch", "run", str(source), "-o", str(second), "-p", "openai", "--cache", "1h")

    assert r.code == 0, r.err
    assert len(echo.requests_for("openai")) == 3  # nothing sent the second time
    assert {row["id"]: (row["content"], row["cost_usd"]) for row in results(second)} == {
        n: (f"line {n}", 0) for n in range(3)
    }


def test_an_output_file_that_is_not_a_batch_result_is_refused(cli, echo, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n", encoding="utf-8")

    r = cli("batch", "run", str(source), "-o", str(out), "-p", "openai")

    assert r.code == 2 and "notes.txt line 1 is not a result line" in r.err
    assert out.read_text() == "my notes\n" and echo.requests == []


def test_a_job_killed_outright_leaves_no_line_without_its_logged_call(fake, tmp_path):
    # Rows are committed in groups, and a group's lines are written only after its commit: a
    # kill -9 at any moment may lose the last answers from both, never from the log alone.
    fake.set_default(Reply(echo=True, delay=0.01))
    rows = [{"id": n, "prompt": f"line {n}"} for n in range(2000)]
    source = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = [LLMCLI, "batch", "run", str(source), "-o", str(out), "-p", "openai",
            "--concurrency", "16"]  # fmt: skip
    proc = subprocess.Popen(
        args, env=base_env(fake), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_lines(out, 300, proc)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.stderr.close()

    whole = [line for line in out.read_text().splitlines(keepends=True) if line.endswith("\n")]
    written = {json.loads(line)["id"] for line in whole}
    assert 300 <= len(written) < 2000
    logged = {
        json.loads(row["messages"])[-1]["content"]
        for row in table_rows()
        if row["status"] == "ok" and row["source"] == "batch"
    }
    assert {f"line {n}" for n in written} <= logged

    fake.set_default(Reply(echo=True))
    done = subprocess.run([*args, "--concurrency", "64"], env=base_env(fake), capture_output=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {k: v["content"] for k, v in by_id(out).items()} == {n: f"line {n}" for n in range(2000)}


PEAK_RSS = """\
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
assert done.returncode == 0, done.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_memory_stays_flat_however_many_lines(fake, tmp_path):
    # Peak RSS through a small parent (a child's ru_maxrss starts from its parent's RSS).
    fake.set_default(Reply(echo=True))

    def peak_kib(lines: int) -> int:
        source = jsonl(tmp_path / f"in{lines}.jsonl",
                       [{"id": n, "prompt": f"line {n}"} for n in range(lines)])  # fmt: skip
        out = tmp_path / f"out{lines}.jsonl"
        args = [LLMCLI, "batch", "run", str(source), "-o", str(out), "-p", "openai",
                "--concurrency", "32"]  # fmt: skip
        done = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], env=base_env(fake),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(results(out)) == lines
        return int(done.stdout)

    # The first thousand or so answers fill caches, the connection pool and the allocator's
    # arenas (5-7 MiB more); after that the peak stays put.
    small, big = peak_kib(1000), peak_kib(3000)
    # Each answer's objects must be freed: kept, they add about 12 KiB an answer (24 MiB here).
    assert big - small < 12 * 1024, (small, big)
