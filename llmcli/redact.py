"""Keeping keys out of everything we print, log or store.

Keys are shown masked (`sk-...abcd`, never more than the last four characters), and any text
that came from elsewhere (an SDK's error message can echo request details) is scrubbed of the
keys in use before it is shown. The key type and the scrubber live in `llmcli.secret`, which
`errors` uses too; this module adds what is shown of URLs and settings.
"""

from __future__ import annotations

from llmcli.secret import mask, scrub

__all__ = ["display_url", "mask", "scrub"]


def display_url(url: str) -> str:
    """A base URL without user:password and query string, which may carry credentials."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown + ("?..." if parts.query else "")
