"""Operator-facing command-line behaviour (issue 14): keygen never loses a key, bare
``sbbackup`` is help (exit 0), and a command given something it ignores says so."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from conftest import SB
from helpers.age_cli import require_age


def test_keygen_prints_the_identity_on_stdout_and_the_public_key_on_stderr(
    sb: SB, tmp_path: Path
) -> None:
    require_age()
    res = sb.ok("keygen")
    assert "AGE-SECRET-KEY-1" in res.out and "# public key: age1" in res.out
    public = res.err.strip().removeprefix("Public key: ")
    assert public.startswith("age1") and public in res.out
    key = tmp_path / "k.txt"
    key.write_text(res.out)
    derived = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True)
    assert derived.stdout.strip() == public  # the stock tool reads what stdout carried


def test_keygen_json_without_output_is_refused_before_any_key_exists(
    sb: SB, tmp_path: Path
) -> None:
    res = sb("keygen", "--json")
    assert res.code == 2 and res.out == ""
    assert "--output" in res.err and len(res.err.strip().splitlines()) <= 2, res.err
    made = sb.ok("keygen", "--json", "--output", str(tmp_path / "k.txt")).json()
    assert made["publicKey"].startswith("age1") and made["output"].endswith("k.txt")
    assert "AGE-SECRET-KEY-1" in (tmp_path / "k.txt").read_text()


def test_bare_sbbackup_prints_help_and_exits_0(sb: SB) -> None:
    res = sb()
    assert res.code == 0 and res.err == ""
    assert res.out.startswith("Usage: sbbackup") and "create" in res.out and "Exit codes" in res.out


def test_schedules_json_lists_like_schedules_list_json(sb: SB, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    now = ("--now", "2026-03-20T12:00:00Z")  # the same clock for both
    bare = sb.ok("schedules", "--json", *now, env=env).json()
    listed = sb.ok("schedules", "list", "--json", *now, env=env).json()
    assert bare == listed and {s["scheduleId"] for s in bare} >= {"daily", "weekly", "monthly"}
    res = sb("schedules", "--json", "list", env=env)
    assert res.code == 2 and "after the subcommand" in res.err


def test_verify_with_an_id_and_all_is_refused(sb: SB, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    res = sb("verify", "--all", "streambuddy_backup_2026-01-01T00-00-00-000Z", env=env)
    assert res.code == 2 and "not both" in res.err, res.err


def test_test_with_a_bad_backup_is_refused_before_any_check(sb: SB, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    res = sb("test", "--backup", "nope", env=env)
    assert res.code == 2 and res.out == "" and "invalid backup ID" in res.err, res
    res = sb("test", "--backup", "streambuddy_backup_2026-01-01T00-00-00-000Z", env=env)
    assert res.code == 10 and res.out == "" and "not found" in res.err, res


def test_health_min_free_takes_units_and_speaks_them(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    sb.ok("run-schedule", "daily", env=env)  # the path exists, the schedule is not overdue
    res = sb("health", "--json", "--min-free", "100P", env=env)  # more than any disk here
    assert res.code == 14, res.err
    [problem] = [p for p in res.json()["problems"] if p["check"] == "free-space"]
    assert "(threshold 102400.0 TiB)" in problem["reason"] and "bytes" not in problem["reason"]
    res = sb("health", "--min-free", "10X", env=env)
    assert res.code == 2 and "not a size" in res.err
    assert sb("health", "--min-free", "0", env=env).code == 0


def test_prune_is_quiet_on_success_unless_asked(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    sb.ok("create", env=env)
    quiet = sb.ok("prune", env=env)
    assert quiet.out == "" and quiet.err == ""
    for flag in ("-v", "--dry-run"):
        assert "KEEP" in sb.ok("prune", flag, env=env).out
    assert sb.ok("prune", "--json", env=env).json()["keep"] == 1


def test_show_is_readable_key_values(sb: SB, tmp_path: Path) -> None:
    """Units on durations and sizes, yes/no, nested objects as indented rows, the checksum
    whole, no padding after the values, no JSON braces."""
    db = tmp_path / "app.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    rec = sb.ok("create", "--json", env=env).json()
    out = sb.ok("show", rec["id"], env=env).out
    lines = out.splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert "{" not in out and "True" not in out and "False" not in out
    assert any(line.startswith("duration") and line.endswith((" ms", " s")) for line in lines)
    assert any(line.split() == ["frameChecksum", "yes"] for line in lines)
    assert any(line.split() == ["checksum", rec["checksum"]] for line in lines)
    assert "compression" in lines and "  algorithm      zstd" in lines, out
    assert any(line.startswith("size") and "B)" in line for line in lines)
    shown = sb.ok("schedules", "show", "daily", env=env).out
    assert any(line.split() == ["enabled", "yes"] for line in shown.splitlines()), shown


def test_the_preflight_writes_nothing(sb: SB, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    res = sb("test", "--no-drill", "--json", env=env)
    checks = {c["name"]: c["status"] for c in res.json()["checks"]}
    assert checks["backup-path"] == "warn" and checks["locks"] == "pass", checks
    assert not sb.backup_path.exists(), "the preflight created the backup path"
    sb.ok("create", env=env)
    before = sorted(p.name for p in sb.backup_path.rglob("*"))
    assert sb("test", "--no-drill", env=env).code == 0
    assert sorted(p.name for p in sb.backup_path.rglob("*")) == before


def test_test_on_a_read_only_backup_path_reports_every_check(sb: SB, tmp_path: Path) -> None:
    """Diagnose, don't die: every preflight check is reported (JSON too), the unusable path
    fails its checks, the audit log that cannot be written is one more failed check, and the
    exit code is the storage error's."""
    db = tmp_path / "app.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    where = tmp_path / "m"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], check=True)
    try:
        env = {"DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_PATH": str(where / "b")}
        sb.ok("create", env=env)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        res = sb("test", "--json", env=env)
        assert res.code == 4, res.err
        checks = {c["name"]: c["status"] for c in res.json()["checks"]}
        assert {"config", "tools", "database", "free-space", "schedules"} <= set(checks)
        assert checks["backup-path"] == checks["locks"] == checks["audit"] == "fail", checks
        assert "Traceback" not in res.err
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_schedule_ids_that_are_api_paths_are_refused(sb: SB, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    for name in ("next", "statistics", "test", "manual"):
        res = sb("schedules", "add", name, "--cron", "0 3 * * *", "--retention-days", "3", env=env)
        assert res.code == 2 and "reserved" in res.err, (name, res.err)
    sb.ok("schedules", "add", "nightly", "--cron", "0 3 * * *", "--retention-days", "3", env=env)
