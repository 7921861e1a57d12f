"""The import rules that keep llmcli fast and layered.

The core (everything but cli.py, render.py and commands/) never imports Click; providers never
import each other; types and errors import nothing of ours; and a command loads no provider SDK
it does not use.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LLMCLI, base_env, modules_loaded

PACKAGE = Path(__file__).resolve().parent.parent / "llmcli"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


CORE_MODULES = [
    p
    for p in PACKAGE.rglob("*.py")
    if p.name not in ("cli.py", "render.py") and p.parent.name != "commands"
]


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_never_imports_click(path):
    assert not {m for m in _imports(path) if m.split(".")[0] == "click"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "providers").glob("*.py")), ids=lambda p: p.name)
def test_providers_never_import_each_other(path):
    others = {f"llmcli.providers.{p.stem}" for p in (PACKAGE / "providers").glob("*.py")}
    others -= {"llmcli.providers.base", f"llmcli.providers.{path.stem}"}
    assert not (_imports(path) & others)


@pytest.mark.parametrize("name", ["types.py", "secret.py", "money.py"])
def test_vocabulary_modules_import_nothing_of_ours(name):
    assert not {m for m in _imports(PACKAGE / name) if m.startswith("llmcli")}


def test_errors_import_only_the_secret_scrubber():
    assert {m for m in _imports(PACKAGE / "errors.py") if m.startswith("llmcli")} == {
        "llmcli.secret"
    }


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_sqlite_backend_imports_sqlite3(path):
    """The log is reached through `llmcli.calllog`'s interface, so a second backend can serve."""
    if path.name != "store.py":
        assert "sqlite3" not in _imports(path)


def test_only_the_serve_command_imports_the_server():
    """The server is an outer layer: the core never reaches up into it, and of the commands only
    `serve` starts it (so no other command pays for loading FastAPI)."""
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "serve" or path == PACKAGE / "commands" / "serve.py":
            continue
        found = {m for m in _imports(path) if m.split(".")[:2] == ["llmcli", "serve"]}
        assert not found, path
        web = {m for m in _imports(path) if m.split(".")[0] in ("fastapi", "uvicorn", "starlette")}
        assert not web, path


PROVIDER_SDKS = {"openai", "anthropic", "google.genai"}
# What each command may not load: a provider SDK it does not call, and libraries it does not need.
# The web server's libraries load for `serve` alone.
WEB = {"fastapi", "uvicorn", "starlette", "httptools", "uvloop", "llmcli.serve"}
# llmcli.aionet (the async clients' sockets) loads with an async client: serve and batch run.
LIGHT = PROVIDER_SDKS | WEB | {"httpx2", "pydantic", "genai_prices", "tabulate", "llmcli.aionet"}
STARTUP_CASES = [
    (["--help"], LIGHT | {"sqlite3", "dotenv"}),
    (["ask", "--help"], LIGHT | {"sqlite3", "dotenv"}),
    (["stream", "--help"], LIGHT | {"sqlite3", "dotenv"}),
    (["cost", "--help"], LIGHT | {"sqlite3", "dotenv"}),
    (["ask", "-p", "echo", "hi"], LIGHT),
    (["ask", "-p", "echo", "--no-log", "hi"], LIGHT | {"sqlite3"}),
    (["ask", "-p", "openai", "--dry-run", "hi"], PROVIDER_SDKS),
    (["cost"], LIGHT | {"sqlite3"}),  # on an empty log
    (["logs"], LIGHT | {"sqlite3"}),
    # config validate/show draw their tables themselves and import no SDK without --live.
    (["config", "validate"], LIGHT | {"sqlite3"}),
    (["config", "validate", "--all"], LIGHT | {"sqlite3"}),
    (["config", "show"], LIGHT | {"sqlite3"}),
    (["models", "--help"], LIGHT | {"sqlite3", "dotenv"}),
    # `models` prices with genai-prices, whose import loads pydantic and httpx2 (for its optional
    # price updates, never asked for): allowed. No provider SDK, and nothing that sends a request.
    (
        ["models"],
        PROVIDER_SDKS | WEB | {"llmcli.transport", "llmcli.aionet", "tabulate", "sqlite3"},
    ),
    (["models", "-p", "echo"], LIGHT | {"llmcli.transport", "sqlite3"}),  # nothing to price
    (["serve", "--help"], LIGHT | {"sqlite3", "dotenv"}),
    # Provider batch jobs: the help, and the list of jobs (none unfinished to ask about).
    (["batch", "--help"], LIGHT | {"sqlite3", "dotenv", "llmcli.batch", "llmcli.batchapi"}),
    (["batch", "submit", "--help"], LIGHT | {"sqlite3", "dotenv", "llmcli.batchapi"}),
    (["batch", "list"], LIGHT | {"llmcli.batchapi", "llmcli.batchjobs"}),
]


@pytest.mark.parametrize(
    ("args", "forbidden"), STARTUP_CASES, ids=[" ".join(c[0]) for c in STARTUP_CASES]
)
def test_commands_load_only_what_they_use(args, forbidden):
    loaded = modules_loaded(*args)
    found = sorted(
        m for m in loaded if m in forbidden or any(m.startswith(f + ".") for f in forbidden)
    )
    assert found == []


def test_installed_script_runs_help():
    proc = subprocess.run(
        [LLMCLI, "--help"], capture_output=True, text=True, env=base_env(), timeout=30
    )
    assert proc.returncode == 0
    assert "ask" in proc.stdout and proc.stderr == ""
