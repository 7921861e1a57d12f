"""config.toml is parsed with tomllib once, then read from a cache while it is unchanged: the
TOML reader's import alone costs more than a command should pay for a few lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import base_env

CONFIG = """\
[providers.bench]
protocol = "openai"
base_url = "http://127.0.0.1:9/{version}"
key_env = "OPENAI_API_KEY"
default_model = "gpt-4o-mini"
"""

PROBE = """
import json, sys
from llmcli.cli import run
code = run(["ask", "-p", "bench", "--dry-run", "hi"])
sys.stderr.write("PROBE=" + json.dumps({"code": code, "tomllib": "tomllib" in sys.modules}) + "\\n")
"""


def probe(env: dict[str, str]) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    line = next(line for line in proc.stderr.splitlines() if line.startswith("PROBE="))
    return json.loads(line.removeprefix("PROBE=")), proc.stdout


def test_an_unchanged_config_file_is_read_from_the_cache_and_a_changed_one_again():
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(mode=0o700, parents=True)
    config = home / "config.toml"
    config.write_text(CONFIG.format(version="v1"))
    env = base_env()

    first, out = probe(env)
    assert first == {"code": 0, "tomllib": True}
    assert json.loads(out)["endpoint"] == "http://127.0.0.1:9/v1"
    cache = home / "config.cache.json"
    assert cache.stat().st_mode & 0o777 == 0o600

    second, out = probe(env)
    assert second == {"code": 0, "tomllib": False}  # the cache, not the TOML reader
    assert json.loads(out)["endpoint"] == "http://127.0.0.1:9/v1"

    config.write_text(CONFIG.format(version="v2"))  # another size: read again
    third, out = probe(env)
    assert third == {"code": 0, "tomllib": True}
    assert json.loads(out)["endpoint"] == "http://127.0.0.1:9/v2"


def test_reading_settings_never_creates_the_llmcli_folder(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(version="v1"))
    home = tmp_path / "never-made"
    env = {**base_env(), "LLMCLI_HOME": str(home), "LLMCLI_CONFIG": str(config), "LLMCLI_LOG": "0"}
    result, _ = probe(env)
    assert result["code"] == 0
    assert not home.exists()
