"""Attachments (`-a/--attach`, `--attach-type`, chat's `/attach`) through the installed CLI.

Every provider gets its files in its own wire shape, checked at the fake provider server with the
bytes decoded and compared to the file's; types are read from the bytes; each provider's limits
and types are refused before anything is sent; URLs come from a local HTTP server started here.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.conftest import LLMCLI, base_env
from tests.fakeserver import decode_base64

FAKE_ANSWER = "Hello from the fake server."


def png(width: int = 2, height: int = 1) -> bytes:
    """A PNG header of the given size, then bytes whose base64 has `+` and `/` in it (so the
    URL-safe alphabet Gemini's SDK sends is told apart from the standard one)."""
    return (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
        + struct.pack(">II", width, height)
        + bytes(range(256))
    )


FILES = {
    "png": ("image/png", png()),
    "jpeg": ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(255, -1, -1))),
    "webp": ("image/webp", b"RIFF\x24\x01\x00\x00WEBPVP8 " + bytes(range(256))),
    "gif": ("image/gif", b"GIF89a\x02\x00\x01\x00" + bytes(range(256))),
    "pdf": ("application/pdf", b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF"),
    "text": ("text/plain", "Grüße, line one\nline two\n".encode()),
}
SUPPORTED = {
    "openai": ["png", "jpeg", "webp", "gif", "pdf", "text"],
    "anthropic": ["png", "jpeg", "webp", "gif", "pdf", "text"],
    "gemini": ["png", "jpeg", "webp", "pdf", "text"],
}
CASES = [(p, kind) for p, kinds in SUPPORTED.items() for kind in kinds]


def write(name: str, data: bytes) -> Path:
    path = Path.cwd() / name
    path.write_bytes(data)
    return path


def user_parts(provider: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of the last user message, as the fake received them."""
    if provider == "gemini":
        return body["contents"][-1]["parts"]
    return body["messages"][-1]["content"]


def inline(part: dict[str, Any]) -> tuple[str, bytes | None]:
    """A Gemini inline part's media type and bytes, whichever key spelling the SDK used."""
    blob = part.get("inlineData", part.get("inline_data"))
    mime = blob.get("mimeType", blob.get("mime_type"))
    return mime, decode_base64(blob["data"])  # URL-safe, as google-genai sends it


def check_wire(provider: str, part: dict[str, Any], media_type: str, data: bytes, name: str):
    """Assert `part` is the attachment in `provider`'s wire shape, with exactly `data` in it."""
    b64 = base64.b64encode(data).decode()
    if media_type == "text/plain":
        text = f'<file name="{name}">\n{data.decode()}\n</file>'
        expected = {"text": text} if provider == "gemini" else {"type": "text", "text": text}
        assert part == expected
    elif provider == "openai" and media_type == "application/pdf":
        assert part == {
            "type": "file",
            "file": {"filename": name, "file_data": f"data:application/pdf;base64,{b64}"},
        }
    elif provider == "openai":
        assert part == {
            "type": "image_url",
            "image_url": {"url": f"data:{media_type};base64,{b64}"},
        }
    elif provider == "anthropic":
        source = {"type": "base64", "media_type": media_type, "data": b64}
        if media_type == "application/pdf":
            assert part == {"type": "document", "source": source, "title": name}
        else:
            assert part == {"type": "image", "source": source}
        assert decode_base64(part["source"]["data"], url_safe=False) == data
    else:
        assert set(part) <= {"inlineData", "inline_data"}
        assert inline(part) == (media_type, data)


@pytest.mark.parametrize(("provider", "kind"), CASES)
def test_each_provider_gets_each_type_in_its_wire_shape(cli, fake, provider, kind):
    media_type, data = FILES[kind]
    name = f"file.{kind}"
    write(name, data)

    result = cli("ask", "-p", provider, "-a", name, "what is this?")

    assert (result.code, result.out, result.err) == (0, FAKE_ANSWER + "\n", "")
    (request,) = fake.requests_for(provider)
    first, prompt = user_parts(provider, request.body)
    check_wire(provider, first, media_type, data, name)
    assert prompt.get("text") == "what is this?"  # the files first, then the words


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_streamed_answer_sends_the_attachment_too(cli, fake, provider):
    write("a.pdf", FILES["pdf"][1])
    result = cli("stream", "-p", provider, "-a", "a.pdf", "summarize")
    assert (result.code, result.out) == (0, FAKE_ANSWER + "\n")
    (request,) = fake.requests_for(provider)
    check_wire(provider, user_parts(provider, request.body)[0], *FILES["pdf"], "a.pdf")


def test_several_attachments_keep_their_order(cli, fake):
    write("one.png", FILES["png"][1])
    write("two.txt", FILES["text"][1])
    write("three.pdf", FILES["pdf"][1])
    result = cli("ask", "-p", "anthropic", "-a", "one.png", "-a", "two.txt", "-a", "three.pdf", "q")
    assert result.code == 0, result.err
    parts = user_parts("anthropic", fake.requests_for("anthropic")[0].body)
    assert [p["type"] for p in parts] == ["image", "text", "document", "text"]


# --- the type comes from the bytes --------------------------------------------------------------


def test_a_png_named_txt_is_sent_as_a_png(cli, fake):
    write("notes.txt", FILES["png"][1])
    result = cli("ask", "-p", "gemini", "-a", "notes.txt", "what is this?")
    assert result.code == 0, result.err
    first = user_parts("gemini", fake.requests_for("gemini")[0].body)[0]
    assert inline(first) == ("image/png", FILES["png"][1])


def test_bytes_of_no_known_type_are_refused_unless_named(cli, fake):
    write("blob.bin", b"\x00\x01\x02\x03binary")
    result = cli("ask", "-p", "openai", "-a", "blob.bin", "q")
    assert result.code == 2
    assert result.err.startswith("Error: cannot tell what kind of file attachment blob.bin is\n")
    assert "--attach-type" in result.err
    assert fake.requests == []

    named = cli("ask", "-p", "openai", "-a", "blob.bin", "--attach-type", "png", "q")
    assert named.code == 0, named.err
    first = user_parts("openai", fake.requests_for("openai")[0].body)[0]
    url = base64.b64encode(b"\x00\x01\x02\x03binary").decode()
    assert first["image_url"]["url"] == f"data:image/png;base64,{url}"


def test_attach_type_once_per_file_in_order(cli, fake):
    write("a.bin", b"\x00png-ish")
    write("b.bin", b"\x00pdf-ish")
    result = cli(
        "ask", "-p", "anthropic", "-a", "a.bin", "-a", "b.bin",
        "--attach-type", "png", "--attach-type", "pdf", "q",
    )  # fmt: skip
    assert result.code == 0, result.err
    first, second, _ = user_parts("anthropic", fake.requests_for("anthropic")[0].body)
    assert (first["type"], first["source"]["media_type"]) == ("image", "image/png")
    assert (second["type"], second["source"]["media_type"]) == ("document", "application/pdf")

    wrong = cli("ask", "-p", "echo", "-a", "a.bin", "-a", "b.bin", "-a", "a.bin",
                "--attach-type", "png", "--attach-type", "pdf", "q")  # fmt: skip
    assert wrong.code == 2
    assert "Error: 2 --attach-type for 3 attachments" in wrong.err

    bad = cli("ask", "-p", "echo", "-a", "a.bin", "--attach-type", "tiff", "q")
    assert bad.code == 2
    assert "Error: invalid value for --attach-type: 'tiff' must be one of" in bad.err


def test_attach_type_text_refuses_bytes_that_are_not_utf8(cli, fake):
    write("latin.txt", "café".encode("latin-1"))
    result = cli("ask", "-p", "openai", "-a", "latin.txt", "--attach-type", "text", "q")
    assert result.code == 2
    assert "Error: attachment latin.txt is not UTF-8 text" in result.err
    assert fake.requests == []


# --- limits and types, before anything is sent ------------------------------------------------


def test_an_image_over_the_providers_size_limit_is_refused(cli, fake):
    write("big.png", png() + bytes(5 * 1024 * 1024))
    result = cli("ask", "-p", "anthropic", "-a", "big.png", "q")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "Error: anthropic takes an image of at most 5.0 MB: big.png is 5.0 MB"
    )
    assert fake.requests == []
    # The same file is within OpenAI's 20 MB.
    assert cli("ask", "-p", "openai", "-a", "big.png", "q").code == 0


def test_more_images_than_the_provider_takes_are_refused(cli, fake):
    write("small.png", png())
    args = [a for _ in range(101) for a in ("-a", "small.png")]
    result = cli("ask", "-p", "anthropic", *args, "q")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "Error: anthropic takes at most 100 images in one request: small.png is image 101"
    )
    assert fake.requests == []


def test_a_request_over_the_providers_inline_limit_is_refused(cli, fake):
    # Two PDFs of 20 MB each: each within OpenAI's limit for a file, 53 MB of base64 together.
    pdf = FILES["pdf"][1] + bytes(20 * 1024 * 1024)
    write("a.pdf", pdf)
    write("b.pdf", pdf)
    result = cli("ask", "-p", "openai", "-a", "a.pdf", "-a", "b.pdf", "q")
    assert result.code == 2
    assert result.err.startswith(
        "Error: openai takes at most 50.0 MB of attachments in one request (base64-encoded): "
        "with b.pdf they come to 53.3 MB\n"
    )
    assert fake.requests == []


@pytest.mark.parametrize("provider", ["gemini"])
def test_a_type_the_provider_cannot_take_is_refused_not_dropped(cli, fake, provider):
    write("anim.gif", FILES["gif"][1])
    result = cli("ask", "-p", provider, "-a", "anim.gif", "q")
    assert result.code == 2
    assert result.err == (
        "Error: gemini cannot take a image/gif attachment (anim.gif)\n"
        "gemini takes png, jpeg, webp, pdf, text; convert the file, or choose another provider\n"
    )
    assert fake.requests == []


def test_a_fallback_that_cannot_take_the_file_is_refused_before_sending(cli, fake):
    write("anim.gif", FILES["gif"][1])
    result = cli("ask", "-p", "openai", "--fallback", "gemini", "-a", "anim.gif", "q")
    assert result.code == 2
    assert "gemini cannot take a image/gif attachment (anim.gif)" in result.err
    assert fake.requests == []


# --- files that cannot be attached --------------------------------------------------------------


def test_a_missing_file_a_directory_and_an_empty_file_name_the_path(cli, fake):
    os.mkdir("folder")
    write("empty.png", b"")
    for arg, words in [
        ("nope.png", "attachment nope.png not found"),
        ("folder", "attachment folder is a directory"),
        ("empty.png", "attachment empty.png is empty"),
    ]:
        result = cli("ask", "-p", "openai", "-a", arg, "q")
        assert result.code == 2, arg
        assert result.err.splitlines()[0] == f"Error: {words}"
        assert "Traceback" not in result.err
    assert fake.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_file_without_read_permission_names_the_path(cli, fake):
    path = write("secret.png", FILES["png"][1])
    path.chmod(0)
    result = cli("ask", "-p", "openai", "-a", "secret.png", "q")
    assert result.code == 2
    assert (
        result.err.splitlines()[0] == "Error: cannot read attachment secret.png: permission denied"
    )


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_file_that_fails_to_read_names_the_path(cli, fake):
    # Opens, but reading its first bytes fails (EIO), for root too.
    result = cli("ask", "-p", "openai", "-a", "/proc/self/mem", "q")
    assert result.code == 2
    assert result.err.startswith("Error: cannot read attachment /proc/self/mem: ")
    assert "Traceback" not in result.err
    assert fake.requests == []


# --- standard input -----------------------------------------------------------------------------


def test_dash_attaches_standard_input_which_is_then_not_the_prompt(cli, fake):
    data = FILES["png"][1]
    result = cli("ask", "-p", "openai", "-a", "-", "describe it", stdin=data)
    assert result.code == 0, result.err
    first, prompt = user_parts("openai", fake.requests_for("openai")[0].body)
    check_wire("openai", first, "image/png", data, "standard input")
    assert prompt == {"type": "text", "text": "describe it"}


def test_dash_with_nothing_piped_is_a_usage_error(cli, fake):
    result = cli("ask", "-p", "openai", "-a", "-", "--no-stdin", "q")
    assert result.code == 2
    assert result.err.splitlines()[0] == "Error: standard input cannot be attached here (-a -)"
    assert cli("ask", "-p", "openai", "-a", "-", "-a", "-", "q", stdin=b"x").code == 2
    assert fake.requests == []


# --- URLs ---------------------------------------------------------------------------------------


class Web:
    """A local HTTP server for attachment URLs: `routes` maps a path to (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        self.release = threading.Event()  # ends the slow route's wait
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                web.hits.append(self.path)
                if self.path == "/slow":
                    web.release.wait(10)  # bounded: the CLI gives up long before
                status, headers, body = web.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    server = Web()
    yield server
    server.close()


def test_an_image_url_is_passed_to_providers_that_fetch_it(cli, fake, web):
    data = FILES["png"][1]
    web.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, data)
    url = web.url("/cat.png")

    assert cli("ask", "-p", "openai", "-a", url, "q").code == 0
    assert cli("ask", "-p", "anthropic", "-a", url, "q").code == 0
    assert cli("ask", "-p", "gemini", "-a", url, "q").code == 0

    openai_part = user_parts("openai", fake.requests_for("openai")[0].body)[0]
    assert openai_part == {"type": "image_url", "image_url": {"url": url}}
    anthropic_part = user_parts("anthropic", fake.requests_for("anthropic")[0].body)[0]
    assert anthropic_part == {"type": "image", "source": {"type": "url", "url": url}}
    # Gemini's fileData takes only its own files' URIs: llmcli downloads and sends the bytes.
    gemini_part = user_parts("gemini", fake.requests_for("gemini")[0].body)[0]
    assert inline(gemini_part) == ("image/png", data)


def test_a_pdf_url_goes_to_anthropic_as_a_url_and_to_openai_inline(cli, fake, web):
    data = FILES["pdf"][1]
    web.routes["/docs/report.pdf"] = (200, {}, data)
    url = web.url("/docs/report.pdf")
    assert cli("ask", "-p", "anthropic", "-a", url, "q").code == 0
    assert cli("ask", "-p", "openai", "-a", url, "q").code == 0
    anthropic_part = user_parts("anthropic", fake.requests_for("anthropic")[0].body)[0]
    assert anthropic_part == {
        "type": "document",
        "source": {"type": "url", "url": url},
        "title": "report.pdf",
    }
    openai_part = user_parts("openai", fake.requests_for("openai")[0].body)[0]
    check_wire("openai", openai_part, "application/pdf", data, "report.pdf")


def test_a_url_that_is_not_found_is_a_usage_error(cli, fake, web):
    result = cli("ask", "-p", "openai", "-a", web.url("/gone.png"), "q")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        f"Error: could not fetch attachment {web.url('/gone.png')}: 404 Not Found"
    )
    assert fake.requests == []


def test_a_url_s_password_and_query_are_never_printed(cli, fake, web):
    secret = "s3cr3t-Signature-AbCdEf0123456789"
    for url in (
        web.url("/gone.png") + f"?sig={secret}",  # a 404
        web.url("/gone.png").replace("://", f"://user:{secret}@"),  # not fetched at all
    ):
        result = cli("ask", "-p", "openai", "-a", url, "q")
        assert result.code in (2, 7), result.err
        assert result.err.startswith("Error: could not fetch attachment http://")
        assert secret not in result.err
    assert fake.requests == []


def test_a_url_too_large_is_refused_without_reading_it(cli, fake, web):
    web.routes["/huge.pdf"] = (200, {"Content-Length": str(200 * 1024 * 1024)}, b"")
    result = cli("ask", "-p", "openai", "-a", web.url("/huge.pdf"), "q")
    assert result.code == 2
    assert "is larger than 100.0 MB, the most llmcli reads" in result.err
    assert fake.requests == []


def test_a_slow_url_times_out_within_the_timeout(cli, fake, web):
    started = time.monotonic()
    result = cli("ask", "-p", "openai", "--timeout", "1", "-a", web.url("/slow"), "q", timeout=20)
    assert time.monotonic() - started < 8
    assert result.code == 7
    assert result.err.splitlines()[0] == (
        f"Error: attachment {web.url('/slow')} did not arrive within 1 seconds"
    )
    assert fake.requests == []


def test_redirects_are_followed_but_bounded(cli, fake, web):
    data = FILES["png"][1]
    web.routes["/old.png"] = (302, {"Location": "/new.png"}, b"")
    web.routes["/new.png"] = (200, {}, data)
    web.routes["/loop"] = (302, {"Location": "/loop"}, b"")

    assert cli("ask", "-p", "gemini", "-a", web.url("/old.png"), "q").code == 0
    assert inline(user_parts("gemini", fake.requests_for("gemini")[0].body)[0])[1] == data

    looped = cli("ask", "-p", "gemini", "-a", web.url("/loop"), "q")
    assert looped.code == 2
    assert "redirects more than 5 times" in looped.err
    assert web.hits.count("/loop") <= 6


# --- the log, --dry-run -------------------------------------------------------------------------


def logged_messages() -> list[dict[str, Any]]:
    import sqlite3

    db = Path(os.environ["LLMCLI_HOME"]) / "logs.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT messages FROM calls ORDER BY id").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_the_log_keeps_name_type_size_hash_and_path_never_the_bytes(cli, fake):
    data = FILES["pdf"][1] + b"PDF-BYTES-MARKER"
    path = write("report.pdf", data)
    assert cli("ask", "-p", "anthropic", "-a", "report.pdf", "q").code == 0

    ((message,),) = logged_messages()
    assert message["content"][0] == {
        "type": "attachment",
        "media_type": "application/pdf",
        "name": "report.pdf",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "source": str(path),
    }
    for stored in Path(os.environ["LLMCLI_HOME"]).rglob("*"):
        if stored.is_file():
            content = stored.read_bytes()
            for form in (b"PDF-BYTES-MARKER", base64.b64encode(data)[-40:]):
                assert form not in content, stored


def test_dry_run_elides_the_data_and_counts_image_tokens(cli, fake):
    data = png(1500, 1000)
    write("photo.png", data)
    write("doc.pdf", FILES["pdf"][1])
    result = cli("ask", "-p", "anthropic", "--dry-run", "-a", "photo.png", "-a", "doc.pdf", "q")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    image, document, _ = shown["params"]["messages"][0]["content"]
    sha = hashlib.sha256(data).hexdigest()[:12]
    assert image["source"]["data"] == (
        f"<{len(data)} bytes of image/png (photo.png), sha256 {sha}..., elided>"
    )
    assert "elided>" in document["source"]["data"]
    assert base64.b64encode(data).decode()[:40] not in result.out
    worst = shown["worst_case"]
    # 1500 x 1000 pixels is 2,000 tokens by Anthropic's formula, capped at 1,600; "q" is 1.
    assert worst["input_tokens_estimate"] == 1601
    assert "not counted: doc.pdf" in worst["note"]
    assert fake.requests == []


def test_dry_run_says_openais_image_tokens_are_not_counted(cli, fake):
    write("photo.png", png(100, 100))
    result = cli("ask", "-p", "openai", "--dry-run", "-a", "photo.png", "hello there")
    worst = json.loads(result.out)["worst_case"]
    assert worst["input_tokens_estimate"] == 3  # the words only
    assert "not counted: photo.png" in worst["note"]


# --- continuing a conversation that had attachments -------------------------------------------


def test_continuing_sends_an_unchanged_file_again(cli, fake):
    data = FILES["png"][1]
    write("chart.png", data)
    assert cli("ask", "-p", "openai", "-a", "chart.png", "what is this?").code == 0
    os.mkdir("elsewhere")

    result = cli("ask", "-p", "openai", "-c", "and the colours?", cwd="elsewhere")

    assert result.code == 0, result.err
    _, second = fake.requests_for("openai")
    messages = second.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    check_wire("openai", messages[0]["content"][0], "image/png", data, "chart.png")
    assert messages[2]["content"] == "and the colours?"
    # The file read again is the one logged: the new row refers to the first, not a copy.
    assert logged_messages()[1] == [{"role": "user", "content": "and the colours?"}]


def test_continuing_after_the_file_changed_is_refused(cli, fake):
    write("chart.png", FILES["png"][1])
    assert cli("ask", "-p", "openai", "-a", "chart.png", "what is this?").code == 0
    write("chart.png", FILES["png"][1] + b"edited")

    result = cli("ask", "-p", "openai", "-c", "and now?")

    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "Error: attachment chart.png has changed since the conversation sent it "
        "(its SHA-256 differs; 280 bytes then, 286 bytes now)"
    )
    assert len(fake.requests_for("openai")) == 1

    os.remove("chart.png")
    gone = cli("ask", "-p", "openai", "-c", "and now?")
    assert gone.code == 2
    assert gone.err.splitlines()[0].startswith(
        "Error: cannot send attachment chart.png again: attachment "
    )
    assert "not found" in gone.err


def test_continuing_refetches_a_url_and_checks_its_hash(cli, fake, web):
    web.routes["/cat.png"] = (200, {}, FILES["png"][1])
    url = web.url("/cat.png")
    assert cli("ask", "-p", "anthropic", "-a", url, "q").code == 0
    assert cli("ask", "-p", "anthropic", "-c", "again").code == 0
    assert web.hits == ["/cat.png", "/cat.png"]

    web.routes["/cat.png"] = (200, {}, FILES["png"][1] + b"new")
    result = cli("ask", "-p", "anthropic", "-c", "once more")
    assert result.code == 2
    assert "Error: attachment cat.png has changed since the conversation sent it" in result.err
    assert len(fake.requests_for("anthropic")) == 2


def test_continuing_after_a_stdin_attachment_says_why_it_cannot(cli, fake):
    assert cli("ask", "-p", "openai", "-a", "-", "q", stdin=FILES["png"][1]).code == 0
    result = cli("ask", "-p", "openai", "-c", "more")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "Error: cannot send attachment standard input again: it was read from standard input"
    )


# --- chat ---------------------------------------------------------------------------------------


def test_chat_attach_goes_with_the_first_message_from_a_pipe(cli, fake):
    write("a.txt", b"the file's words")
    result = cli("chat", "-p", "gemini", "-a", "a.txt", stdin="first\nsecond\n")
    assert result.code == 0, result.err
    first, second = fake.requests_for("gemini")
    assert user_parts("gemini", first.body)[0] == {
        "text": '<file name="a.txt">\nthe file\'s words\n</file>'
    }
    assert len(second.body["contents"]) == 3  # the file stays in the history, once
    assert user_parts("gemini", second.body) == [{"text": "second"}]


def test_chat_refuses_dash_as_stdin_carries_the_messages(cli, fake):
    result = cli("chat", "-p", "echo", "-a", "-", stdin="hi\n")
    assert result.code == 2
    assert "in chat standard input carries the messages" in result.err


def test_slash_attach_at_a_terminal_goes_with_the_next_message(fake):
    data = FILES["png"][1]
    path = write("shot.png", data)
    chat = pexpect.spawn(
        LLMCLI, ["chat", "-p", "anthropic"], env=base_env(fake), timeout=20, encoding="utf-8"
    )
    try:
        chat.expect("> ")
        chat.sendline("/attach missing.png")
        chat.expect("attachment missing.png not found")  # after a coloured "Error:"
        chat.expect_exact("> ")
        chat.sendline(f"/attach {path}")
        chat.expect(r"attached .*shot\.png \(image/png, 280 bytes\)")
        chat.expect_exact("it goes with your next message")
        chat.expect_exact("> ")
        chat.sendline("what is in it?")
        chat.expect_exact(FAKE_ANSWER)
        chat.expect_exact("> ")
        chat.sendline("and then?")
        chat.expect_exact(FAKE_ANSWER)
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)
    first, second = fake.requests_for("anthropic")
    parts = user_parts("anthropic", first.body)
    check_wire("anthropic", parts[0], "image/png", data, str(path))
    assert parts[1] == {"type": "text", "text": "what is in it?"}
    assert second.body["messages"][-1]["content"] == "and then?"  # attached once


def test_slash_attach_of_a_type_the_provider_cannot_take_is_refused_at_once(fake):
    write("anim.gif", FILES["gif"][1])
    chat = pexpect.spawn(
        LLMCLI, ["chat", "-p", "gemini"], env=base_env(fake), timeout=20, encoding="utf-8"
    )
    try:
        chat.expect("> ")
        chat.sendline("/attach anim.gif")
        chat.expect(r"gemini cannot take a image/gif attachment \(anim.gif\)")
        chat.expect_exact("> ")
        chat.sendline("/attach")
        chat.expect_exact("nothing attached")
        chat.expect_exact("> ")
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)
    assert fake.requests == []


# --- what ask loads -----------------------------------------------------------------------------


def _loaded(*args: str) -> set[str]:
    from tests.conftest import modules_loaded

    return modules_loaded(*args)


def test_ask_without_attachments_loads_nothing_of_them():
    assert "llmcli.attach" not in _loaded("ask", "-p", "echo", "hi")
    write("n.txt", b"words")
    assert "llmcli.attach" in _loaded("ask", "-p", "echo", "-a", "n.txt", "hi")
    assert "urllib.request" not in _loaded("ask", "-p", "echo", "-a", "n.txt", "hi")


def test_the_library_takes_attachments_as_parts(fake, monkeypatch):
    """`llmcli.ask` with Attachment parts: sent in the provider's shape, and checked first."""
    import llmcli
    from llmcli import errors
    from llmcli.types import Attachment, Message, Text

    for name, value in base_env(fake).items():
        monkeypatch.setenv(name, value)
    data = FILES["jpeg"][1]
    message = Message("user", (Attachment("image/jpeg", data, "x.jpg"), Text("what?")))
    assert llmcli.ask([message], provider="gemini").text == FAKE_ANSWER
    sent = user_parts("gemini", fake.requests_for("gemini")[0].body)[0]
    assert inline(sent) == ("image/jpeg", data)

    gif = Message("user", (Attachment("image/gif", FILES["gif"][1], "a.gif"), Text("what?")))
    with pytest.raises(errors.UsageError, match="gemini cannot take a image/gif attachment"):
        llmcli.ask([gif], provider="gemini")
    assert len(fake.requests_for("gemini")) == 1
