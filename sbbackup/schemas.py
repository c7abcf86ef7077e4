"""The JSON Schemas (draft 2020-12) of every ``--json`` output and API body, one file per
shape in ``sbbackup/schema/`` (package data): the one source. ``docs/schema`` links to that
directory, and the OpenAPI document embeds the same files (``openapi_components``), so none
can drift.

Files refer to each other relatively (``defs.json#/$defs/timestamp``), resolved against their
``$id`` (``BASE_URI`` + file name). Pure data and the standard library only.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

BASE_URI = "https://streambuddy.github.io/sbbackup/schema/1/"
COMPONENTS = "#/components/schemas/"


def _dir() -> Any:
    return resources.files("sbbackup").joinpath("schema")


def names() -> list[str]:
    """Every schema file's stem (``backup``, ``test-report`` ...), sorted."""
    files = _dir().iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


@cache
def _text(name: str) -> str:
    return str(_dir().joinpath(f"{name}.json").read_text(encoding="utf-8"))


def load(name: str) -> dict[str, Any]:
    """One schema file as data (a new copy each call)."""
    data: dict[str, Any] = json.loads(_text(name))
    return data


def component_name(name: str) -> str:
    """``test-report`` -> ``TestReport``: a schema file's name among the OpenAPI components."""
    return "".join(part.capitalize() for part in name.split("-"))


def as_component(name: str, schema: Any) -> Any:
    """``schema`` (the file ``name``) as an OpenAPI 3.1 component: the same schema without
    ``$schema`` and ``$id``, its references pointed into ``#/components/schemas``. The only
    difference from the file; ``from_component`` undoes it."""
    if isinstance(schema, list):
        return [as_component(name, v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$schema", "$id"):
            continue
        if key == "$ref" and isinstance(value, str):
            file, _, fragment = value.partition("#")
            target = component_name(file[: -len(".json")]) if file else component_name(name)
            out[key] = COMPONENTS + target + fragment
        else:
            out[key] = as_component(name, value)
    return out


def openapi_components() -> dict[str, Any]:
    """Every schema file as an OpenAPI component, keyed by ``component_name``."""
    return {component_name(n): as_component(n, load(n)) for n in names()}
