"""`sbbackup test`: preflight checks and a restore drill."""

from __future__ import annotations

import click

from ..render import render
from .base import cli, command, get_ctx, json_option, raise_for_report


@command(cli, "test")
@click.option("--backup", "backup_id", help="Drill this existing backup instead of a new one.")
@click.option("--latest", is_flag=True, help="Drill the newest completed backup.")
@click.option("--target-url", help="Server for the scratch database (default: the source's).")
@click.option("--no-drill", is_flag=True, help="Preflight checks only.")
@json_option
def test_cmd(
    backup_id: str | None, latest: bool, target_url: str | None, no_drill: bool, as_json: bool
) -> None:
    """Preflight checks, then a restore drill into a scratch database with exact comparison."""
    from ..selftest import TestOptions, run_self_test

    opts = TestOptions(
        drill=not no_drill, backup_id=backup_id, latest=latest, target_url=target_url
    )
    report = run_self_test(get_ctx(), opts)
    render(report, as_json)
    raise_for_report(report.ok, report.exit_code, "self test failed")
