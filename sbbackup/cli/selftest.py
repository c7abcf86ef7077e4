"""`sbbackup test`: preflight checks and a restore drill."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..errors import ConfigError
from .base import cli, command, get_ctx, json_option, raise_for_report, read_meter

if TYPE_CHECKING:
    from ..render import render
else:
    from ._lazy import render  # loaded on first use: --help needs no renderer


@command(cli, "test")
@click.option("--backup", "backup_id", help="Drill this existing backup instead of a new one.")
@click.option("--latest", is_flag=True, help="Drill the newest completed backup.")
@click.option(
    "--target-url", help="Server for the scratch database (default: the source's server)."
)
@click.option("--no-drill", is_flag=True, help="Preflight checks only.")
@click.option(
    "--no-keep",
    is_flag=True,
    help="Delete the drill's own backup once the drill passed (a failed one is kept).",
)
@json_option
def test_cmd(
    backup_id: str | None,
    latest: bool,
    target_url: str | None,
    no_drill: bool,
    no_keep: bool,
    as_json: bool,
) -> None:
    """Preflight checks, then a restore drill: back up (or take --backup/--latest), verify,
    restore into a scratch database sbbackup_test_<id>, compare exact row and object counts
    with the backup's manifest, and drop the scratch database. Exit 0 only if all passed.

    The drill's own backup is tagged scheduleId "test" and kept for
    DB_BACKUP_TEST_RETENTION_DAYS (1) unless --no-keep."""
    from ..ops.selftest import TestOptions, config_failure, run_self_test

    if backup_id and latest:
        raise click.UsageError("give --backup ID or --latest, not both")
    opts = TestOptions(
        drill=not no_drill,
        backup_id=backup_id,
        latest=latest,
        target_url=target_url,
        keep=not no_keep,
    )
    try:
        ctx = get_ctx()
    except ConfigError as exc:  # still a report: CI reads the checks array
        report = config_failure(exc)
    else:
        with read_meter() as ctx.meter:  # the drill's restore and deep verify, on a TTY
            report = run_self_test(ctx, opts)
    render(report, as_json)
    raise_for_report(report.ok, report.exit_code, "self test failed")
