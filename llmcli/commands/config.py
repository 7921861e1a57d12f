"""`llmcli config validate` and `llmcli config show`: thin Click over `llmcli.checks`."""

from __future__ import annotations

import sys
from typing import Any

import click

from llmcli import errors, render
from llmcli.cli import CONTEXT, PROVIDER, STATE

VALIDATE_HEADERS = ("check", "variable", "status", "source", "value", "fix")
SHOW_HEADERS = ("setting", "variable", "value", "source", "note")


def _table(rows: list[list[Any]], headers: tuple[str, ...]) -> None:
    # Every cell as written ("1.50" or "007" are not reformatted as numbers).
    render.answer(render.table(rows, headers))


@click.group(context_settings=CONTEXT)
def config() -> None:
    """Check llmcli's settings before anything calls a model, or show where each one comes from.

    \b
    Examples:
      llmcli config validate                      # LLM_PROVIDER's key and every LLM_* setting
      llmcli config validate --all --live --json  # every provider, keys tried for real
      llmcli config show
    """


@config.command(context_settings=CONTEXT)
@click.option(
    "-p",
    "--provider",
    "provider_names",
    multiple=True,
    type=PROVIDER,
    help="Check this provider (repeatable).  [default: LLM_PROVIDER, else openai]",
)
@click.option("--all", "all_providers", is_flag=True, help="Check every provider.")
@click.option(
    "--live",
    is_flag=True,
    help="Also try each key with one request that costs no tokens (list models).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; only the exit code tells.")
@click.pass_context
def validate(
    ctx: click.Context,
    provider_names: tuple[str, ...],
    all_providers: bool,
    live: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Check keys, endpoints, every LLM_* setting and the .env file; exit 0 only if all pass.

    Prints a table: each check, its variable, status (ok, missing, invalid; with --live also
    rejected, unreachable), where the value came from, the value (keys masked) and the fix.
    Without --live nothing touches the network. Never asks for input.

    Exit codes: 0 all passed, 3 a setting is missing or invalid, 4 a key was rejected
    (--live), 7 a provider could not be reached (--live); 5, 6 or 9 for other provider
    failures. With several failures, the smallest code wins.

    \b
    Examples:
      llmcli config validate
      llmcli config validate -p anthropic -p gemini
      llmcli --env-file prod.env config validate --all --live
      llmcli config validate --json | jq '.checks[] | select(.status != "ok")'
      llmcli config validate --quiet || exit 1
    """
    from llmcli import checks

    if provider_names and all_providers:
        raise errors.UsageError("use either --provider or --all, not both")
    if quiet and as_json:
        raise errors.UsageError("use either --quiet or --json, not both")
    report = checks.validate(
        env_file=STATE.env_file,
        config_file=STATE.config_file,
        provider_names=provider_names,
        all_providers=all_providers,
        live=live,
    )
    if quiet:
        ctx.exit(report.exit_code)
    if as_json:
        render.as_json_out(report.to_dict())
    else:
        _table(
            [
                [c.check, c.variable, c.status, c.source or "", checks.cell(c.value), c.advice()]
                for c in report.checks
            ],
            VALIDATE_HEADERS,
        )
    for check in report.checks:
        if check.status == checks.WARNING:
            render.warn(check.message or f"{check.variable}: {check.advice()}")
    error = report.error(where="in the JSON on stdout" if as_json else "in the table above")
    if error is not None:
        raise error


@config.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the settings as one JSON document.")
def show(as_json: bool) -> None:
    """Show every effective setting, its value (keys masked) and where it came from.

    Sources, strongest first: flag, environment, .env file (with its path), default. For
    Gemini it says which of GOOGLE_API_KEY and GEMINI_API_KEY is used. Also shows the .env
    file read, the config folder and the log database. Invalid values are shown as written,
    with a note; `llmcli config validate` is what fails on them.

    \b
    Examples:
      llmcli config show
      llmcli --env-file prod.env config show
      llmcli config show --json | jq -r '.settings[] | select(.setting == "provider") | .value'
    """
    from llmcli import checks

    rows = checks.show(env_file=STATE.env_file, config_file=STATE.config_file)
    if as_json:
        render.as_json_out({"settings": [r.to_dict() for r in rows]})
        return
    # On a terminal long values are cut to fit; in a pipe or a deploy log, every value whole.
    width = 60 if sys.stdout.isatty() else None
    _table(
        [[r.setting, r.variable, checks.cell(r.value, width), r.source, r.note] for r in rows],
        SHOW_HEADERS,
    )
