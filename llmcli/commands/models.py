"""`llmcli models`: thin Click over `llmcli.catalog`."""

from __future__ import annotations

from typing import Any

import click

from llmcli import render
from llmcli.cli import CONTEXT, PROVIDER, environment

MODEL_HEADERS = ("provider", "model", "input /1M", "output /1M", "context", "note")
ALIAS_HEADERS = ("alias", "points to", "provider", "model")


def per_million(amount: Any) -> str:
    """USD per million tokens for people: `$0.15`, `$3.00`, `$0.0375`; `n/a` when unknown."""
    if amount is None:
        return "n/a"
    from llmcli import money

    whole, _, fraction = money.plain(amount).partition(".")
    return f"${int(whole):,}.{fraction.ljust(2, '0')}"


def _note(model: Any) -> str:
    notes = []
    if model.default:
        notes.append("default")
    if model.source == "prices.toml":
        notes.append("prices.toml")
    if model.tiers:
        notes.append(f"higher from {model.tiers[0].from_input_tokens:,} input tokens")
    if model.deprecated:
        notes.append("deprecated")
    return ", ".join(notes)


@click.command(context_settings=CONTEXT)
@click.option(
    "-p",
    "--provider",
    "provider_names",
    multiple=True,
    type=PROVIDER,
    help="Only this provider (repeatable).  [default: every one, config.toml's too]",
)
@click.option(
    "--live",
    is_flag=True,
    help="Ask each provider for the models this key may use (one request, no tokens).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON document.")
def models(provider_names: tuple[str, ...], live: bool, as_json: bool) -> None:
    """List each provider's models with their prices per million tokens, and the aliases.

    Offline (the default) it lists the models llmcli can price: genai-prices' data for the
    provider, your own prices.toml, and each provider's default model (marked `default`), at
    today's USD per million input and output tokens, with the context window where known. A
    price nobody knows is n/a, never $0. An endpoint of config.toml with prices = "free" lists
    its default model at $0; one without prices, at n/a. Nothing touches the network.

    --live instead asks each provider for the models its key may use (one request each, no
    tokens spent), priced the same way. A provider that fails is shown with the reason and the
    others still listed; the exit code is then the smallest failing one, as for `config
    validate --live`: 3 a key is missing, 4 a key was refused, 7 unreachable (5, 6, 9 other).

    \b
    Examples:
      llmcli models
      llmcli models -p anthropic -p ollama    # ollama: an endpoint of config.toml
      llmcli models -p openai --live
      llmcli models --json | jq -r '.providers[].models[] | select(.default) | .model'
      llmcli models --json | jq '.aliases'
    """
    from llmcli import catalog

    found = catalog.build(environment(), provider_names, live=live)
    for listing in found.listings:
        for note in listing.notes:
            render.warn(note)
    if as_json:
        render.as_json_out(found.to_dict())
    else:
        _tables(found)
    error = found.error(where="in the JSON on stdout" if as_json else "in the table above")
    if error is not None:
        raise error


def _tables(found: Any) -> None:
    rows: list[list[Any]] = []
    for listing in found.listings:
        live = listing.live
        if live is not None and live.failed:  # one row saying why, in place of its models
            rows.append([listing.provider, "-", "", "", "", f"{live.status}: {live.advice()}"])
            continue
        for model in listing.models:
            rows.append(
                [
                    listing.provider,
                    model.name,
                    per_million(model.input),
                    per_million(model.output),
                    "n/a" if model.context_window is None else model.context_window,
                    _note(model),
                ]
            )
    text = render.table(rows, MODEL_HEADERS, numeric=(2, 3, 4))
    if found.aliases:
        aliases = [[a.name, a.target, a.provider, a.model] for a in found.aliases]
        text += "\n\n" + render.table(aliases, ALIAS_HEADERS)
    render.answer(text)
