"""The OpenAPI 3 document served at ``/api/openapi.json``.

It is built from the same constants the server validates with (ID patterns, body fields,
limits), and ``tests/test_api.py`` checks that its paths and methods are exactly the
server's routes.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import (
    BACKUP_STATUSES,
    DATABASE_NAME_RE,
    FILE_NAME_RE,
    MAX_BODY,
    RUN_ID_RE,
    SCHEDULE_FIELDS,
    TEST_ID_RE,
)
from .catalog import BACKUP_ID_RE
from .config import TARGET_NAME_RE
from .ops import RESTORE_ID_RE
from .schedules import SCHEDULE_ID_RE

JSON = "application/json"
JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _anchored(pattern: str) -> str:
    return "^" + pattern.lstrip("^").rstrip("$") + "$"


def _id_param(name: str, pattern: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "pattern": _anchored(pattern), "maxLength": 200},
    }


PARAMS = {
    "backupId": _id_param("backupId", BACKUP_ID_RE.pattern, "A backup ID (the file stem)."),
    "restoreId": _id_param("restoreId", RESTORE_ID_RE, "A restore ID from a restore's 202."),
    "scheduleId": _id_param("scheduleId", SCHEDULE_ID_RE.pattern, "A schedule ID."),
    "testId": _id_param("testId", TEST_ID_RE.pattern, "A self-test ID from its 202."),
    "runId": _id_param("runId", RUN_ID_RE.pattern, "A run ID from a schedule run's 202."),
}
WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Answer only when the operation is done.",
    "schema": {"type": "boolean", "default": False},
}

ERRORS = {
    "400": "Invalid input: bad ID, field, query parameter or JSON.",
    "401": "Missing or wrong bearer token (the connection is closed after it).",
    "403": "Refused by the configuration: an undeclared restore target, a restore over the "
    "source, 'clean' on an undeclared database, or a weaker backup than the configuration's.",
    "404": "No such backup, restore, schedule, test or run.",
    "405": "Method not allowed on this path.",
    "409": "Conflict: the same operation is already running, another restore holds the "
    "target, or a restore's new target already exists.",
    "411": "A POST without Content-Length.",
    "413": f"A body over {MAX_BODY} bytes.",
    "415": "A body that is not application/json.",
    "429": "Too many jobs of this kind running (api.maxBackupJobs, api.maxRestoreJobs, "
    "api.maxTestJobs); see Retry-After.",
    "500": "An operation failed (database, storage, integrity).",
}


def _object(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


def _schemas() -> dict[str, Any]:
    schedule_fields: dict[str, dict[str, Any]] = {
        k: {"type": JSON_TYPES[t]} for k, t in SCHEDULE_FIELDS.items()
    }
    schedule_fields["retentionDays"]["minimum"] = 1
    schedule_fields["minKeep"]["minimum"] = 1
    schedule_fields["format"]["enum"] = ["plain", "custom"]
    job = _object(
        {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["in_progress", "completed", "failed", "interrupted"],
            },
            "startedAt": {"type": "string"},
            "finishedAt": _nullable("string"),
            "result": {"nullable": True},
            "error": {"nullable": True, **_ref("ErrorDetail")},
            "statusUrl": {"type": "string"},
        },
        ("id", "kind", "status", "startedAt"),
    )
    return {
        "ErrorDetail": _object(
            {
                "code": {"type": "integer", "description": "The sbbackup exit code."},
                "kind": {"type": "string"},
                "message": {"type": "string"},
            },
            ("code", "kind", "message"),
        ),
        "Error": _object({"error": _ref("ErrorDetail")}, ("error",)),
        "Backup": _object(
            {
                "id": {"type": "string"},
                "filename": _nullable("string"),
                "size": {"type": "integer"},
                "createdAt": {"type": "string"},
                "completedAt": _nullable("string"),
                "checksum": _nullable("string"),
                "checksumAlgorithm": {"type": "string"},
                "status": {"type": "string", "enum": list(BACKUP_STATUSES)},
                "duration": {"type": "integer", "description": "Milliseconds."},
                "error": _nullable("string"),
                "scheduleId": _nullable("string"),
                "format": {"type": "string"},
                "compression": {"type": "object", "nullable": True},
                "encryption": {"type": "object", "nullable": True},
                "database": {"type": "object"},
                "contents": {"type": "object", "nullable": True},
            },
            ("id", "status", "createdAt"),
        ),
        "CreateBackup": _object(
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
        "RestoreRequest": _object(
            {
                "targetDatabase": {
                    "type": "string",
                    "pattern": _anchored(DATABASE_NAME_RE.pattern),
                    "maxLength": 63,
                    "description": "A new database on the source's server, created by the "
                    "restore (409 if it exists). The source's own name only with "
                    "api.allowRestoreOverSource and confirm.",
                },
                "target": {
                    "type": "string",
                    "pattern": _anchored(TARGET_NAME_RE.pattern),
                    "description": "The name of a target declared in api.restoreTargets.",
                },
                "targetFile": {
                    "type": "string",
                    "pattern": _anchored(FILE_NAME_RE.pattern),
                    "maxLength": 200,
                    "description": "SQLite: a new file name inside api.restoreDir (409 if "
                    "it exists).",
                },
                "createTarget": {"type": "boolean", "description": "With 'target'."},
                "clean": {
                    "type": "boolean",
                    "description": "Drop and recreate: only a declared target (403 otherwise).",
                },
                "confirm": {"type": "boolean", "description": "Required over the source."},
                "jobs": {"type": "integer", "minimum": 1, "maximum": 64},
            },
        )
        | {
            "additionalProperties": False,
            "description": "Exactly one of targetDatabase, target and targetFile.",
        },
        "Restore": _object(
            {
                "restoreId": {"type": "string"},
                "backupId": {"type": "string"},
                "target": _nullable("string"),
                "status": {"type": "string", "enum": ["in_progress", "completed", "failed"]},
                "startedAt": {"type": "string"},
                "finishedAt": _nullable("string"),
                "duration": {"type": "integer"},
                "steps": {"type": "object", "additionalProperties": {"type": "integer"}},
                "error": _nullable("string"),
                "validation": {"type": "object", "nullable": True},
            },
            ("restoreId", "backupId", "status"),
        ),
        "TestRequest": _object(
            {
                "drill": {"type": "boolean", "default": True},
                "backupId": {"type": "string", "pattern": _anchored(BACKUP_ID_RE.pattern)},
                "latest": {"type": "boolean"},
                "target": {
                    "type": "string",
                    "pattern": _anchored(TARGET_NAME_RE.pattern),
                    "description": "A target declared in api.restoreTargets: the drill's "
                    "scratch database goes on its server.",
                },
            }
        )
        | {"additionalProperties": False},
        "Job": job,
        "Schedule": {"type": "object", "properties": {"id": {"type": "string"}}},
        "ScheduleFields": _object(schedule_fields) | {"additionalProperties": False},
        "NewSchedule": _object(
            {
                "id": {"type": "string", "pattern": _anchored(SCHEDULE_ID_RE.pattern)},
                **schedule_fields,
            },
            ("id", "cron", "retentionDays"),
        )
        | {"additionalProperties": False},
        "NextRun": _object(
            {
                "scheduleId": {"type": "string"},
                "enabled": {"type": "boolean"},
                "cron": {"type": "string"},
                "next": _nullable("string"),
                "nextUtc": _nullable("string"),
                "timezone": {"type": "string"},
                "reason": _nullable("string"),
            }
        ),
        "Health": _object(
            {
                "ok": {"type": "boolean"},
                "checkedAt": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "object"}},
                "warnings": {"type": "array", "items": {"type": "object"}},
            },
            ("ok",),
        ),
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, dict[str, Any]],
    errors: tuple[str, ...] = ("400", "401", "404", "500"),
    params: tuple[dict[str, Any], ...] = (),
    body: str | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = dict(ok)
    for code in errors:
        responses[code] = _json(_ref("Error"), ERRORS[code])
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = {"required": False, "content": {JSON: {"schema": _ref(body)}}}
    return op


POST_ERRORS = ("400", "401", "403", "404", "409", "411", "413", "415", "429", "500")


def _paths() -> dict[str, Any]:
    p = PARAMS
    location = {"Location": {"schema": {"type": "string"}, "description": "The status URL."}}
    backup = _json(_ref("Backup"), "The backup record.")
    job = _json(_ref("Job"), "The job.")
    schedule = _json(_ref("Schedule"), "The schedule with its last and next runs.")
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    status = {
        "name": "status",
        "in": "query",
        "schema": {"type": "string", "enum": list(BACKUP_STATUSES)},
    }
    sched_q = {
        "name": "scheduleId",
        "in": "query",
        "schema": {"type": "string", "pattern": _anchored(SCHEDULE_ID_RE.pattern)},
    }
    count = {
        "name": "count",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    }
    accepted_backup = {**backup, "description": "Started: status in_progress.", "headers": location}
    return {
        "/api/backup": {
            "post": _op(
                "createBackup",
                "Create a backup in the background (202), or wait for it (?wait=true: 201).",
                {"202": accepted_backup, "201": {**backup, "headers": location}},
                POST_ERRORS,
                (WAIT,),
                "CreateBackup",
            ),
            "get": _op(
                "listBackups",
                "List backups, newest first.",
                {"200": _json({"type": "array", "items": _ref("Backup")}, "Backups.")},
                ("400", "401", "500"),
                (status, sched_q, limit),
            ),
        },
        "/api/backup/{backupId}": {
            "get": _op(
                "getBackup", "One backup's record.", {"200": backup}, params=(p["backupId"],)
            ),
            "delete": _op(
                "deleteBackup",
                "Delete a backup's file and manifest.",
                {"200": backup},
                ("400", "401", "404", "409", "500"),
                (p["backupId"],),
            ),
        },
        "/api/backup/{backupId}/restore": {
            "post": _op(
                "restoreBackup",
                "Restore in the background; poll /api/backup/restore/{restoreId}.",
                {"202": {**_json(_ref("Restore"), "Started."), "headers": location}},
                POST_ERRORS,
                (p["backupId"],),
                "RestoreRequest",
            )
        },
        "/api/backup/restore/{restoreId}": {
            "get": _op(
                "getRestore",
                "A restore's status and step timings (the CLI's restore records).",
                {"200": _json(_ref("Restore"), "The restore record.")},
                params=(p["restoreId"],),
            )
        },
        "/api/backup/test": {
            "post": _op(
                "runSelfTest",
                "Run the self test and restore drill (202 + status URL, or ?wait=true: 200).",
                {"202": {**job, "headers": location}, "200": job},
                POST_ERRORS,
                (WAIT,),
                "TestRequest",
            )
        },
        "/api/backup/test/{testId}": {
            "get": _op(
                "getSelfTest",
                "A self test's status and report.",
                {"200": job},
                params=(p["testId"],),
            )
        },
        "/api/backup/schedules": {
            "get": _op(
                "listSchedules",
                "Every schedule with its last and next runs.",
                {"200": _json({"type": "array", "items": _ref("Schedule")}, "Schedules.")},
                ("400", "401", "500"),
            ),
            "post": _op(
                "createSchedule",
                "Add a schedule (a runtime change, kept in schedules.toml).",
                {"201": {**schedule, "headers": location}},
                POST_ERRORS,
                body="NewSchedule",
            ),
        },
        "/api/backup/schedules/next": {
            "get": _op(
                "nextScheduleRuns",
                "The next fire times, soonest first.",
                {"200": _json({"type": "array", "items": _ref("NextRun")}, "Next runs.")},
                ("400", "401", "500"),
                (count,),
            )
        },
        "/api/backup/schedules/statistics": {
            "get": _op(
                "getStatistics",
                "Backup statistics (the statistics command's JSON).",
                {"200": _json({"type": "object"}, "Statistics.")},
                ("400", "401", "500"),
            )
        },
        "/api/backup/schedules/{scheduleId}": {
            "get": _op(
                "getSchedule", "One schedule.", {"200": schedule}, params=(p["scheduleId"],)
            ),
            "post": _op(
                "updateSchedule",
                "Change a schedule's fields.",
                {"200": schedule},
                POST_ERRORS,
                (p["scheduleId"],),
                "ScheduleFields",
            ),
            "delete": _op(
                "deleteSchedule",
                "Remove a schedule.",
                {"200": _json({"type": "object"}, "Removed.")},
                ("400", "401", "404", "500"),
                (p["scheduleId"],),
            ),
        },
        "/api/backup/schedules/{scheduleId}/enable": {
            "post": _op(
                "enableSchedule",
                "Enable a schedule.",
                {"200": schedule},
                POST_ERRORS,
                (p["scheduleId"],),
            )
        },
        "/api/backup/schedules/{scheduleId}/disable": {
            "post": _op(
                "disableSchedule",
                "Disable a schedule.",
                {"200": schedule},
                POST_ERRORS,
                (p["scheduleId"],),
            )
        },
        "/api/backup/schedules/{scheduleId}/run": {
            "post": _op(
                "runSchedule",
                "Run a schedule now under cron's lock (409 while run-schedule holds it).",
                {"202": {**job, "headers": location}, "200": job},
                POST_ERRORS,
                (p["scheduleId"],),
            )
        },
        "/api/backup/schedules/{scheduleId}/run/{runId}": {
            "get": _op(
                "getScheduleRun",
                "A schedule run's status and result.",
                {"200": job},
                params=(p["scheduleId"], p["runId"]),
            )
        },
        "/api/health": {
            "get": _op(
                "getHealth",
                "The health command's result: 200 when healthy, 503 otherwise.",
                {
                    "200": _json(_ref("Health"), "Healthy."),
                    "503": _json(_ref("Health"), "Unhealthy."),
                },
                ("400", "401", "500"),
            )
        },
        "/metrics": {
            "get": _op(
                "getMetrics",
                "Prometheus text exposition.",
                {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                ("400", "401", "500"),
            )
        },
        "/api/openapi.json": {
            "get": _op(
                "getOpenApi",
                "This document.",
                {"200": _json({"type": "object"}, "OpenAPI 3 document.")},
                ("400", "401", "500"),
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "sbbackup",
            "version": __version__,
            "description": "Backups, restores, schedules and health of one database. Every "
            "endpoint needs `Authorization: Bearer <token>`. A client never sends a URL, a "
            "path or a libpq parameter: restores name a new database, a declared target or "
            "(SQLite) a new file in api.restoreDir.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }
