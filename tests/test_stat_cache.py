"""A running `llmcli serve` sees config.toml and prices.toml change.

serve trusts each file's stat for up to a second (`endpoints.STAT_TTL_S`) instead of asking the
disk on every request (docs/serve.md): a file written while it runs is seen within that time.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.fakeserver import Reply
from tests.test_serve import Served, start_server, stop_server

pytestmark = pytest.mark.xdist_group("serve")

SEEN_WITHIN = 1.0 + 2.0  # the stat's second, and room for a loaded machine


@pytest.fixture
def served(fake, tmp_path):
    running = start_server(fake, tmp_path / "home")
    yield running
    stop_server(running)


def _summary(served: Served, tag: str | None = None) -> tuple[int, Any]:
    """The status of a `/stream` call and its summary event (or error body)."""
    headers = {"X-Llmcli-Tag": tag} if tag else {}
    status, _, body = served.http(
        "POST", "/stream", json.dumps({"message": "go", "provider": "openai"}), headers
    )
    if status != 200:
        return status, json.loads(body)
    events = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]
    return status, events[-1]


def _until(check: Any, written: float) -> float:
    """Seconds from `written` until `check()` holds, asked again and again up to SEEN_WITHIN."""
    while not check():
        assert time.monotonic() - written < SEEN_WITHIN, "the change was not seen in time"
        time.sleep(0.05)
    return time.monotonic() - written


def test_a_price_override_written_while_serving_is_used_within_a_second(served, fake):
    fake.script("openai", *[Reply(text="a b c d", input_tokens=5, output_tokens=4)] * 100)
    status, summary = _summary(served)
    assert status == 200 and 0 < summary["cost_usd"] < 0.001
    (served.home / "prices.toml").write_text(
        '[openai."gpt-4o-mini"]\ninput = 1000\noutput = 1000\n'
    )
    written = time.monotonic()
    # 5 input and 4 output tokens at 1,000 USD a million each.
    _until(lambda: _summary(served)[1]["cost_usd"] == pytest.approx(0.009), written)
    # Changed again: the parse kept since is not used any more (a file of the same size).
    (served.home / "prices.toml").write_text(
        '[openai."gpt-4o-mini"]\ninput = 2000\noutput = 2000\n'
    )
    written = time.monotonic()
    _until(lambda: _summary(served)[1]["cost_usd"] == pytest.approx(0.018), written)


def test_a_budget_written_to_config_while_serving_applies_within_a_second(served, fake):
    fake.script("openai", *[Reply(text="a b c d", input_tokens=5, output_tokens=4)] * 100)
    assert _summary(served, tag="thin")[0] == 200
    (served.home / "config.toml").write_text("[budget]\ntags = { broke = 0, thin = 0 }\n")
    written = time.monotonic()
    _until(lambda: _summary(served, tag="thin")[0] == 429, written)
