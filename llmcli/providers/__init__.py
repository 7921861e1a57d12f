"""The provider registry: adding a provider is one module plus one line here.

Entries name modules rather than import them, so listing providers (for `--help`, `config
validate`, `cost`) costs nothing; each module imports its SDK only inside its methods.
"""

from __future__ import annotations

import importlib

from llmcli.providers.base import Provider

REGISTRY: dict[str, str] = {
    "openai": "llmcli.providers.openai",
    "anthropic": "llmcli.providers.anthropic",
    "gemini": "llmcli.providers.gemini",
    "echo": "llmcli.providers.echo",
}


def names() -> list[str]:
    """Every provider name, in registry order."""
    return list(REGISTRY)


def provider_class(name: str) -> type[Provider]:
    """The provider class for `name` (KeyError if unknown: callers validate names first)."""
    module = importlib.import_module(REGISTRY[name])
    return module.PROVIDER
