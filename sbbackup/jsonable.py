"""The one JSON shape of results, shared by the command line (``render``) and the API."""

from __future__ import annotations

from collections.abc import Mapping
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
