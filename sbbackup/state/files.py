"""The local state directory, handled the way ssh handles ``~/.ssh``.

Locks, the audit log, restore records, runtime schedules, the last drill and the manifests
live in the backup directory (or ``SBBACKUP_STATE_DIR``). Root works in it, so nothing there
is followed or trusted blindly:

- Every state file is opened with ``O_NOFOLLOW`` and ``O_CLOEXEC``, created mode 0600, and a
  new file (a temp file above all: random name, never reused) with ``O_EXCL``. A symlink in
  the place of a state file or of a state subdirectory is refused (StorageError, exit 4).
- The directory itself and every directory sbbackup uses inside it must be owned by the
  running user and writable by nobody else; its parents, up to ``/``, must be owned by root
  or the running user and not writable by group or others unless sticky (``/tmp`` is fine).
  This is ssh's StrictModes. A refusal is one line naming the directory and the reason.
- The configured backup directory may be reached through symlinks (``/backups`` pointing
  at another disk) if root or the running user owns them and nobody else could swap them;
  they are resolved once (``resolve_dir``), and the rule applies to the real directory.
- A directory sbbackup creates is made 0700 whatever the umask. An existing directory's
  mode is never changed: 0755 is accepted as it is, 0775 is refused, never "fixed".

The lowest module of ``sbbackup.state``: imports only ``errors`` and the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_SUFFIX = ".tmp"

_COMMON = os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _COMMON
_READ = os.O_RDONLY | _COMMON
_LOCK = os.O_RDWR | os.O_CREAT | _COMMON
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _COMMON


def storage_error(exc: OSError, what: str) -> StorageError:
    """``what: reason`` as one line (exit 4)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)  # "No space left on device"
    return StorageError(f"{what}: {reason}")


def symlink_error(path: Path | str) -> StorageError:
    return StorageError(f"refusing to use {path}: it is a symlink (state files are never followed)")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- files ---------------------------------------------------------------------------------


def _is_symlink(path: Path | str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _open(path: Path | str, flags: int) -> int:
    """``os.open`` that turns a symlink at ``path`` into a StorageError naming it; any other
    OSError (FileNotFoundError included) propagates for the caller to word."""
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EEXIST) and _is_symlink(path):
            raise symlink_error(path) from None
        raise
    if flags & os.O_EXCL:  # surely ours: 0600 whatever the umask
        try:
            os.fchmod(fd, FILE_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd


def open_append(path: Path) -> int:
    """An ``O_APPEND`` fd on ``path``, created 0600 if missing."""
    return _open(path, _APPEND)


def open_lock(path: Path) -> int:
    """A read-write fd on the lock file ``path``, created 0600 if missing (never truncated)."""
    return _open(path, _LOCK)


def open_read_fd(path: Path | str) -> int:
    """A read-only fd on ``path``; FileNotFoundError when it does not exist."""
    return _open(path, _READ)


def open_read(path: Path) -> BinaryIO:
    """``path`` opened for reading; FileNotFoundError when it does not exist."""
    return os.fdopen(_open(path, _READ), "rb")


def read_bytes(path: Path) -> bytes:
    with open_read(path) as fh:
        return fh.read()


def create_exclusive(path: Path) -> int:
    """A new file at ``path``, mode 0600; an existing file or symlink there is an error."""
    return _open(path, _NEW)


def temp_name(directory: Path, name: str) -> Path:
    """A fresh random temp name beside ``name``: ``.NAME.<128 random bits>.tmp``."""
    return directory / f".{name}.{secrets.token_hex(16)}{TEMP_SUFFIX}"


def create_temp(directory: Path, name: str) -> tuple[int, Path]:
    """A new temp file for ``name`` in ``directory`` (``O_EXCL``, never a reused name).
    A name that exists already is refused, not retried: 128 random bits do not collide, so
    something planted it."""
    path = temp_name(directory, name)
    try:
        return create_exclusive(path), path
    except FileExistsError:
        raise StorageError(f"refusing to use {path}: it already exists") from None


def check_name(name: str) -> str:
    """``name`` if it may name a file in a state or backup directory: not empty, no ``/``, no
    NUL, not hidden (temp files are hidden). Anything else is a StorageError (exit 4)."""
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise StorageError(f"invalid object name {name!r}")
    return name


def write_new(directory: Path, name: str, data: bytes) -> None:
    """Create ``directory/name`` holding ``data``, all at once, only if nothing has that name:
    the temp file is hard-linked to ``name`` (``link`` fails with EEXIST, atomically, when the
    name is taken: FileExistsError, nothing changed)."""
    _publish(directory, name, data, lambda tmp, path: os.link(tmp, path, follow_symlinks=False))


def write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` with ``data`` all at once (the temp file is renamed over
    it): a reader sees the old or the new file, never a mix; a symlink planted at ``name`` is
    refused, never followed."""
    if os.path.islink(directory / check_name(name)):  # rename would not follow it: a warning
        raise symlink_error(directory / name)
    _publish(directory, name, data, os.replace)


def _publish(directory: Path, name: str, data: bytes, place: Callable[[Path, Path], None]) -> None:
    """Write ``data`` to a random ``O_EXCL`` temp file in ``directory`` (which must exist),
    fsync it, ``place`` it at ``name``, fsync the directory. The temp file never outlives the
    call, whatever ends it (an interrupt too). An OSError is a StorageError naming ``name``,
    except the FileExistsError of a name taken, which the caller wants as it is."""
    path = directory / check_name(name)
    try:
        fd, tmp = create_temp(directory, name)
    except OSError as exc:
        raise storage_error(exc, f"cannot write {path}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        place(tmp, path)
        fsync_dir(directory)
    except FileExistsError:
        raise
    except OSError as exc:
        raise storage_error(exc, f"cannot write {path}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone already once renamed; a link leaves it to remove


# --- directories ---------------------------------------------------------------------------

MAX_SYMLINKS = 40  # as the kernel's ELOOP limit


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writers(mode: int) -> str | None:
    group, other = bool(mode & stat.S_IWGRP), bool(mode & stat.S_IWOTH)
    if group and other:
        return "group and others"
    return "group" if group else "others" if other else None


def _trusted_owner(uid: int) -> str | None:
    """None if ``uid`` is root or the running user, else who it should have been."""
    me = os.geteuid()
    if uid in (0, me):
        return None
    return "root" if me == 0 else f"root or {_user(me)}"


def _private_problem(st: os.stat_result) -> str | None:
    """Why a directory (``st`` from lstat) cannot hold state, or None."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink (state directories are never followed)"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    me = os.geteuid()
    if st.st_uid != me:
        return (
            f"it is owned by {_user(st.st_uid)}, not by {_user(me)}; "
            "chown it or use another directory"
        )
    writers = _writers(mode)
    if writers:
        return f"it is writable by {writers} (mode {mode:o}); chmod 700 it"
    return None


def _parent_problem(parent: Path, st: os.stat_result) -> str | None:
    """Why ``parent``, a directory above a state directory, would let others swap what is
    in it, or None. Sticky and world-writable (``/tmp``) is fine: only an entry's owner may
    rename or remove it there."""
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return f"its parent {parent} is not a directory"
    wanted = _trusted_owner(st.st_uid)
    if wanted:
        return f"its parent {parent} is owned by {_user(st.st_uid)}, not by {wanted}"
    writers = _writers(mode)
    if writers and not mode & stat.S_ISVTX:
        return (
            f"its parent {parent} is writable by {writers} without the sticky bit "
            f"(mode {mode:o}); chmod go-w {parent}"
        )
    return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot examine {path}") from None


def resolve_dir(path: Path) -> Path:
    """``path`` absolute with its symlinks resolved, as realpath does, but trusting a symlink
    on the way only if root or the running user owns it and nobody else could have planted
    or swapped it (its directory obeys the parent rule). An operator may point ``/backups``
    at another disk; someone else may not point it at ``/root/.ssh``. A missing tail is kept
    as it is (sbbackup creates it)."""
    try:
        return _resolve(Path(os.path.abspath(path)))
    except OSError as exc:
        raise storage_error(exc, f"cannot examine {path}") from None


def _resolve(wanted: Path) -> Path:
    todo = list(wanted.parts[1:])
    current, hops = Path("/"), 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        st = _lstat(candidate)
        if st is None:
            return candidate.joinpath(*todo)
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        hops += 1
        owner = _trusted_owner(st.st_uid)
        problem = (
            f"{candidate} is a symlink owned by {_user(st.st_uid)}, not by {owner}"
            if owner
            else _parent_problem(current, os.lstat(current))
        )
        if problem or hops > MAX_SYMLINKS:
            raise _refuse(wanted, problem or f"too many symlinks at {candidate}")
        target = os.readlink(candidate)
        todo[:0] = Path(target).parts[1:] if os.path.isabs(target) else Path(target).parts
        if os.path.isabs(target):
            current = Path("/")
    return current


def _refuse(path: Path, problem: str) -> StorageError:
    return StorageError(f"refusing to use {path}: {problem}")


def _check_parents(top: Path) -> None:
    """``top``'s existing ancestors (all real directories: ``top`` is resolved) obey the
    parent rule. Missing ones are skipped: sbbackup creates them 0700."""
    for parent in top.parents:
        st = _lstat(parent)
        if st is not None:
            problem = _parent_problem(parent, st)
            if problem:
                raise _refuse(top, problem)


def _check_private(path: Path) -> bool:
    """False if ``path`` is missing; a StorageError if it exists but may not hold state."""
    st = _lstat(path)
    if st is None:
        return False
    problem = _private_problem(st)
    if problem:
        raise _refuse(path, problem)
    return True


def _mkdir(path: Path) -> None:
    """Create ``path`` mode 0700 whatever the umask (something already there is left as is,
    for the caller to check)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _COMMON)
    try:
        os.fchmod(fd, DIR_MODE)  # only the directory just made: an existing one is never chmodded
    finally:
        os.close(fd)


def _state_dirs(path: Path, under: Path | None) -> list[Path]:
    """``under`` (or ``path``) with its parent resolved, then each directory down to ``path``."""
    top = Path(os.path.abspath(under if under is not None else path))
    inner = Path(os.path.abspath(path)).relative_to(top).parts
    real = resolve_dir(top.parent) / top.name
    dirs = [real]
    for part in inner:
        dirs.append(dirs[-1] / part)
    return dirs


def check_private_dir(path: Path) -> bool:
    """Check, creating nothing, that the state directory ``path`` (if it exists) and its
    parents obey the rule. False when it does not exist: there is nothing to read there."""
    try:
        (top,) = _state_dirs(path, None)
        _check_parents(top)
        return _check_private(top)
    except OSError as exc:
        raise storage_error(exc, f"cannot examine directory {path}") from None


def ensure_private_dir(path: Path, under: Path | None = None) -> None:
    """Make sure the state directory ``path`` exists and obeys the rule (module docstring).

    ``path`` itself is never a symlink; symlinks above it are resolved with ``resolve_dir``.
    ``under``: the state directory that ``path`` lies in (``locks/`` is under the backup
    directory); it and every directory between it and ``path`` are checked as state
    directories too. Missing directories are created mode 0700 whatever the umask; an
    existing one's mode is never changed.
    """
    try:
        dirs = _state_dirs(path, under)
        _check_parents(dirs[0])
        for missing in reversed([p for p in dirs[0].parents if _lstat(p) is None]):
            _mkdir(missing)
        for directory in dirs:
            if _lstat(directory) is None:
                _mkdir(directory)
            if not _check_private(directory):
                raise StorageError(f"cannot create directory {directory}: it disappeared")
    except OSError as exc:
        raise storage_error(exc, f"cannot create directory {path}") from None
