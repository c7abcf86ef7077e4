"""Click commands: build options, call one ops function, hand the result to render.

``main()`` is the only error boundary: known errors print one line and exit with their code.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import (
    EXIT_CODE_HELP,
    ExitCode,
    SbbackupError,
    error_for_code,
    error_json,
    from_interrupt,
)

if TYPE_CHECKING:  # rich, the use cases and the renderer cost --help tens of milliseconds
    from rich.console import Console

    from .. import ops
    from ..pipeline import Meter
    from ..render import render_error
else:
    from ._lazy import ops, render_error

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """``10G``, ``100T``, ``512MiB``, ``1.5g`` or plain bytes: binary units (1K = 1024 bytes),
    as every size sbbackup prints. ValueError for anything else."""
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G, T or P)")
    return int(float(m.group(1)) * 1024 ** _SIZE_POWERS[m.group(2).lower()])


class SizeParam(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def get_ctx() -> ops.Context:
    obj = click.get_current_context().find_root().obj
    if "ctx" not in obj:
        # A command at work: the use cases and the renderer load now, single-threaded, as
        # they did at start-up before --help was made lazy, never later beside a worker
        # thread's imports (an import racing another can get a half-initialised module).
        from .. import ops as _ops  # noqa: F401
        from .. import render as _render  # noqa: F401
        from ..config import load_settings

        settings = load_settings(obj["config"], overrides=obj["overrides"])
        for warning in settings.warnings:  # one line each, not an error
            stderr_console().print(warning, markup=False)
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


def raise_for_report(ok: bool, code: int, message: str) -> None:
    """A report was printed; now exit with the code of its first failure."""
    if ok:
        return
    raise error_for_code(code, message)


# --- plumbing ----------------------------------------------------------------------------


def _binary_speed() -> Any:
    """A rate column in MiB/s (rich's own says MB/s), the unit of every size sbbackup shows."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    from ..render import human_size

    class BinarySpeed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(
                "?" if speed is None else f"{human_size(int(speed))}/s", "progress.data.speed"
            )

    return BinarySpeed()


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
        )

        self.progress = Progress(
            SpinnerColumn(),
            "dumping",
            DownloadColumn(binary_units=True),
            _binary_speed(),
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


class read_meter:
    """On a TTY, a rich display with one bar per file read (bytes of its stored size, rate,
    elapsed, time left); off a TTY None, and nothing is printed."""

    def __init__(self) -> None:
        self.progress: Any = None

    def __enter__(self) -> Meter | None:
        if not sys.stderr.isatty():
            return None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _binary_speed(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
        )
        self.progress.start()
        return self._start

    def _start(self, label: str, total: int | None) -> Callable[[int], None]:
        task = self.progress.add_task(label, total=total)
        last = [0.0]

        def update(done: int) -> None:  # a few times a second is enough for the eye
            now = time.monotonic()
            if now - last[0] >= 0.1 or done == total:
                last[0] = now
                self.progress.update(task, completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _interrupted(as_json: bool) -> NoReturn:
    payload = error_json(int(ExitCode.INTERRUPTED), "interrupted", "interrupted")
    render_error("interrupted", payload if as_json else None)
    sys.exit(int(ExitCode.INTERRUPTED))


def main(argv: list[str] | None = None) -> None:
    """Entry point and the only place that turns errors into exit codes."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    signal.signal(signal.SIGTERM, _sigterm)
    if not args:  # bare `sbbackup` asks what there is: help on stdout, exit 0
        with click.Context(cli, info_name="sbbackup") as help_ctx:
            click.echo(cli.get_help(help_ctx))
        sys.exit(0)
    try:
        # Not ``cli.main``: click would turn an interrupt into a blank line and an Abort
        # before this boundary could give it its one line (and its JSON under --json).
        with cli.make_context("sbbackup", list(args)) as click_ctx:
            cli.invoke(click_ctx)
    except SbbackupError as exc:
        render_error(exc.message, exc.to_json() if as_json else None)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:  # click's word for a KeyboardInterrupt inside a command
        _interrupted(as_json)
    except click.ClickException as exc:
        render_error(
            exc.format_message(),
            error_json(int(ExitCode.USAGE), "usage", exc.format_message()) if as_json else None,
        )
        sys.exit(int(ExitCode.USAGE))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted(as_json)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the unexpected-error boundary
        if from_interrupt(exc):  # a signal during a lazy import, wrapped by Python 3.11
            _interrupted(as_json)
        traceback.print_exc()
        sys.stderr.write(
            "sbbackup: unexpected error: please report it at "
            "https://github.com/streambuddy/sbbackup/issues with the traceback above\n"
        )
        if as_json:
            payload = error_json(int(ExitCode.UNEXPECTED), "unexpected", f"unexpected error: {exc}")
            sys.stderr.write(json.dumps(payload) + "\n")
        sys.exit(int(ExitCode.UNEXPECTED))
