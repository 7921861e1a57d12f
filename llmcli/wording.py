"""Small helpers for the words llmcli prints, shared by the core and the commands.

It imports nothing (no Click, no render), so any module may use it.
"""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 call`, `2 calls`, `1,500 tokens`: the count and the noun agreeing with it.

    `many` is the plural when adding an "s" is wrong (`1 entry`, `2 entries`).
    """
    return f"{count:,} {noun if count == 1 else (many or noun + 's')}"
