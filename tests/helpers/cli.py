"""What a command-line run gave back, for both runners: the subprocess one (``SB`` in
tests/conftest.py) and the in-process one (``run`` in tests/sched_helpers.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)
