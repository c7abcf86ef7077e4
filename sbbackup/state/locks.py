"""Non-blocking per-name flock locks. The kernel drops them when a holder dies (even -9).

``locks/`` is a state directory and its lock files are state files (``sbbackup.state.files``): a
symlink in place of either is refused, never followed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LockedError
from .files import ensure_private_dir, open_lock, open_read_fd, storage_error

LOCK_DIR = "locks"


@contextlib.contextmanager
def hold(
    state_dir: Path, name: str, what: str, wait: float = 0, remove: bool = False
) -> Iterator[None]:
    """Hold ``locks/NAME.lock`` or raise LockedError (exit 11) naming the holder's PID.

    With ``wait`` > 0, retry for up to that many seconds before giving up. With ``remove``
    the lock file is unlinked before it is released (per-backup locks would pile up
    otherwise). Whoever locks a file must then check that it is still the one at the path:
    a lock taken on a file unlinked meanwhile guards nothing, so it is dropped and the path
    opened again (``_open_locked``).
    """
    directory = state_dir / LOCK_DIR
    ensure_private_dir(directory, under=state_dir)
    path = directory / f"{name}.lock"
    fd = _open_locked(path, what, wait)
    try:
        with contextlib.suppress(OSError):  # the PID only informs; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            if remove:
                with contextlib.suppress(OSError):
                    path.unlink()
    finally:
        os.close(fd)


def _open_locked(path: Path, what: str, wait: float) -> int:
    """An fd of ``path``, flocked, and still the file at ``path`` once locked."""
    for _ in range(100):  # each retry means a holder unlinked it just now: it ends quickly
        try:
            fd = open_lock(path)
        except OSError as exc:
            raise storage_error(exc, f"cannot open lock file {path}") from None
        try:
            if not _acquire(fd, wait):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise LockedError(f"{what} is already running (pid {holder}, lock {path})")
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked a file its holder had unlinked: open the path again
    raise LockedError(f"{what} is already running (its lock {path} keeps changing)")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(fd: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def is_free(state_dir: Path, name: str) -> bool:
    """Is nobody holding ``locks/NAME.lock``? Creates nothing (a read-only directory works):
    a missing lock file is free, an existing one is probed with a shared, non-blocking flock."""
    path = state_dir / LOCK_DIR / f"{name}.lock"
    try:
        fd = open_read_fd(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # unknown: say held, so nothing is swept on a guess
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
