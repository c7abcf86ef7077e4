"""Results -> JSON or a rich table. The one place that knows how output looks."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .catalog import BackupRecord
from .ops import VerifyReport
from .selftest import TestReport


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, Mapping):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


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
        console.file.write(json.dumps(to_jsonable(result), indent=2, sort_keys=False) + "\n")
        return
    if isinstance(result, BackupRecord):
        _mapping(console, result.to_json())
    elif (
        isinstance(result, Sequence)
        and not isinstance(result, str)
        and (not result or isinstance(result[0], BackupRecord))
    ):
        _backups(console, result)
    elif isinstance(result, VerifyReport):
        _verify(console, result)
    elif isinstance(result, TestReport):
        _test_report(console, result)
    elif isinstance(result, Mapping):
        _mapping(console, result)
    else:
        console.print(Text(str(result)))


def _backups(console: Console, records: Sequence[BackupRecord]) -> None:
    if not records:
        console.print(Text("no backups"))
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "STATUS", "SCHEDULE", "FORMAT", "SIZE", "CREATED", "DURATION"):
        table.add_column(col, no_wrap=col in ("ID", "CREATED"))
    colour = {"completed": "green", "failed": "red", "missing": "red", "corrupt": "red"}
    for r in records:
        table.add_row(
            Text(r.id),
            Text(r.status, style=colour.get(r.status, "yellow")),
            Text(r.scheduleId or "manual"),
            Text(r.format),
            Text(human_size(r.size)),
            Text(r.createdAt),
            Text(f"{r.duration / 1000:.1f}s"),
        )
    console.print(table)


def _verify(console: Console, report: VerifyReport) -> None:
    for r in report.results:
        kind = "deep" if r.deep else "checksum"
        if r.ok:
            console.print(Text(f"ok    {r.filename} ({kind})", style="green"))
        else:
            console.print(Text(f"FAIL  {r.filename or r.id}: {r.error}", style="red"))
    if not report.results:
        console.print(Text("nothing to verify"))


def _test_report(console: Console, report: TestReport) -> None:
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for c in report.checks:
        console.print(Text(f"{c.status:5s} {c.name:12s} {c.reason}", style=style[c.status]))
    d = report.drill
    if d.status == "skipped":
        console.print(Text("drill skipped" + (f": {d.error}" if d.error else "")))
    else:
        timings = ", ".join(f"{k} {v / 1000:.2f}s" for k, v in d.timings.items())
        line = f"drill {d.status}: backup {d.backupId} -> {d.target} ({timings})"
        console.print(Text(line, style="green" if d.status == "passed" else "red"))
        if d.status == "passed":
            console.print(Text(f"      {d.tables} tables match the backup's row counts exactly"))
        for diff in d.differences:
            console.print(Text(f"      {diff}", style="red"))
        if d.error and not d.differences:
            console.print(Text(f"      {d.error}", style="red"))
    console.print(Text("PASSED" if report.ok else f"FAILED (exit {report.exit_code})",
                       style="bold green" if report.ok else "bold red"))


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
