"""Results -> JSON or a rich table. The one place that knows how output looks."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Mapping, Sequence
from functools import singledispatch
from typing import TYPE_CHECKING, Any

from .jsonable import paused_gc, to_jsonable
from .model import BackupRecord, RestoreRecord, Status
from .results import (
    CheckStatus,
    Crontab,
    Drill,
    DrillStatus,
    HealthReport,
    Metrics,
    NextFires,
    PruneResult,
    RunResult,
    ScheduleList,
    Statistics,
    TestReport,
    VerifyReport,
)
from .results.base import human_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text
else:
    # rich costs tens of milliseconds to import: only human output loads it, never --json,
    # --help or an error line. These stand-ins make and return the real objects (and keep
    # the ``console: Console`` annotations that ``show.register`` evaluates resolvable).

    def Console(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - rich's class, made lazily
        from rich.console import Console

        return Console(*args, **kwargs)

    def Text(*args: Any, **kwargs: Any) -> Any:  # noqa: N802
        from rich.text import Text

        return Text(*args, **kwargs)


__all__ = ["human_size", "render", "render_error", "show", "to_jsonable"]


def render(result: object, as_json: bool, console: Console | None = None) -> None:
    """Print ``result`` to stdout: one JSON document, or the human view of it."""
    if as_json:
        # Indented for a person at a terminal; compact (and C-encoded, 4x faster) for pipes.
        out = sys.stdout if console is None else console.file
        terminal = out.isatty() if console is None else console.is_terminal
        with paused_gc():
            text = json.dumps(to_jsonable(result), indent=2 if terminal else None)
        out.write(text + "\n")
        return
    console = console or Console(
        soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 160
    )
    show(result, console)


@singledispatch
def show(result: object, console: Console) -> None:
    """The human view of ``result``, chosen by its type (``--json`` needs none: every result
    has ``to_json``). The types of ``sbbackup.results`` register below; a list of backups is a
    table, any other mapping a key/value listing."""
    if (
        isinstance(result, Sequence)
        and not isinstance(result, str)
        and (not result or isinstance(result[0], BackupRecord))
    ):
        _backups(console, result)
    elif isinstance(result, Mapping):
        _mapping(console, result)
    else:
        console.print(Text(str(result)))


@show.register
def _record(result: BackupRecord | RestoreRecord, console: Console) -> None:
    _mapping(console, result.to_json())


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
    # Too wide for the terminal: CREATED goes first (the ID says it), FORMAT, DURATION, ...
    _table(console, header, rows, status_col=1, drop=(5, 3, 6, 2, 4), elide=(0,))
    for r in records:  # who is writing a running backup; why one is no backup
        if r.status == Status.IN_PROGRESS:
            w = r.writer or {}
            who = f"pid {w.get('pid', '?')} on {w.get('host', '?')}"
            console.print(Text(f"{r.id}: being written by {who}"))
        elif r.status in (Status.ABANDONED, Status.ORPHAN) and r.error:
            console.print(Text(f"{r.id}: {r.error}"))


@show.register
def _verify(report: VerifyReport, console: Console) -> None:
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
        if r.restore is not None and r.restore.status != DrillStatus.SKIPPED:
            _drill_details(console, r.restore)
    if not report.results:
        console.print(Text("nothing to verify"))


CHECK_COLOUR = {CheckStatus.PASS: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red"}


@show.register
def _test_report(report: TestReport, console: Console) -> None:
    for c in report.checks:
        console.print(Text(f"{c.status:5s} {c.name:12s} {c.reason}", style=CHECK_COLOUR[c.status]))
    d = report.drill
    if d.status == DrillStatus.SKIPPED:
        console.print(Text("drill skipped" + (f": {d.error}" if d.error else "")))
    else:
        line = f"drill {d.status}: backup {d.backupId}"
        console.print(Text(line, style="green" if d.status == DrillStatus.PASSED else "red"))
        _drill_details(console, d)
    console.print(
        Text(
            "PASSED" if report.ok else f"FAILED (exit {report.exit_code})",
            style="bold green" if report.ok else "bold red",
        )
    )


def _drill_details(console: Console, d: Drill) -> None:
    """A restore drill: where, how long, what matched."""
    if d.target:
        gone = "dropped" if d.scratchDropped else "NOT dropped"
        console.print(Text(f"      scratch  {d.target} ({gone})"))
    if d.timings:
        steps = "  ".join(f"{k} {v / 1000:.2f}s" for k, v in d.timings.items())
        console.print(Text(f"      timings  {steps}"))
    if d.status == DrillStatus.PASSED:
        console.print(Text(f"      compare  {d.tables} tables: exact row and object counts match"))
    for diff in d.differences:
        console.print(Text(f"      differs  {diff}", style="red"))
    if d.error and not d.differences:
        console.print(Text(f"      error    {d.error}", style="red"))
    for name in d.leftoversDropped:
        console.print(Text(f"      cleanup  dropped leftover {name}"))
    if d.backupDeleted:
        console.print(Text(f"      cleanup  deleted backup {d.backupId} (--no-keep)"))


def _mapping(console: Console, data: Mapping[str, object]) -> None:
    """Keys and values, one a line, written as plain text (never cut, never padded past the
    value): durations with units, sizes in bytes and binary units, booleans as yes/no, nested
    objects as indented sub-rows, lists of scalars comma-separated."""
    console.file.write("".join(line + "\n" for line in key_values(data)))


SIZE_KEYS = frozenset({"size", "uncompressedSize", "totalSize", "freeBytes", "usedBytes"})
MS_PARENTS = frozenset({"steps", "timings"})  # objects whose values are milliseconds


def key_values(data: Mapping[str, object], indent: int = 0, ms: bool = False) -> list[str]:
    """The lines of ``_mapping``: ``ms`` marks an object whose values are milliseconds."""
    width = max((len(str(k)) for k in data), default=0) + 2
    pad = " " * indent
    out: list[str] = []
    for key, value in data.items():
        name = str(key)
        if isinstance(value, Mapping):
            out.append(f"{pad}{name}" if value else f"{pad}{name.ljust(width)}-")
            out += key_values(value, indent + 2, ms=name in MS_PARENTS)
        elif isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
            out.append(f"{pad}{name}")
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.append(f"{pad}  - [{i}]")
                    out += key_values(item, indent + 4)
                else:
                    out.append(f"{pad}  - {_scalar(name, item, ms)}")
        else:
            out.append(f"{pad}{name.ljust(width)}{_scalar(name, value, ms)}".rstrip())
    return out


def _scalar(key: str, value: object, ms: bool) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join("-" if v is None else str(v) for v in value)
    if isinstance(value, int) and (ms or key == "duration" or key.endswith("Ms")):
        return human_duration(value)
    if isinstance(value, int) and (key in SIZE_KEYS or key.endswith("Bytes")):
        return f"{value} ({human_size(value)})"
    return str(value)


def human_duration(ms: int) -> str:
    """Milliseconds as people read them: ``850 ms``, ``1.7 s``, ``2 min 05 s``."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _ms(value: float | None) -> str:
    return "-" if value is None else human_duration(round(value))


def render_error(
    message: str, payload: Mapping[str, object] | None, console: Console | None = None
) -> None:
    """Errors go to stderr (or ``console``): one line, plus the JSON object under --json.
    Plain writes: reporting an error or an interrupt never waits for rich to load."""
    out = sys.stderr if console is None else console.file
    out.write(f"sbbackup: error: {message}\n")
    if payload is not None:
        out.write(json.dumps(payload) + "\n")


# --- schedules ---------------------------------------------------------------------------


def _table(
    console: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    status_col: int | None = None,
    drop: Sequence[int] = (),
    elide: Sequence[int] = (),
) -> None:
    """Aligned columns, written line by line (a rich Table takes seconds for 10,000 rows).

    To a pipe: every cell whole, no colour, no padding after the last cell. On a terminal the
    header is bold, ``status_col`` is coloured by status, and a table wider than the terminal
    is fitted (``fit_columns``): the ``drop`` columns go first (a note names them), then the
    last column wraps, then the ``elide`` columns (IDs) lose their middle, never their ends."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    if not console.is_terminal:
        widths = _widths(header, cells)
        console.file.write("".join(_line(r, widths) + "\n" for r in [header, *cells]))
        return
    plan = fit_columns(header, cells, console.width, drop=drop, elide=elide)
    console.print(Text(_line([header[i] for i in plan.columns], plan.widths), style="bold"))
    shown_status = plan.columns.index(status_col) if status_col in plan.columns else None
    for row in cells:
        for n, line in enumerate(plan.lines(row)):
            text = Text(line)
            if n == 0 and shown_status is not None and status_col is not None:
                start = sum(w + 2 for w in plan.widths[:shown_status])
                style = STATUS_COLOUR.get(row[status_col], "yellow")
                text.stylize(style, start, start + len(row[status_col]))
            console.print(text)
    if plan.hidden:
        note = f"(hidden to fit: {', '.join(header[i] for i in plan.hidden)}; see --json)"
        for line in textwrap.wrap(note, console.width, break_on_hyphens=False):
            console.print(Text(line, style="dim"))


def _widths(header: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
MIN_WRAP = 16  # the narrowest a wrapped last column gets
MIN_ELIDED = 15  # the narrowest an elided ID gets: 7 characters of each end


def elide_middle(text: str, width: int) -> str:
    """``text`` in ``width`` characters, its middle replaced by an ellipsis: both ends stay."""
    if len(text) <= width:
        return text
    head, tail = width // 2, (width - 1) // 2
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


class TablePlan:
    """Which columns a terminal shows, how wide, and how a row becomes its lines."""

    def __init__(
        self, columns: list[int], widths: list[int], hidden: list[int], wrap: bool, elide: set[int]
    ) -> None:
        self.columns, self.widths, self.hidden = columns, widths, hidden
        self.wrap, self.elide = wrap, elide

    def lines(self, row: Sequence[str]) -> list[str]:
        cells = [row[i] for i in self.columns]
        for n, i in enumerate(self.columns):
            if i in self.elide:
                cells[n] = elide_middle(cells[n], self.widths[n])
        last = self.widths[-1]
        if not (self.wrap and len(cells[-1]) > last):
            return [_line(cells, self.widths)]
        parts = textwrap.wrap(cells[-1], last, break_on_hyphens=False) or [""]
        indent = " " * sum(w + 2 for w in self.widths[:-1])
        first = _line([*cells[:-1], parts[0]], self.widths)
        return [first, *(indent + p for p in parts[1:])]


def fit_columns(
    header: Sequence[str],
    cells: Sequence[Sequence[str]],
    width: int,
    drop: Sequence[int] = (),
    elide: Sequence[int] = (),
) -> TablePlan:
    """Fit a table into ``width`` terminal columns: drop the ``drop`` columns in that order
    until it fits; then wrap the last column (not below ``MIN_WRAP``); then shorten the
    ``elide`` columns by their middle (not below ``MIN_ELIDED``). What still does not fit
    overflows: the terminal wraps it, nothing is cut."""
    natural = _widths(header, cells)
    columns = list(range(len(header)))

    def total() -> int:
        return sum(natural[i] for i in columns) + 2 * (len(columns) - 1)

    hidden: list[int] = []
    for i in drop:
        if total() <= width:
            break
        if i in columns and len(columns) > 1:
            columns.remove(i)
            hidden.append(i)
    widths = [natural[i] for i in columns]
    wrap = False
    excess = total() - width
    last = columns[-1]
    if excess > 0 and last not in elide and natural[last] > MIN_WRAP:
        widths[-1] = max(natural[last] - excess, MIN_WRAP, len(header[last]))
        wrap = widths[-1] < natural[last]
        excess = sum(widths) + 2 * (len(columns) - 1) - width
    shortened: set[int] = set()
    for n, i in enumerate(columns):
        if excess <= 0:
            break
        if i in elide and widths[n] > MIN_ELIDED:
            cut = min(excess, widths[n] - max(MIN_ELIDED, len(header[i])))
            widths[n] -= cut
            excess -= cut
            shortened.add(i)
    return TablePlan(columns, widths, sorted(hidden), wrap, shortened)


def _t(value: str | None) -> str | None:
    """An ISO time, shortened for a table: 2026-03-02T02:00:00.000Z -> 2026-03-02 02:00Z."""
    if not value:
        return value
    date, _, rest = value.partition("T")
    zone = "Z" if rest.endswith("Z") else rest[-6:] if rest[-6:-5] in "+-" else ""
    return f"{date} {rest[:5]}{zone}"


@show.register
def _run_result(r: RunResult, console: Console) -> None:
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


@show.register
def _prune(r: PruneResult, console: Console) -> None:
    rows = [
        (d.action.upper(), d.id, d.scheduleId or "manual", d.status, d.reason)
        for d in r.plan.decisions
    ]
    if rows:
        header = ("ACTION", "ID", "SCHEDULE", "STATUS", "REASON")
        _table(console, header, rows, drop=(3, 2), elide=(1,))
    freed = human_size(sum(d.size for d in r.plan.remove))
    verb = "would remove" if r.dryRun else "removed"
    count = len(r.plan.remove) if r.dryRun else len(r.removed)
    console.print(Text(f"keep {len(r.plan.keep)}, {verb} {count} ({freed})"))


@show.register
def _schedule_list(result: ScheduleList, console: Console) -> None:
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
                s["scheduleId"],
                "yes" if s["enabled"] else "no",
                s["cron"],
                s["timezone"],
                f"{s['retentionDays']}d/min {s['minKeep']}",
                f"{_t(s['lastRun'])} {s['lastRunStatus']}" if s["lastRun"] else None,
                _t(s["lastSuccess"]),
                _t(s["nextRunLocal"]) or ("disabled" if not s["enabled"] else None),
                s["backupCount"],
                human_size(s["totalSize"]),
                s["source"],
            )
            for s in result.rows
        ],
        drop=(10, 6, 8, 9, 4, 3, 5),  # too wide for the terminal: SOURCE first, ...
    )
    if result.notice:
        console.print(Text(f"nothing will run: {result.notice}", style="yellow"))


@show.register
def _next_fires(result: NextFires, console: Console) -> None:
    _table(
        console,
        ("SCHEDULE", "NEXT (LOCAL)", "NEXT (UTC)", "CRON", "TZ"),
        [
            (
                r["scheduleId"],
                _t(r["nextRunLocal"]) or r["reason"],
                _t(r["nextRun"]),
                r["cron"],
                r["timezone"],
            )
            for r in result.rows
        ],
        drop=(2, 4),
    )


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


@show.register
def _statistics(st: Statistics, console: Console) -> None:
    rate, dur, size, disk = st.successRate, st.duration, st.size, st.disk
    ratio = size.compressionRatio
    last_test = (st.lastRestoreDrill or {}).get("at") or "never"
    lines = [
        f"backups      {st.total} total, {st.completed} completed, {st.failed} failed",
        f"success      {_pct(rate.allTime)} all time, {_pct(rate.last7d)} 7d, "
        f"{_pct(rate.last30d)} 30d",
        f"duration     avg {_ms(dur.averageMs)}, p95 {_ms(dur.p95Ms)}",
        f"size         {human_size(size.totalBytes)} total, "
        f"{human_size(size.averageBytes)} average, "
        f"compression {'-' if ratio is None else f'{ratio:.2f}x'}",
        f"disk         {human_size(disk.usedBytes)} used, {human_size(disk.freeBytes)} free",
        f"last successful restore test {last_test}",
    ]
    for line in lines:
        console.print(Text(line))
    _table(
        console,
        ("SCHEDULE", "TOTAL", "FAILED", "ALL", "7D", "30D", "LAST SUCCESS", "LAST RUN"),
        [
            (
                p.scheduleId,
                p.total,
                p.failed,
                _pct(p.successRate.allTime),
                _pct(p.successRate.last7d),
                _pct(p.successRate.last30d),
                _t(p.lastSuccess),
                p.lastRunStatus,
            )
            for p in st.schedules
        ],
        drop=(7, 5, 4),
    )
    for o in st.overdueSchedules:
        console.print(
            Text(
                f"OVERDUE {o.scheduleId}: due {o.dueAt}, last success {o.lastSuccess or 'never'}",
                style="red",
            )
        )


@show.register
def _health(report: HealthReport, console: Console) -> None:
    for p in report.problems:
        console.print(Text(f"FAIL  {p.check:15s} {p.reason}", style="red"))
    for w in report.warnings:
        console.print(Text(f"WARN  {w.check:15s} {w.reason}", style="yellow"))
    console.print(
        Text("healthy" if report.ok else "UNHEALTHY", style="green" if report.ok else "bold red")
    )


@show.register
def _crontab(result: Crontab, console: Console) -> None:
    if result.written:
        timers = " ".join(f["name"] for f in result.files if f["name"].endswith(".timer"))
        _write(console, "".join(f"wrote {path}\n" for path in result.written))
        _write(console, f"then: systemctl daemon-reload && systemctl enable --now {timers}\n")
    elif result.files:  # each unit under a comment naming its file
        _write(console, "\n".join(f"# {f['name']}\n{f['content']}" for f in result.files))
    else:
        _write(console, "\n".join(result.lines) + "\n")


@show.register
def _metrics(result: Metrics, console: Console) -> None:
    _write(console, result.text)


def _write(console: Console, text: str) -> None:
    """Verbatim, for output meant for other programs (crontab lines, Prometheus text)."""
    console.file.write(text)
