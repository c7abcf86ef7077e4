"""Handlers for the self test, health, metrics and the OpenAPI document."""

from __future__ import annotations

from dataclasses import asdict

from ..errors import NotFoundError, UsageError, redact_secrets
from ..model import validate_backup_id
from ..ops.monitoring import get_health, get_metrics
from ..ops.selftest import TestOptions, run_self_test
from ..results import Finding
from .app import Api
from .context import Request, Response
from .jobs import wait_for
from .policy import NO_TEST_URL, declared_target
from .wire import TEST_FIELDS, TEST_ID_RE, field, only, stamp_id, validated

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def start_test(api: Api, req: Request) -> Response:
    body, ctx = req.body, req.ctx
    if "targetUrl" in body:
        raise UsageError(NO_TEST_URL)
    only(body, TEST_FIELDS)
    backup_id = field(body, "backupId", str)
    if backup_id is not None:
        validate_backup_id(backup_id)
    drill = field(body, "drill", bool)
    name = field(body, "target", str)
    opts = TestOptions(
        drill=True if drill is None else drill,
        backup_id=backup_id,
        latest=bool(field(body, "latest", bool)),
        target_url=None if name is None else declared_target(api.settings, ctx, name),
    )
    api.jobs.check_cap("test")
    test_id = stamp_id("test")
    location = f"/api/backup/test/{test_id}"
    job = api.jobs.start(
        "test", test_id, lambda: run_self_test(ctx, opts), ctx.cancel, statusUrl=location
    )
    if req.wait:
        wait_for(job)
        return Response(200, job.to_json(), {"Location": location})
    return Response(202, job.to_json(), {"Location": location})


def get_test(api: Api, req: Request) -> Response:
    test_id = validated(TEST_ID_RE, req.params["testId"], "test ID")
    job = api.jobs.get(test_id, "test")
    if job is None:
        raise NotFoundError(f"self test {test_id} not found (tests are kept in memory)")
    return Response(200, job.to_json())


def health(api: Api, req: Request) -> Response:
    report = get_health(req.ctx)
    body = report.to_json()
    public = req.ctx.token_label is None  # then no reason text (it may name a host or user)
    for key, findings in (("problems", report.problems), ("warnings", report.warnings)):
        body[key] = [_public_finding(f) if public else _redacted(f) for f in findings]
    return Response(200 if report.ok else 503, body)


def metrics(api: Api, req: Request) -> Response:
    return Response(200, get_metrics(req.ctx).text, content_type=METRICS_TYPE)


def openapi(api: Api, req: Request) -> Response:
    """The document ``make_server`` built from the route table (``openapi.py``)."""
    return Response(200, api.document)


def _public_finding(finding: Finding) -> dict[str, object]:
    """A health finding fit for anyone: which check and which schedule, no free text."""
    return {"check": finding.check, "scheduleId": finding.scheduleId}


def _redacted(finding: Finding) -> dict[str, object]:
    """A health finding for a token holder: its reason, with any secret masked."""
    return {**asdict(finding), "reason": redact_secrets(finding.reason)}
