"""`llmcli schema check`: the JSON Schema a `--schema` value stands for, and what each
provider's structured mode makes of it, before any call is paid for."""

from __future__ import annotations

from typing import Any

import click

from llmcli import render
from llmcli.cli import CONTEXT


@click.group(context_settings=CONTEXT)
def schema() -> None:
    """Structured output: the schemas `--schema` takes (see docs/structured.md).

    \b
    Examples:
      llmcli schema check 'name, age int, tags list'
      llmcli ask --schema 'name, age int' "Invent a person" | jq -r .name
    """


@schema.command(context_settings=CONTEXT)
@click.argument("value", metavar="SCHEMA")
@click.option("--schema-multi", "many", is_flag=True, help='Wrap it as {"items": [...]}.')
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document: the schema and the verdicts."
)
def check(value: str, many: bool, as_json: bool) -> None:
    """Print the full JSON Schema SCHEMA expands to, and say for each provider whether its
    strict mode accepts it, and why not.

    SCHEMA is what --schema takes: a file, inline JSON, or the concise form. The schema goes
    to stdout (ready for a file); the verdicts to stderr. Exit 0 for a valid schema, 2 if it
    is not one. Nothing is sent anywhere.

    \b
    Examples:
      llmcli schema check 'name, age int, tags list, score float: 0 to 1'
      llmcli schema check person.json --schema-multi > people.json
    """
    import json

    from llmcli import schema as schemas

    full = json.loads(schemas.resolve(value, many=many, where="SCHEMA"))
    verdicts = schemas.report(full)
    if as_json:
        render.as_json_out({"schema": full, "providers": verdicts}, indent=2)
        return
    render.answer(json.dumps(full, ensure_ascii=False, indent=2))
    for name, verdict in verdicts.items():
        render.diag(_verdict(name, verdict))
        for problem in verdict["problems"]:
            render.diag(f"  - {problem}")


def _verdict(name: str, verdict: dict[str, Any]) -> str:
    if name == "openai":
        said = "strict mode accepts it" if verdict["strict"] else "strict mode does not accept it"
    elif name == "anthropic":
        said = "accepts it" if verdict["accepted"] else "cannot honour it"
    elif name == "gemini":
        said = "enforces all of it" if verdict["strict"] else "accepts it, enforcing part of it"
    else:
        said = "accepts it"
    return f"{name}: {said}: {verdict['note']}"
