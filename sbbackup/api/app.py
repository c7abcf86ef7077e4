"""``Api``: what one server holds for every request (settings, tokens, jobs, the log, the
restore directory, the OpenAPI document). The handlers take it as their first argument."""

from __future__ import annotations

import re
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from .. import ops
from ..config import Settings
from ..errors import redact_secrets
from .auth import Token, authenticate
from .context import ApiContext
from .jobs import JOB_CAPS, Jobs
from .policy import check_restore_dir

_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters (CR, LF, ESC, ...) as ``\\xNN`` escapes, so
    nothing a client sends can end a log line early or drive a terminal."""

    def esc(m: re.Match[str]) -> str:
        n = ord(m.group())
        return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"

    return _CONTROL_RE.sub(esc, text)


class Api:
    """Auth, job bookkeeping and logging for one server. Refuses (exit 2) an
    ``api.restoreDir`` that is not private."""

    def __init__(
        self,
        settings: Settings,
        tokens: list[Token],
        public_health: bool = False,
        log: Callable[[str], None] | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        # Before any request or job thread exists: their first imports must not race.
        ops.preload_imports(settings)
        self.settings = settings
        self.tokens = tokens
        self.public_health = public_health
        self.document = document or {}  # served at /api/openapi.json
        self._sink = log or (lambda line: print(line, file=sys.stderr, flush=True))
        caps = {name: getattr(settings, name) for _, name, _ in JOB_CAPS.values()}
        self.jobs = Jobs(caps, on_crash=self.log_traceback)
        self.run_guard = threading.Lock()  # schedule runs: our threads share our PID
        self.state = ops.Context(settings).state
        self.restore_dir = check_restore_dir(settings)

    def log(self, line: str) -> None:
        """One line to the server log: secrets masked, control characters escaped."""
        self._sink(escape_controls(redact_secrets(line)))

    def log_traceback(self) -> None:
        """The exception being handled, one escaped log line per traceback line."""
        for line in traceback.format_exc().rstrip("\n").splitlines():
            self.log(line)

    def authenticate(self, header: str | None) -> str | None:
        return authenticate(self.tokens, header)

    def context(self, remote: str, token_label: str | None) -> ApiContext:
        return ApiContext(self.settings, remote=remote, token_label=token_label)
