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
from .files import ensure_private_dir, open_lock, storage_error

LOCK_DIR = "locks"


@contextlib.contextmanager
def hold(state_dir: Path, name: str, what: str, wait: float = 0) -> Iterator[None]:
    """Hold ``locks/NAME.lock`` or raise LockedError (exit 11) naming the holder's PID.

    With ``wait`` > 0, retry for up to that many seconds before giving up.
    """
    directory = state_dir / LOCK_DIR
    ensure_private_dir(directory, under=state_dir)
    path = directory / f"{name}.lock"
    try:
        fd = open_lock(path)
    except OSError as exc:
        raise storage_error(exc, f"cannot open lock file {path}") from None
    try:
        if not _acquire(fd, wait):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{what} is already running (pid {holder}, lock {path})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


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
