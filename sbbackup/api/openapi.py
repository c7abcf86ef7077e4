"""The OpenAPI 3 document served at ``/api/openapi.json``.

Its paths, methods, operationIds and parameters come from the route table (``routes.ROUTES``);
its schemas and limits from the constants the server validates with (``wire``,
``openapi_schemas``). What is written here by hand is each operation's prose and responses.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..model import BACKUP_ID_RE
from ..ops import RESTORE_ID_RE
from ..policy.schedules import SCHEDULE_ID_RE
from .openapi_schemas import SCHEMAS, anchored, ref
from .routes import ROUTES, Route
from .wire import BACKUP_STATUSES, MAX_BODY, MAX_ID, RUN_ID_RE, TEST_ID_RE

JSON = "application/json"


def _id_param(name: str, pattern: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "pattern": anchored(pattern), "maxLength": MAX_ID},
    }


PATH_PARAMS = {
    "backupId": _id_param("backupId", BACKUP_ID_RE.pattern, "A backup ID (the file stem)."),
    "restoreId": _id_param("restoreId", RESTORE_ID_RE, "A restore ID from a restore's 202."),
    "scheduleId": _id_param("scheduleId", SCHEDULE_ID_RE.pattern, "A schedule ID."),
    "testId": _id_param("testId", TEST_ID_RE.pattern, "A self-test ID from its 202."),
    "runId": _id_param("runId", RUN_ID_RE.pattern, "A run ID from a schedule run's 202."),
}
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "wait": {
        "required": False,
        "description": "Answer only when the operation is done.",
        "schema": {"type": "boolean", "default": False},
    },
    "status": {"schema": {"type": "string", "enum": list(BACKUP_STATUSES)}},
    "scheduleId": {"schema": {"type": "string", "pattern": anchored(SCHEDULE_ID_RE.pattern)}},
    "limit": {"schema": {"type": "integer", "minimum": 1}},
    "count": {"schema": {"type": "integer", "minimum": 1, "maximum": 100}},
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
ONE = ("400", "401", "404", "500")  # a GET of one thing
ALL = ("400", "401", "500")  # a GET of a collection or a report
POST = ("400", "401", "403", "404", "409", "411", "413", "415", "429", "500")


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _located(response: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    located = {**response, "headers": {"Location": LOCATION}}
    return located if description is None else {**located, "description": description}


LOCATION = {"schema": {"type": "string"}, "description": "The status URL."}
BACKUP = _json(ref("Backup"), "The backup record.")
JOB = _json(ref("Job"), "The job.")
SCHEDULE = _json(ref("Schedule"), "The schedule with its last and next runs.")
RESTORE = _json(ref("Restore"), "The restore record.")
OBJECT = {"type": "object"}
METRICS_TEXT = {
    "description": "Metrics.",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@dataclass(frozen=True)
class Doc:
    """What the route table cannot say about an operation."""

    summary: str
    ok: dict[str, Any]  # status -> response
    errors: tuple[str, ...] = ONE
    body: str | None = None  # the request body's schema name


DOCS: dict[str, Doc] = {
    "createBackup": Doc(
        "Create a backup in the background (202), or wait for it (?wait=true: 201).",
        {"202": _located(BACKUP, "Started: status in_progress."), "201": _located(BACKUP)},
        POST,
        "CreateBackup",
    ),
    "listBackups": Doc(
        "List backups, newest first.", {"200": _json(ref("BackupList"), "Backups.")}, ALL
    ),
    "getBackup": Doc("One backup's record.", {"200": BACKUP}),
    "deleteBackup": Doc(
        "Delete a backup's file and manifest.", {"200": BACKUP}, ("400", "401", "404", "409", "500")
    ),
    "restoreBackup": Doc(
        "Restore in the background; poll /api/backup/restore/{restoreId}.",
        {"202": _located(RESTORE, "Started.")},
        POST,
        "RestoreRequest",
    ),
    "getRestore": Doc(
        "A restore's status and step timings (the CLI's restore records).",
        {"200": RESTORE},
    ),
    "runSelfTest": Doc(
        "Run the self test and restore drill (202 + status URL, or ?wait=true: 200).",
        {"202": _located(JOB), "200": JOB},
        POST,
        "TestRequest",
    ),
    "getSelfTest": Doc("A self test's status and report.", {"200": JOB}),
    "listSchedules": Doc(
        "Every schedule with its last and next runs.",
        {"200": _json(ref("ScheduleList"), "Schedules.")},
        ALL,
    ),
    "createSchedule": Doc(
        "Add a schedule (a runtime change, kept in schedules.toml).",
        {"201": _located(SCHEDULE)},
        POST,
        "NewSchedule",
    ),
    "nextScheduleRuns": Doc(
        "The next fire times, soonest first.", {"200": _json(ref("Next"), "Next runs.")}, ALL
    ),
    "getStatistics": Doc(
        "Backup statistics (the statistics command's JSON).",
        {"200": _json(ref("Statistics"), "Statistics.")},
        ALL,
    ),
    "getSchedule": Doc("One schedule.", {"200": SCHEDULE}),
    "updateSchedule": Doc("Change a schedule's fields.", {"200": SCHEDULE}, POST, "ScheduleFields"),
    "deleteSchedule": Doc(
        "Remove a schedule.",
        {"200": _json(ref("ScheduleRemoved"), "Removed.")},
        ("400", "401", "404", "500"),
    ),
    "enableSchedule": Doc("Enable a schedule.", {"200": SCHEDULE}, POST),
    "disableSchedule": Doc("Disable a schedule.", {"200": SCHEDULE}, POST),
    "runSchedule": Doc(
        "Run a schedule now under cron's lock (409 while run-schedule holds it).",
        {"202": _located(JOB), "200": JOB},
        POST,
    ),
    "getScheduleRun": Doc("A schedule run's status and result.", {"200": JOB}),
    "getHealth": Doc(
        "The health command's result: 200 when healthy, 503 otherwise.",
        {"200": _json(ref("Health"), "Healthy."), "503": _json(ref("Health"), "Unhealthy.")},
        ALL,
    ),
    "getMetrics": Doc("Prometheus text exposition.", {"200": METRICS_TEXT}, ALL),
    "getOpenApi": Doc("This document.", {"200": _json(OBJECT, "OpenAPI 3 document.")}, ALL),
}


def _parameters(route: Route) -> list[dict[str, Any]]:
    """Path parameters in template order, then the route's query parameters."""
    params = [PATH_PARAMS[name] for name in re.findall(r"{(\w+)}", route.template)]
    return params + [{"name": q, "in": "query", **QUERY_SCHEMAS[q]} for q in route.query]


def _operation(route: Route) -> dict[str, Any]:
    doc = DOCS[route.operation]
    responses = dict(doc.ok)
    for code in doc.errors:
        responses[code] = _json(ref("Error"), ERRORS[code])
    op: dict[str, Any] = {
        "operationId": route.operation,
        "summary": doc.summary,
        "responses": responses,
    }
    if params := _parameters(route):
        op["parameters"] = params
    if doc.body:
        op["requestBody"] = {"required": False, "content": {JSON: {"schema": ref(doc.body)}}}
    return op


def openapi_document() -> dict[str, Any]:
    """A new copy of the document each call: callers may change theirs."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route)
    document = {
        "openapi": "3.1.0",  # its schemas are JSON Schema 2020-12: the files in sbbackup/schema
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
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
    return copy.deepcopy(document)
