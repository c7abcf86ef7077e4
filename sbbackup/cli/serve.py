"""`sbbackup serve`: the REST API (sbbackup.api) on a loopback port by default."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import click

from .base import cli, command, get_ctx, stderr_console


@command(cli, "serve")
@click.option("--host", help="Address to listen on (default 127.0.0.1; YAML api.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8080; YAML api.port).")
@click.option(
    "--public-health/--no-public-health",
    default=None,
    help="Open /api/health and /metrics without a token (YAML api.publicHealth).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="On SIGTERM, seconds running backups get to finish before they are interrupted.",
)
@click.option("--generate-token", is_flag=True, help="Print a new random API token and exit.")
def serve_cmd(
    host: str | None,
    port: int | None,
    public_health: bool | None,
    grace: float,
    generate_token: bool,
) -> None:
    """Serve the REST API: backups, restores, schedules, health, metrics and
    /api/openapi.json.

    \b
    Every request needs `Authorization: Bearer TOKEN`. The token comes from the file named by
    SBBACKUP_API_TOKEN_FILE (lines `TOKEN` or `LABEL TOKEN`; mode 0600, or the server refuses
    to start) or from SBBACKUP_API_TOKEN, never from the command line. Make one with:
      (umask 077; sbbackup serve --generate-token > ~/.config/sbbackup/api-token)
    The server refuses to start without a token. SIGTERM stops it gracefully.

    \b
    Clients never send a URL or a path: a restore goes to a new database named on the source's
    server (targetDatabase), to a target declared in api.restoreTargets (target), or, for
    SQLite, to a new file in api.restoreDir (targetFile). A client cannot turn encryption or
    compression off where the configuration has it on (api.allowWeakerBackups allows it), and
    running jobs are capped (api.maxBackupJobs, api.maxRestoreJobs, api.maxTestJobs; 429).
    """
    # Lazy: every other command would otherwise load http.server and the API's modules.
    from .. import api

    if generate_token:
        click.echo(api.generate_token())
        return
    ctx = get_ctx()
    s = ctx.settings
    host = host or s.api_host
    port = s.api_port if port is None else port
    public = s.api_public_health if public_health is None else public_health
    err = stderr_console()
    server = api.make_server(
        s,
        host,
        port,
        api.load_tokens(os.environ),
        public,
        # Plain lines: rich would turn ":name:" in a request path into an emoji.
        log=lambda line: click.echo(line, err=True),
    )
    bound_port = server.server_address[1]

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Before the "listening" line: a supervisor that reads it may send SIGTERM at once.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    err.print(f"sbbackup serve: listening on http://{host}:{bound_port}", markup=False)
    interrupted = api.serve(server, grace)
    for job in interrupted:
        err.print(f"sbbackup serve: interrupted {job.kind} {job.id}", markup=False)
    err.print("sbbackup serve: stopped", markup=False)
