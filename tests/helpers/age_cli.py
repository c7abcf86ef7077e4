"""Driving the stock ``age`` CLI from tests, including ``age -p``, which reads only a terminal."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import termios
import time

import pytest


def require_age() -> None:
    if not (shutil.which("age") and shutil.which("age-keygen")):
        pytest.fail("the age CLI is missing: install the apt package age (make test does)")


def age_with_tty(args: list[str], passphrase: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``age`` with a pseudo-terminal as its controlling terminal; answer every prompt.

    Returns (exit code, what age wrote to the terminal). Never hangs: the child is killed
    after ``timeout`` seconds and the test fails.
    """
    master, slave = os.openpty()

    def own_terminal() -> None:  # in the child: new session, the pty becomes /dev/tty
        os.setsid()
        fcntl.ioctl(2, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        preexec_fn=own_terminal,  # noqa: PLW1509 (single-threaded test helper)
    )
    os.close(slave)
    seen, answered = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"age timed out; terminal said: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data and proc.poll() is not None:
                    break
                seen += data
                while seen.lower().count(b"passphrase") > answered:
                    os.write(master, passphrase.encode() + b"\n")
                    answered += 1
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=10), seen.decode(errors="replace")
