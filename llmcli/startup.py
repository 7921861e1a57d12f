"""The `llmcli` console entry point, and the one start-up cost it can avoid: garbage collection.

Before its first token llmcli imports a provider SDK: several hundred thousand new objects
(pydantic models, httpx, typing machinery), none of them garbage. Python's cyclic collector
still runs every 700 allocations and walks ever more of them: 15-25% of the import time of the
openai and anthropic SDKs on the benchmark machine. So the collector waits from the first line
until the first bytes of the answer are out, and then `gc.freeze()` moves everything start-up
made out of its sight (it is needed until exit anyway), so the collections that resume for the
rest of the run (a long stream, a chat session) only look at what is new.

A command that prints nothing before it ends (an error, `cost` on an empty log) never resumes:
the process ends first. This is the command line's business only: the library (`llmcli.core`)
never touches the collector of the program that imports it.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop collecting until `settle()`: what start-up allocates is kept, not garbage."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def settle() -> None:
    """Start-up is over (the answer is arriving): freeze its objects and collect again."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def main() -> None:
    """The `llmcli` command (console script and `python -m llmcli`).

    The pause comes before Click, llmcli's modules and any SDK are imported; only what the
    console script and `llmcli/__init__.py` load (`re`, `typing`) comes before it.
    """
    pause()
    from llmcli.cli import main as run_cli

    run_cli()
