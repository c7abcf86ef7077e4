"""Click commands: build options, call one ops function, hand the result to render.

``main()`` is the only error boundary: known errors print one line and exit with their code.
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from . import __version__, ops
from .config import load_settings
from .errors import EXIT_CODE_HELP, ExitCode, IntegrityError, SbbackupError, UsageError
from .render import render, render_error

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)


def get_ctx() -> ops.Context:
    obj = click.get_current_context().find_root().obj
    if "ctx" not in obj:
        settings = load_settings(obj["config"], overrides=obj["overrides"])
        obj["ctx"] = ops.Context(settings)
    ctx: ops.Context = obj["ctx"]
    return ctx


def command(group: click.Group, name: str, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
    """A command whose help ends with the exit codes."""

    def deco(fn: Callable[..., Any]) -> Any:
        doc = (fn.__doc__ or "").rstrip() + "\n\n\b\n" + EXIT_CODE_HELP
        return group.command(name, help=doc, context_settings=CONTEXT, **kw)(fn)

    return deco


@click.group(
    context_settings=CONTEXT,
    help=f"""Logical PostgreSQL backups that cannot silently
lose data: checksummed, compressed, encrypted, atomic, restore-tested.

\b
{EXIT_CODE_HELP}""",
)
@click.version_option(__version__, prog_name="sbbackup")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="SBBACKUP_CONFIG",
    help="YAML configuration file (env SBBACKUP_CONFIG).",
)
@click.option(
    "--database-url",
    help="postgresql://... or sqlite:///path (env DATABASE_URL). "
    "Prefer DATABASE_URL or ~/.pgpass for passwords.",
)
@click.option("--backup-path", help="Where backups live (env DB_BACKUP_PATH).")
@click.pass_context
def cli(
    click_ctx: click.Context, config: str | None, database_url: str | None, backup_path: str | None
) -> None:
    click_ctx.obj = {
        "config": config,
        "overrides": {"database_url": database_url, "backup_path": backup_path},
    }


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
@click.option(
    "--status", type=click.Choice(["completed", "failed", "in_progress", "missing", "corrupt"])
)
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
@json_option
def verify_cmd(backup_id: str | None, all_: bool, deep: bool, as_json: bool) -> None:
    """Recompute checksums (and with --deep, read the whole dump). Exit 13 on any mismatch."""
    report = ops.verify_backups(get_ctx(), backup_id, all_, deep)
    render(report, as_json)
    if report.failed:
        first = report.failed[0]
        err = IntegrityError(
            f"{len(report.failed)} of {len(report.results)} backups failed "
            f"verification: {first.error}"
        )
        err.exit_code = ExitCode(first.exitCode or ExitCode.INTEGRITY)
        raise err


@command(cli, "restore")
@click.argument("backup_id")
@click.option("--target-url", help="Restore here instead of the source database.")
@click.option("--create-target", is_flag=True, help="Create the target database first.")
@click.option("--clean", is_flag=True, help="Drop and recreate the target database first.")
@click.option("--jobs", type=click.IntRange(1, 64), help="pg_restore --jobs for custom format.")
@click.option("--yes", "-y", is_flag=True, help="Confirm restoring over the source database.")
@json_option
def restore_cmd(
    backup_id: str,
    target_url: str | None,
    create_target: bool,
    clean: bool,
    jobs: int | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Verify, prepare, restore, validate and clean up (the five restore steps)."""
    ctx = get_ctx()
    if not yes and ctx.engine.is_source(target_url) and sys.stdin.isatty():
        yes = click.confirm(
            f"Restore {backup_id} over the source database {ctx.engine.redact(None)}?", err=True
        )
    opts = ops.RestoreOptions(backup_id, target_url, create_target, clean, yes, jobs)
    render(ops.restore_backup(ctx, opts), as_json)


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


# --- plumbing ----------------------------------------------------------------------------


class progress_display:
    """rich progress on a TTY (bytes dumped, rate, elapsed); nothing otherwise."""

    def __init__(self) -> None:
        self.progress: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not sys.stderr.isatty():
            return None
        from rich.progress import (
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            "dumping",
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=stderr_console(),
            transient=True,
        )
        self.progress.start()
        task = self.progress.add_task("dump", total=None)
        return functools.partial(self._update, task)

    def _update(self, task: Any, done: int) -> None:
        self.progress.update(task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point and the only place that turns errors into exit codes."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    signal.signal(signal.SIGTERM, _sigterm)
    err = stderr_console()
    try:
        cli.main(args=args, prog_name="sbbackup", standalone_mode=False)
    except SbbackupError as exc:
        render_error(exc.message, exc.to_json() if as_json else None, err)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        render_error("interrupted", None, err)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        render_error(
            exc.format_message(),
            {"error": {"code": 2, "kind": "usage", "message": exc.format_message()}}
            if as_json
            else None,
            err,
        )
        sys.exit(int(ExitCode.USAGE))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        render_error(
            "interrupted",
            {"error": {"code": 130, "kind": "interrupted", "message": "interrupted"}}
            if as_json
            else None,
            err,
        )
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        sys.exit(0)
    except Exception:  # noqa: BLE001 - the unexpected-error boundary
        traceback.print_exc()
        err.print(
            "sbbackup: unexpected error: please report it at "
            "https://github.com/streambuddy/sbbackup/issues with the traceback above"
        )
        sys.exit(int(ExitCode.UNEXPECTED))
