"""Non-blocking per-name flock locks. The kernel drops them when a holder dies (even -9)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import LockedError
from .storage.local import FILE_MODE, ensure_private_dir, storage_error

LOCK_DIR = "locks"


@contextlib.contextmanager
def hold(state_dir: Path, name: str, what: str) -> Iterator[None]:
    """Hold ``locks/NAME.lock`` or raise LockedError (exit 11) naming the holder's PID."""
    directory = state_dir / LOCK_DIR
    ensure_private_dir(directory)
    path = directory / f"{name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise storage_error(exc, f"cannot open lock file {path}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{what} is already running (pid {holder}, lock {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)
