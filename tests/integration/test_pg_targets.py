"""Restore targets are a policy, not a string; children get a minimal environment; errors carry
the server's own words. Against a real PostgreSQL cluster and the real command line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SB
from helpers.pgcluster import PASSWORD, Cluster, free_port

TOKEN = "sbb_api-token-never-in-a-child-0123456789"


def databases(pg: Cluster) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database").splitlines())


@pytest.fixture
def backup(pg: Cluster, sb: SB, fresh_db: str) -> tuple[str, dict[str, str]]:
    pg.psql("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 10) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    assert isinstance(record, dict)
    return str(record["id"]), env


def test_refused_target_forms(pg: Cluster, sb: SB, backup: tuple[str, dict[str, str]]) -> None:
    """Multi-host targets and parameters that change the host, the database or the credentials
    are refused (exit 2, one line, the password never echoed); nothing is created or dropped."""
    backup_id, env = backup
    base = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}"
    forms = {
        "multi-host": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port},localhost:{pg.port}/x1",
        "multi-port": f"{base}/x2?host=127.0.0.1&port={pg.port},{pg.port}",
        "dbname in the query": f"{base}/x3?dbname=postgres",
        "hostaddr": f"{base}/x4?hostaddr=127.0.0.1",
        "service": f"{base}/x5?service=prod",
        "passfile": f"{base}/x6?passfile=/etc/shadow",
        "options": f"{base}/x7?options=-c%20search_path%3Devil",
        "target_session_attrs": f"{base}/x8?target_session_attrs=read-write",
        "unknown parameter": f"{base}/x9?krbsrvname=x",
        "host in the query over the URL's host": f"{base}/x10?host=127.0.0.1",
        "port in the query over the URL's port": f"{base}/x11?port=1",
        "a parameter given twice": f"{base}/x12?sslmode=disable&sslmode=prefer",
    }
    before = databases(pg)
    for label, url in forms.items():
        res = sb("restore", backup_id, "--target-url", url, "--create-target", env=env)
        assert res.code == 2, (label, res.code, res.err)
        assert len(res.err.strip().splitlines()) == 1, (label, res.err)
        assert PASSWORD not in res.err + res.out, f"{label}: the password was echoed"
    assert databases(pg) == before
    assert not (sb.backup_path / "restores").exists() or not list(
        (sb.backup_path / "restores").glob("*.json")
    ), "a refused target left a restore record"


def test_unreachable_target_fails_and_never_guesses(
    pg: Cluster, sb: SB, backup: tuple[str, dict[str, str]]
) -> None:
    """A target that cannot be reached fails the restore (exit 3) before anything happens."""
    backup_id, env = backup
    closed = free_port()
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed}/elsewhere"
    res = sb("restore", backup_id, "--target-url", url, "--create-target", env=env)
    assert res.code == 3, res.err
    assert "cannot" in res.err and PASSWORD not in res.err


def test_source_password_goes_only_where_it_was_named(
    pg: Cluster, sb: SB, backup: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """A URL target without a password gets none of the source's (URL or PGPASSWORD); a
    ``~/.pgpass`` entry for its host does apply."""
    backup_id, env = backup
    target = f"postgresql://postgres@localhost:{pg.port}/by_pgpass"
    res = sb(
        "restore",
        backup_id,
        "--target-url",
        target,
        "--create-target",
        env={**env, "PGPASSWORD": PASSWORD},
    )
    assert res.code == 3 and "password" in res.err, res.err
    assert "by_pgpass" not in databases(pg)
    home = Path(sb.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    pgpass = home / ".pgpass"
    pgpass.write_text(f"localhost:{pg.port}:*:postgres:{PASSWORD}\n")
    pgpass.chmod(0o600)
    sb.ok("restore", backup_id, "--target-url", target, "--create-target", env=env)
    assert pg.psql("SELECT count(*) FROM t", db="by_pgpass") == "10"
    pg.psql("DROP DATABASE by_pgpass")


def wrapper_dir(tmp_path: Path) -> tuple[Path, Path]:
    """pg_dump, psql and pg_restore wrappers that save their own /proc/PID/environ."""
    bindir, envs = tmp_path / "bin", tmp_path / "envs"
    bindir.mkdir()
    envs.mkdir()
    for tool in ("pg_dump", "psql", "pg_restore"):
        real = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        script = bindir / tool
        script.write_text(
            f'#!/bin/sh\ncat /proc/$$/environ > {envs}/{tool}.$$\nexec {real.stdout.strip()} "$@"\n'
        )
        script.chmod(0o755)
    return bindir, envs


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_children_get_a_minimal_environment(
    pg: Cluster, sb: SB, fresh_db: str, tmp_path: Path, fmt: str
) -> None:
    """No child's environment holds the database password, DATABASE_URL or the API token."""
    pg.psql("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 10) g", db=fresh_db)
    bindir, envs = wrapper_dir(tmp_path)
    env = {
        "DATABASE_URL": pg.url(fresh_db),
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "SBBACKUP_API_TOKEN": TOKEN,
        "DB_BACKUP_FORMAT": fmt,
        "DB_BACKUP_RESTORE_JOBS": "2",
    }
    record = sb.ok("create", "--json", env=env).json()
    assert isinstance(record, dict)
    sb.ok("restore", record["id"], "--target-url", f"envtest_{fmt}", "--create-target", env=env)
    sb.ok("verify", "--deep", record["id"], env=env)
    seen = sorted(envs.iterdir())
    tools = {p.name.split(".")[0] for p in seen}
    assert {"pg_dump", "psql" if fmt == "plain" else "pg_restore"} <= tools, tools
    for path in seen:
        environ = dict(item.split("=", 1) for item in path.read_text().split("\0") if "=" in item)
        blob = "\0".join(f"{k}={v}" for k, v in environ.items())
        assert PASSWORD not in blob, f"{path.name}: the database password is in its environment"
        assert TOKEN not in blob, f"{path.name}: the API token is in its environment"
        assert "DATABASE_URL" not in environ and "PGPASSWORD" not in environ, path.name
        assert not set(environ) & {"SBBACKUP_API_TOKEN", "DB_BACKUP_FORMAT"}, path.name
        passfile = environ.get("PGPASSFILE")
        if passfile is not None:  # an inherited memory file, never a path on disk
            assert passfile.startswith("/dev/fd/"), f"{path.name}: PGPASSFILE={passfile}"
    assert pg.psql("SELECT count(*) FROM t", db=f"envtest_{fmt}") == "10"
    pg.psql(f"DROP DATABASE envtest_{fmt}")


def test_passfile_is_private_while_the_child_runs(
    pg: Cluster, sb: SB, fresh_db: str, tmp_path: Path
) -> None:
    """While pg_dump waits for a lock, its passfile is a 0600 memory file it inherited: the
    password is on no disk, in no argv and in no environment."""
    pg.psql("CREATE TABLE t (x int)", db=fresh_db)
    locker = subprocess.Popen(
        ["psql", "-XAtq", "-d", fresh_db],
        stdin=subprocess.PIPE,
        env=pg.env(),
        text=True,
    )
    assert locker.stdin is not None
    locker.stdin.write("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);\n")
    locker.stdin.flush()
    env = {**sb.env, "DATABASE_URL": pg.url(fresh_db), "SBBACKUP_LOCK_WAIT_TIMEOUT": "20"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "create"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        child, environ = _wait_for_pg_dump_environ(proc.pid)
        assert environ["PGPASSFILE"].startswith("/dev/fd/")
        fd = environ["PGPASSFILE"].rsplit("/", 1)[1]
        passfile = Path(f"/proc/{child}/fd/{fd}")
        assert os.readlink(passfile).startswith("/memfd:sbbackup-pgpass"), os.readlink(passfile)
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert PASSWORD not in "\0".join(f"{k}={v}" for k, v in environ.items())
        assert PASSWORD not in Path(f"/proc/{child}/cmdline").read_text()
    finally:
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
        )
        locker.kill()
        locker.wait()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _wait_for_pg_dump_environ(parent: int) -> tuple[int, dict[str, str]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat_line = Path(f"/proc/{pid}/stat").read_text()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                cmd = argv[0] if any(a.startswith(b"--snapshot=") for a in argv) else b""
                if int(stat_line.rsplit(")", 1)[1].split()[1]) != parent:
                    continue
                if not cmd.endswith(b"pg_dump"):
                    continue
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            pairs = [item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item]
            return int(pid), dict((k, v) for k, v in pairs)
        time.sleep(0.05)
    raise AssertionError("pg_dump never started")


def test_second_restore_into_a_held_target_is_refused(
    pg: Cluster, sb: SB, backup: tuple[str, dict[str, str]]
) -> None:
    """While one restore holds a target, another into the same database (however spelled)
    gets exit 11 naming the holder; the first one then completes."""
    backup_id, env = backup
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sbbackup",
            "restore",
            backup_id,
            "--target-url",
            "held",
            "--create-target",
        ],
        env={**sb.env, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    restores = sb.backup_path / "restores"
    deadline = time.monotonic() + 30
    while not list(restores.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGSTOP)  # the restore is now under way and holds its lock
    try:
        spelled = f"postgresql://postgres:{PASSWORD}@localhost:{pg.port}/held"
        res = sb("restore", backup_id, "--target-url", spelled, "--clean", env=env)
        assert res.code == 11, res.err
        assert f"pid {first.pid}" in res.err
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    records = [json.loads(p.read_text()) for p in restores.glob("*.json")]
    assert [r["status"] for r in records] == ["completed"]
    assert pg.psql("SELECT count(*) FROM t", db="held") == "10"
    pg.psql("DROP DATABASE held")


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_permission_error_reads_as_one(pg: Cluster, sb: SB, fresh_db: str, fmt: str) -> None:
    """A role that may not read a table gets the server's message, not a snapshot error."""
    pg.psql(
        "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'limited') THEN "
        f"CREATE ROLE limited LOGIN PASSWORD '{PASSWORD}'; END IF; END$$"
    )
    pg.psql("CREATE TABLE secret (x int); INSERT INTO secret VALUES (1)", db=fresh_db)
    pg.psql("REVOKE ALL ON secret FROM PUBLIC", db=fresh_db)
    url = f"postgresql://limited:{PASSWORD}@127.0.0.1:{pg.port}/{fresh_db}"
    res = sb("create", "--format", fmt, env={"DATABASE_URL": url})
    assert res.code == 3, res.err
    assert "permission denied" in res.err and "snapshot" not in res.err, res.err
    assert PASSWORD not in res.err


def test_redirecting_libpq_variables_refuse_a_target_url(
    pg: Cluster, sb: SB, backup: tuple[str, dict[str, str]]
) -> None:
    """PGHOSTADDR (or PGSERVICE) would send a target URL's connection, and its DROP, to a
    server the URL does not name: refused while set, nothing dropped."""
    backup_id, env = backup
    pg.psql("CREATE DATABASE victim")
    pg.psql("CREATE TABLE keep (x int)", db="victim")
    try:
        url = f"postgresql://postgres:{PASSWORD}@staging.invalid:{pg.port}/victim"
        for var, value in (("PGHOSTADDR", "127.0.0.1"), ("PGSERVICE", "prod")):
            res = sb("restore", backup_id, "--target-url", url, "--clean", env={**env, var: value})
            assert res.code == 2 and var in res.err, (var, res.err)
        assert pg.psql("SELECT count(*) FROM keep", db="victim") == "0"
    finally:
        pg.psql("DROP DATABASE IF EXISTS victim WITH (FORCE)")
