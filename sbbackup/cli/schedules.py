"""Schedule commands: run-schedule, schedules, prune, next, statistics, metrics, health, crontab.

Each command imports ``ops.schedules`` or ``ops.monitoring`` itself: they load croniter, which
would cost every other command (``create`` among them) startup time for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import DEFAULT_MIN_FREE
from ..errors import ExitCode, UsageError
from .base import (
    SizeParam,
    cli,
    command,
    get_ctx,
    json_option,
    raise_for_report,
    stderr_console,
)

if TYPE_CHECKING:
    from rich.text import Text

    from ..render import render
    from ..results import RunOutcome
else:  # loaded on first use: --help needs none of them (see _lazy)
    from ._lazy import RunOutcome, Text, render


def _parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def now_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A hidden testing aid: pretend the clock says this ISO 8601 time (naive = UTC)."""
    return click.option("--now", "now", hidden=True, help="Testing aid: the current time.")(fn)


# --- run-schedule ------------------------------------------------------------------------


@command(cli, "run-schedule")
@click.argument("schedule_id")
@click.option("--verbose", "-v", is_flag=True, help="Describe the backup and retention.")
@json_option
@now_option
def run_schedule_cmd(schedule_id: str, verbose: bool, as_json: bool, now: str | None) -> None:
    """Back up with a schedule's settings, re-verify, then apply its retention (for cron).

    Retention covers this schedule's backups and the manual and drill (`test`) backups.
    Quiet on success unless --verbose or --json, but for a warning on stderr (at most once
    a day) when cron runs the schedule in another zone than its own. A second run of the
    same schedule exits 11 at once; a failed backup never prunes anything.
    """
    from ..ops import schedules

    result = schedules.run_schedule(get_ctx(), schedule_id, _parse_now(now))
    for warning in result.warnings:  # even on a quiet success: cron mails it (once a day)
        stderr_console().print(Text(f"sbbackup: warning: {warning}"))
    if result.status == RunOutcome.SKIPPED and not as_json:
        stderr_console().print(Text(f"sbbackup: {result.reason}; nothing to do"))
    elif as_json or verbose:
        render(result, as_json)


# --- schedules ---------------------------------------------------------------------------


@cli.group("schedules", invoke_without_command=True, context_settings={"max_content_width": 100})
@json_option
@now_option
@click.pass_context
def schedules_group(click_ctx: click.Context, as_json: bool, now: str | None) -> None:
    """List schedules (as `schedules list`), or change them at run time (saved in
    schedules.toml in the backup path).

    Runtime changes win over the YAML file and the DB_BACKUP_{DAILY,WEEKLY,MONTHLY}_*
    variables; the YAML file is never rewritten.
    """
    if click_ctx.invoked_subcommand is None:
        from ..ops import schedules

        render(schedules.list_schedules(get_ctx(), _parse_now(now)), as_json)
    elif as_json or now:
        raise UsageError(
            f"put --json/--now after the subcommand: schedules {click_ctx.invoked_subcommand} "
            "--json"
        )


@command(schedules_group, "list")
@json_option
@now_option
def schedules_list_cmd(as_json: bool, now: str | None) -> None:
    """Every schedule: settings, last run, last success, next run, backup count and size."""
    from ..ops import schedules

    render(schedules.list_schedules(get_ctx(), _parse_now(now)), as_json)


@command(schedules_group, "show")
@click.argument("schedule_id")
@json_option
@now_option
def schedules_show_cmd(schedule_id: str, as_json: bool, now: str | None) -> None:
    """One schedule, with its last run, last success, next run, count and size."""
    from ..ops import schedules

    render(schedules.show_schedule(get_ctx(), schedule_id, _parse_now(now)), as_json)


def schedule_fields(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--cron", help="Five-field cron expression, e.g. '0 2 * * *'."),
        click.option("--timezone", help="IANA zone (e.g. Europe/Berlin) or 'local'."),
        click.option("--retention-days", type=click.IntRange(1), help="Keep backups this long."),
        click.option("--min-keep", type=click.IntRange(1), help="Always keep this many (1)."),
        click.option("--compress/--no-compress", default=None, help="zstd compression."),
        click.option("--encrypt/--no-encrypt", default=None, help="age encryption."),
        click.option("--format", "fmt", type=click.Choice(["plain", "custom"])),
        click.option("--description", help="Free text shown in listings and the crontab."),
        click.option("--enabled/--disabled", default=None, help="Run it or not."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fields(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        "cron": kw["cron"],
        "timezone": kw["timezone"],
        "retentionDays": kw["retention_days"],
        "minKeep": kw["min_keep"],
        "compression": kw["compress"],
        "encryption": kw["encrypt"],
        "format": kw["fmt"],
        "description": kw["description"],
        "enabled": kw["enabled"],
    }


@command(schedules_group, "add")
@click.argument("schedule_id")
@schedule_fields
@json_option
def schedules_add_cmd(schedule_id: str, as_json: bool, **kw: Any) -> None:
    """Add a schedule (needs --cron and --retention-days). Exit 2 on an invalid cron."""
    from ..ops import schedules

    render(schedules.edit_schedule(get_ctx(), schedule_id, "add", _fields(kw)), as_json)


@command(schedules_group, "update")
@click.argument("schedule_id")
@schedule_fields
@json_option
def schedules_update_cmd(schedule_id: str, as_json: bool, **kw: Any) -> None:
    """Change some settings of a schedule. Exit 10 for an unknown ID."""
    from ..ops import schedules

    render(schedules.edit_schedule(get_ctx(), schedule_id, "update", _fields(kw)), as_json)


def _simple(action: str, doc: str) -> None:
    def cmd(schedule_id: str, as_json: bool) -> None:
        from ..ops import schedules

        render(schedules.edit_schedule(get_ctx(), schedule_id, action), as_json)

    cmd.__doc__ = doc
    command(schedules_group, action)(click.argument("schedule_id")(json_option(cmd)))


_simple("remove", "Remove a schedule (its backups stay; prune ages them as manual ones).")
_simple("enable", "Enable a schedule.")
_simple("disable", "Disable a schedule: run-schedule exits 0 without a backup.")


# --- prune / next / statistics / metrics / health / crontab ------------------------------


@command(cli, "prune")
@click.option("--schedule", "schedule_id", help="Only this schedule's backups.")
@click.option("--dry-run", "-n", is_flag=True, help="Show the plan; delete nothing.")
@click.option("--verbose", "-v", is_flag=True, help="Show what was kept and removed, and why.")
@json_option
@now_option
def prune_cmd(
    schedule_id: str | None, dry_run: bool, verbose: bool, as_json: bool, now: str | None
) -> None:
    """Apply retention: keep or remove every backup, with the reason for each. Quiet on
    success (cron mails nothing) unless --verbose, --dry-run or --json."""
    from ..ops import schedules

    result = schedules.prune(get_ctx(), schedule_id, dry_run, _parse_now(now))
    if verbose or dry_run or as_json:
        render(result, as_json)


@command(cli, "next")
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True)
@json_option
@now_option
def next_cmd(count: int, as_json: bool, now: str | None) -> None:
    """When each enabled schedule fires next, soonest first (local and UTC times)."""
    from ..ops import schedules

    render(schedules.next_fires(get_ctx(), count, _parse_now(now)), as_json)


@command(cli, "statistics")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "prometheus"]),
    default="table",
    help="prometheus: text exposition for node_exporter's textfile collector.",
)
@json_option
@now_option
def statistics_cmd(fmt: str, as_json: bool, now: str | None) -> None:
    """Counts, success rates, durations, sizes, last successes, overdue schedules, disk."""
    from ..ops import monitoring

    if fmt == "prometheus":
        render(monitoring.get_metrics(get_ctx(), _parse_now(now)), as_json)
    else:
        render(monitoring.get_statistics(get_ctx(), _parse_now(now)), as_json or fmt == "json")


@command(cli, "metrics")
@json_option
@now_option
def metrics_cmd(as_json: bool, now: str | None) -> None:
    """Prometheus text exposition (same as statistics --format prometheus): last success,
    duration, size, last verified (restore drill) per schedule, backups by status.

    For node_exporter: sbbackup metrics > dir/sbbackup.prom.$$ && mv dir/sbbackup.prom.$$
    dir/sbbackup.prom
    """
    from ..ops import monitoring

    render(monitoring.get_metrics(get_ctx(), _parse_now(now)), as_json)


@command(cli, "health")
@click.option(
    "--min-free",
    type=SizeParam(),
    default=DEFAULT_MIN_FREE,
    show_default=True,
    help="Space that must stay free in the backup path: bytes, or 10G, 500M, 2T (binary).",
)
@click.option("--restore-test-days", type=click.IntRange(1), help="Warn without a recent drill.")
@json_option
@now_option
def health_cmd(
    min_free: int, restore_test_days: int | None, as_json: bool, now: str | None
) -> None:
    """A monitoring check: exit 0 when healthy, 14 with the reasons when an enabled schedule
    is overdue, its newest run failed (failed closed included) or its newest backup is
    missing, corrupt, orphaned or abandoned, the backup path is unusable, or free space is
    below --min-free. Backups switched off (DB_BACKUP_ENABLED=false) only warn."""
    from ..ops import monitoring

    report = monitoring.get_health(get_ctx(), _parse_now(now), min_free, restore_test_days)
    render(report, as_json)
    raise_for_report(
        report.ok,
        int(ExitCode.UNHEALTHY),
        "unhealthy: " + "; ".join(p.reason for p in report.problems),
    )


@command(cli, "crontab")
@click.option(
    "--cron",
    "cron",
    type=click.Choice(["debian", "cronie", "systemd"]),
    help="What runs the schedules (default: detected). debian: Debian's and Ubuntu's cron, "
    "which ignores CRON_TZ, so other zones' times are converted to this machine's zone for "
    "the current DST period, with a comment saying until when (rerun after a DST change). "
    "cronie: CRON_TZ=ZONE before the lines. systemd: a .service and a .timer per schedule, "
    "OnCalendar= in the schedule's zone. Detection: /usr/sbin/crond (not busybox) is "
    "cronie; Debian is debian unless dpkg has cronie installed; anything else debian.",
)
@click.option("--executable", help="sbbackup's absolute path in the lines (default: this one).")
@click.option("--config-path", help="Config file named in the lines (default: --config's).")
@click.option("--log", "log", help="Append output to this file instead of cron mail.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --cron systemd: write the units here (e.g. /etc/systemd/system), mode 0644.",
)
@now_option
@json_option
def crontab_cmd(
    cron: str | None,
    executable: str | None,
    config_path: str | None,
    log: str | None,
    output_dir: Path | None,
    now: str | None,
    as_json: bool,
) -> None:
    """Crontab lines for the enabled schedules: sbbackup crontab | crontab -
    (or systemd timers: sbbackup crontab --cron systemd --output-dir /etc/systemd/system)."""
    from ..ops import schedules

    ctx = get_ctx()
    render(
        schedules.get_crontab(ctx, executable, config_path, log, cron, output_dir, _parse_now(now)),
        as_json,
    )
