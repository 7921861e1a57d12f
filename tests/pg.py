"""A real PostgreSQL for the tests of the team log: one fresh database per test.

The server is given by LLMCLI_TEST_PG (a URL to its `postgres` database, as printed by
`tools/pg-test-server start`; `.ci/run` starts one and sets it). Each test gets a database of its
own, copied from a template that is already migrated (fast: no migration per test), so tests stay
independent and can run in parallel (xdist). Without LLMCLI_TEST_PG the PostgreSQL tests skip,
saying why; with LLMCLI_TEST_PG_REQUIRED=1 (CI) they fail instead, so they can never skip silently.

Read at import, before the `isolated` fixture clears every LLMCLI_ variable from the environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("LLMCLI_TEST_PG", "").strip()
REQUIRED = os.environ.get("LLMCLI_TEST_PG_REQUIRED", "") == "1"
# The password user tools/pg-test-server creates, for the wrong-password test.
PASSWORD_USER = "llmcli_pw"
PASSWORD = "llmcli-pw-secret"

_template: str | None = None
_unavailable: str | None = None


def url_for(database: str, *, user: str | None = None, password: str | None = None) -> str:
    """The server's URL, for another database (and user)."""
    parts = urlsplit(ADMIN_URL)
    netloc = parts.netloc.rpartition("@")[2]
    name = user or parts.username or ""
    if password is not None:
        name += f":{password}"
    return urlunsplit(
        (parts.scheme, f"{name}@{netloc}" if name else netloc, f"/{database}", "", "")
    )


def port() -> int:
    return int(urlsplit(ADMIN_URL).port or 5432)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def require() -> None:
    """Skip (locally) or fail (LLMCLI_TEST_PG_REQUIRED=1) when there is no server to test on."""
    global _unavailable
    if not ADMIN_URL:
        _unavailable = "LLMCLI_TEST_PG is not set (start one: tools/pg-test-server start)"
    elif _unavailable is None:
        try:
            _admin("SELECT 1")
            _unavailable = ""
        except Exception as exc:  # no psycopg, a server that is not running...
            _unavailable = f"the test PostgreSQL at {ADMIN_URL} cannot be used: {exc}"
    if _unavailable:
        if REQUIRED:
            pytest.fail(f"LLMCLI_TEST_PG_REQUIRED=1, but {_unavailable}", pytrace=False)
        pytest.skip(_unavailable)


def _template_name() -> str:
    """This process's template: a database migrated once, copied for each test."""
    global _template
    if _template is None:
        from llmcli.pgstore import PgStore

        name = f"llmcli_tpl_{os.getpid()}"
        _admin(f"DROP DATABASE IF EXISTS {name}")
        _admin(f"CREATE DATABASE {name} TEMPLATE template0")
        PgStore(url_for(name)).close()  # migrated
        _template = name
    return _template


def create_database(*, migrated: bool = True, owner: str | None = None) -> tuple[str, str]:
    """A new database (name, URL): migrated, or empty (`migrated=False`); owned by the test
    user, or by `owner`."""
    require()
    name = f"llmcli_t_{uuid.uuid4().hex[:16]}"
    template = _template_name() if migrated else "template0"
    owned = f" OWNER {owner}" if owner else ""
    _admin(f"CREATE DATABASE {name}{owned} TEMPLATE {template}")
    return name, url_for(name)


def drop_database(name: str) -> None:
    # A server stopped by the test itself refuses: its folder goes with it.
    with contextlib.suppress(Exception):
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def cleanup() -> None:
    """At the end of the session: this process's template."""
    if _template is not None:
        drop_database(_template)


TOOLS = Path(__file__).resolve().parent.parent / "tools"


@contextlib.contextmanager
def own_server() -> Iterator[tuple[Path, str]]:
    """A PostgreSQL of the caller's own (folder, URL), which it may pause, resume, stop and
    start (`server`); stopped at the end.

    Its folder is made in the system's temporary folder, not pytest's: as root, the server
    runs as the `postgres` user, who may not enter pytest's private folders.
    """
    require()
    folder = Path(tempfile.mkdtemp(prefix="llmcli-pg-test-"))
    started = subprocess.run([str(TOOLS / "pg-test-server"), "start", str(folder)],
                             capture_output=True, text=True, timeout=120, cwd="/")  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        yield folder, started.stdout.strip()
    finally:
        subprocess.run([str(TOOLS / "pg-test-server"), "stop", str(folder)], timeout=60, cwd="/")


def server(folder: Path, action: str) -> None:
    """`tools/pg-test-server ACTION FOLDER` (pause, resume, stop, start) on an `own_server`."""
    done = subprocess.run([str(TOOLS / "pg-test-server"), action, str(folder)],
                          capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
