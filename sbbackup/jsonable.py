"""The one JSON shape of results, shared by the command line (``render``) and the API."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """``obj`` as JSON-ready data: a result's own ``to_json()``, mappings and sequences
    converted item by item, anything else as it is."""
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, Mapping):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: for building thousands of records or their JSON
    (plain data, no reference cycles), which would otherwise make the collector rescan them
    again and again (about a sixth of listing 10,000 backups). Collection resumes after; if
    it was already off (another thread's pause), it stays as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
