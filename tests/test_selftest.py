"""`sbbackup test`: preflight, restore drill, exact comparison, cleanup."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import SB
from pgcluster import Cluster, create_cluster, destroy_cluster


def scratch_dbs(pg: Cluster) -> list[str]:
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'sbbackup_test_%'")
    return [x for x in out.splitlines() if x]


def test_drill_passes_on_rich_schema(pg: Cluster, rich_db: str, sb: SB) -> None:
    res = sb("test", "--json", env={"DATABASE_URL": pg.url(rich_db)})
    report = json.loads(res.out)
    assert res.code == 0, res.out + res.err
    assert report["ok"] is True
    names = {c["name"]: c["status"] for c in report["checks"]}
    for name in ("config", "tools", "database", "backup-path", "free-space", "locks"):
        assert names[name] in ("pass", "warn"), (name, report["checks"])
    drill = report["drill"]
    assert drill["status"] == "passed" and drill["differences"] == []
    assert set(drill["timings"]) == {"backup", "verify", "restore", "compare"}
    assert drill["tables"] >= 6
    backup = sb.ok("show", drill["backupId"], "--json").json()
    assert backup["scheduleId"] == "test"
    assert scratch_dbs(pg) == []
    human = sb.ok("test", "--latest", env={"DATABASE_URL": pg.url(rich_db)}).out
    assert "PASSED" in human and "drill passed" in human


def test_edited_row_count_fails_with_13(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE public.accounts AS SELECT g AS id FROM generate_series(1, 300) g",
            db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    rec = sb.ok("create", "--json", env=env).json()
    manifest = sb.backup_path / f"{rec['id']}.json"
    data = json.loads(manifest.read_text())
    assert data["contents"]["tables"]["public.accounts"] == 300
    data["contents"]["tables"]["public.accounts"] = 299
    manifest.write_text(json.dumps(data))
    res = sb("test", "--backup", rec["id"], "--json", env=env)
    assert res.code == 13, res.err
    report = json.loads(res.out)
    assert report["drill"]["status"] == "failed"
    assert any("public.accounts" in d and "299" in d and "300" in d
               for d in report["drill"]["differences"])
    assert scratch_dbs(pg) == []


def test_stopped_server_fails_preflight_with_3(sb: SB) -> None:
    other = create_cluster()
    try:
        url = other.url()
        other.stop()
        res = sb("test", "--json", env={"DATABASE_URL": url})
    finally:
        destroy_cluster(other)
    assert res.code == 3, res.err
    report = json.loads(res.out)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed and failed[0]["name"] == "database" and failed[0]["code"] == 3
    assert report["drill"]["status"] == "skipped"


def test_sigterm_mid_restore_drops_scratch(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1500000) g",
            db=fresh_db)
    env = {**sb.env, "DATABASE_URL": pg.url(fresh_db)}
    rec = sb.ok("create", "--json", "--level", "1", env=env).json()
    proc = subprocess.Popen([sys.executable, "-m", "sbbackup", "test", "--backup", rec["id"]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not scratch_dbs(pg):
        time.sleep(0.05)
    assert scratch_dbs(pg), "the drill never created its scratch database"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert scratch_dbs(pg) == []


def test_leftover_scratch_is_cleaned(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE DATABASE sbbackup_test_deadbeef")
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    sb.ok("test", env={"DATABASE_URL": pg.url(fresh_db)})
    assert scratch_dbs(pg) == []


def test_concurrent_writes_counts_are_snapshot_exact(pg: Cluster, fresh_db: str,
                                                      sb: SB) -> None:
    pg.psql("CREATE TABLE hot (id bigserial PRIMARY KEY, v text);"
            "INSERT INTO hot (v) SELECT md5(g::text) FROM generate_series(1, 300000) g",
            db=fresh_db)
    stop = threading.Event()
    inserted = [0]

    def writer() -> None:
        proc = subprocess.Popen(["psql", "-X", "-q", "-d", fresh_db], stdin=subprocess.PIPE,
                                env=pg.env(), text=True, stdout=subprocess.DEVNULL)
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
    assert rec["contents"]["tables"]["public.hot"] < final, "writes did not overlap the dump"
    assert inserted[0] > 0
    res = sb("test", "--backup", rec["id"], "--json", env={"DATABASE_URL": pg.url(fresh_db)})
    assert res.code == 0, res.out + res.err
    assert json.loads(res.out)["drill"]["status"] == "passed"


def test_sqlite_drill(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE a (x); INSERT INTO a VALUES (1), (2), (NULL);")
    con.close()
    res = sb("test", "--json", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert res.code == 0, res.out + res.err
    report = json.loads(res.out)
    assert report["drill"]["status"] == "passed" and report["drill"]["tables"] == 1
    assert not list(Path("/tmp").glob(f"sbbackup_test_*{report['drill']['target'][-6:]}"))
