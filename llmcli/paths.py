"""Where llmcli keeps its files: `$LLMCLI_HOME`, else the platform's user data folder.

The call log holds every prompt and answer, so the folder is private (0700) and the database
and its -wal and -shm files are readable by their owner only (0600), whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llmcli import config, errors


def home(env: config.Environment) -> Path:
    """The folder for the call log and user config (not created here).

    LLMCLI_HOME from a `.env` picked up in the current directory is refused while provider keys
    come from the environment (`Environment.home_refusal`): checked here, so every command obeys.
    """
    refusal = env.home_refusal()
    if refusal is not None:
        raise refusal
    found = env.lookup("LLMCLI_HOME")
    if found:
        return Path(found[0].strip()).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llmcli", appauthor=False))


def log_db(env: config.Environment) -> Path:
    return home(env) / "logs.db"


def prices_file(env: config.Environment) -> Path:
    """Optional price overrides for custom or private models (docs/cost.md)."""
    return home(env) / "prices.toml"


def _posix() -> bool:
    # Owners and modes mean nothing on Windows, where the user's profile folder is private.
    return os.name == "posix"


def folder_problem(folder: Path) -> errors.ConfigError | None:
    """Why an existing `folder` may not hold the call log, or None (also when it does not exist).

    A folder another user owns, or that group or others can write (a shared
    `LLMCLI_HOME=/tmp/llmcli` on a CI runner, made first by someone else), lets them read the
    log or plant files in it. Loose read permissions are no reason to refuse: `private_folder`
    tightens them.
    """
    if not _posix():
        return None
    elsewhere = "point LLMCLI_HOME at a folder of your own (e.g. under your home folder)"
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a file on the way (ENOTDIR), a folder we may not enter (EACCES)
        return errors.ConfigError(
            f"cannot use the llmcli folder {folder}: {exc.strerror or exc}", elsewhere
        )
    if not stat.S_ISDIR(info.st_mode):
        return errors.ConfigError(f"the llmcli folder {folder} is not a folder", elsewhere)
    if info.st_uid != os.geteuid():
        return errors.ConfigError(
            f"the llmcli folder {folder} belongs to another user (uid {info.st_uid}), who could "
            "read the call log (every prompt and answer)",
            elsewhere,
        )
    if info.st_mode & 0o022:
        return errors.ConfigError(
            f"the llmcli folder {folder} can be written by other users "
            f"({stat.filemode(info.st_mode)}), who could read or replace the call log",
            f"check what is in it, then make it private: chmod 700 {folder}; or {elsewhere}",
        )
    return None


def private_folder(folder: Path) -> None:
    """Create `folder` with mode 0700, or check an existing one and tighten it to 0700.

    Raises ConfigError for a folder that is not ours alone (`folder_problem`); its parents are
    created with the usual modes, as they may be shared folders such as ~/.local/share.
    """
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass  # another llmcli process made it first: checked below like any existing folder
        else:
            if _posix():
                os.chmod(folder, 0o700)  # exactly 0700, whatever the umask took away
    problem = folder_problem(folder)
    if problem is not None:
        raise problem
    mode = os.stat(folder).st_mode if _posix() else 0
    if mode & 0o077:
        os.chmod(folder, mode & 0o700)  # only others' access goes: a read-only folder stays so


def check_log_location(path: Path) -> None:
    """Refuse, before anything is sent, a log whose folder or file is not ours alone.

    Nothing is created here: the folder and database are made private when first written.
    """
    problem = folder_problem(path.parent)
    if problem is not None:
        raise problem
    if _posix():
        try:
            for file in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                _private_file(file, tighten=False)  # tightened when written (private_database)
        except OSError as exc:  # e.g. a folder on the way we may not enter
            raise errors.ConfigError(
                f"cannot use the call log {path}: {exc.strerror or exc}",
                "check the folder's and the file's owner and permissions (ls -ld), "
                "or point LLMCLI_HOME at a folder of your own",
            ) from None


def private_database(path: Path) -> None:
    """Create the log database empty with mode 0600 before SQLite opens it, or check it.

    SQLite would create it with the umask's mode (0644: readable by everyone) and gives the -wal
    and -shm files it creates later the database's mode, so creating it 0600 first keeps all
    three private. An existing database, -wal or -shm of ours that is looser is tightened; a
    symbolic link is refused, as it would send the log to a file of someone else's choosing.
    """
    if not _posix():
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        pass  # an existing database (or a link): checked below
    else:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        finally:
            os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _private_file(file)


def _private_file(path: Path, *, tighten: bool = True) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise errors.ConfigError(
            f"the call log {path} is a symbolic link; llmcli writes its log only to a real file",
            f"remove the link ({path}); llmcli starts a new log on the next call",
        )
    if not stat.S_ISREG(info.st_mode):
        raise errors.ConfigError(
            f"the call log {path} is not a regular file",
            "move it aside; llmcli starts a new log on the next call",
        )
    if tighten and info.st_uid == os.geteuid() and info.st_mode & 0o077:
        os.chmod(path, info.st_mode & 0o700)  # only others' access goes: read-only stays so
