"""Backup commands: create, list, show, verify, restore, delete, keygen, test."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

import click

from ..errors import ExitCode, UsageError, error_for_code
from ..model import Status
from .base import cli, command, get_ctx, json_option, progress_display, read_meter

if TYPE_CHECKING:
    from .. import ops
    from ..render import render
else:  # loaded on first use: --help needs neither (see _lazy)
    from ._lazy import ops, render

# --- backups -----------------------------------------------------------------------------


@command(cli, "create")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["plain", "custom"]),
    help="plain SQL (default) or pg_dump's custom format.",
)
@click.option("--compress/--no-compress", default=None, help="zstd compression (default on).")
@click.option("--level", type=click.IntRange(1, 22), help="zstd level (default 3).")
@click.option("--encrypt/--no-encrypt", default=None, help="age encryption (default off).")
@json_option
def create_cmd(
    fmt: str | None, compress: bool | None, level: int | None, encrypt: bool | None, as_json: bool
) -> None:
    """Take a backup now and print its record."""
    ctx = get_ctx()
    opts = ops.CreateOptions(format=fmt, compress=compress, level=level, encrypt=encrypt)
    with progress_display() as progress:
        record = ops.create_backup(ctx, opts, progress=progress)
    render(record, as_json)


@command(cli, "list")
@click.option("--status", type=click.Choice([s.value for s in Status]))
@click.option("--schedule", "schedule", help="Only this schedule ID.")
@click.option("--limit", type=click.IntRange(1))
@json_option
def list_cmd(status: str | None, schedule: str | None, limit: int | None, as_json: bool) -> None:
    """List backups, newest first."""
    render(ops.list_backups(get_ctx(), status, schedule, limit), as_json)


@command(cli, "show")
@click.argument("backup_id")
@json_option
def show_cmd(backup_id: str, as_json: bool) -> None:
    """Show one backup's record."""
    render(ops.show_backup(get_ctx(), backup_id), as_json)


@command(cli, "verify")
@click.argument("backup_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every backup.")
@click.option("--deep", is_flag=True, help="Also decrypt, decompress and check the dump.")
@click.option(
    "--restore",
    is_flag=True,
    help="With --deep: also restore into a scratch database and compare exact row counts.",
)
@click.option("--target-url", help="With --restore: server for the scratch database.")
@json_option
def verify_cmd(
    backup_id: str | None,
    all_: bool,
    deep: bool,
    restore: bool,
    target_url: str | None,
    as_json: bool,
) -> None:
    """Recompute checksums (and with --deep, read the whole dump; with --deep --restore, restore
    it into a scratch database and compare it exactly). Exit 13 on any mismatch."""
    if (restore and not deep) or (target_url and not restore):
        raise UsageError("--restore needs --deep, and --target-url needs --restore")
    ctx = get_ctx()
    with read_meter() as ctx.meter:
        if restore:
            from ..ops.selftest import verify_with_restore

            report = verify_with_restore(ctx, backup_id, all_, target_url)
        else:
            report = ops.verify_backups(ctx, backup_id, all_, deep)
    render(report, as_json)
    if report.failed:
        first = report.failed[0]
        raise error_for_code(
            first.exitCode or int(ExitCode.INTEGRITY),
            f"{len(report.failed)} of {len(report.results)} backups failed "
            f"verification: {first.error}",
        )


@command(cli, "restore")
@click.argument("backup_id")
@click.option("--target-url", help="Restore here instead of the source database.")
@click.option("--create-target", is_flag=True, help="Create the target database if missing.")
@click.option(
    "--clean",
    is_flag=True,
    help="Replace an existing target (its sessions are terminated at the swap).",
)
@click.option(
    "--into-existing",
    is_flag=True,
    help="Load straight into an existing non-empty target (not atomic).",
)
@click.option("--no-owner", is_flag=True, help="Do not restore owners (pg_restore --no-owner).")
@click.option("--no-privileges", is_flag=True, help="Do not restore GRANT/REVOKE (pg_restore -x).")
@click.option("--role", help="SET ROLE to this role before loading (pg_restore --role).")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="pg_restore --jobs: unencrypted custom format only.",
)
@click.option("--yes", "-y", is_flag=True, help="Confirm restoring over the source database.")
@click.option(
    "--no-database-properties",
    "no_properties",
    is_flag=True,
    help="Do not re-apply the database's settings, comment and ACL (encoding and locale stay).",
)
@json_option
def restore_cmd(
    backup_id: str,
    target_url: str | None,
    create_target: bool,
    clean: bool,
    into_existing: bool,
    no_owner: bool,
    no_privileges: bool,
    role: str | None,
    jobs: int | None,
    yes: bool,
    no_properties: bool,
    as_json: bool,
) -> None:
    """Verify, load into a staging database, validate it, then swap it in as the target."""
    opts = ops.RestoreOptions(
        backup_id,
        target_url,
        create_target,
        clean,
        yes,
        jobs,
        into_existing=into_existing,
        no_owner=no_owner,
        no_privileges=no_privileges,
        role=role,
        database_properties=not no_properties,
    )
    ctx = get_ctx()
    if not yes and sys.stdin.isatty():
        target = ctx.engine.resolve_target(target_url)
        if target.is_source:
            yes = click.confirm(
                f"Restore {backup_id} over the source database {target.display}?", err=True
            )
            opts = dataclasses.replace(opts, confirmed=yes)
    if into_existing:
        click.echo(
            "warning: --into-existing loads straight into the target: not atomic (a failure "
            "can leave part of the backup loaded)",
            err=True,
        )
    with read_meter() as ctx.meter:
        rec = ops.restore_backup(ctx, opts)
    render(rec, as_json)


@command(cli, "delete")
@click.argument("backup_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
def delete_cmd(backup_id: str, yes: bool, as_json: bool) -> None:
    """Delete a backup's data file, then its manifest."""
    ctx = get_ctx()
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"deleting {backup_id} needs --yes when there is no terminal")
        if not click.confirm(f"Delete backup {backup_id}?", err=True):
            raise UsageError("not confirmed")
    render(ops.delete_backup(ctx, backup_id), as_json)
