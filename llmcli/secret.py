"""Keys as a type that cannot be printed by accident, and a scrubber every error goes through.

A key read from the environment becomes a `Secret`: its `str` and `repr` are masked
(`sk-...abcd`), so a provider object, a credentials tuple or an error holding one can be shown
in a traceback, a server's error reporter or a debug print without leaking it. The raw value is
reached only through `reveal()`, which the provider modules call when they build an SDK client.

Every `Secret` made in this process is remembered (`known()`), so that text which came from
elsewhere (an SDK's error message can echo request details) is scrubbed of every key in use
when an error is built, whoever builds it. This module imports nothing of ours: `errors` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

# Well-known, non-secret key prefixes that help a user recognise which key is meant.
KEY_PREFIXES = ("sk-ant-", "sk-proj-", "sk-", "AIza")
# Shorter strings are not scrubbed from text: they would match ordinary words (a placeholder
# key such as OLLAMA_API_KEY=ollama would mask the provider's name everywhere).
_MIN_SCRUB = 8
# A key cut short where a message quotes only the first bytes of something (a reply's head, a
# shortened provider message) is still a trace of it: this many characters of a key after its
# public prefix, at its start, are masked as the whole key would be.
_MIN_FRAGMENT = 6

_known: set[str] = set()


def mask(key: str | None) -> str:
    """`sk-...abcd` for a key; never more than its last four characters."""
    if not key:
        return ""
    if len(key) < 12:
        return "****"
    prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), "")
    return f"{prefix}...{key[-4:]}"


def remember(*values: str | None) -> None:
    """Scrub these from every error from now on, as if each were held as a `Secret`: keys read
    for a provider not in use can still reach an error (pasted into a model name, echoed)."""
    for value in values:
        if value and value.strip():
            _known.update({value, value.strip()})


def known() -> frozenset[str]:
    """Every key value this process has held as a `Secret`."""
    return frozenset(_known)


def scrub(text: str, secrets: Iterable[Any] = ()) -> str:
    """`text` with every occurrence of each key replaced by its masked form.

    The keys are those given (strings or `Secret`s) plus every `Secret` made so far. Longer keys
    are replaced first, so a key that contains another is masked whole; then any beginning of a
    key that something cut short (`_scrub_cut`).
    """
    values = {s.reveal() if isinstance(s, Secret) else s for s in secrets if s}
    values |= _known
    ordered = sorted(values, key=len, reverse=True)
    for value in ordered:
        if len(value) >= _MIN_SCRUB and value in text:
            text = text.replace(value, mask(value))
    for value in ordered:
        text = _scrub_cut(text, value)
    return text


def _scrub_cut(text: str, value: str) -> str:
    """`text` with every beginning of `value` that was cut short masked as the whole key.

    Only keys long enough to be masked by prefix (`mask`) count, and only a beginning longer
    than the key's public prefix by `_MIN_FRAGMENT` characters: shorter ones match ordinary text.
    """
    if len(value) < 12:
        return text
    prefix = next((p for p in KEY_PREFIXES if value.startswith(p)), "")
    head = value[: len(prefix) + _MIN_FRAGMENT]
    if len(head) == len(value):
        return text
    shown = mask(value)
    start = text.find(head)
    while start != -1:
        end = start + len(head)
        while end < len(text) and end - start < len(value) and text[end] == value[end - start]:
            end += 1
        text = text[:start] + shown + text[end:]
        start = text.find(head, start + len(shown))
    return text


class Secret:
    """A key. Shown masked everywhere; `reveal()` is the one way to the raw value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value
        _known.add(value)
        if value.strip() != value:
            _known.add(value.strip())

    def reveal(self) -> str:
        """The raw key, for the SDK client that sends it. Never print or store what this returns."""
        return self._value

    def __str__(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __len__(self) -> int:
        return len(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied out of the process")
