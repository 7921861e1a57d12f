"""What is wrong with the call log, in words a person can act on.

SQLite words a read-only file, a full disk and a locked-away folder much alike ("attempt to write
a readonly database", "disk I/O error", "unable to open database file"), and calling all of them
"damaged" sends people to move a perfectly good log aside. The trouble is named here from the
exception: Python 3.11's sqlite3 errors carry SQLite's result code name in `sqlite_errorname`, and
OS errors their errno. When SQLite's code is vague (it cannot open the file, an I/O error), the
file, its folder and the disk are looked at to say which it is.

sqlite3 is not imported: this runs only after a failure, and commands that never open the log
(`--help`, `--no-log`) must not load SQLite.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from llmcli.calllog import DatabaseTrouble

T = TypeVar("T")

# SQLite's primary result codes (an extended name such as SQLITE_READONLY_DIRECTORY or
# SQLITE_IOERR_SHMSIZE starts with its primary one) -> our kind of trouble.
_SQLITE_KINDS = {
    "SQLITE_READONLY": "read-only",
    "SQLITE_FULL": "no-space",
    "SQLITE_PERM": "permission",
    "SQLITE_AUTH": "permission",
    "SQLITE_CANTOPEN": "cannot-open",
    "SQLITE_NOTADB": "damaged",
    "SQLITE_CORRUPT": "damaged",
    "SQLITE_BUSY": "busy",
    "SQLITE_LOCKED": "busy",
    "SQLITE_IOERR": "io",
}
_ERRNO_KINDS = {
    errno.EROFS: "read-only",
    errno.ENOSPC: "no-space",
    errno.EDQUOT: "no-space",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EISDIR: "folder",
    errno.EIO: "io",
}


@dataclass(frozen=True)
class Trouble:
    """What is wrong with the log (`message`) and what to do about it (`hint`, may be None).

    `kind` is one of read-only, no-space, permission, damaged, busy, folder, io, other.
    """

    kind: str
    message: str
    hint: str | None

    def __str__(self) -> str:
        """Both on one line, for a warning that must not take more than one."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


def describe(exc: BaseException, path: Path | str, *, writing: bool) -> Trouble:
    """Why the log at `path` could not be read (or, if `writing`, written), and what to do.

    `path` is the SQLite file, or the masked URL of a team's PostgreSQL log.
    """
    from llmcli.calllog import DatabaseTrouble

    if isinstance(exc, DatabaseTrouble):
        return _shared(exc, str(path), writing)
    path = Path(path)
    kind = _kind(exc, path)
    reason, hint = _words(kind, exc, path, writing)
    verb = "could not write" if writing else "cannot read"
    if writing and kind not in ("busy", "other"):
        # The answer was given anyway; the user may prefer not to log at all.
        hint = f"{hint}, or turn the log off with --no-log (LLMCLI_LOG=0)"
    return Trouble(kind, f"{verb} the call log at {path}: {reason}", hint)


def _shared(exc: DatabaseTrouble, url: str, writing: bool) -> Trouble:
    """A team's PostgreSQL log (docs/team.md): its words hold no password (`pgstore`)."""
    verb = "could not write" if writing else "cannot read"
    hints = {
        "unreachable": "check that the server is running and reachable from here (host, port, "
        "firewall)",
        "auth": "check the user and password in LLMCLI_DB (or [log] url in config.toml)",
        "missing": "create the database (createdb), or fix its name in the URL",
        "permission": "grant the user the privileges docs/team.md lists",
    }
    reason = {
        "unreachable": "the server cannot be reached",
        "auth": "the server refused the user or password",
        "missing": "the database does not exist",
        "permission": "permission denied",
    }.get(exc.kind, "the server refused")
    return Trouble(
        exc.kind, f"{verb} the team log at {url}: {reason} ({exc.message})", hints.get(exc.kind)
    )


# SQLite's own words for its result codes, for Pythons before 3.11, whose sqlite3 errors carry
# no `sqlite_errorname` (the words are SQLite's sqlite3_errstr, the same on every platform).
_SQLITE_WORDS = (
    ("attempt to write a readonly database", "SQLITE_READONLY"),
    ("database or disk is full", "SQLITE_FULL"),
    ("unable to open database file", "SQLITE_CANTOPEN"),
    ("file is not a database", "SQLITE_NOTADB"),
    ("database disk image is malformed", "SQLITE_CORRUPT"),
    ("database is locked", "SQLITE_BUSY"),
    ("database table is locked", "SQLITE_LOCKED"),
    ("disk I/O error", "SQLITE_IOERR"),
    ("access permission denied", "SQLITE_PERM"),
)


def _sqlite_name(exc: BaseException) -> str | None:
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) or type(exc).__module__ != "sqlite3":
        return name if isinstance(name, str) else None
    text = str(exc)
    return next((code for words, code in _SQLITE_WORDS if words in text), None)


def _kind(exc: BaseException, path: Path) -> str:
    name = _sqlite_name(exc)
    if isinstance(name, str):
        kind = _SQLITE_KINDS.get("_".join(name.split("_")[:2]), "other")
        if name == "SQLITE_CANTOPEN_ISDIR":
            kind = "folder"
    elif isinstance(exc, OSError):
        kind = _ERRNO_KINDS.get(exc.errno or 0, "other")
    else:
        return "other"
    # SQLite says "cannot open" for a missing permission, a folder in the file's place and a
    # read-only disk alike, and "I/O error" when it cannot grow its shared-memory file on a full
    # disk: look.
    if kind == "cannot-open":
        kind = _why_not_open(path)
    elif kind == "io" and _disk_full(path):
        kind = "no-space"
    return kind


def _why_not_open(path: Path) -> str:
    if _safely(path.is_dir, False):
        return "folder"
    if _read_only_disk(path):
        return "read-only"
    folder = path.parent
    if not _safely(lambda: os.access(folder, os.X_OK), False):
        return "permission"  # the folder cannot be entered (or does not exist)
    if _safely(path.exists, False):
        return "permission" if not os.access(path, os.R_OK) else "other"
    # A new log: SQLite could not create the file.
    return "read-only" if not os.access(folder, os.W_OK) else "other"


def _words(kind: str, exc: BaseException, path: Path, writing: bool) -> tuple[str, str | None]:
    """(what is wrong, what to do) for one kind of trouble."""
    folder = path.parent
    if kind == "read-only":
        # To read, llmcli may still have to write: to bring an older log up to date, or to put
        # it in WAL mode. Say so, or "cannot read ... read-only" would make no sense.
        needs = "" if writing else " (llmcli must write to the log to open it)"
        if getattr(exc, "errno", None) == errno.EROFS or _read_only_disk(path):
            return f"the disk is mounted read-only{needs}", (
                "set LLMCLI_HOME to a folder on a writable disk"
            )
        if _safely(path.exists, False) and not os.access(path, os.W_OK):
            return f"the file is read-only{needs}", f"make it writable: chmod u+w {path}"
        return f"its folder is read-only{needs}", (
            f"make the folder writable (SQLite keeps its journal beside the log): chmod u+w {folder}"
        )
    if kind == "no-space":
        return "no space left on the disk", "free some space on that disk"
    if kind == "permission":
        # Name what exists: `ls` on a folder that could not be created would only add confusion.
        shown = [
            str(p) for p in (_nearest(folder), path) if p is not None and _safely(p.exists, False)
        ]
        return (
            "permission denied",
            f"check the owner and permissions: ls -ld {' '.join(dict.fromkeys(shown))}",
        )
    if kind == "damaged":
        return "the file is damaged (not a readable SQLite database)", (
            f"move it aside (mv {path} {path}.damaged) and llmcli starts a new log on the next call"
        )
    if kind == "busy":
        return "another program keeps it locked", "try again in a moment"
    if kind == "folder":
        return "that is a folder, not a file", "move the folder aside"
    if kind == "io":
        return "input/output error", "check the disk (the system log may say more), then try again"
    return str(exc) or type(exc).__name__, None


def _read_only_disk(path: Path) -> bool:
    where = _nearest(path)
    return where is not None and _safely(
        lambda: bool(os.statvfs(where).f_flag & os.ST_RDONLY), False
    )


def _disk_full(path: Path) -> bool:
    where = _nearest(path)
    return where is not None and _safely(lambda: os.statvfs(where).f_bavail == 0, False)


def _nearest(path: Path) -> Path | None:
    """`path` or its closest existing parent (statvfs needs something that exists)."""
    for candidate in (path, *path.parents):
        if _safely(candidate.exists, False):
            return candidate
    return None


def _safely(probe: Callable[[], T], default: T) -> T:
    """A look at the file system that must not fail while explaining another failure."""
    try:
        return probe()
    except OSError:
        return default
