"""The one JSON-ready conversion every result's ``to_json`` uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

JsonObject = dict[str, object]


def plain(value: object) -> Any:
    """``value`` as JSON-ready data: a dataclass as an object in field order, a tuple as a
    list, a mapping item by item; anything else as it is."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def human_size(n: int | None) -> str:
    """Bytes as people read them, in binary units: ``76.2 GiB``."""
    if n is None or n < 0:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
