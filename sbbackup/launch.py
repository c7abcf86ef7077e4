"""The console entry point: signal handlers first, then the command line, then a hard exit.

Importing the command line loads click, rich and the use cases (a few hundred milliseconds).
Ctrl-C or SIGTERM then must still give exit 130 and one line, never a traceback or a bare
-15, so the handlers are installed here, before anything heavy is imported. (Only the
interpreter's own start-up, before any sbbackup code runs, is outside their reach.)

Once the command has decided its exit code, signals are ignored, output is flushed, and the
process ends with ``os._exit``: a signal arriving while the interpreter would be tearing
itself down (its handlers back to the defaults) can no longer turn a finished run's code
into -15 or -2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

INTERRUPTED = 130  # errors.ExitCode.INTERRUPTED, without importing it first


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _interrupted() -> int:
    sys.stderr.write("sbbackup: error: interrupted\n")  # as cli.base.main words it
    if "--json" in sys.argv[1:]:
        sys.stderr.write(
            '{"error": {"code": 130, "kind": "interrupted", "message": "interrupted"}}\n'
        )
    return INTERRUPTED


def _code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    sys.stderr.write(f"{value}\n")
    return 1


def _run() -> int:
    try:
        try:
            from .cli import main as cli_main
        except KeyboardInterrupt:
            return _interrupted()
        except Exception as exc:
            from .errors import from_interrupt  # stdlib only: it never fails to load

            if from_interrupt(exc):
                return _interrupted()
            raise
        try:
            cli_main()
        except SystemExit as exc:
            return _code(exc.code)
        return 0
    except KeyboardInterrupt:  # in the moment between the command's end and this line
        return _interrupted()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the code is decided: keep it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    code = _run()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
