"""Results -> JSON or a rich table. The one place that knows how output looks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .jsonable import to_jsonable
from .model import BackupRecord, Status

__all__ = ["human_size", "render", "render_error", "to_jsonable"]

if TYPE_CHECKING:  # result types are matched by name, so rendering imports no use case
    from .ops import VerifyReport
    from .ops import schedules as sch
    from .ops.selftest import TestReport
    from .policy.stats import HealthReport


def human_size(n: int | None) -> str:
    if n is None or n < 0:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render(result: Any, as_json: bool, console: Console | None = None) -> None:
    """Print ``result`` to stdout: one JSON document, or the human view of it."""
    console = console or Console(
        soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 160
    )
    if as_json:
        # Indented for a person at a terminal; compact (and C-encoded, 4x faster) for pipes.
        indent = 2 if console.is_terminal else None
        console.file.write(json.dumps(to_jsonable(result), indent=indent) + "\n")
        return
    show = RENDERERS.get(type(result).__name__)
    if show is not None:
        show(console, result)
    elif (
        isinstance(result, Sequence)
        and not isinstance(result, str)
        and (not result or isinstance(result[0], BackupRecord))
    ):
        _backups(console, result)
    elif isinstance(result, Mapping):
        _mapping(console, result)
    else:
        console.print(Text(str(result)))


STATUS_COLOUR: dict[str, str] = {
    Status.COMPLETED: "green",
    Status.FAILED: "red",
    Status.MISSING: "red",
    Status.CORRUPT: "red",
}


def _backups(console: Console, records: Sequence[BackupRecord]) -> None:
    if not records:
        console.print(Text("no backups"))
        return
    header = ("ID", "STATUS", "SCHEDULE", "FORMAT", "SIZE", "CREATED", "DURATION")
    rows = [
        (
            r.id,
            r.status,
            r.scheduleId or "manual",
            r.format,
            human_size(r.size),
            r.createdAt,
            f"{r.duration / 1000:.1f}s",
        )
        for r in records
    ]
    _table(console, header, rows, status_col=1)


def _verify(console: Console, report: VerifyReport) -> None:
    for r in report.results:
        kind = "deep" if r.deep else "checksum"
        if r.restore is not None:
            kind = "deep, restore drill"
        if r.ok:
            console.print(Text(f"ok    {r.filename} ({kind})", style="green"))
        else:
            name = r.filename or r.id
            error = (r.error or "").removeprefix(name + ": ")  # most errors name the file already
            console.print(Text(f"FAIL  {name}: {error}", style="red"))
        if r.restore is not None and r.restore["status"] != "skipped":
            _drill_details(console, r.restore)
    if not report.results:
        console.print(Text("nothing to verify"))


def _test_report(console: Console, report: TestReport) -> None:
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for c in report.checks:
        console.print(Text(f"{c.status:5s} {c.name:12s} {c.reason}", style=style[c.status]))
    d = asdict(report.drill)
    if d["status"] == "skipped":
        console.print(Text("drill skipped" + (f": {d['error']}" if d["error"] else "")))
    else:
        line = f"drill {d['status']}: backup {d['backupId']}"
        console.print(Text(line, style="green" if d["status"] == "passed" else "red"))
        _drill_details(console, d)
    console.print(
        Text(
            "PASSED" if report.ok else f"FAILED (exit {report.exit_code})",
            style="bold green" if report.ok else "bold red",
        )
    )


def _drill_details(console: Console, d: Mapping[str, Any]) -> None:
    """A restore drill (``ops.selftest.Drill`` as a mapping): where, how long, what matched."""
    ok = d["status"] == "passed"
    if d["target"]:
        gone = "dropped" if d["scratchDropped"] else "NOT dropped"
        console.print(Text(f"      scratch  {d['target']} ({gone})"))
    if d["timings"]:
        steps = "  ".join(f"{k} {v / 1000:.2f}s" for k, v in d["timings"].items())
        console.print(Text(f"      timings  {steps}"))
    if ok:
        console.print(
            Text(f"      compare  {d['tables']} tables: exact row and object counts match")
        )
    for diff in d["differences"]:
        console.print(Text(f"      differs  {diff}", style="red"))
    if d["error"] and not d["differences"]:
        console.print(Text(f"      error    {d['error']}", style="red"))
    for name in d["leftoversDropped"]:
        console.print(Text(f"      cleanup  dropped leftover {name}"))


def _mapping(console: Console, data: Mapping[str, Any]) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = (
                json.dumps(value, sort_keys=True)
                if len(json.dumps(value)) < 200
                else f"({len(value)} entries)"
            )
        if key in ("size", "uncompressedSize") and isinstance(value, int):
            value = f"{value} ({human_size(value)})"
        table.add_row(Text(str(key)), Text("-" if value is None else str(value)))
    console.print(table)


def render_error(message: str, payload: dict[str, Any] | None, console: Console) -> None:
    """Errors go to stderr: one line, plus the JSON object under --json."""
    console.print(Text(f"sbbackup: error: {message}"), soft_wrap=True)
    if payload is not None:
        console.file.write(json.dumps(payload) + "\n")


# --- schedules ---------------------------------------------------------------------------


def _table(
    console: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    status_col: int | None = None,
) -> None:
    """Aligned columns, written line by line (a rich Table takes seconds for 10,000 rows).
    On a terminal the header is bold and ``status_col`` is coloured by status."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    if not console.is_terminal:
        console.file.write("\n".join([line(header), *map(line, cells)]) + "\n")
        return
    console.print(Text(line(header), style="bold"))
    for row in cells:
        text = Text(line(row))
        if status_col is not None:
            start = sum(w + 2 for w in widths[:status_col])
            style = STATUS_COLOUR.get(row[status_col], "yellow")
            text.stylize(style, start, start + len(row[status_col]))
        console.print(text)


def _t(value: str | None) -> str | None:
    """An ISO time, shortened for a table: 2026-03-02T02:00:00.000Z -> 2026-03-02 02:00Z."""
    if not value:
        return value
    date, _, rest = value.partition("T")
    zone = "Z" if rest.endswith("Z") else rest[-6:] if rest[-6:-5] in "+-" else ""
    return f"{date} {rest[:5]}{zone}"


def _run_result(console: Console, r: sch.RunResult) -> None:
    if r.backup is None:
        console.print(Text(f"{r.scheduleId}: skipped ({r.reason})"))
        return
    b = r.backup
    console.print(
        Text(
            f"{r.scheduleId}: backup {b.id} completed, {human_size(b.size)} in "
            f"{b.duration / 1000:.1f}s, checksum re-verified"
        )
    )
    if r.retention is not None:
        console.print(Text(f"retention: kept {len(r.retention.keep)}, removed {len(r.removed)}"))
        for d in r.retention.remove:
            console.print(Text(f"  removed {d.id}: {d.reason}"))


def _prune(console: Console, r: sch.PruneResult) -> None:
    rows = [
        (d.action.upper(), d.id, d.scheduleId or "manual", d.status, d.reason)
        for d in r.plan.decisions
    ]
    if rows:
        _table(console, ("ACTION", "ID", "SCHEDULE", "STATUS", "REASON"), rows)
    freed = human_size(sum(d.size for d in r.plan.remove))
    verb = "would remove" if r.dryRun else "removed"
    count = len(r.plan.remove) if r.dryRun else len(r.removed)
    console.print(Text(f"keep {len(r.plan.keep)}, {verb} {count} ({freed})"))


def _schedule_list(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    header = (
        "ID",
        "ENABLED",
        "CRON",
        "TZ",
        "KEEP",
        "LAST RUN",
        "LAST SUCCESS",
        "NEXT RUN",
        "BACKUPS",
        "SIZE",
        "SOURCE",
    )
    _table(
        console,
        header,
        [
            (
                s["id"],
                "yes" if s["enabled"] else "no",
                s["cron"],
                s["timezone"],
                f"{s['retentionDays']}d/min {s['minKeep']}",
                f"{_t(s['lastRun'])} {s['lastRunStatus']}" if s["lastRun"] else None,
                _t(s["lastSuccess"]),
                _t(s["nextRun"]),
                s["backupCount"],
                human_size(s["totalSize"]),
                s["source"],
            )
            for s in rows
        ],
    )


def _next_fires(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    _table(
        console,
        ("SCHEDULE", "NEXT (LOCAL)", "NEXT (UTC)", "CRON", "TZ"),
        [
            (
                r["scheduleId"],
                _t(r["next"]) or r["reason"],
                _t(r["nextUtc"]),
                r["cron"],
                r["timezone"],
            )
            for r in rows
        ],
    )


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _statistics(console: Console, st: Mapping[str, Any]) -> None:
    rate, dur, size, disk = st["successRate"], st["duration"], st["size"], st["disk"]
    ratio = size["compressionRatio"]
    lines = [
        f"backups      {st['total']} total, {st['completed']} completed, {st['failed']} failed",
        f"success      {_pct(rate['allTime'])} all time, {_pct(rate['last7d'])} 7d, "
        f"{_pct(rate['last30d'])} 30d",
        f"duration     avg {dur['averageSeconds'] or 0:.1f}s, p95 {dur['p95Seconds'] or 0:.1f}s",
        f"size         {human_size(size['totalBytes'])} total, "
        f"{human_size(size['averageBytes'])} average, "
        f"compression {'-' if ratio is None else f'{ratio:.2f}x'}",
        f"disk         {human_size(disk['usedBytes'])} used, {human_size(disk['freeBytes'])} free",
        "last successful restore test " + ((st.get("lastRestoreTest") or {}).get("at") or "never"),
    ]
    for line in lines:
        console.print(Text(line))
    _table(
        console,
        ("SCHEDULE", "TOTAL", "FAILED", "ALL", "7D", "30D", "LAST SUCCESS", "LAST RUN"),
        [
            (
                p["scheduleId"],
                p["total"],
                p["failed"],
                _pct(p["successRate"]["allTime"]),
                _pct(p["successRate"]["last7d"]),
                _pct(p["successRate"]["last30d"]),
                _t(p["lastSuccess"]),
                p["lastRunStatus"],
            )
            for p in st["schedules"]
        ],
    )
    for o in st["overdueSchedules"]:
        console.print(
            Text(
                f"OVERDUE {o['scheduleId']}: due {o['dueAt']}, last success "
                f"{o['lastSuccess'] or 'never'}",
                style="red",
            )
        )


def _health(console: Console, report: HealthReport) -> None:
    for p in report.problems:
        console.print(Text(f"FAIL  {p['check']:15s} {p['reason']}", style="red"))
    for w in report.warnings:
        console.print(Text(f"WARN  {w['check']:15s} {w['reason']}", style="yellow"))
    console.print(
        Text("healthy" if report.ok else "UNHEALTHY", style="green" if report.ok else "bold red")
    )


def _write(console: Console, text: str) -> None:
    """Verbatim, for output meant for other programs (crontab lines, Prometheus text)."""
    console.file.write(text)


# Result type name -> human renderer (``--json`` needs none: every result has ``to_json``).
RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "BackupRecord": lambda console, r: _mapping(console, r.to_json()),
    "RestoreRecord": lambda console, r: _mapping(console, r.to_json()),
    "VerifyReport": _verify,
    "TestReport": _test_report,
    "RunResult": _run_result,
    "PruneResult": _prune,
    "ScheduleList": lambda console, r: _schedule_list(console, r.rows),
    "NextFires": lambda console, r: _next_fires(console, r.rows),
    "Statistics": _statistics,
    "HealthReport": _health,
    "Crontab": lambda console, r: _write(console, "\n".join(r.lines) + "\n"),
    "Metrics": lambda console, r: _write(console, r.text),
}
