"""Documentation that cannot drift: the CLI reference, help examples, .env.example, lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from llmcli import config, providers
from llmcli.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def _commands(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


@pytest.mark.parametrize(
    ("name", "command"), list(_commands(cli)), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_has_help_with_an_example(name, command):
    assert command.help and "llmcli" in command.help, f"{name} needs a docstring with an example"
    assert f"llmcli {name}" in (ROOT / "docs" / "cli.md").read_text()


def _variables_the_code_reads() -> set[str]:
    names = {s.env for s in config.SETTINGS if s.env}
    for name in providers.names():
        cls = providers.spec(name)
        names.update(cls.key_env_vars)
        if cls.base_url_env:
            names.add(cls.base_url_env)
    source = "\n".join(p.read_text() for p in (ROOT / "llmcli").rglob("*.py"))
    names.update(re.findall(r"environ(?:\.get)?\(\s*\"(LLM[A-Z_]*)\"", source))
    return names


def test_env_example_lists_every_variable_the_code_reads():
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    missing = _variables_the_code_reads() - listed
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), "check", str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
