"""The JSON contract: every command's real ``--json`` output, success and error, and the API's
answers validate against their schema in ``sbbackup/schema/`` (``docs/schema/``); no JSON
anywhere carries a ``+00:00`` timestamp or a key that is not camelCase; the OpenAPI document
embeds the same files; an interrupted ``create --json`` ends with a JSON error too.

Real processes against a real SQLite source (and the PostgreSQL fixture where a dump must
block); the schemas are checked with the ``jsonschema`` package.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SB
from helpers.api_server import Client, api_servers, url_of
from helpers.cli import Result, run_patched
from helpers.pgcluster import Cluster
from helpers.pgwait import dump_waiting, table_locked, wait_for
from helpers.schemas import CHECKED, conforms, naming_problems
from jsonschema import Draft202012Validator

from sbbackup import api, schemas
from sbbackup.config import load_settings
from sbbackup.model import Status

ROOT = Path(__file__).parents[2]


def error_of(res: Result, code: int | None = None) -> dict[str, Any]:
    """A failed ``--json`` run: one line, then the error object (nothing else, no blank line)."""
    assert res.code != 0, res
    lines = res.err.splitlines()
    assert lines[0].startswith("sbbackup: error: ") and lines[-1].startswith("{"), res.err
    assert "" not in lines, res.err
    body = conforms("error", json.loads(lines[-1]))
    assert body["error"]["code"] == res.code == (code if code is not None else res.code)
    return body


@pytest.fixture
def source(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    con.executemany("INSERT INTO items (name) VALUES (?)", [(f"n{i}",) for i in range(50)])
    con.commit()
    con.close()
    return {"DATABASE_URL": f"sqlite:///{db}", "TZ": "Europe/Berlin"}


def test_naming_rules_catch_what_they_should() -> None:
    assert naming_problems({"nextRunLocal": "2026-01-01T02:00:00.000+00:00"}) == []
    assert naming_problems({"tables": {"order_items": 1}, "byStatus": {"in_progress": 1}}) == []
    assert naming_problems({"next": "2026-01-01T02:00:00+00:00"})
    assert naming_problems({"last_run": None})


def test_every_backup_and_schedule_command(sb: SB, source: dict[str, str], tmp_path: Path) -> None:
    def ok(schema: str, *args: str) -> Any:
        return conforms(schema, sb.ok(*args, "--json", env=source).json())

    made = ok("backup", "create")
    assert ok("backup", "show", made["id"]) == made | {"writer": made["writer"]}
    assert [r["id"] for r in ok("backup-list", "list")] == [made["id"]]
    assert ok("verify", "verify", made["id"])["ok"] is True
    assert ok("verify", "verify", "--all", "--deep")["ok"] is True
    target = tmp_path / "restored.db"
    restored = ok("restore", "restore", made["id"], "--target-url", f"sqlite:///{target}")
    assert restored["status"] == "completed" and restored["steps"]
    report = ok("test-report", "test")
    assert report["ok"] is True and report["drill"]["status"] == "passed"
    listed = ok("schedule-list", "schedules")
    assert [s["scheduleId"] for s in listed] == ["daily", "weekly", "monthly"]
    assert ok("schedule-list", "schedules", "list") == listed
    daily = ok("schedule", "schedules", "show", "daily")
    # Berlin is UTC+1 in winter: the local form carries the offset, nextRun is its UTC instant.
    assert daily["nextRunLocal"].endswith("T02:00:00.000+01:00")
    assert daily["nextRun"].endswith("T01:00:00.000Z")
    added = ok(
        "schedule", "schedules", "add", "hourly", "--cron", "0 * * * *", "--retention-days", "2"
    )
    assert added["scheduleId"] == "hourly" and added["source"] == "runtime"
    assert ok("schedule", "schedules", "update", "hourly", "--min-keep", "2")["minKeep"] == 2
    assert ok("schedule", "schedules", "disable", "hourly")["nextRun"] is None
    assert ok("schedule", "schedules", "enable", "hourly")["enabled"] is True
    assert ok("schedule-removed", "schedules", "remove", "hourly")["removed"] is True
    fires = ok("next", "next", "--count", "2")
    assert fires[0]["nextRun"] <= fires[1]["nextRun"]
    run = ok("run-schedule", "run-schedule", "daily")
    assert run["status"] == "completed" and run["backup"]["scheduleId"] == "daily"
    assert ok("prune", "prune", "--dry-run")["dryRun"] is True
    assert ok("prune", "prune")["dryRun"] is False
    stats = ok("statistics", "statistics")
    assert stats["lastRestoreDrill"]["status"] == "passed" and "lastRestoreTest" not in stats
    assert isinstance(stats["duration"]["averageMs"], int) and stats["graceMs"] == 3_600_000
    assert ok("health", "health")["ok"] is True
    assert ok("metrics", "metrics")["text"].startswith("# HELP")
    assert ok("crontab", "crontab", "--cron", "debian")["lines"]
    (tmp_path / "units").mkdir()
    units = ok("crontab", "crontab", "--cron", "systemd", "--output-dir", str(tmp_path / "units"))
    assert units["lines"] == [] and len(units["written"]) == len(units["files"]) == 6
    key = ok("keygen", "keygen", "--output", str(tmp_path / "key.txt"))
    assert key["publicKey"].startswith("age1")
    gone = ok("backup", "delete", made["id"], "--yes")
    assert gone["id"] == made["id"]
    # What sbbackup keeps on disk speaks the same way: manifests, audit, drill, restores.
    kept = [*sb.backup_path.glob("*.json"), sb.backup_path / "last_test.json"]
    kept += sb.backup_path.glob("restores/*.json")
    docs = [json.loads(f.read_text()) for f in kept]
    docs += [json.loads(line) for line in (sb.backup_path / "audit.log").read_text().splitlines()]
    assert len(docs) > 10 and [p for d in docs for p in naming_problems(d)] == []


def test_every_kind_of_failure_is_a_json_error(
    sb: SB, source: dict[str, str], tmp_path: Path
) -> None:
    def fails(code: int, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        return error_of(sb(*args, "--json", env={**source, **(env or {})}), code)

    missing = "streambuddy_backup_2026-01-01T00-00-00-000Z"
    assert fails(2, "show", "nope")["error"]["kind"] == "usage"
    assert fails(10, "show", missing)["error"]["kind"] == "not_found"
    assert fails(10, "verify", missing)["error"]["kind"] == "not_found"
    assert fails(10, "schedules", "show", "nosuch")["error"]["kind"] == "not_found"
    assert fails(2, "schedules", "add", "x", "--cron", "0 25 * * *", "--retention-days", "1")
    assert fails(2, "list", "--bogus")["error"]["kind"] == "usage"
    assert fails(2, "keygen")["error"]["kind"] == "usage"
    assert fails(2, "health", "--min-free", "lots")["error"]["kind"] == "usage"
    broken = {"DATABASE_URL": f"sqlite:///{tmp_path / 'no' / 'such.db'}"}
    assert fails(3, "create", env=broken)["error"]["kind"] == "database"
    made = sb.ok("create", "--json", env=source).json()
    data = sb.backup_path / made["filename"]
    data.write_bytes(data.read_bytes()[:-5])
    assert fails(13, "verify", made["id"])["error"]["kind"] == "integrity"
    res = sb("health", "--min-free", "1000P", "--json", env=source)  # more than any disk
    conforms("health", res.json())
    assert res.json()["ok"] is False and error_of(res, 14)["error"]["kind"] == "unhealthy"


def test_an_unexpected_error_keeps_its_traceback_and_adds_the_json_error(
    sb: SB, source: dict[str, str]
) -> None:
    res = run_patched(
        {**sb.env, **source}, "sbbackup.ops.list_backups = lambda *a, **k: 1 / 0", "list", "--json"
    )
    assert res.code == 1 and res.out == ""
    assert "Traceback" in res.err and "please report" in res.err
    body = conforms("error", json.loads(res.err.splitlines()[-1]))
    assert body["error"] == {
        "code": 1,
        "kind": "unexpected",
        "message": "unexpected error: division by zero",
    }


def test_the_api_answers_are_the_same_shapes(
    sb: SB, source: dict[str, str], tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir(mode=0o700)
    env = {
        **source,
        "DB_BACKUP_PATH": str(sb.backup_path),
        "PATH": os.environ["PATH"],
        "SBBACKUP_API_RESTORE_DIR": str(landing),
    }
    with api_servers() as start:
        server = start(load_settings(env=env))
        c = Client(url_of(server), sb.backup_path, env, server)
        made = c.call("POST", "/api/backup?wait=true", {"compression": True})
        assert made.status == 201, made
        conforms("backup", made.body)
        assert conforms("backup", c.call("GET", f"/api/backup/{made.body['id']}").body) == made.body
        cli = sb.ok("show", made.body["id"], "--json", env=source).json()
        assert cli == made.body  # one record shape, CLI and API
        conforms("backup-list", c.call("GET", "/api/backup").body)
        started = c.call("POST", "/api/backup", {})
        assert started.status == 202 and conforms("backup", started.body)["status"] == "in_progress"
        c.poll(started.headers["Location"], lambda b: b["status"] != Status.IN_PROGRESS)
        assert conforms("schedule-list", c.call("GET", "/api/backup/schedules").body)
        new = {"scheduleId": "hourly", "cron": "0 * * * *", "retentionDays": 2}
        assert conforms("schedule", c.call("POST", "/api/backup/schedules", new).body)
        hourly = "/api/backup/schedules/hourly"
        assert conforms("schedule", c.call("POST", hourly, {"minKeep": 2}).body)["minKeep"] == 2
        assert conforms("schedule", c.call("POST", f"{hourly}/disable").body)["nextRun"] is None
        assert conforms("schedule", c.call("POST", f"{hourly}/enable").body)["enabled"] is True
        assert conforms("schedule", c.call("GET", hourly).body)["scheduleId"] == "hourly"
        gone = c.call("DELETE", hourly).body
        assert conforms("schedule-removed", gone) == {"scheduleId": "hourly", "removed": True}
        conforms("next", c.call("GET", "/api/backup/schedules/next?count=3").body)
        conforms("statistics", c.call("GET", "/api/backup/schedules/statistics").body)
        conforms("health", c.call("GET", "/api/health").body)
        test = c.call("POST", "/api/backup/test?wait=true", {})
        assert conforms("job", test.body)["result"]["ok"] is True, test
        conforms("test-report", test.body["result"])
        run = c.call("POST", "/api/backup/schedules/daily/run")
        job = c.poll(run.headers["Location"], lambda b: b["status"] != "in_progress")
        assert conforms("job", job)["result"]["backup"]["scheduleId"] == "daily"
        restore = c.call("POST", f"/api/backup/{made.body['id']}/restore", {"targetFile": "r.db"})
        assert restore.status == 202 and conforms("restore", restore.body), restore
        done = c.poll(restore.headers["Location"], lambda b: b["status"] != "in_progress")
        assert conforms("restore", done)["status"] == "completed"
        again = c.call("POST", f"/api/backup/{made.body['id']}/restore", {"targetFile": "r.db"})
        assert again.status == 409 and conforms("error", again.body)["error"]["kind"] == "conflict"
        deleted = c.call("DELETE", f"/api/backup/{made.body['id']}")
        assert conforms("backup", deleted.body)["id"] == made.body["id"]
        for path in ("/api/backup/nope", "/api/nothing", f"/api/backup/{cli['id'][:-4]}000Z"):
            reply = c.call("GET", path)
            assert reply.status in (400, 404) and conforms("error", reply.body), reply
        assert conforms("error", c.call("GET", "/api/backup", token="wrong").body)
        both = c.call("POST", "/api/backup", {"compress": True, "compression": True})
        assert (
            both.status == 400 and "deprecated" in conforms("error", both.body)["error"]["message"]
        )


def test_openapi_embeds_the_schema_files() -> None:
    """One source: each file is an OpenAPI component, changed only by ``as_component`` (no
    ``$id``/``$schema``, references into ``#/components/schemas``); and ``docs/schema`` is the
    package's directory, not a copy that could drift."""
    components = api.openapi_document()["components"]["schemas"]
    assert api.openapi_document()["openapi"] == "3.1.0"
    for name in schemas.names():
        assert components[schemas.component_name(name)] == schemas.as_component(
            name, schemas.load(name)
        )
        assert schemas.load(name)["$id"] == schemas.BASE_URI + f"{name}.json"
        Draft202012Validator.check_schema(schemas.load(name))
    docs = ROOT / "docs" / "schema"
    assert docs.resolve() == (ROOT / "sbbackup" / "schema").resolve()
    on_disk = sorted(p.stem for p in docs.glob("*.json"))
    assert on_disk == schemas.names() and len(on_disk) == 19
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(components))
    for ref in refs:  # every reference resolves inside the document
        node: Any = {"components": {"schemas": components}}
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    assert set(schemas.load("defs")["$defs"]["backupStatus"]["enum"]) == {s.value for s in Status}


def test_the_readme_names_every_schema_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## JSON contract") :]
    missing = [n for n in schemas.names() if n != "defs" and f"`{n}.json`" not in section]
    assert missing == []


def test_a_postgresql_record_follows_the_contract(pg: Cluster, rich_db: str, sb: SB) -> None:
    """The PostgreSQL engine's record carries more (server, properties, per-table counts)."""
    env = {"DATABASE_URL": pg.url(rich_db)}
    made = conforms("backup", sb.ok("create", "--format", "custom", "--json", env=env).json())
    assert made["database"]["engine"] == "postgresql" and made["pgDumpVersion"]
    assert conforms("backup-list", sb.ok("list", "--json", env=env).json())[0]["id"] == made["id"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_create_json_ends_with_a_json_error(
    pg: Cluster, fresh_db: str, sb: SB, signum: int
) -> None:
    """A create blocked in pg_dump (a table lock), then a real signal: exit 130, one line and
    the JSON error on stderr, no blank line, nothing on stdout."""
    pg.psql("CREATE TABLE t AS SELECT 1 AS id", db=fresh_db)
    with table_locked(pg, fresh_db, "t"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sbbackup", "create", "--json"],
            env={**sb.env, "DATABASE_URL": pg.url(fresh_db)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: dump_waiting(pg, fresh_db), "pg_dump to block on the table lock")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    res = Result(proc.returncode, out, err)
    assert out == ""
    body = error_of(res, 130)
    assert body["error"]["kind"] == "interrupted"
    assert err.splitlines()[0] == "sbbackup: error: interrupted"


@pytest.fixture(scope="module", autouse=True)
def every_schema_was_exercised() -> Iterator[None]:
    yield
    if CHECKED:  # the whole module ran (not one test picked out)
        unchecked = set(schemas.names()) - CHECKED - {"defs"}
        print(f"\njson contract: {len(CHECKED)} schemas exercised, unchecked: {sorted(unchecked)}")
