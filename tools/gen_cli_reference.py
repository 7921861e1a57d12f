"""Write docs/cli.md from the commands' own --help, so the reference cannot drift from the code.

python tools/gen_cli_reference.py          # rewrite docs/cli.md
python tools/gen_cli_reference.py --check  # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmcli.cli import cli

TARGET = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(click.Context(command))):
            yield from _walk(command.get_command(click.Context(command), name), [*path, name])


def render() -> str:
    parts = [
        "# CLI reference",
        "",
        "Generated from `--help` by `python tools/gen_cli_reference.py`; do not edit by hand.",
        "",
    ]
    for path, command in _walk(cli, ["llmcli"]):
        info = click.Context(
            command, info_name=" ".join(path), terminal_width=100, max_content_width=100
        )
        parts += [
            f"## `{' '.join(path)}`",
            "",
            "```text",
            command.get_help(info).rstrip(),
            "```",
            "",
        ]
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python tools/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
