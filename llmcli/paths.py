"""Where llmcli keeps its files: `$LLMCLI_HOME`, else the platform's user data folder."""

from __future__ import annotations

from pathlib import Path

from llmcli import config


def home(env: config.Environment) -> Path:
    """The folder for the call log and user config (not created here)."""
    found = env.lookup("LLMCLI_HOME")
    if found:
        return Path(found[0].strip()).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llmcli", appauthor=False))


def log_db(env: config.Environment) -> Path:
    return home(env) / "logs.db"


def prices_file(env: config.Environment) -> Path:
    """Optional price overrides for custom or private models (docs/cost.md)."""
    return home(env) / "prices.toml"
