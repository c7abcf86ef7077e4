"""Handlers for schedules: the same ``ops.schedules`` use cases as ``sbbackup schedules ...``,
and a run under the same lock as cron's ``run-schedule``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import LockedError, NotFoundError, UsageError
from ..jsonable import to_jsonable
from ..ops import monitoring
from ..ops import schedules as schedule_ops
from ..policy.schedules import validate_schedule_id
from .app import Api
from .context import Request, Response
from .policy import guard_schedule
from .wire import (
    RUN_ID_RE,
    SCHEDULE_ALIASES,
    SCHEDULE_FIELDS,
    aliased,
    field,
    only,
    query_int,
    stamp_id,
    validated,
)


def list_schedules(api: Api, req: Request) -> Response:
    return Response(200, to_jsonable(schedule_ops.list_schedules(req.ctx)))


def get_schedule(api: Api, req: Request) -> Response:
    return Response(200, schedule_ops.show_schedule(req.ctx, _schedule_id(req)))


def add_schedule(api: Api, req: Request) -> Response:
    body = aliased(req.body, SCHEDULE_ALIASES)
    schedule_id = field(body, "scheduleId", str)
    if schedule_id is None:
        raise UsageError("field 'scheduleId' is required")
    validate_schedule_id(schedule_id)
    fields = _schedule_fields(body, allow_id=True)
    guard_schedule(api.settings, req.ctx, fields, None)
    view = schedule_ops.edit_schedule(req.ctx, schedule_id, "add", fields)
    return Response(201, view, {"Location": f"/api/backup/schedules/{schedule_id}"})


def update_schedule(api: Api, req: Request) -> Response:
    schedule_id = _schedule_id(req)
    fields = _schedule_fields(req.body, allow_id=False)
    if any(fields.get(k) is False for k in ("encryption", "compression")):
        current = schedule_ops.schedules(req.ctx).get(schedule_id)
        guard_schedule(api.settings, req.ctx, fields, current)
    return Response(200, schedule_ops.edit_schedule(req.ctx, schedule_id, "update", fields))


def remove_schedule(api: Api, req: Request) -> Response:
    return Response(200, schedule_ops.edit_schedule(req.ctx, _schedule_id(req), "remove", None))


def enable_schedule(api: Api, req: Request) -> Response:
    only(req.body, ())
    return Response(200, schedule_ops.edit_schedule(req.ctx, _schedule_id(req), "enable", None))


def disable_schedule(api: Api, req: Request) -> Response:
    only(req.body, ())
    return Response(200, schedule_ops.edit_schedule(req.ctx, _schedule_id(req), "disable", None))


def run_schedule(api: Api, req: Request) -> Response:
    """Start the same ``run_schedule`` as cron, under the same lock. Answer once the lock
    is ours (202), or with the run's own error (409 when cron holds the lock)."""
    only(req.body, ())
    schedule_id = _schedule_id(req)
    ctx = req.ctx
    run_id = stamp_id("run")
    location = f"/api/backup/schedules/{schedule_id}/run/{run_id}"
    lock = f"schedule-{schedule_id}"
    with api.run_guard:  # our own threads share our PID: tell them apart here
        if any(j.extra["scheduleId"] == schedule_id for j in api.jobs.running("run")):
            raise LockedError(f"schedule {schedule_id} is already running (via the API)")
        api.jobs.check_cap("run")
        job = api.jobs.start(
            "run",
            run_id,
            lambda: schedule_ops.run_schedule(ctx, schedule_id),
            ctx.cancel,
            scheduleId=schedule_id,
            statusUrl=location,
        )
    while not job.done.wait(0.01) and ctx.state.lock_holder(lock) != os.getpid():
        pass
    if job.done.is_set() and job.error is not None:
        raise job.error
    status = 200 if job.done.is_set() else 202
    return Response(status, job.to_json(), {"Location": location})


def get_run(api: Api, req: Request) -> Response:
    schedule_id = _schedule_id(req)
    run_id = validated(RUN_ID_RE, req.params["runId"], "run ID")
    job = api.jobs.get(run_id, "run")
    if job is None or job.extra.get("scheduleId") != schedule_id:
        raise NotFoundError(f"run {run_id} not found (runs are kept in memory)")
    return Response(200, job.to_json())


def next_schedules(api: Api, req: Request) -> Response:
    count = query_int(req.query, "count", 1, 100) or 1
    return Response(200, to_jsonable(schedule_ops.next_fires(req.ctx, count)))


def statistics(api: Api, req: Request) -> Response:
    return Response(200, to_jsonable(monitoring.get_statistics(req.ctx)))


def _schedule_id(req: Request) -> str:
    return validate_schedule_id(req.params["scheduleId"])


def _schedule_fields(body: Mapping[str, Any], allow_id: bool) -> dict[str, Any]:
    """The body's schedule fields, type-checked; their values are checked by the store."""
    only(body, (("scheduleId",) if allow_id else ()) + tuple(SCHEDULE_FIELDS))
    return {k: field(body, k, SCHEDULE_FIELDS[k]) for k in body if k != "scheduleId"}
