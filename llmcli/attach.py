"""Attachments (`-a/--attach`): files, URLs and standard input made into `Attachment`s.

The type of an attachment is read from its bytes (magic numbers; text is valid UTF-8 without
NUL), never from its name: a screenshot saved as `notes.txt` is still a PNG, and a provider
sent the wrong media type refuses the request after the upload, or misreads the file.
`--attach-type` overrides the sniffing for the files that need it.

Each provider's limits (count, size, types) are checked here before anything is sent, so an
oversized file is a usage error naming the file, the limit and the provider, at once.
This module is loaded only when something is attached: `ask` without `-a` pays nothing for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcli import errors
from llmcli.providers.base import MB, TEXT_TYPE, TYPE_NAMES, unsupported_attachment
from llmcli.types import Attachment, Message

if TYPE_CHECKING:
    from llmcli.providers.base import Provider

#: The most llmcli reads of one attachment: above every provider's own limit, and a guard
#: against attaching a disk image by mistake (it would all be read into memory first).
MAX_READ = 100 * MB
#: Seconds a URL may take to arrive, whole (unless `--timeout` is shorter).
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
STDIN = "-"

#: `--attach-type` values: the short names, a few spellings people use, or the media type.
TYPES = {
    **{short: media for media, short in TYPE_NAMES.items()},
    "jpg": "image/jpeg",
    "txt": TEXT_TYPE,
    **{media: media for media in TYPE_NAMES},
}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def attach_type(name: str) -> str:
    """The media type an `--attach-type` value names; ValueError listing the choices."""
    found = TYPES.get(name.strip().lower())
    if found is None:
        raise ValueError(f"must be one of {', '.join(sorted(set(TYPE_NAMES.values())))}")
    return found


def sniff(data: bytes) -> str | None:
    """The media type the bytes themselves say, or None when they are none llmcli sends."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return TEXT_TYPE
    return None


def _size(count: int) -> str:
    if count >= MB:
        return f"{count / MB:.1f} MB"
    if count >= 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count} bytes"


def _typed(data: bytes, name: str, source: str, media_type: str | None) -> Attachment:
    """An attachment of `data`, its type sniffed unless `media_type` says it."""
    if not data:
        raise errors.UsageError(f"attachment {name} is empty", "attach a file that has content")
    if media_type is None:
        media_type = sniff(data)
        if media_type is None:
            raise errors.UsageError(
                f"cannot tell what kind of file attachment {name} is",
                "attach png, jpeg, webp or gif images, PDFs or UTF-8 text; if it is one of "
                "those, say which with --attach-type",
            )
    elif media_type == TEXT_TYPE and sniff(data) != TEXT_TYPE:
        raise errors.UsageError(
            f"attachment {name} is not UTF-8 text (binary bytes or NUL in it)",
            "convert it first, e.g. iconv -f latin1 -t utf-8, or drop --attach-type text",
        )
    return Attachment(media_type, data, name, source)


def read_file(path: str) -> bytes:
    """A file's bytes, or a usage error naming the path: missing, a folder, unreadable, huge."""
    where = Path(path)
    try:
        if where.is_dir():
            raise errors.UsageError(f"attachment {path} is a directory", "attach a file")
        with where.open("rb") as file:
            data = file.read(MAX_READ + 1)
    except FileNotFoundError:
        raise errors.UsageError(f"attachment {path} not found", "check the path") from None
    except PermissionError:
        raise errors.UsageError(
            f"cannot read attachment {path}: permission denied", "check the file's permissions"
        ) from None
    except OSError as exc:
        raise errors.UsageError(
            f"cannot read attachment {path}: {exc.strerror or exc}", "check the path"
        ) from None
    if len(data) > MAX_READ:
        raise errors.UsageError(
            f"attachment {path} is larger than {_size(MAX_READ)}, the most llmcli reads",
            "no provider takes a file that large; shrink or split it",
        )
    return data


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The bytes at an http(s) URL: at most `MAX_READ`, within `timeout` seconds in all, through
    at most `MAX_REDIRECTS` redirects. A refused URL is a usage error (exit 2), one that cannot
    be reached or does not answer in time a network error (exit 7)."""
    import time
    import urllib.error
    import urllib.request

    from llmcli import redact

    shown = redact.display_url(url)  # a signed or password-bearing URL is never printed whole

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:  # fmt: skip
            if not newurl.startswith(("http://", "https://")):  # never to file:// or ftp://
                raise errors.UsageError(
                    f"attachment {shown} redirects to a URL that is not http(s)"
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(Redirects)
    request = urllib.request.Request(url, headers={"User-Agent": "llmcli"})
    try:
        with opener.open(request, timeout=timeout) as reply:
            length = reply.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_READ:
                raise _too_large(shown)
            chunks: list[bytes] = []
            received = 0
            while chunk := reply.read1(64 * 1024):
                received += len(chunk)
                if received > MAX_READ:
                    raise _too_large(shown)
                if time.monotonic() > deadline:  # a reply that trickles in is cut off too
                    raise TimeoutError
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307, 308):
            raise errors.UsageError(
                f"attachment {shown} redirects more than {MAX_REDIRECTS} times", "check the URL"
            ) from None
        raise errors.UsageError(
            f"could not fetch attachment {shown}: {exc.code} {exc.reason}", "check the URL"
        ) from None
    except (TimeoutError, OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise errors.Timeout(
                f"attachment {shown} did not arrive within {timeout:g} seconds",
                "try again, or raise --timeout",
            ) from None
        raise errors.NetworkError(
            f"could not fetch attachment {shown}: {getattr(reason, 'strerror', None) or reason}",
            "check the URL and your network connection",
        ) from None


def _too_large(url: str) -> errors.UsageError:
    return errors.UsageError(
        f"attachment {url} is larger than {_size(MAX_READ)}, the most llmcli reads",
        "no provider takes a file that large",
    )


def _url_name(url: str) -> str:
    from urllib.parse import urlsplit

    from llmcli import redact

    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or redact.display_url(url)


def load(
    spec: str,
    media_type: str | None = None,
    *,
    stdin: Callable[[], bytes] | None = None,
    timeout: float = FETCH_TIMEOUT,
) -> Attachment:
    """One attachment from a path, an http(s) URL, or `-` (the bytes `stdin` returns)."""
    if spec == STDIN:
        if stdin is None:
            raise errors.UsageError(
                "standard input cannot be attached here (-a -)",
                "in chat standard input carries the messages, and --no-stdin turns it off: "
                "attach a file by its path",
            )
        return _typed(stdin(), "standard input", STDIN, media_type)
    if spec.startswith(("http://", "https://")):
        return _typed(fetch(spec, timeout), _url_name(spec), spec, media_type)
    # Kept absolute, so `-c` finds it again from any folder.
    return _typed(read_file(spec), spec, str(Path(spec).absolute()), media_type)


def load_all(
    specs: Sequence[str],
    types: Sequence[str] = (),
    *,
    stdin: Callable[[], bytes] | None = None,
    timeout: float = FETCH_TIMEOUT,
) -> list[Attachment]:
    """Every `-a`, with `--attach-type` given once (for all of them) or once for each, in order."""
    if types and len(types) not in (1, len(specs)):
        raise errors.UsageError(
            f"{len(types)} --attach-type for {len(specs)} attachments",
            "give --attach-type once (it applies to every -a) or once per -a, in the same order",
        )
    if list(specs).count(STDIN) > 1:
        raise errors.UsageError("standard input can be attached only once (-a -)")
    named: list[str | None] = []
    for value in types:
        try:
            named.append(attach_type(value))
        except ValueError as exc:
            raise errors.UsageError(f"invalid value for --attach-type: {value!r} {exc}") from None
    if len(named) == 1:
        named *= len(specs)
    return [
        load(spec, named[i] if named else None, stdin=stdin, timeout=timeout)
        for i, spec in enumerate(specs)
    ]


def check(provider_cls: type[Provider], provider: str, messages: Iterable[Message]) -> None:
    """Every attachment of the request against what `provider` takes: its types, and its count
    and size limits (the whole request's, as a continued conversation sends its files again)."""
    limits = provider_cls.attachment_limits
    images = 0
    inline = 0
    for message in messages:
        for part in message.attachments:
            if part.media_type not in provider_cls.attachment_types:
                raise unsupported_attachment(provider, part, provider_cls.attachment_types)
            size = len(part.data)
            name = part.name or "an attachment"
            kind, most = (
                ("an image", limits.max_image_bytes)
                if part.media_type.startswith("image/")
                else ("a PDF", limits.max_pdf_bytes)
                if part.media_type == "application/pdf"
                else ("a file", None)
            )
            if most is not None and size > most:
                raise errors.UsageError(
                    f"{provider} takes {kind} of at most {_size(most)}: {name} is {_size(size)}",
                    "shrink it, or choose another provider (docs/usage.md lists the limits)",
                )
            if part.media_type.startswith("image/"):
                images += 1
                if limits.max_images is not None and images > limits.max_images:
                    raise errors.UsageError(
                        f"{provider} takes at most {limits.max_images} images in one request: "
                        f"{name} is image {images}",
                        "attach fewer images (a continued conversation sends its images again)",
                    )
            if not sent_as_url(provider_cls, part):
                inline += 4 * math.ceil(size / 3)  # as it travels: base64
            if limits.max_request_bytes is not None and inline > limits.max_request_bytes:
                raise errors.UsageError(
                    f"{provider} takes at most {_size(limits.max_request_bytes)} of attachments "
                    f"in one request (base64-encoded): with {name} they come to {_size(inline)}",
                    "attach fewer or smaller files, or pass images as URLs",
                )


def sent_as_url(provider_cls: type[Provider], part: Attachment) -> bool:
    """Whether the provider is sent the attachment's URL rather than its bytes."""
    return part.url is not None and part.media_type in provider_cls.url_types


def reload(reference: dict[str, Any], timeout: float = FETCH_TIMEOUT) -> Attachment:
    """An attachment of a logged conversation (`-c`), read again from where it came from, if it
    is still the same file: the hash it was logged with must match, or the model would be told
    about a file it was never shown, as if it had been."""
    name = reference.get("name") or "an attachment"
    source = reference.get("source")
    hint = "start a new conversation (without -c/--cid), attaching the file as it is now"
    if not isinstance(source, str) or source == STDIN:
        where = "standard input" if source == STDIN else "no path"
        raise errors.UsageError(
            f"cannot send attachment {name} again: it was read from {where}", hint
        )
    try:
        again = load(source, str(reference.get("media_type") or "") or None, timeout=timeout)
    except errors.UsageError as exc:
        exc.message = f"cannot send attachment {name} again: {exc.message}"
        exc.hint = hint
        raise
    # As it was logged (a path's name is the path as typed then), so the request begins with
    # the conversation exactly as logged, and its log row can refer to it.
    again = again._replace(name=reference.get("name"))
    if again.sha256 != reference.get("sha256"):
        was, now = reference.get("bytes"), len(again.data)
        change = f"{_size(was)} then, {_size(now)} now" if was != now else "same size"
        raise errors.UsageError(
            f"attachment {name} has changed since the conversation sent it "
            f"(its SHA-256 differs; {change})",
            hint,
        )
    return again


def elided(value: Any, attachments: Sequence[Attachment]) -> Any:
    """`value` (a request's parameters) with each attachment's bytes replaced by a note, for
    `--dry-run`: the shape of every part shows, a megabyte of base64 does not."""
    notes = []
    for part in attachments:
        note = f"<{_size(len(part.data))} of {part.media_type} ({part.name}), sha256 {part.sha256[:12]}..., elided>"
        body = part.data.decode("utf-8") if part.media_type == TEXT_TYPE else part.base64
        notes.append((body, note))

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        if isinstance(item, str):
            for body, note in notes:
                if body and body in item:
                    item = item.replace(body, note)
        return item

    return walk(value)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (png, gif, webp, jpeg), or None."""
    import struct

    if data.startswith(b"\x89PNG") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data.startswith(b"GIF") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(
                data[27:30], "little"
            )
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 < len(data):
            if data[at] != 0xFF:
                return None
            marker = data[at + 1]
            length = struct.unpack(">H", data[at + 2 : at + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                return width, height
            at += 2 + length
    return None


def input_tokens(
    provider: Provider, attachments: Iterable[Attachment]
) -> tuple[int, list[Attachment]]:
    """The input tokens of the attachments where they can be told (images whose size the header
    gives, on a provider that documents its formula; text files at about 4 characters a token),
    and those not counted, for the worst case (`core.estimate`)."""
    from llmcli.pricing import estimate_tokens

    counted, missed = 0, []
    for part in attachments:
        if part.media_type == TEXT_TYPE:
            counted += estimate_tokens(part.data.decode("utf-8"))
            continue
        size = image_size(part.data) if part.media_type.startswith("image/") else None
        tokens = provider.image_tokens(*size) if size else None
        if tokens is None:
            missed.append(part)
        else:
            counted += tokens
    return counted, missed
