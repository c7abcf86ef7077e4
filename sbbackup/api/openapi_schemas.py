"""The component schemas of the OpenAPI document: the request bodies, as data from the
constants the server validates with (ID patterns, body fields), and every response shape
from the JSON Schema files (``sbbackup.schemas``: the files the CLI's ``--json`` is checked
against too)."""

from __future__ import annotations

from typing import Any

from .. import schemas
from ..config import TARGET_NAME_RE
from ..model import BACKUP_ID_RE
from ..policy.schedules import SCHEDULE_ID_RE
from .wire import BACKUP_ALIASES, DATABASE_NAME_RE, FILE_NAME_RE, SCHEDULE_FIELDS

JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def anchored(pattern: str) -> str:
    return "^" + pattern.lstrip("^").rstrip("$") + "$"


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


# The fields a schedule takes, with their JSON types (``SCHEDULE_FIELDS``) and bounds.
SCHEDULE_PROPS: dict[str, dict[str, Any]] = {
    k: {"type": JSON_TYPES[t]} for k, t in SCHEDULE_FIELDS.items()
}
SCHEDULE_PROPS["retentionDays"]["minimum"] = 1
SCHEDULE_PROPS["minKeep"]["minimum"] = 1
SCHEDULE_PROPS["format"]["enum"] = ["plain", "custom"]
# The old input names of POST /api/backup (``wire.BACKUP_ALIASES``), until the next major.
DEPRECATED_BACKUP: dict[str, dict[str, Any]] = {
    old: {"type": "boolean", "deprecated": True, "description": f"The old name of {new}."}
    for old, new in BACKUP_ALIASES.items()
}

REQUESTS: dict[str, Any] = {
    "CreateBackup": obj(
        {
            "format": {"type": "string", "enum": ["plain", "custom"]},
            "compression": {
                "type": "boolean",
                "description": "false is refused (403) while the configuration compresses.",
            },
            "level": {"type": "integer", "minimum": 1, "maximum": 22},
            "encryption": {
                "type": "boolean",
                "description": "false is refused (403) while the configuration encrypts.",
            },
            **DEPRECATED_BACKUP,
        }
    )
    | {"additionalProperties": False},
    "RestoreRequest": obj(
        {
            "targetDatabase": {
                "type": "string",
                "pattern": anchored(DATABASE_NAME_RE.pattern),
                "maxLength": 63,
                "description": "A new database on the source's server, created by the "
                "restore (409 if it exists). The source's own name only with "
                "api.allowRestoreOverSource and confirm.",
            },
            "target": {
                "type": "string",
                "pattern": anchored(TARGET_NAME_RE.pattern),
                "description": "The name of a target declared in api.restoreTargets.",
            },
            "targetFile": {
                "type": "string",
                "pattern": anchored(FILE_NAME_RE.pattern),
                "maxLength": 200,
                "description": "SQLite: a new file name inside api.restoreDir (409 if it exists).",
            },
            "createTarget": {"type": "boolean", "description": "With 'target'."},
            "clean": {
                "type": "boolean",
                "description": "Drop and recreate: only a declared target (403 otherwise).",
            },
            "confirm": {"type": "boolean", "description": "Required over the source."},
            "jobs": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "description": "Above 1 only for an unencrypted custom-format backup (400).",
            },
            "noOwner": {
                "type": "boolean",
                "description": "Do not restore owners: the restoring role owns everything.",
            },
            "noPrivileges": {
                "type": "boolean",
                "description": "Do not restore GRANT/REVOKE (pg_restore --no-privileges).",
            },
        },
    )
    | {
        "additionalProperties": False,
        "description": "Exactly one of targetDatabase, target and targetFile.",
    },
    "TestRequest": obj(
        {
            "drill": {"type": "boolean", "default": True},
            "backupId": {"type": "string", "pattern": anchored(BACKUP_ID_RE.pattern)},
            "latest": {"type": "boolean"},
            "target": {
                "type": "string",
                "pattern": anchored(TARGET_NAME_RE.pattern),
                "description": "A target declared in api.restoreTargets: the drill's "
                "scratch database goes on its server.",
            },
        }
    )
    | {"additionalProperties": False},
    "ScheduleFields": obj(SCHEDULE_PROPS) | {"additionalProperties": False},
    "NewSchedule": obj(
        {
            "scheduleId": {"type": "string", "pattern": anchored(SCHEDULE_ID_RE.pattern)},
            **SCHEDULE_PROPS,
            "id": {
                "type": "string",
                "pattern": anchored(SCHEDULE_ID_RE.pattern),
                "deprecated": True,
                "description": "The old name of scheduleId (until the next major version).",
            },
        },
        ("cron", "retentionDays"),
    )
    | {
        "additionalProperties": False,
        "anyOf": [{"required": ["scheduleId"]}, {"required": ["id"]}],
    },
}
# Request bodies, then every schema file (``Backup``, ``Error``, ``Statistics`` ...).
SCHEMAS: dict[str, Any] = {**REQUESTS, **schemas.openapi_components()}
