"""`sbbackup serve`: the API in-process on port 0, driven with urllib, against real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers.api_server import TOKEN, Client, api_servers, url_of
from helpers.pgcluster import Cluster

from sbbackup import api
from sbbackup.config import load_settings
from sbbackup.errors import ConfigError

OTHER = "wrong-token-0123456789abcdef"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """Start servers for a database URL; each one is shut down (and drained) afterwards."""
    with api_servers() as start:

        def serve_url(
            database_url: str,
            public_health: bool = False,
            grace: float = 30,
            log: Callable[[str], None] = lambda _: None,
        ) -> Client:
            env = {**os.environ, "DATABASE_URL": database_url}
            env["DB_BACKUP_PATH"] = str(tmp_path / "backups")
            env.pop("SBBACKUP_STATE_DIR", None)
            settings = load_settings(env=env)
            server = start(settings, public_health=public_health, grace=grace, log=log)
            return Client(url_of(server), tmp_path / "backups", env, server)

        yield serve_url


@pytest.fixture(scope="module")
def big_db(pg: Cluster) -> Iterator[str]:
    """A database whose dump takes a couple of seconds, to have backups running concurrently."""
    name = "api_big"
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS h, md5((g * 7)::text) AS k "
        "FROM generate_series(1, 1500000) g",
        db=name,
    )
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def small_table(pg: Cluster, db: str, rows: int = 500) -> None:
    pg.psql(
        "CREATE TABLE public.items AS SELECT g AS id, 'x' || g AS v "
        f"FROM generate_series(1, {rows}) g",
        db=db,
    )


def audit_lines(client: Client) -> list[dict[str, Any]]:
    text = (client.backup_path / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


# --- backups and restores ----------------------------------------------------------------


def test_backup_restore_delete_end_to_end(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    small_table(pg, fresh_db, 700)
    c = serve(pg.url(fresh_db))
    started = c.call("POST", "/api/backup")
    assert started.status == 202, started
    backup_id = started.body["id"]
    assert started.body["status"] == "in_progress"
    assert started.headers["Location"] == f"/api/backup/{backup_id}"
    done = c.poll(started.headers["Location"], lambda b: b["status"] != "in_progress")
    assert done["status"] == "completed", done
    assert done["contents"]["tables"]["public.items"] == 700
    assert done["checksum"] and done["size"] > 0
    assert (c.backup_path / done["filename"]).is_file()

    waited = c.call("POST", "/api/backup?wait=true", {"format": "custom", "level": 5})
    assert waited.status == 201 and waited.body["status"] == "completed", waited
    assert waited.body["format"] == "custom"
    listed = c.call("GET", "/api/backup")
    assert [b["id"] for b in listed.body] == [waited.body["id"], backup_id]
    assert len(c.call("GET", "/api/backup?limit=1").body) == 1
    assert c.call("GET", "/api/backup?status=failed").body == []
    assert c.call("GET", "/api/backup?status=bogus").status == 400
    assert c.call("GET", "/api/backup?limit=0").status == 400
    assert c.call("GET", "/api/backup?nope=1").status == 400

    # Restore into a new database on the source's server, polled through the restore record.
    target = f"{fresh_db}_r"
    started = c.call("POST", f"/api/backup/{backup_id}/restore", {"targetDatabase": target})
    assert started.status == 202, started
    restore_id = started.body["restoreId"]
    assert started.headers["Location"] == f"/api/backup/restore/{restore_id}"
    rec = c.poll(started.headers["Location"], lambda b: b["status"] != "in_progress")
    try:
        assert rec["status"] == "completed", rec
        assert set(rec["steps"]) == {"verify", "restore", "validate"}
        assert rec["validation"]["differences"] == []
        assert pg.psql("SELECT count(*) FROM public.items", db=target) == "700"
        assert "s3cr3t" not in json.dumps(rec)  # the target URL is redacted
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", check=False)

    # A restore names its target; over the source it is off unless the configuration allows it.
    refused = c.call("POST", f"/api/backup/{backup_id}/restore", {})
    assert refused.status == 400 and "targetDatabase" in refused.error["message"]
    refused = c.call(
        "POST", f"/api/backup/{backup_id}/restore", {"targetDatabase": fresh_db, "confirm": True}
    )
    assert refused.status == 403 and "allowRestoreOverSource" in refused.error["message"]
    missing = "streambuddy_backup_2001-01-01T00-00-00-000Z"
    assert (
        c.call("POST", f"/api/backup/{missing}/restore", {"targetDatabase": "x_new"}).status == 404
    )
    assert c.call("GET", "/api/backup/restore/restore_2001-01-01T00-00-00Z_abcdef").status == 404

    deleted = c.call("DELETE", f"/api/backup/{backup_id}")
    assert deleted.status == 200 and deleted.body["id"] == backup_id
    assert c.call("GET", f"/api/backup/{backup_id}").status == 404
    assert c.call("DELETE", f"/api/backup/{backup_id}").status == 404

    lines = audit_lines(c)
    api_lines = [x for x in lines if x["operation"].startswith("api:")]
    assert {"api:createBackup", "api:restoreBackup", "api:deleteBackup"} <= {
        x["operation"] for x in api_lines
    }
    for line in api_lines:
        assert line["remote"] == "127.0.0.1" and line["token"] == "ci"
        assert {"time", "operation", "id", "result"} <= set(line)
    delete_op = next(x for x in lines if x["operation"] == "delete")
    assert delete_op["token"] == "ci" and delete_op["remote"] == "127.0.0.1"
    assert TOKEN not in (c.backup_path / "audit.log").read_text()


def test_records_are_the_clis_json(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    """The API answers with the very records `list --json` and `show --json` print."""
    small_table(pg, fresh_db, 50)
    c = serve(pg.url(fresh_db))
    created = c.call("POST", "/api/backup?wait=true", {"format": "custom"})
    assert created.status == 201, created

    def cli(*args: str) -> Any:
        res = subprocess.run(
            [sys.executable, "-m", "sbbackup", *args, "--json"],
            env=c.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    assert c.call("GET", f"/api/backup/{created.body['id']}").body == created.body
    assert cli("show", created.body["id"]) == created.body
    assert cli("list") == c.call("GET", "/api/backup").body == [created.body]


def test_self_test_async_with_status_url(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    small_table(pg, fresh_db)
    c = serve(pg.url(fresh_db))
    started = c.call("POST", "/api/backup/test", {})
    assert started.status == 202, started
    location = started.headers["Location"]
    assert location == started.body["statusUrl"] and location.startswith("/api/backup/test/test_")
    job = c.poll(location, lambda b: b["status"] != "in_progress", timeout=90)
    assert job["status"] == "completed", job
    report = job["result"]
    assert report["ok"] is True and report["drill"]["status"] == "passed", report
    waited = c.call("POST", "/api/backup/test?wait=true", {"drill": False})
    assert waited.status == 200 and waited.body["result"]["drill"]["status"] == "skipped"
    assert c.call("GET", "/api/backup/test/test_2001-01-01T00-00-00Z_abcdef").status == 404
    assert c.call("POST", "/api/backup/test", {"backupId": "../etc"}).status == 400


# --- auth --------------------------------------------------------------------------------


def test_auth_none_wrong_right(serve: Callable[..., Client], pg: Cluster, fresh_db: str) -> None:
    c = serve(pg.url(fresh_db))
    probes = [
        ("GET", "/api/backup"),
        ("GET", "/api/backup/streambuddy_backup_2001-01-01T00-00-00-000Z"),
        ("GET", "/api/no/such/thing"),
        ("POST", "/api/backup"),
        ("GET", "/api/health"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
    ]
    bodies = set()
    for method, path in probes:
        for headers in (
            {},
            {"Authorization": f"Bearer {OTHER}"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
        ):
            reply = c.call(method, path, token=None, headers=headers)
            assert reply.status == 401, (method, path, headers, reply)
            assert reply.headers["WWW-Authenticate"] == "Bearer"
            bodies.add(json.dumps(reply.body))
    assert len(bodies) == 1  # no hint of what exists
    assert c.call("GET", "/api/backup").status == 200
    assert c.call("GET", "/api/backup", token=TOKEN.upper()).status == 401
    assert c.call("GET", "/api/no/such/thing").status == 404
    # No backup was created by the refused POSTs.
    assert c.call("GET", "/api/backup").body == []


def test_public_health_opens_only_health_and_metrics(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    c = serve(pg.url(fresh_db), public_health=True)
    health = c.call("GET", "/api/health", token=None)
    assert health.status in (200, 503) and "ok" in health.body
    metrics = c.call("GET", "/metrics", token=None)
    assert metrics.status == 200 and "sbbackup_" in metrics.body
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert c.call("GET", "/api/backup", token=None).status == 401
    assert c.call("GET", "/api/openapi.json", token=None).status == 401


def test_a_token_in_the_url_is_never_logged(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    """Clients that put the token in the query string or the path (a common mistake) get no
    further for it, and the token appears in neither the server's log nor the audit log."""
    lines: list[str] = []
    c = serve(pg.url(fresh_db), log=lines.append)
    assert c.call("GET", f"/api/backup?access_token={TOKEN}", token=None).status == 401
    assert c.call("POST", f"/api/backup?{TOKEN}", token=None).status == 401
    reply = c.call("GET", f"/api/backup?limit=2&token={TOKEN}")
    assert reply.status == 400 and TOKEN not in json.dumps(reply.body)
    assert c.call("POST", f"/api/backup?wait=true&access_token={TOKEN}").status == 400
    assert c.call("DELETE", f"/api/backup/{TOKEN}").status == 400
    assert c.call("POST", f"/api/backup/schedules/x/run?limit={TOKEN}").status == 400
    log = "\n".join(lines)
    audit = (c.backup_path / "audit.log").read_text()
    assert TOKEN not in log and TOKEN not in audit
    assert "GET /api/backup?limit=2&token=*** " in log  # the request is still there
    paths = [x["path"] for x in audit_lines(c)]
    assert "/api/backup?wait=true&access_token=***" in paths and "/api/backup?***" in paths


def test_every_mutating_request_is_audited(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    """One audit line per POST/DELETE, refused ones included: time, remote address, token
    label, operation, ID and result."""
    c = serve(pg.url(fresh_db))
    mutating = [r for r in api.ROUTES if r.method not in ("GET", "HEAD")]
    for route in mutating:  # each one refused before it does anything
        path = re.sub(r"{\w+}", "BAD", route.template)
        assert c.call(route.method, path, {"nope": 1}).status == 400, route
    assert c.call("DELETE", "/api/backup/BAD", token=OTHER).status == 401
    lines = audit_lines(c)
    # A 401 is answered before routing: it names the method, not the operation.
    assert [x["operation"] for x in lines] == [f"api:{r.operation}" for r in mutating] + [
        "api:DELETE"
    ]
    for line, route in zip(lines, mutating, strict=False):
        assert line["result"] == "400" and line["method"] == route.method
        assert line["id"] == ("BAD" if "{" in route.template else None)
        assert line["remote"] == "127.0.0.1" and line["token"] == "ci" and line["time"]
    assert lines[-1]["result"] == "401" and lines[-1]["token"] is None
    assert c.call("GET", "/api/backup").body == []  # none of it started a backup


def test_serve_defaults_yaml_keys_and_flags(tmp_path: Path, pg: Cluster) -> None:
    """127.0.0.1:8080 by default; api.host, api.port and api.publicHealth from YAML, with the
    flag winning over the file."""
    defaults = load_settings(env={})
    assert (defaults.api_host, defaults.api_port, defaults.api_public_health) == (
        "127.0.0.1",
        8080,
        False,
    )
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  host: 127.0.0.1\n  port: 0\n  publicHealth: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBBACKUP_", "DB_BACKUP_"))}
    env.update(DATABASE_URL=pg.url(), DB_BACKUP_PATH=str(tmp_path / "b"))
    env["SBBACKUP_CONFIG"] = str(config)
    for flags, health_status in (((), (200, 503)), (("--no-public-health",), (401,))):
        proc, base = start_cli_server(env, *flags, port=None)
        try:
            assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
            client = Client(base, tmp_path / "b", env, None)  # type: ignore[arg-type]
            assert client.call("GET", "/api/health", token=None).status in health_status
            assert client.call("GET", "/api/backup", token=None).status == 401
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        assert proc.returncode == 0


def test_token_sources_and_refusals(tmp_path: Path, pg: Cluster) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(
        "# rotation\nadmin-ui  aaaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbb\n"
    )
    token_file.chmod(0o600)
    tokens = api.load_tokens(
        {"SBBACKUP_API_TOKEN_FILE": str(token_file), "SBBACKUP_API_TOKEN": TOKEN}
    )
    assert [t.label for t in tokens] == ["admin-ui", "file:3", "env"]
    assert "aaaa" not in repr(tokens)
    with pytest.raises(ConfigError, match="too short"):
        api.load_tokens({"SBBACKUP_API_TOKEN": "short"})
    settings = load_settings(env={"DATABASE_URL": pg.url(), "DB_BACKUP_PATH": str(tmp_path / "b")})
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without an API token"):
        api.make_server(settings, "0.0.0.0", 0, [])
    with pytest.raises(ConfigError, match="without an API token"):
        api.make_server(settings, "127.0.0.1", 0, [])

    env = {k: v for k, v in os.environ.items() if not k.startswith("SBBACKUP_API")}
    env.update(DATABASE_URL=pg.url(), DB_BACKUP_PATH=str(tmp_path / "b"))
    run = [sys.executable, "-m", "sbbackup", "serve"]
    res = subprocess.run(
        [*run, "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "refusing to serve on 0.0.0.0" in res.stderr
    res = subprocess.run(
        [*run, "--generate-token"], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and re.fullmatch(r"sbb_[A-Za-z0-9_-]{40,}\n", res.stdout)
    help_text = subprocess.run([*run, "--help"], env=env, capture_output=True, text=True).stdout
    assert "--token" not in help_text.replace("--generate-token", "")  # never from argv


# --- hostile input -----------------------------------------------------------------------


TRAVERSAL = [
    "/api/backup/..%2f..%2fetc%2fpasswd",
    "/api/backup/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/backup/%2e%2e",
    "/api/backup/%2Fetc%2Fpasswd",
    "/api/backup/streambuddy_backup_2001-01-01T00-00-00-000Z%00.json",
    "/api/backup/" + "a" * 5000,
    "/api/backup/streambuddy_backup_" + "9" * 3000,
    "/api/backup/%ff%fe",
    "/api/backup/restore/..%2f..%2fetc%2fpasswd",
    "/api/backup/restore/%2Ftmp%2Fx",
    "/api/backup/restore/restore_" + "1" * 4000,
    "/api/backup/schedules/..%2f..%2fschedules",
    "/api/backup/schedules/%2e%2e",
    "/api/backup/schedules/daily%00",
    "/api/backup/schedules/" + "d" * 300,
    "/api/backup/test/..%2f..",
    "/api/backup/schedules/daily/run/%2e%2e%2f",
    "/api/backup/../../etc/passwd",
    "/api//backup",
]


def test_traversal_and_hostile_ids(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str, tmp_path: Path
) -> None:
    c = serve(pg.url(fresh_db))
    for path in TRAVERSAL:
        for method in ("GET", "DELETE", "POST"):
            reply = c.call(method, path)
            assert reply.status in (400, 404, 405), (method, path, reply)
            assert "error" in reply.body
    for path in (
        "/api/backup/%2e%2e%2fx/restore",
        "/api/backup/schedules/%2e%2e/run",
        "/api/backup/schedules/..%2fx/enable",
    ):
        assert c.call("POST", path, {}).status == 400, path
    bad_ids = ["../x", "/etc/passwd", "a\x00b", "x" * 500, "manual", "test", "Daily"]
    for sid in bad_ids:
        reply = c.call(
            "POST",
            "/api/backup/schedules",
            {"scheduleId": sid, "cron": "0 1 * * *", "retentionDays": 1},
        )
        assert reply.status == 400, (sid, reply)
    assert c.call("POST", "/api/backup/test", {"backupId": "/etc/passwd"}).status == 400
    assert c.call("GET", "/api/backup?scheduleId=..%2fx").status == 400
    assert not (c.backup_path / "schedules.toml").exists()
    assert not list(tmp_path.rglob("*passwd*"))


def read_response(s: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"Content-Length: (\d+)", head)
    while m and len(rest) < int(m.group(1)):
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    return int(data.split()[1]), data


def test_body_limits_and_content_types(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    c = serve(pg.url(fresh_db))
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    huge = c.call(
        "POST",
        "/api/backup",
        data=b"{" + b" " * (1 << 20) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert huge.status == 413 and huge.error["kind"] == "too_large"
    status, _ = raw_request(
        c.port,
        b"POST /api/backup HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 99999999999\r\n\r\n",
    )
    assert status == 413
    status, _ = raw_request(c.port, b"POST /api/backup HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    assert status == 411
    status, _ = raw_request(
        c.port,
        b"POST /api/backup HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    assert status == 411
    status, _ = raw_request(
        c.port, b"POST /api/backup HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: -5\r\n\r\n"
    )
    assert status == 400
    assert (
        c.call(
            "POST",
            "/api/backup",
            data=b"format=plain",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status
        == 415
    )
    assert (
        c.call("POST", "/api/backup", data=b"{}", headers={"Content-Type": "text/plain"}).status
        == 415
    )
    for raw in (b"{", b"[]", b'"x"', b"null", b"\xff\xfe", b"[" * 100000):
        reply = c.call(
            "POST", "/api/backup", data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400, (raw[:10], reply)
    for body in (
        {"format": "tar"},
        {"level": 99},
        {"level": True},
        {"compression": "yes"},
        {"compress": True, "compression": True},  # a deprecated name beside its new one
        {"nope": 1},
    ):
        assert c.call("POST", "/api/backup", body).status == 400, body
    put = c.call("PUT", "/api/backup", data=b"")
    assert put.status == 405 and put.headers["Allow"] == "GET, POST"
    assert c.call("GET", "/api/backup/test").status == 405
    assert c.call("GET", "/api/backup").body == []  # nothing above started a backup


def test_slow_client_times_out(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.Handler, "timeout", 0.5)
    c = serve(pg.url(fresh_db))
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(b"GET /api/backup HTTP/1.1\r\n")  # and then nothing
        # The server hangs up (an empty read) long before this socket's own 10 s timeout.
        assert s.recv(1024) == b""
    assert c.call("GET", "/api/backup").status == 200


def test_trickling_client_is_cut_off(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte now and then resets no clock: the whole request must arrive within the timeout,
    so a slow client cannot keep one of the MAX_CONNECTIONS slots for ever."""
    monkeypatch.setattr(api.Handler, "timeout", 0.5)
    c = serve(pg.url(fresh_db))
    endless = b"GET /api/backup HTTP/1.1\r\nX-Pad: " + b"a" * 400
    hung_up = False
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        for byte in endless:  # well within the per-recv timeout each time
            try:
                s.sendall(bytes([byte]))
            except OSError:
                hung_up = True
                break
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable:
                hung_up = s.recv(1024) == b""
                break
    assert hung_up, "the server still waits for a request that never ends"
    assert c.call("GET", "/api/backup").status == 200


def test_connection_cap_answers_503_then_recovers(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authenticated keep-alive clients hold at most MAX_CONNECTIONS threads; the next
    authenticated one gets 503 at once, and an answer again once they close."""
    monkeypatch.setattr(api.ApiServer, "max_connections", 3)
    c = serve(pg.url(fresh_db))
    idle = [socket.create_connection(("127.0.0.1", c.port), timeout=10) for _ in range(3)]
    request = f"GET /api/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    try:
        for s in idle:  # one answered request each, then they keep the connection open
            s.sendall(request.encode())
            assert read_response(s).startswith(b"HTTP/1.1 200")
        busy = c.call("GET", "/api/backup")
        assert busy.status == 503 and busy.error["kind"] == "busy"
        assert busy.headers["Retry-After"] == "1"
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 30
    while (reply := c.call("GET", "/api/backup")).status == 503 and time.monotonic() < deadline:
        time.sleep(0.05)  # the closed connections' threads finish and free their slots
    assert reply.status == 200


# --- schedules ---------------------------------------------------------------------------


def test_schedule_endpoints(serve: Callable[..., Client], pg: Cluster, fresh_db: str) -> None:
    small_table(pg, fresh_db)
    c = serve(pg.url(fresh_db))
    listed = c.call("GET", "/api/backup/schedules")
    assert listed.status == 200 and {s["scheduleId"] for s in listed.body} == {
        "daily",
        "weekly",
        "monthly",
    }
    created = c.call(
        "POST",
        "/api/backup/schedules",
        {
            "id": "hourly",  # the deprecated name of scheduleId
            "cron": "0 * * * *",
            "retentionDays": 2,
            "format": "custom",
        },
    )
    assert created.status == 201, created
    assert created.headers["Location"] == "/api/backup/schedules/hourly"
    assert created.body["scheduleId"] == "hourly" and created.body["format"] == "custom"
    assert (
        c.call(
            "POST",
            "/api/backup/schedules",
            {"scheduleId": "hourly", "cron": "0 * * * *", "retentionDays": 2},
        ).status
        == 400
    )
    assert (
        c.call(
            "POST",
            "/api/backup/schedules",
            {"scheduleId": "x1", "cron": "not cron", "retentionDays": 2},
        ).status
        == 400
    )
    assert c.call("POST", "/api/backup/schedules", {"cron": "0 * * * *"}).status == 400
    shown = c.call("GET", "/api/backup/schedules/hourly")
    assert shown.status == 200 and shown.body["cron"] == "0 * * * *"
    updated = c.call(
        "POST", "/api/backup/schedules/hourly", {"retentionDays": 5, "description": "ops"}
    )
    assert updated.status == 200 and updated.body["retentionDays"] == 5
    assert c.call("POST", "/api/backup/schedules/hourly", {"retentionDays": "many"}).status == 400
    assert c.call("POST", "/api/backup/schedules/hourly", {"id": "other"}).status == 400
    assert c.call("POST", "/api/backup/schedules/hourly/disable").body["enabled"] is False
    skipped = c.call("POST", "/api/backup/schedules/hourly/run")
    assert skipped.status == 200 and skipped.body["result"]["status"] == "skipped"
    assert c.call("POST", "/api/backup/schedules/hourly/enable").body["enabled"] is True

    # Literal paths win over {scheduleId}.
    nxt = c.call("GET", "/api/backup/schedules/next?count=2")
    assert nxt.status == 200 and isinstance(nxt.body, list)
    assert sum(1 for r in nxt.body if r["scheduleId"] == "hourly") == 2
    stats = c.call("GET", "/api/backup/schedules/statistics")
    assert stats.status == 200 and isinstance(stats.body, dict)
    assert c.call("GET", "/api/backup/schedules/next?count=0").status == 400

    run = c.call("POST", "/api/backup/schedules/hourly/run")
    assert run.status in (200, 202), run
    status_url = run.headers["Location"]
    job = c.poll(status_url, lambda b: b["status"] != "in_progress")
    assert job["status"] == "completed", job
    backup = job["result"]["backup"]
    assert backup["scheduleId"] == "hourly" and backup["format"] == "custom"
    by_schedule = c.call("GET", "/api/backup?scheduleId=hourly")
    assert [b["id"] for b in by_schedule.body] == [backup["id"]]
    assert c.call("GET", "/api/backup/schedules/hourly").body["backupCount"] == 1
    assert (
        c.call("GET", "/api/backup/schedules/nope/run/" + status_url.rsplit("/", 1)[1]).status
        == 404
    )

    removed = c.call("DELETE", "/api/backup/schedules/hourly")
    assert removed.status == 200
    assert c.call("GET", "/api/backup/schedules/hourly").status == 404
    assert c.call("POST", "/api/backup/schedules/hourly/run").status == 404
    assert c.call("DELETE", "/api/backup/schedules/hourly").status == 404


def lock_holder(client: Client, schedule_id: str) -> str:
    try:
        return (client.backup_path / "locks" / f"schedule-{schedule_id}.lock").read_text().strip()
    except FileNotFoundError:
        return ""


def test_api_run_races_cron_run_schedule(
    serve: Callable[..., Client], pg: Cluster, big_db: str
) -> None:
    c = serve(pg.url(big_db))
    cron = [sys.executable, "-m", "sbbackup", "run-schedule", "daily", "--json"]

    # Round 1: both at once. Exactly one proceeds.
    proc = subprocess.Popen(
        cron, env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    reply = c.call("POST", "/api/backup/schedules/daily/run")
    out, err = proc.communicate(timeout=120)
    print(f"\nrace: API {reply.status}, cron run-schedule exit {proc.returncode}")
    assert (reply.status == 202) != (proc.returncode == 0), (reply, proc.returncode, err)
    if reply.status == 202:
        assert proc.returncode == 11 and "already running" in err
        c.poll(reply.headers["Location"], lambda b: b["status"] != "in_progress", timeout=120)
    else:
        assert reply.status == 409 and reply.error["code"] == 11
    daily = c.call("GET", "/api/backup?scheduleId=daily").body
    assert len(daily) == 1 and daily[0]["status"] == "completed"

    # Round 2: cron holds the lock first; the API gets 409 and starts nothing.
    proc = subprocess.Popen(
        cron, env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while lock_holder(c, "daily") != str(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    reply = c.call("POST", "/api/backup/schedules/daily/run")
    assert reply.status == 409 and "already running" in reply.error["message"], reply
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(c.call("GET", "/api/backup?scheduleId=daily").body) == 2
    # Round 3: an API run blocks a second API run of the same schedule.
    first = c.call("POST", "/api/backup/schedules/daily/run")
    second = c.call("POST", "/api/backup/schedules/daily/run")
    assert first.status == 202 and second.status == 409, (first, second)
    c.poll(first.headers["Location"], lambda b: b["status"] != "in_progress", timeout=120)


def test_50_concurrent_lists_while_a_backup_runs(
    serve: Callable[..., Client], pg: Cluster, big_db: str
) -> None:
    c = serve(pg.url(big_db))
    started = c.call("POST", "/api/backup")
    assert started.status == 202
    busy = c.call("DELETE", started.headers["Location"])
    assert busy.status == 409 and busy.error["code"] == 11

    def one(_: int) -> tuple[int, float, bool]:
        t = time.monotonic()
        reply = c.call("GET", "/api/backup")
        running = (
            any(b["status"] == "in_progress" for b in reply.body) if reply.status == 200 else False
        )
        return reply.status, time.monotonic() - t, running

    t0 = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    wall = time.monotonic() - t0
    errors = sum(1 for status, _, _ in results if status != 200)
    latencies = sorted(lat for _, lat, _ in results)
    saw_running = sum(1 for *_, r in results if r)
    print(
        f"\nconcurrency: 50 GET /api/backup during a backup: errors={errors} "
        f"saw_in_progress={saw_running} p50={latencies[24] * 1000:.0f}ms "
        f"p95={latencies[47] * 1000:.0f}ms max={latencies[-1] * 1000:.0f}ms "
        f"wall={wall * 1000:.0f}ms"
    )
    assert errors == 0
    assert saw_running == 50  # the backup was running throughout
    done = c.poll(started.headers["Location"], lambda b: b["status"] != "in_progress", timeout=120)
    assert done["status"] == "completed"


# --- health, metrics, the document -------------------------------------------------------


def test_health_metrics_and_openapi_match_routes(
    serve: Callable[..., Client], pg: Cluster, fresh_db: str
) -> None:
    c = serve(pg.url(fresh_db))
    health = c.call("GET", "/api/health")
    # Fresh install: no schedule has run, so they are overdue or not, but the shape is fixed.
    assert health.status in (200, 503) and set(health.body) >= {"ok", "problems", "warnings"}
    assert (health.status == 200) == health.body["ok"]
    metrics = c.call("GET", "/metrics")
    assert metrics.status == 200 and "# TYPE sbbackup_" in metrics.body

    doc = c.call("GET", "/api/openapi.json").body
    assert doc == json.loads(json.dumps(api.openapi_document()))
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.template) for r in api.ROUTES}
    assert documented == served
    op_ids = {ops[m]["operationId"] for ops in doc["paths"].values() for m in ops}
    assert op_ids == {r.operation for r in api.ROUTES}
    queries = {
        p["name"]
        for ops in doc["paths"].values()
        for op in ops.values()
        for p in op.get("parameters", [])
        if p["in"] == "query"
    }
    assert queries == api.QUERY_PARAMS  # the ones logs show unmasked
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == names, (path, op["operationId"])
    # The schedule fields the API type-checks are exactly the ones the store accepts.
    from sbbackup.policy.schedules import FIELDS

    assert set(api.SCHEDULE_FIELDS) == set(FIELDS)


def test_failed_schedule_run_makes_health_503(serve: Callable[..., Client], pg: Cluster) -> None:
    c = serve(pg.url("no_such_database"))
    run = c.call("POST", "/api/backup/schedules/daily/run")
    if run.status == 202:  # it failed after taking the lock: the job tells
        job = c.poll(run.headers["Location"], lambda b: b["status"] != "in_progress")
        assert job["status"] == "failed" and job["error"]["code"] == 3, job
    else:  # it failed before the answer: the same error, synchronously
        assert run.status == 500 and run.error["kind"] == "database", run
    failed = c.call("GET", "/api/backup?status=failed").body
    assert len(failed) == 1 and failed[0]["scheduleId"] == "daily"
    health = c.call("GET", "/api/health")
    assert health.status == 503 and health.body["ok"] is False
    assert any(p["check"] == "last-run-failed" for p in health.body["problems"]), health.body


# --- shutdown ----------------------------------------------------------------------------


def start_cli_server(
    env: dict[str, str], *args: str, port: str | None = "0"
) -> tuple[subprocess.Popen[str], str]:
    port_args = ("--port", port) if port is not None else ()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "serve", *port_args, *args],
        env={**env, "SBBACKUP_API_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"listening on (http://\S+)", line)
    assert m, line
    return proc, m.group(1)


@pytest.mark.parametrize("grace", ["60", "0"])
def test_sigterm_finishes_or_interrupts_running_backup(
    pg: Cluster, big_db: str, tmp_path: Path, grace: str
) -> None:
    backups = tmp_path / "backups"
    env = {**os.environ, "DATABASE_URL": pg.url(big_db), "DB_BACKUP_PATH": str(backups)}
    locker = None
    if grace == "0":
        # pg_dump waits behind this lock, so the backup is certainly still running at SIGTERM
        # (however fast or slow the machine is).
        locker = subprocess.Popen(
            ["psql", "-XAtq", "-d", big_db],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=pg.env(),
            text=True,
        )
        assert locker.stdin is not None
        locker.stdin.write("BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
        locker.stdin.flush()
    proc, base = start_cli_server(env, "--grace", grace)
    try:
        c = Client(base, backups, env, None)  # type: ignore[arg-type]
        started = c.call("POST", "/api/backup")
        assert started.status == 202
        deadline = time.monotonic() + 60
        while not list(backups.glob("*.partial")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(backups.glob("*.partial")), "the backup never started writing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if locker is not None:
            locker.kill()
            locker.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert not list(backups.glob("*.partial")), list(backups.iterdir())
    manifest = json.loads((backups / f"{started.body['id']}.json").read_text())
    if grace == "60":
        assert manifest["status"] == "completed"
    else:
        assert manifest["status"] == "failed" and manifest["error"] == "interrupted", manifest
        assert "interrupted backup" in err
        assert not [
            p
            for p in backups.iterdir()
            if p.name.startswith(started.body["id"]) and p.suffix != ".json"
        ]


def test_layers_api_sits_above_ops_and_below_cli() -> None:
    """Only the CLI may import the API; the API never imports click or the CLI."""
    import ast

    root = Path(api.__file__).parent.parent
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {  # from . import api
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
        }
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        # ``module`` of ``from ..cli import x`` is "cli": relative dots are not part of it.
        if rel.startswith("api/"):
            up = ("click", "cli", "sbbackup.cli")
            assert not any(n in up or n.startswith(tuple(u + "." for u in up)) for n in names), rel
        elif not rel.startswith("cli/"):
            down = ("api", "sbbackup.api")
            assert not any(n in down or n.startswith(("api.", "sbbackup.api.")) for n in names), rel
