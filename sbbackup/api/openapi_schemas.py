"""The component schemas of the OpenAPI document, as data, from the constants the server
validates with (ID patterns, statuses, body fields)."""

from __future__ import annotations

from typing import Any

from ..config import TARGET_NAME_RE
from ..model import BACKUP_ID_RE, Status
from ..policy.schedules import SCHEDULE_ID_RE
from .wire import (
    BACKUP_STATUSES,
    DATABASE_NAME_RE,
    FILE_NAME_RE,
    JOB_STATUSES,
    SCHEDULE_FIELDS,
)

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


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


# The fields a schedule takes, with their JSON types (``SCHEDULE_FIELDS``) and bounds.
SCHEDULE_PROPS: dict[str, dict[str, Any]] = {
    k: {"type": JSON_TYPES[t]} for k, t in SCHEDULE_FIELDS.items()
}
SCHEDULE_PROPS["retentionDays"]["minimum"] = 1
SCHEDULE_PROPS["minKeep"]["minimum"] = 1
SCHEDULE_PROPS["format"]["enum"] = ["plain", "custom"]

JOB = obj(
    {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "status": {"type": "string", "enum": list(JOB_STATUSES)},
        "startedAt": {"type": "string"},
        "finishedAt": nullable("string"),
        "result": {"nullable": True},
        "error": {"nullable": True, **ref("ErrorDetail")},
        "statusUrl": {"type": "string"},
    },
    ("id", "kind", "status", "startedAt"),
)

SCHEMAS: dict[str, Any] = {
    "ErrorDetail": obj(
        {
            "code": {"type": "integer", "description": "The sbbackup exit code."},
            "kind": {"type": "string"},
            "message": {"type": "string"},
        },
        ("code", "kind", "message"),
    ),
    "Error": obj({"error": ref("ErrorDetail")}, ("error",)),
    "Backup": obj(
        {
            "id": {"type": "string"},
            "filename": nullable("string"),
            "size": {"type": "integer"},
            "createdAt": {"type": "string"},
            "completedAt": nullable("string"),
            "checksum": nullable("string"),
            "checksumAlgorithm": {"type": "string"},
            "contentChecksum": nullable(
                "string", description="SHA-256 of the dump stream itself, before zstd and age."
            ),
            "status": {"type": "string", "enum": list(BACKUP_STATUSES)},
            "duration": {"type": "integer", "description": "Milliseconds."},
            "error": nullable("string"),
            "scheduleId": nullable("string"),
            "format": {"type": "string"},
            "compression": {"type": "object", "nullable": True},
            "encryption": {"type": "object", "nullable": True},
            "database": {"type": "object"},
            "contents": {"type": "object", "nullable": True},
            "writer": {
                "type": "object",
                "nullable": True,
                "description": "The process that wrote it: pid and host.",
            },
        },
        ("id", "status", "createdAt"),
    ),
    "CreateBackup": obj(
        {
            "format": {"type": "string", "enum": ["plain", "custom"]},
            "compress": {
                "type": "boolean",
                "description": "false is refused (403) while the configuration compresses.",
            },
            "level": {"type": "integer", "minimum": 1, "maximum": 22},
            "encrypt": {
                "type": "boolean",
                "description": "false is refused (403) while the configuration encrypts.",
            },
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
    "Restore": obj(
        {
            "restoreId": {"type": "string"},
            "backupId": {"type": "string"},
            "target": nullable("string"),
            "status": {
                "type": "string",
                "enum": [str(s) for s in (Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED)],
            },
            "startedAt": {"type": "string"},
            "finishedAt": nullable("string"),
            "duration": {"type": "integer"},
            "steps": {"type": "object", "additionalProperties": {"type": "integer"}},
            "error": nullable("string"),
            "validation": {"type": "object", "nullable": True},
        },
        ("restoreId", "backupId", "status"),
    ),
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
    "Job": JOB,
    "Schedule": {"type": "object", "properties": {"id": {"type": "string"}}},
    "ScheduleFields": obj(SCHEDULE_PROPS) | {"additionalProperties": False},
    "NewSchedule": obj(
        {
            "id": {"type": "string", "pattern": anchored(SCHEDULE_ID_RE.pattern)},
            **SCHEDULE_PROPS,
        },
        ("id", "cron", "retentionDays"),
    )
    | {"additionalProperties": False},
    "NextRun": obj(
        {
            "scheduleId": {"type": "string"},
            "enabled": {"type": "boolean"},
            "cron": {"type": "string"},
            "next": nullable("string"),
            "nextUtc": nullable("string"),
            "timezone": {"type": "string"},
            "reason": nullable("string"),
        }
    ),
    "Health": obj(
        {
            "ok": {"type": "boolean"},
            "checkedAt": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "object"}},
            "warnings": {"type": "array", "items": {"type": "object"}},
        },
        ("ok",),
    ),
}
