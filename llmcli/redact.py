"""Keeping keys out of everything we print, log or store.

Keys are shown masked (`sk-...abcd`, never more than the last four characters), and any text
that came from elsewhere (an SDK's error message can echo request details) is scrubbed of the
keys in use before it is shown. The key type and the scrubber live in `llmcli.secret`, which
`errors` uses too; this module adds what is shown of URLs and settings.
"""

from __future__ import annotations

from llmcli.secret import KEY_PREFIXES, mask, scrub

__all__ = ["display_url", "looks_like_key", "mask", "mask_keys", "scrub"]


def looks_like_key(word: str) -> bool:
    """Whether one word of text could be an API key: a known key prefix, or a long random token.

    Used on values pasted into the wrong variable (`LLM_MAX_TOKENS=sk-proj-...`), which an error
    would otherwise echo. Ordinary values (`abc`, `7`, `gpt-4o-mini-2024-07-18`) stay readable:
    besides the known prefixes, only a run of 16 or more letters and digits, mixing both, with
    little repetition, is taken for a key.
    """
    import re

    if len(word) < 8:
        return False
    if word.startswith(KEY_PREFIXES):
        return True
    return any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run) and _entropy(run) >= 3.0
        for run in re.findall(r"[A-Za-z0-9]{16,}", word)
    )


def _entropy(word: str) -> float:
    """Shannon entropy in bits per character: a random 16-character token scores about 3.7."""
    import math
    from collections import Counter

    counts = Counter(word).values()
    return -sum(n / len(word) * math.log2(n / len(word)) for n in counts)


# Runs of the characters keys are made of; anything else (spaces, quotes, `=`) separates words.
_WORD = r"[A-Za-z0-9_\-.+/]+"


def mask_keys(text: str) -> str:
    """`text` with every word that looks like a key masked (`sk-proj-...wxyz`), the rest as is."""
    import re

    return re.sub(
        _WORD, lambda m: mask(m.group()) if looks_like_key(m.group()) else m.group(), text
    )


def display_url(url: str) -> str:
    """A base URL safe to print: no user:password, query string or fragment, even when malformed.

    A malformed value is shown (the user must see what is wrong with it), and `urlsplit` puts
    `admin:pass@host` in the path when the scheme is missing or misspelt (`https//...`), so
    there everything up to the last `@` is masked whatever the parse says.
    """
    from urllib.parse import urlsplit, urlunsplit

    text = url.strip()
    # The credentials first, up to the last `@`: a password may hold an unencoded `/`, `?` or
    # `#`, which would otherwise cut the URL inside it and show its first half.
    scheme = text.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    at = text.rfind("@")
    if at >= start:
        text = text[:start] + "***@" + text[at + 1 :]
    cuts = [i for i in (text.find("?"), text.find("#")) if i >= 0]
    tail = ""
    if cuts:
        cut = min(cuts)
        text, tail = text[:cut], text[cut] + "..."
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is not None and parts.netloc:
        netloc = parts.netloc.rpartition("@")[2]
        text = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    elif "@" in text:
        text = "***@" + text.rpartition("@")[2]
    return text + tail
