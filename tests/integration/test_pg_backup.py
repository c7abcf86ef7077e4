"""The core against a real PostgreSQL 15 cluster: create, verify, restore, fidelity, failures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import SB
from helpers.pgcluster import PASSWORD, Cluster, create_cluster, destroy_cluster, plain_dump


def newest(sb: SB) -> dict:
    records = sb.ok("list", "--json").json()
    assert isinstance(records, list) and records
    return records[0]


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_round_trip_fidelity(pg: Cluster, rich_db: str, sb: SB, fmt: str) -> None:
    url = pg.url(rich_db)
    record = sb.ok("create", "--format", fmt, "--json", env={"DATABASE_URL": url}).json()
    assert record["status"] == "completed" and record["format"] == fmt
    assert record["filename"].endswith(".sql.zst" if fmt == "plain" else ".dump.zst")
    assert record["contents"]["tables"]["app.everything"] == 501
    assert record["contents"]["objects"]["largeObjects"] == 1
    target = f"restored_{fmt}"
    # A bare database name restores beside the source with its credentials: no password in argv.
    res = sb.ok(
        "restore",
        record["id"],
        "--target-url",
        target,
        "--create-target",
        "--json",
        env={"DATABASE_URL": url},
    ).json()
    assert res["status"] == "completed" and res["validation"]["differences"] == []
    assert res["validation"]["tables"] == len(record["contents"]["tables"])
    assert plain_dump(pg, target, "--schema-only") == plain_dump(pg, rich_db, "--schema-only")
    assert plain_dump(pg, target) == plain_dump(pg, rich_db)
    pg.psql(f"DROP DATABASE {target}")


def test_manifest_fields_and_modes(pg: Cluster, rich_db: str, sb: SB) -> None:
    env = {"DATABASE_URL": pg.url(rich_db)}
    old = os.umask(0)
    try:
        record = sb.ok("create", "--json", env=env).json()
    finally:
        os.umask(old)
    for key in (
        "id",
        "filename",
        "size",
        "createdAt",
        "checksum",
        "status",
        "duration",
        "error",
        "schemaVersion",
        "scheduleId",
        "completedAt",
        "database",
        "format",
        "compression",
        "encryption",
        "uncompressedSize",
        "toolVersion",
        "pgDumpVersion",
    ):
        assert key in record
    assert record["database"]["serverVersion"].startswith("15.")
    assert record["pgDumpVersion"].startswith("15.")
    assert PASSWORD not in json.dumps(record)
    assert stat.S_IMODE(sb.backup_path.stat().st_mode) == 0o700
    for entry in sb.backup_path.iterdir():
        if entry.is_file():
            assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry
    data = sb.backup_path / record["filename"]
    assert data.stat().st_size == record["size"]
    audit = (sb.backup_path / "audit.log").read_text().splitlines()
    assert json.loads(audit[-1])["operation"] == "create"


def test_zstd_cli_decompresses(pg: Cluster, rich_db: str, sb: SB) -> None:
    record = sb.ok("create", "--json", env={"DATABASE_URL": pg.url(rich_db)}).json()
    out = subprocess.run(
        ["zstd", "-d", "-c", str(sb.backup_path / record["filename"])],
        capture_output=True,
        check=True,
    ).stdout
    assert len(out) == record["uncompressedSize"]
    assert b"-- PostgreSQL database dump complete" in out[-200:]


def test_corrupted_byte_verify_and_restore_refuse(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    sb.ok("verify", record["id"], env=env)
    path = sb.backup_path / record["filename"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    res = sb("verify", record["id"], env=env)
    assert res.code == 13 and record["filename"] in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert res.out.startswith(f"FAIL  {record['filename']}: checksum mismatch for ")
    res = sb("restore", record["id"], "--target-url", "never_made", "--create-target", env=env)
    assert res.code == 13, res.err
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'never_made'") == "0"


def test_failed_dump_leaves_no_backup(pg: Cluster, fresh_db: str, sb: SB) -> None:
    """A dump blocked behind an exclusive lock fails (lock wait timeout) and is recorded."""
    pg.psql("CREATE TABLE locked (id int)", db=fresh_db)
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-d", fresh_db], stdin=subprocess.PIPE, env=pg.env(), text=True
    )
    assert holder.stdin is not None
    holder.stdin.write("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);\n")
    holder.stdin.flush()
    time.sleep(0.5)
    try:
        res = sb(
            "create", env={"DATABASE_URL": pg.url(fresh_db), "SBBACKUP_LOCK_WAIT_TIMEOUT": "1"}
        )
    finally:
        holder.kill()
    assert res.code == 3, res.err
    assert "pg_dump failed" in res.err and "lock" in res.err, res.err
    records = sb.ok("list", "--json").json()
    assert [r["status"] for r in records] == ["failed"]
    assert "lock" in records[0]["error"]
    assert not [p for p in sb.backup_path.iterdir() if ".sql" in p.name]


def test_pg_dump_killed_mid_stream(pg: Cluster, rich_db: str, sb: SB, tmp_path: Path) -> None:
    """The pipefail bug is impossible: partial output from a dying pg_dump is never a backup."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = subprocess.run(["which", "pg_dump"], capture_output=True, text=True).stdout.strip()
    fake = bindir / "pg_dump"
    fake.write_text(
        f'#!/bin/sh\ncase "$1" in --version) exec {real} --version;; esac\n'
        f'{real} "$@" | head -c 30000\nkill -KILL $$\n'
    )
    fake.chmod(0o755)
    env = {"DATABASE_URL": pg.url(rich_db), "PATH": f"{bindir}:{os.environ['PATH']}"}
    res = sb("create", env=env)
    assert res.code == 3, res.err
    assert res.err.strip() == "sbbackup: error: pg_dump was killed by SIGKILL", res.err
    assert sb.ok("list", "--json", "--status", "completed").json() == []
    assert not [p for p in sb.backup_path.iterdir() if ".partial" in p.name or ".zst" in p.name]


def test_wrong_url_missing_tool_bad_config(pg: Cluster, sb: SB, tmp_path: Path) -> None:
    res = sb("create", env={"DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:1/x"})
    assert res.code == 3 and "cannot connect" in res.err
    assert len(res.err.strip().splitlines()) == 1 and "pw" not in res.err
    res = sb("create", env={"DATABASE_URL": pg.url(), "PATH": "/nonexistent"})
    assert res.code == 3
    assert res.err.strip() == (
        "sbbackup: error: pg_dump not found: install the PostgreSQL client "
        "tools (e.g. apt install postgresql-client)"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backup:\n  retentionDayz: 3\n")
    res = sb("--config", str(cfg), "list")
    assert res.code == 2 and str(cfg) in res.err and "backup.retentionDayz" in res.err
    cfg.write_text("backup:\n  compression: maybe\n")
    res = sb("--config", str(cfg), "list", "--json")
    assert res.code == 2 and "backup.compression" in res.err and "boolean" in res.err
    assert json.loads(res.err.strip().splitlines()[-1])["error"]["code"] == 2


def test_password_with_a_slash_is_refused_without_echoing_it(sb: SB) -> None:
    """libpq ends the host part at the first '/': the password's head would become a host name
    in pg_dump's argv, the error message and the manifest. Refuse before running anything."""
    res = sb("create", env={"DATABASE_URL": "postgresql://backup:Zq9Head/Tail7@db.invalid/app"})
    assert res.code == 2, res.err
    assert len(res.err.strip().splitlines()) == 1 and "%2F" in res.err
    assert "Zq9Head" not in res.err and "Tail7" not in res.err
    assert not sb.backup_path.exists() or not list(sb.backup_path.glob("*.json"))


def test_read_only_backup_path(tmp_path: Path) -> None:
    """Exit 4 with one line when the backup path cannot be written (run unprivileged)."""
    import sqlite3
    import sys

    base = Path(
        subprocess.run(
            ["mktemp", "-d", "/tmp/sbb-ro.XXXXXX"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    try:
        db = base / "db.sqlite"
        sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        ro = base / "ro"
        ro.mkdir()
        os.chmod(base, 0o755)
        os.chmod(db, 0o644)
        os.chmod(ro, 0o555)
        # Root ignores file modes, so drop to nobody after importing (site-packages may
        # live under a 0700 /root that nobody cannot read).
        drop = (
            "import os, sys, sqlite3; import sbbackup.cli, sbbackup.ops, "
            "sbbackup.engines.sqlite, sbbackup.storage.local, sbbackup.render\n"
            "if os.geteuid() == 0: os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "sbbackup.cli.main(['create'])"
        )
        cmd = [sys.executable, "-c", drop]
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": f"sqlite:///{db}",
            "DB_BACKUP_PATH": str(ro / "backups"),
            "HOME": str(base),
            "PYTHONPATH": str(Path(__file__).parents[2]),
        }
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=base)
        assert res.returncode == 4, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert "permission denied" in res.stderr.lower()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_password_never_in_argv(pg: Cluster, sb: SB, fresh_db: str) -> None:
    pg.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 400000) g", db=fresh_db
    )
    seen: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        seen.append(
                            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                        )

    t = threading.Thread(target=poll)
    t.start()
    try:
        env = {"DATABASE_URL": pg.url(fresh_db)}
        sb.ok("create", "--format", "custom", env=env)
        sb.ok("create", env=env)
    finally:
        done.set()
        t.join()
    assert any("pg_dump" in c for c in seen), "the poller never saw pg_dump"
    # Only this test's processes name its database (other xdist workers run at the same time).
    mine = [c for c in seen if fresh_db in c]
    assert mine and not [c for c in mine if PASSWORD in c]


def test_sigterm_during_create(pg: Cluster, sb: SB, fresh_db: str) -> None:
    pg.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 2000000) g",
        db=fresh_db,
    )
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "create", "--level", "19"],
        env={**sb.env, "DATABASE_URL": pg.url(fresh_db)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline and not list(sb.backup_path.glob("*.partial")):
        time.sleep(0.05)
    assert list(sb.backup_path.glob("*.partial")), "create never started writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    # The exit waits while zstd's worker threads finish their in-flight level-19 jobs (32 MiB
    # each; about 45 s on an idle 2-core machine, more when loaded): see the closing note.
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert not list(sb.backup_path.glob("*.partial"))
    assert not list(sb.backup_path.glob("*.zst"))
    records = sb.ok("list", "--json").json()
    assert [(r["status"], r["error"]) for r in records] == [("failed", "interrupted")]
    out = subprocess.run(["pgrep", "-f", f"pg_dump.*{fresh_db}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", "pg_dump survived the interrupt"


def test_restore_over_source_needs_yes(pg: Cluster, sb: SB, fresh_db: str) -> None:
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    res = sb("restore", record["id"], env=env)
    assert res.code == 2 and "--yes" in res.err
    res = sb("restore", record["id"], "--clean", "--yes", "--json", env=env)
    assert res.code == 0, res.err
    assert json.loads(res.out)["status"] == "completed"
    assert pg.psql("SELECT count(*) FROM t", db=fresh_db) == "1"
    restores = list((sb.backup_path / "restores").glob("*.json"))
    assert [json.loads(p.read_text())["status"] for p in restores] == ["completed"]


def test_every_spelling_of_the_source_needs_yes(pg: Cluster, sb: SB, fresh_db: str) -> None:
    """Other spellings of the source's server or name still need --yes; nothing is touched."""
    from urllib.parse import quote

    from sbbackup.engines.postgresql import PostgreSQLEngine

    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    pg.psql("INSERT INTO t VALUES (2)", db=fresh_db)  # newer than the backup
    cred = f"postgres:{PASSWORD}@"
    encoded = "".join(f"%{ord(c):02x}" if i == 0 else c for i, c in enumerate(fresh_db))
    aliases = [
        f"postgres://{cred}127.0.0.1:{pg.port}/{fresh_db}",
        f"postgresql://{cred}localhost:{pg.port}/{fresh_db}",
        f"postgresql://{cred}127.0.0.1:{pg.port}/{encoded}",
        f"postgresql://postgres@/{fresh_db}?host={quote(str(pg.sockdir))}&port={pg.port}",
    ]
    engine = PostgreSQLEngine(pg.url(fresh_db), env={"PATH": os.environ["PATH"]})
    for alias in aliases:
        assert engine.resolve_target(alias).is_source, alias
    assert not engine.resolve_target(f"postgresql://{cred}localhost:{pg.port}/other_name").is_source
    other = create_cluster()
    try:  # the same name on another cluster is another database
        other.psql(f"CREATE DATABASE {fresh_db}")
        assert not engine.resolve_target(other.url(fresh_db)).is_source
    finally:
        destroy_cluster(other)
    # Through the command line, with the password only in ~/.pgpass (a URL target never gets
    # the source's password).
    home = Path(sb.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / ".pgpass").write_text(f"localhost:{pg.port}:*:postgres:{PASSWORD}\n")
    (home / ".pgpass").chmod(0o600)
    res = sb(
        "restore",
        record["id"],
        "--clean",
        "--target-url",
        f"postgresql://postgres@localhost:{pg.port}/{fresh_db}",
        env=env,
    )
    assert res.code == 2 and "--yes" in res.err
    assert pg.psql("SELECT count(*) FROM t", db=fresh_db) == "2"


def test_conninfo_target_is_refused_without_echo(pg: Cluster, sb: SB, fresh_db: str) -> None:
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    conninfo = "host=127.0.0.1 password=hunter2-never-echo dbname=elsewhere"
    res = sb("restore", record["id"], "--target-url", conninfo, "--create-target", env=env)
    assert res.code == 2 and "connection string" in res.err
    assert "hunter2" not in res.err + res.out
    assert "hunter2" not in (sb.backup_path / "audit.log").read_text()
