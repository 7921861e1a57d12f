"""llmcli: one command line and one small library for OpenAI, Anthropic and Gemini.

    >>> import llmcli
    >>> llmcli.ask("hello there", provider="echo").text
    'hello there'

The names below are loaded on first use, so `import llmcli` (and `llmcli --help`) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ask": "llmcli.core",
    "stream": "llmcli.core",
    "Message": "llmcli.types",
    "Request": "llmcli.types",
    "Response": "llmcli.types",
    "Usage": "llmcli.types",
    "FinishReason": "llmcli.types",
    "Chunk": "llmcli.types",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmcli' has no attribute {name!r}")
