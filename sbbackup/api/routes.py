"""The route table: method, path template, handler function, operationId, and the query
parameters the route takes. The server resolves a request against it; the OpenAPI document
is built from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import handlers_backups as b
from . import handlers_schedules as sch
from . import handlers_system as system
from .app import Api
from .context import Request, Response
from .wire import HttpError

HandlerFn = Callable[[Api, Request], Response]
WAIT = ("wait",)


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/api/backup/{backupId}"
    handler: HandlerFn
    operation: str  # operationId in the OpenAPI document and the audit log
    query: tuple[str, ...] = ()  # the query parameters it takes; others are a 400

    @property
    def parts(self) -> list[str]:
        return self.template.strip("/").split("/")

    @property
    def literals(self) -> int:
        return sum(1 for p in self.parts if not p.startswith("{"))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        parts = self.parts
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, seg in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not seg:
                    return None
                params[part[1:-1]] = seg
            elif part != seg:
                return None
        return params


SCHEDULE = "/api/backup/schedules/{scheduleId}"
ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/backup", b.create_backup, "createBackup", WAIT),
    Route("GET", "/api/backup", b.list_backups, "listBackups", ("status", "scheduleId", "limit")),
    Route("POST", "/api/backup/test", system.start_test, "runSelfTest", WAIT),
    Route("GET", "/api/backup/test/{testId}", system.get_test, "getSelfTest"),
    Route("GET", "/api/backup/restore/{restoreId}", b.get_restore, "getRestore"),
    Route("GET", "/api/backup/schedules", sch.list_schedules, "listSchedules"),
    Route("POST", "/api/backup/schedules", sch.add_schedule, "createSchedule"),
    Route("GET", "/api/backup/schedules/next", sch.next_schedules, "nextScheduleRuns", ("count",)),
    Route("GET", "/api/backup/schedules/statistics", sch.statistics, "getStatistics"),
    Route("GET", SCHEDULE, sch.get_schedule, "getSchedule"),
    Route("POST", SCHEDULE, sch.update_schedule, "updateSchedule"),
    Route("DELETE", SCHEDULE, sch.remove_schedule, "deleteSchedule"),
    Route("POST", f"{SCHEDULE}/enable", sch.enable_schedule, "enableSchedule"),
    Route("POST", f"{SCHEDULE}/disable", sch.disable_schedule, "disableSchedule"),
    Route("POST", f"{SCHEDULE}/run", sch.run_schedule, "runSchedule"),
    Route("GET", f"{SCHEDULE}/run/{{runId}}", sch.get_run, "getScheduleRun"),
    Route("GET", "/api/backup/{backupId}", b.show_backup, "getBackup"),
    Route("DELETE", "/api/backup/{backupId}", b.delete_backup, "deleteBackup"),
    Route("POST", "/api/backup/{backupId}/restore", b.restore_backup, "restoreBackup"),
    Route("GET", "/api/health", system.health, "getHealth"),
    Route("GET", "/metrics", system.metrics, "getMetrics"),
    Route("GET", "/api/openapi.json", system.openapi, "getOpenApi"),
)
PUBLIC_HEALTH_PATHS = ("/api/health", "/metrics")


def resolve(method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
    """The matching route with the most literal segments wins: ``schedules/next`` beats
    ``schedules/{scheduleId}``. A path that exists without this method is a 405."""
    matches = [(r, p) for r in ROUTES if (p := r.match(segments)) is not None]
    if not matches:
        raise HttpError(404, "not_found", "no such endpoint")
    best = max(r.literals for r, _ in matches)
    matches = [(r, p) for r, p in matches if r.literals == best]
    for route, params in matches:
        if route.method == method:
            return route, params
    allowed = ", ".join(sorted({r.method for r, _ in matches}))
    raise HttpError(405, "method_not_allowed", f"{method} is not allowed here", {"Allow": allowed})
