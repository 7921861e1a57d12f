"""Keeping keys out of everything we print, log or store.

Keys are shown masked (`sk-...abcd`, never more than the last four characters), and any text
that came from elsewhere (an SDK's error message can echo request details) is scrubbed of the
keys in use before it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable

# Well-known, non-secret key prefixes that help a user recognise which key is meant.
_PREFIXES = ("sk-ant-", "sk-proj-", "sk-", "AIza")


def mask(key: str | None) -> str:
    """`sk-...abcd` for a key; never more than its last four characters."""
    if not key:
        return ""
    if len(key) < 12:
        return "****"
    prefix = next((p for p in _PREFIXES if key.startswith(p)), "")
    return f"{prefix}...{key[-4:]}"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each secret replaced by its masked form."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, mask(secret))
    return text


def display_url(url: str) -> str:
    """A base URL without user:password and query string, which may carry credentials."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown + ("?..." if parts.query else "")
