"""The chat page of `llmcli serve` in a real browser: Debian's chromium, headless, by selenium.

Where chromium is missing the tests are skipped, except in CI (`.ci/run` sets
LLMCLI_TEST_BROWSER_REQUIRED=1 after installing it): there a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from tests.fakeserver import Reply
from tests.test_serve import TOKEN, start_server, stop_server

# On one xdist worker: the browser and the page's server then start once, not once per worker.
pytestmark = pytest.mark.xdist_group("serve-browser")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT = 10  # seconds for anything to appear in the page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("LLMCLI_TEST_BROWSER_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server(server, tmp_path_factory):
    running = start_server(server, tmp_path_factory.mktemp("serve-page") / "home")
    yield running
    stop_server(running)


def _open(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served.url + "/")
    token = browser.find_element(By.ID, "token")
    token.clear()
    token.send_keys(TOKEN)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    # The model list arrives from /v1/models once the token is known.
    WebDriverWait(browser, WAIT).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) > 1
    )


def _send(browser, model: str, message: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    browser.find_element(By.ID, "message").send_keys(message)
    browser.find_element(By.ID, "send").click()


def _last_answer(browser) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    turns = browser.find_elements(By.CSS_SELECTOR, ".turn.bot")
    if not turns:
        return "", ""
    last = turns[-1]
    text = last.find_element(By.CSS_SELECTOR, ".text").text
    return text, last.find_element(By.CSS_SELECTOR, ".meta").text


def test_the_page_answers_with_echo_and_shows_tokens_and_cost(browser, page_server, fake):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, page_server)
    _send(browser, "echo/echo", "hello from the browser")
    WebDriverWait(browser, WAIT).until(lambda b: "$" in _last_answer(b)[1])
    text, meta = _last_answer(browser)
    assert text == "hello from the browser"
    assert meta == "echo/echo · 4 in, 4 out · $0.000000 · stop"


def test_the_page_shows_tokens_before_the_stream_ends(browser, page_server, fake):
    from selenium.webdriver.support.ui import WebDriverWait

    gate = threading.Event()
    fake.script(
        "openai", Reply(text="alpha beta gamma", input_tokens=5, output_tokens=3, gate=gate)
    )
    try:
        _open(browser, page_server)
        _send(browser, "openai/gpt-4o-mini", "stream to me")
        WebDriverWait(browser, WAIT).until(lambda b: _last_answer(b)[0] == "alpha beta")
        rec = fake.requests_for("openai")[0]
        assert not rec.done.is_set()  # the fake holds its last chunk back
        assert "$" not in _last_answer(browser)[1]
    finally:
        gate.set()
    WebDriverWait(browser, WAIT).until(lambda b: "$" in _last_answer(b)[1])
    text, meta = _last_answer(browser)
    assert text == "alpha beta gamma"
    assert meta.startswith("openai/gpt-4o-mini · 5 in, 3 out · $0.0000")
    assert meta.endswith(" · stop")
