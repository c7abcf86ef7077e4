"""Every ``--json`` output a test makes is checked against its published schema
(``sbbackup/schema/*.json``, also ``docs/schema``): the shared runners (``conftest.SB`` and
``sched_helpers.run``) call :func:`check_run` on each run, so the whole suite, not only the
contract test, speaks the contract. A failure under ``--json`` must end with the error body
on stderr."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from sbbackup import schemas

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# Maps whose keys are data, not field names: table names, statuses, schedule IDs, settings.
DATA_KEYED = frozenset({"tables", "byStatus", "lastSuccess", "properties", "settings", "sources"})
REGISTRY: Registry = Registry().with_resources(  # type: ignore[call-arg]
    (schemas.BASE_URI + f"{n}.json", Resource.from_contents(schemas.load(n)))
    for n in schemas.names()
)
CHECKED: set[str] = set()  # the schemas some test validated an instance of

# The command (and sub-command) -> the schema of what it prints on stdout under --json.
SCHEMA_OF = {
    "create": "backup",
    "show": "backup",
    "delete": "backup",
    "list": "backup-list",
    "verify": "verify",
    "restore": "restore",
    "test": "test-report",
    "schedules": "schedule-list",
    "schedules list": "schedule-list",
    "schedules show": "schedule",
    "schedules add": "schedule",
    "schedules update": "schedule",
    "schedules enable": "schedule",
    "schedules disable": "schedule",
    "schedules remove": "schedule-removed",
    "run-schedule": "run-schedule",
    "prune": "prune",
    "next": "next",
    "statistics": "statistics",
    "health": "health",
    "metrics": "metrics",
    "crontab": "crontab",
    "keygen": "keygen",
}
# Exit codes with which a command still prints its report on stdout (not an error body).
REPORT_CODES = {"health": {14}, "test": {1, 2, 3, 4, 10, 12, 13}, "verify": {13, 12, 10, 4}}


def naming_problems(value: Any, path: str = "", key: str = "") -> list[str]:
    """Keys that are not camelCase, and ``+00:00`` timestamps outside ``...Local`` keys."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if key not in DATA_KEYED and not CAMEL.match(str(k)):
                found.append(f"{path}/{k}: not camelCase")
            found += naming_problems(v, f"{path}/{k}", str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += naming_problems(v, f"{path}/{i}", key)
    elif isinstance(value, str) and "+00:00" in value and not key.endswith("Local"):
        found.append(f"{path}: {value[:40]!r} is not a Z timestamp")
    return found


def conforms(name: str, instance: Any) -> Any:
    """``instance`` is valid under schema ``name`` and follows the naming rules."""
    validator = Draft202012Validator(schemas.load(name), registry=REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
    )
    assert not naming_problems(instance), (name, naming_problems(instance))
    CHECKED.add(name)
    return instance


def _command(args: Sequence[str]) -> str | None:
    """The command words of an argv (global options before them skipped)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] == "--config" else 1
    rest = list(args[i:])
    if not rest:
        return None
    if rest[0] == "schedules" and len(rest) > 1 and f"schedules {rest[1]}" in SCHEMA_OF:
        return f"schedules {rest[1]}"
    return rest[0] if rest[0] in SCHEMA_OF else None


def check_run(args: Sequence[str], code: int, out: str, err: str) -> None:
    """If ``args`` asked for ``--json``: a success (or a report-carrying exit) prints one
    document valid under the command's schema; any other failure ends stderr with an error
    body valid under ``error.json`` whose code is the exit code."""
    if "--json" not in args or "--help" in args:
        return
    cmd = _command(args)
    if cmd is None:
        return
    if code == 0 or (code in REPORT_CODES.get(cmd, set()) and out.strip()):
        conforms(SCHEMA_OF[cmd], json.loads(out))
        return
    lines = err.splitlines()
    if code in (0, -9, 137) or not lines:  # killed by the test: nothing to say
        return
    if lines[-1].startswith("{"):
        body = conforms("error", json.loads(lines[-1]))
        assert body["error"]["code"] == code, (args, err)
