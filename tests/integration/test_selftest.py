"""`sbbackup test` and `verify --deep --restore`: preflight, restore drill, exact comparison,
cleanup. Everything runs the real command line against a real PostgreSQL cluster."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SB
from helpers.manifests import edit_manifest, read_manifest
from helpers.pgcluster import Cluster, create_cluster, destroy_cluster

# Scratch databases, and the staging databases a drill loads into before renaming them.
SCRATCH_SQL = (
    "SELECT datname FROM pg_database WHERE datname ~ '^sbbackup_(test|restore|replaced)_' "
    "ORDER BY 1"
)


def scratch_dbs(pg: Cluster) -> list[str]:
    return [x for x in pg.psql(SCRATCH_SQL).splitlines() if x]


def checks_by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_drill_passes_on_rich_schema(pg: Cluster, rich_db: str, sb: SB) -> None:
    env = {"DATABASE_URL": pg.url(rich_db)}
    res = sb("test", "--json", env=env)
    assert res.code == 0, res.out + res.err
    report = json.loads(res.out)
    assert report["ok"] is True and report["exitCode"] == 0
    checks = checks_by_name(report)
    assert list(checks) == [
        "config",
        "tools",
        "database",
        "backup-path",
        "free-space",
        "encryption",
        "identity",
        "schedules",
        "locks",
    ]
    for name in ("config", "tools", "database", "free-space", "locks"):
        assert checks[name]["status"] == "pass", checks[name]
    assert all(c["status"] in ("pass", "warn") and c["reason"] for c in report["checks"])
    drill = report["drill"]
    assert drill["status"] == "passed" and drill["differences"] == [] and drill["code"] == 0
    assert set(drill["timings"]) == {"backup", "verify", "restore", "compare"}
    assert drill["tables"] >= 6 and drill["scratchDropped"] is True
    assert drill["target"].startswith("postgresql://postgres@") and "s3cr3t" not in res.out
    assert sb.ok("show", drill["backupId"], "--json").json()["scheduleId"] == "test"
    assert scratch_dbs(pg) == []

    human = sb.ok("test", "--latest", env=env).out  # drills the backup just made
    assert f"drill passed: backup {drill['backupId']}" in human
    assert "exact row and object counts match" in human and human.rstrip().endswith("PASSED")
    assert scratch_dbs(pg) == []

    # The drill is recorded for `statistics` and `health`.
    last = json.loads((sb.backup_path / "last_test.json").read_text())
    assert last["lastSuccess"]["status"] == "passed"
    assert last["lastSuccess"]["backupId"] == drill["backupId"]


def test_edited_row_count_fails_with_13(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql(
        "CREATE TABLE public.accounts AS SELECT g AS id FROM generate_series(1, 300) g", db=fresh_db
    )
    env = {"DATABASE_URL": pg.url(fresh_db)}
    rec = sb.ok("create", "--json", env=env).json()
    contents = read_manifest(sb.backup_path, rec["id"])["contents"]
    assert contents["tables"]["public.accounts"] == 300
    contents["tables"]["public.accounts"] = 299
    edit_manifest(sb.backup_path, rec["id"], contents=contents)

    res = sb("test", "--backup", rec["id"], "--json", env=env)
    assert res.code == 13, res.out + res.err
    report = json.loads(res.out)
    assert report["ok"] is False and report["exitCode"] == 13
    assert report["drill"]["status"] == "failed" and report["drill"]["scratchDropped"]
    assert report["drill"]["differences"] == [
        "table public.accounts: 299 rows in the backup, 300 restored"
    ]
    human = sb("test", "--backup", rec["id"], env=env)
    assert human.code == 13
    assert "public.accounts: 299 rows in the backup, 300 restored" in human.out
    assert "FAILED (exit 13)" in human.out

    verify = sb("verify", "--deep", "--restore", rec["id"], "--json", env=env)
    assert verify.code == 13, verify.err
    result = json.loads(verify.out)["results"][0]
    assert result["ok"] is False and "public.accounts" in result["error"]
    assert scratch_dbs(pg) == []


def test_verify_deep_restore_passes(pg: Cluster, rich_db: str, sb: SB) -> None:
    env = {"DATABASE_URL": pg.url(rich_db)}
    rec = sb.ok("create", "--json", "--format", "custom", env=env).json()
    res = sb.ok("verify", "--deep", "--restore", rec["id"], "--json", env=env)
    result = json.loads(res.out)["results"][0]
    assert result["ok"] is True and result["deep"] is True
    assert result["restore"]["status"] == "passed" and result["restore"]["tables"] >= 6
    assert sb("verify", "--restore", rec["id"], env=env).code == 2  # --restore needs --deep
    assert scratch_dbs(pg) == []


def test_stopped_server_fails_preflight_with_3(sb: SB) -> None:
    other = create_cluster()  # a throwaway cluster: stopping the shared one would break others
    try:
        url = other.url()
        other.stop()
        res = sb("test", "--json", env={"DATABASE_URL": url})
    finally:
        destroy_cluster(other)
    assert res.code == 3, res.err
    report = json.loads(res.out)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed[0]["name"] == "database" and failed[0]["code"] == 3
    assert "127.0.0.1" in failed[0]["reason"]
    assert report["drill"]["status"] == "skipped"
    assert report["drill"]["error"] == "not run: a preflight check failed"


def test_invalid_config_is_a_report_with_exit_2(sb: SB, tmp_path: Path) -> None:
    res = sb("test", "--json", env={"DB_BACKUP_FORMAT": "tarball"})
    assert res.code == 2, res.err
    report = json.loads(res.out)
    assert report["checks"][0]["name"] == "config" and report["checks"][0]["status"] == "fail"
    assert "DB_BACKUP_FORMAT" in report["checks"][0]["reason"]


def test_sigterm_mid_restore_drops_scratch(pg: Cluster, fresh_db: str, sb: SB) -> None:
    # Big enough that its COPY takes seconds: the signal lands while it runs.
    pg.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1500000) g",
        db=fresh_db,
    )
    env = {**sb.env, "DATABASE_URL": pg.url(fresh_db)}
    rec = sb.ok("create", "--json", "--level", "1", env=env).json()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "test", "--backup", rec["id"], "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The drill loads the way a restore does: into a staging database, renamed afterwards.
    copying = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname ~ '^sbbackup_restore_' "
        "AND state = 'active' AND query LIKE 'COPY %'"
    )
    deadline = time.time() + 60
    while time.time() < deadline and pg.psql(copying) == "0" and proc.poll() is None:
        time.sleep(0.02)
    assert pg.psql(copying) == "1", "the drill's restore never started copying"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert scratch_dbs(pg) == []
    last = json.loads((sb.backup_path / "last_test.json").read_text())
    assert last["lastSuccess"] is None  # an interrupted drill is recorded, never as a success
    assert last["lastRun"]["status"] == "failed" and last["lastRun"]["error"] == "interrupted"


def test_leftovers_are_dropped_unless_in_use(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE DATABASE sbbackup_test_deadbeef")
    pg.psql("CREATE DATABASE sbbackup_test_0badcafe")
    pg.psql("CREATE DATABASE sbbackup_test_production")  # not a name a drill makes
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    # A session in 0badcafe stands for a concurrent drill from another configuration.
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-d", "sbbackup_test_0badcafe"],
        stdin=subprocess.PIPE,
        env=pg.env(),
        text=True,
    )
    try:
        holder_sql = "SELECT 1 FROM pg_stat_activity WHERE datname = 'sbbackup_test_0badcafe'"
        deadline = time.time() + 10
        while not pg.psql(holder_sql) and time.time() < deadline:
            time.sleep(0.05)
        res = sb.ok("test", "--json", env={"DATABASE_URL": pg.url(fresh_db)})
        dropped = json.loads(res.out)["drill"]["leftoversDropped"]
        assert [d.rsplit("/", 1)[1] for d in dropped] == ["sbbackup_test_deadbeef"]
        assert scratch_dbs(pg) == ["sbbackup_test_0badcafe", "sbbackup_test_production"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        pg.psql("DROP DATABASE IF EXISTS sbbackup_test_0badcafe WITH (FORCE)")
        pg.psql("DROP DATABASE IF EXISTS sbbackup_test_production")


def test_concurrent_writes_counts_are_snapshot_exact(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql(
        "CREATE TABLE hot (id bigserial PRIMARY KEY, v text);"
        "INSERT INTO hot (v) SELECT md5(g::text) FROM generate_series(1, 300000) g",
        db=fresh_db,
    )
    stop = threading.Event()
    inserted = [0]

    def writer() -> None:
        proc = subprocess.Popen(
            ["psql", "-X", "-q", "-d", fresh_db],
            stdin=subprocess.PIPE,
            env=pg.env(),
            text=True,
            stdout=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        while not stop.is_set():
            proc.stdin.write("INSERT INTO hot (v) SELECT 'x' FROM generate_series(1, 50);\n")
            proc.stdin.flush()
            inserted[0] += 50
            time.sleep(0.002)
        proc.stdin.close()
        proc.wait()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        rec = sb.ok("create", "--json", env={"DATABASE_URL": pg.url(fresh_db)}).json()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    final = int(pg.psql("SELECT count(*) FROM hot", db=fresh_db))
    recorded = rec["contents"]["tables"]["public.hot"]
    assert 300000 < recorded < final, "the inserts did not overlap the dump"
    res = sb("test", "--backup", rec["id"], "--json", env={"DATABASE_URL": pg.url(fresh_db)})
    assert res.code == 0, res.out + res.err
    drill = json.loads(res.out)["drill"]
    assert drill["status"] == "passed" and drill["differences"] == []


def test_sqlite_drill(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE a (x); INSERT INTO a VALUES (1), (2), (NULL);"
        "CREATE TABLE b (y TEXT); INSERT INTO b VALUES ('é');"
        "CREATE INDEX a_x ON a (x); CREATE VIEW v AS SELECT * FROM a;"
    )
    con.close()
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    leftover = scratch_dir / "sbbackup_test_deadbeef.db"
    leftover.write_bytes(b"")
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    preflight = sb.ok("test", "--no-drill", "--json", env=env).json()
    assert preflight["ok"] is True and preflight["drill"]["status"] == "skipped"
    assert sb.ok("list", "--json", env=env).json() == []  # --no-drill makes no backup
    assert sb("test", "--latest", "--backup", "x", env=env).code == 2
    target = f"sqlite:///{scratch_dir}/here.db"
    res = sb("test", "--json", "--target-url", target, env=env)
    assert res.code == 0, res.out + res.err
    report = json.loads(res.out)
    assert checks_by_name(report)["tools"]["reason"] == "the sqlite engine needs no client tools"
    drill = report["drill"]
    assert drill["status"] == "passed" and drill["tables"] == 2
    assert drill["target"].startswith(str(scratch_dir / "sbbackup_test_"))
    assert drill["leftoversDropped"] == [str(leftover)]
    assert list(scratch_dir.iterdir()) == []  # the scratch file and the leftover are gone

    # A row count that does not match is an integrity failure on SQLite too.
    contents = read_manifest(sb.backup_path, drill["backupId"])["contents"]
    contents["tables"]["a"] = 4
    edit_manifest(sb.backup_path, drill["backupId"], contents=contents)
    res = sb("test", "--latest", "--json", env=env)
    assert res.code == 13
    assert json.loads(res.out)["drill"]["differences"] == [
        "table a: 4 rows in the backup, 3 restored"
    ]


def _keygen(sb: SB, path: Path) -> str:
    out = sb.ok("keygen", "--output", str(path)).out
    return out.strip().split()[-1]


def test_encrypted_drill_needs_the_identity(
    pg: Cluster, fresh_db: str, sb: SB, tmp_path: Path
) -> None:
    pytest.importorskip("sbbackup.crypto.age")
    pg.psql("CREATE TABLE secret AS SELECT g FROM generate_series(1, 1000) g", db=fresh_db)
    key, other = tmp_path / "key.txt", tmp_path / "other.txt"
    public, other_public = _keygen(sb, key), _keygen(sb, other)
    env = {
        "DATABASE_URL": pg.url(fresh_db),
        "DB_BACKUP_ENCRYPTION": "true",
        "DB_BACKUP_ENCRYPTION_RECIPIENTS": public,
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(key),
    }
    res = sb("test", "--json", env=env)
    assert res.code == 0, res.out + res.err
    report = json.loads(res.out)
    checks = checks_by_name(report)
    assert checks["encryption"]["status"] == "pass" and checks["identity"]["status"] == "pass"
    backup_id = report["drill"]["backupId"]
    assert sb.ok("show", backup_id, "--json").json()["encryption"]["recipients"] == [public]
    assert report["drill"]["status"] == "passed"

    # Preflight: an identity that matches none of the recipients fails with 12.
    mismatch = {**env, "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(other)}
    res = sb("test", "--no-drill", "--json", env=mismatch)
    assert res.code == 12, res.err
    assert checks_by_name(json.loads(res.out))["identity"]["code"] == 12

    # Drill: the other key pair is configured, so preflight passes, but it cannot open the
    # backup made for the first key.
    wrong = {**mismatch, "DB_BACKUP_ENCRYPTION_RECIPIENTS": other_public}
    res = sb("test", "--backup", backup_id, "--json", env=wrong)
    assert res.code == 12, res.out + res.err
    drill = json.loads(res.out)["drill"]
    assert drill["status"] == "failed" and drill["code"] == 12
    assert scratch_dbs(pg) == []


def test_statistics_and_health_see_the_last_drill(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE a (x); INSERT INTO a VALUES (1);")
    con.close()
    env = {"DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_ENABLED": "false"}
    sb.backup_path.mkdir(mode=0o700)  # a missing backup path would be a problem of its own

    def restore_warnings(now: str, **extra: str) -> list[dict]:
        res = sb("health", "--json", "--now", now, env={**env, **extra})
        assert res.code == 0, res.err  # a stale drill warns; it is not a problem
        return [w for w in json.loads(res.out)["warnings"] if w["check"] == "restore-test"]

    assert restore_warnings("2030-01-01T00:00:00Z") == []  # off unless configured
    days = {"SBBACKUP_HEALTH_RESTORE_TEST_DAYS": "3"}
    assert "never" in restore_warnings("2030-01-01T00:00:00Z", **days)[0]["reason"]

    report = sb.ok("test", "--json", env=env).json()
    stats = sb.ok("statistics", "--json", env=env).json()
    assert stats["lastRestoreDrill"]["status"] == "passed"
    assert stats["lastRestoreDrill"]["backupId"] == report["drill"]["backupId"]
    assert "restore test" in sb.ok("statistics", env=env).out
    at = stats["lastRestoreDrill"]["at"]
    assert restore_warnings(at, **days) == []
    assert restore_warnings("2099-01-01T00:00:00Z", **days)  # 3 days is long past by then
