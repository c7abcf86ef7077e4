"""The SQLite engine end to end, and catalog behaviour that needs no server."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import SB
from helpers.manifests import edit_manifest

from sbbackup.catalog import BACKUP_ID_RE, SCHEMA_VERSION, validate_backup_id
from sbbackup.errors import UsageError


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    db = tmp_path / "demo.db"
    con = sqlite3.connect(db)
    con.executescript('''
        CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB, n REAL);
        CREATE TABLE "odd ""name""" (x TEXT);
        CREATE INDEX t_name ON t(name);
        CREATE VIEW v AS SELECT id FROM t;
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;
    ''')
    con.executemany(
        "INSERT INTO t (name, data, n) VALUES (?, ?, ?)",
        [(f"row {i}\n-- not a comment; 'q' 😀", bytes(range(256)), i / 3) for i in range(2000)]
        + [(None, None, None)],
    )
    con.execute('INSERT INTO "odd ""name""" VALUES (\'x\')')
    con.commit()
    con.close()
    return db


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sqlite_round_trip(sb: SB, demo_db: Path, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    record = sb.ok("create", "--json", env=env).json()
    assert record["database"]["engine"] == "sqlite"
    assert record["contents"]["tables"] == {"t": 2001, 'odd "name"': 1}
    sb.ok("verify", "--deep", record["id"], env=env)
    target = tmp_path / "restored.db"
    res = sb.ok(
        "restore", record["id"], "--target-url", f"sqlite:///{target}", "--json", env=env
    ).json()
    assert res["status"] == "completed"
    q = "SELECT * FROM t ORDER BY id"
    assert rows(target, q) == rows(demo_db, q)
    q = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    assert rows(target, q) == rows(demo_db, q)
    # An existing target is never overwritten without --clean (exit 2, as for PostgreSQL)...
    res = sb("restore", record["id"], "--target-url", f"sqlite:///{target}", env=env)
    assert res.code == 2 and "--clean" in res.err
    # ...unless it is empty: a fresh `sqlite3 empty.db` file is filled, no flag needed.
    empty = target.with_name("empty.db")
    sqlite3.connect(empty).close()
    sb.ok("restore", record["id"], "--target-url", f"sqlite:///{empty}", env=env)
    assert rows(empty, "SELECT * FROM t ORDER BY id") == rows(
        demo_db, "SELECT * FROM t ORDER BY id"
    )
    # A restored file is private, whatever the umask: it holds the whole database.
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_sqlite_restore_never_writes_through_a_symlink(
    sb: SB, demo_db: Path, tmp_path: Path
) -> None:
    """A symlink at the target's name is refused, and --clean replaces the link itself: the
    file it points to (here another backup's data file) is never touched."""
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    record = sb.ok("create", "--json", env=env).json()
    victim = sb.backup_path / record["filename"]
    before = victim.read_bytes()
    link = tmp_path / "link.db"
    link.symlink_to(victim)
    res = sb("restore", record["id"], "--target-url", f"sqlite:///{link}", env=env)
    assert res.code == 2 and "--clean" in res.err
    sb.ok("restore", record["id"], "--target-url", f"sqlite:///{link}", "--clean", env=env)
    assert victim.read_bytes() == before
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    assert rows(link, "SELECT count(*) FROM t") == [(2001,)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".restoring")]


def test_list_shows_missing_and_corrupt(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    a = sb.ok("create", "--json", env=env).json()
    b = sb.ok("create", "--json", env=env).json()
    c = sb.ok("create", "--json", env=env).json()
    (sb.backup_path / a["filename"]).unlink()
    with open(sb.backup_path / b["filename"], "ab") as fh:
        fh.write(b"x")
    (sb.backup_path / (c["id"] + ".json")).write_text("{not json")
    listed = {r["id"]: r["status"] for r in sb.ok("list", "--json").json()}
    assert listed == {a["id"]: "missing", b["id"]: "corrupt", c["id"]: "corrupt"}
    res = sb("verify", "--all")
    assert res.code == 13
    assert sb.ok("list", "--status", "missing", "--json").json()[0]["id"] == a["id"]


def test_newer_schema_version_refused(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    rec = sb.ok("create", "--json", env=env).json()
    edit_manifest(sb.backup_path, rec["id"], schemaVersion=SCHEMA_VERSION + 1)
    res = sb("show", rec["id"])
    assert res.code == 13 and "newer" in res.err and "upgrade sbbackup" in res.err


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "/abs",
        "streambuddy_backup_x",
        "a\0b",
        "streambuddy_backup_2026-01-01T00-00-00-000Z/../x",
        "x" * 5000,
    ],
)
def test_ids_are_validated_before_the_filesystem(bad: str, sb: SB) -> None:
    with pytest.raises(UsageError):
        validate_backup_id(bad)
    res = sb("show", bad.replace("\0", ""))
    assert res.code == 2


def test_unknown_id_is_not_found(sb: SB) -> None:
    res = sb("show", "streambuddy_backup_2026-01-01T00-00-00-000Z")
    assert res.code == 10 and "not found" in res.err
    res = sb("delete", "streambuddy_backup_2026-01-01T00-00-00-000Z", "--yes", "--json")
    assert res.code == 10 and json.loads(res.err.splitlines()[-1])["error"]["code"] == 10


def test_delete_needs_yes_without_tty(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    rec = sb.ok("create", "--json", env=env).json()
    assert sb("delete", rec["id"], env=env).code == 2
    sb.ok("delete", rec["id"], "--yes", env=env)
    assert not (sb.backup_path / rec["filename"]).exists()
    assert sb("show", rec["id"]).code == 10


def test_stale_partials_are_swept(sb: SB, demo_db: Path) -> None:
    sb.backup_path.mkdir(mode=0o700)
    stale = sb.backup_path / "streambuddy_backup_2026-01-01T00-00-00-000Z.sql.zst.partial"
    stale.write_bytes(b"half a dump")
    sb.ok("create", env={"DATABASE_URL": f"sqlite:///{demo_db}"})
    assert not stale.exists()
    assert all(BACKUP_ID_RE.fullmatch(r["id"]) for r in sb.ok("list", "--json").json())


def test_help_lists_exit_codes(sb: SB) -> None:
    for args in (["--help"], ["create", "--help"], ["verify", "--help"]):
        out = sb.ok(*args).out
        assert "13   integrity failure" in out and "130  interrupted" in out
    assert sb.ok("--version").out.startswith("sbbackup, version ")


def test_listing_reads_manifests_never_data_files(tmp_path: Path) -> None:
    """Listing stats data files (missing/corrupt detection) but never opens one."""
    from sbbackup.catalog import BackupRecord, Catalog, iso, new_backup_id
    from sbbackup.storage.local import LocalStorage

    class NoDataReads(LocalStorage):
        def open_read(self, name: str):  # type: ignore[no-untyped-def]
            assert name.endswith(".json"), f"list opened data file {name}"
            return super().open_read(name)

    from datetime import UTC, datetime, timedelta

    store = NoDataReads(tmp_path / "b")
    catalog = Catalog(store)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(50):
        when = start + timedelta(minutes=i)
        bid = new_backup_id(when)
        store.write_bytes_atomic(f"{bid}.sql.zst", b"x" * (10 if i % 5 else 11))
        catalog.save(
            BackupRecord(bid, f"{bid}.sql.zst", 10, iso(when) or "", "0" * 64, "completed", 1)
        )
    records = catalog.list()
    assert [r.createdAt for r in records] == sorted((r.createdAt for r in records), reverse=True)
    assert sum(r.status == "corrupt" for r in records) == 10
    assert sum(r.status == "completed" for r in records) == 40
    assert len(catalog.list(limit=7)) == 7


def _edit_manifest(sb: SB, backup_id: str, **changes: object) -> None:
    edit_manifest(sb.backup_path, backup_id, **changes)


def test_a_manifest_with_wrong_types_is_corrupt_not_a_crash(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    a = sb.ok("create", "--json", env=env).json()
    b = sb.ok("create", "--json", env=env).json()
    _edit_manifest(sb, a["id"], size="big", checksum=5)
    # b's manifest claims a's data file: it must not be able to reach (or delete) it.
    _edit_manifest(sb, b["id"], filename=a["filename"])
    res = sb("list")
    assert res.code == 0, res.err
    listed = {r["id"]: r["status"] for r in sb.ok("list", "--json").json()}
    assert listed == {a["id"]: "corrupt", b["id"]: "corrupt"}
    for bid, needle in ((a["id"], "size has the wrong type"), (b["id"], "does not belong")):
        res = sb("show", bid)
        assert res.code == 13 and needle in res.err
        assert len(res.err.strip().splitlines()) == 1
    sb.ok("delete", b["id"], "--yes", env=env)
    assert (sb.backup_path / a["filename"]).exists()
    assert not (sb.backup_path / b["filename"]).exists()


def test_delete_removes_a_backup_whose_manifest_is_damaged(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    rec = sb.ok("create", "--json", env=env).json()
    (sb.backup_path / (rec["id"] + ".json")).write_text('{"schemaVersion": 1, "id": ')
    assert sb("show", rec["id"]).code == 13
    out = sb.ok("delete", rec["id"], "--yes", "--json", env=env).json()
    assert out["id"] == rec["id"] and out["status"] == "corrupt"
    assert not [p for p in sb.backup_path.iterdir() if p.name.startswith(rec["id"])]
    assert sb("show", rec["id"]).code == 10
    audit = (sb.backup_path / "audit.log").read_text().splitlines()
    assert json.loads(audit[-1])["operation"] == "delete"


def test_delete_refuses_a_manifest_from_a_newer_sbbackup(sb: SB, demo_db: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    rec = sb.ok("create", "--json", env=env).json()
    _edit_manifest(sb, rec["id"], schemaVersion=SCHEMA_VERSION + 1)
    res = sb("delete", rec["id"], "--yes", env=env)
    assert res.code == 13 and "upgrade sbbackup" in res.err
    assert (sb.backup_path / rec["filename"]).exists()


def test_no_data_file_survives_a_manifest_that_could_not_be_written(
    demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full (or Ctrl-C) after the data file is committed but before its manifest: the data
    file is removed (no manifest, no backup) and the attempt is recorded as failed."""
    import errno

    from sbbackup import ops
    from sbbackup.config import load_settings
    from sbbackup.errors import StorageError
    from sbbackup.storage.local import LocalStorage, storage_error

    real = LocalStorage.write_bytes_atomic

    def full_for_completed(self: LocalStorage, name: str, data: bytes) -> None:
        if b'"status": "completed"' in data:
            raise storage_error(OSError(errno.ENOSPC, "full"), f"cannot write {name}")
        real(self, name, data)

    monkeypatch.setattr(LocalStorage, "write_bytes_atomic", full_for_completed)
    backups = tmp_path / "b"
    settings = load_settings(
        env={"DATABASE_URL": f"sqlite:///{demo_db}", "DB_BACKUP_PATH": str(backups)}
    )
    with pytest.raises(StorageError, match="No space left on device"):
        ops.create_backup(ops.Context(settings), ops.CreateOptions())
    monkeypatch.setattr(LocalStorage, "write_bytes_atomic", real)
    assert not [p for p in backups.iterdir() if ".sql" in p.name]
    records = ops.list_backups(ops.Context(settings))
    assert [(r.status, r.filename, r.checksum) for r in records] == [("failed", None, None)]


def test_an_existing_read_only_backup_dir_is_not_made_writable(tmp_path: Path) -> None:
    from sbbackup.storage.local import ensure_private_dir

    made = tmp_path / "new"
    ensure_private_dir(made)
    assert made.stat().st_mode & 0o777 == 0o700
    loose, ro = tmp_path / "loose", tmp_path / "ro"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    ro.mkdir()
    os.chmod(ro, 0o500)
    ensure_private_dir(loose)
    ensure_private_dir(ro)
    assert loose.stat().st_mode & 0o777 == 0o755  # nobody else can write it: kept as it is
    assert ro.stat().st_mode & 0o777 == 0o500  # the owner gains none


def test_progress_only_on_a_terminal(sb: SB, demo_db: Path) -> None:
    import pty
    import subprocess
    import sys
    import threading

    env = {**sb.env, "DATABASE_URL": f"sqlite:///{demo_db}", "TERM": "xterm"}
    res = sb("create", "--json", env=env)  # stderr is a pipe: the record and nothing else
    assert res.code == 0 and res.err == ""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "create", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    shown = bytearray()

    def drain() -> None:  # read while it runs, so a full terminal buffer never blocks it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    out = proc.communicate(timeout=120)[0]
    reader.join(timeout=30)
    os.close(master)
    assert proc.returncode == 0
    assert json.loads(out)["status"] == "completed"  # stdout still carries only the record
    assert b"dumping" in shown


def test_sqlite_source_however_spelled(tmp_path: Path) -> None:
    from sbbackup.engines.sqlite import SQLiteEngine

    db = tmp_path / "a" / "src.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    (tmp_path / "link.db").symlink_to(db)
    engine = SQLiteEngine(f"sqlite:///{db}")
    assert engine.resolve_target(f"sqlite:///{tmp_path}/a/../a/src.db").is_source
    assert engine.resolve_target(f"sqlite:///{tmp_path}/link.db").is_source
    assert not engine.resolve_target(f"sqlite:///{tmp_path}/a/other.db").is_source


def test_compare_contents_reports_every_difference() -> None:
    from sbbackup.engines import compare_contents

    expected = {
        "tables": {"public.a": 3, "public.b": 1, "public.gone": 5},
        "objects": {"views": 2, "sequences": 1, "largeObjects": 1},
    }
    actual = {
        "tables": {"public.a": 3, "public.b": 2, "public.extra": 0},
        "objects": {"views": 1, "sequences": 1},
    }
    assert compare_contents(expected, actual) == [
        "table public.b: 1 rows in the backup, 2 restored",
        "table public.extra is in the restored database but not in the backup",
        "table public.gone is missing from the restored database",
        "largeObjects: 1 in the backup, none counted in the restore",
        "views: 2 in the backup, 1 restored",
    ]
    assert compare_contents(expected, expected) == []


@pytest.mark.parametrize(
    "damage",
    ["nested 100,000 deep", "nested 40 deep in a field", "over 1 MiB"],
)
def test_a_pathological_manifest_is_corrupt_never_a_traceback(
    sb: SB, demo_db: Path, damage: str
) -> None:
    """Before, one manifest nested 100,000 deep made list, verify --all, prune, delete ... die
    with an uncaught RecursionError; only a manual rm recovered."""
    env = {"DATABASE_URL": f"sqlite:///{demo_db}"}
    good = sb.ok("create", "--json", env=env).json()
    bad = sb.ok("create", "--json", env=env).json()
    manifest = sb.backup_path / f"{bad['id']}.json"
    if damage == "nested 100,000 deep":
        manifest.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "nested 40 deep in a field":
        doc = json.loads(manifest.read_text())
        doc["contents"] = json.loads('{"a": ' * 40 + "1" + "}" * 40)
        manifest.write_text(json.dumps(doc))
    else:
        doc = json.loads(manifest.read_text())
        doc["error"] = "x" * (1 << 20)
        manifest.write_text(json.dumps(doc))
    listed = {r["id"]: r["status"] for r in sb.ok("list", "--json", env=env).json()}
    assert listed == {good["id"]: "completed", bad["id"]: "corrupt"}
    res = sb("verify", "--all", env=env)
    assert res.code == 13 and "Traceback" not in res.err, res.err
    res = sb("show", bad["id"], env=env)
    assert res.code == 13 and len(res.err.strip().splitlines()) == 1, res.err
    sb.ok("delete", bad["id"], "--yes", env=env)
    assert not manifest.exists()
    assert [r["id"] for r in sb.ok("list", "--json", env=env).json()] == [good["id"]]


def test_a_read_only_backup_path_says_so_before_dumping(
    sb: SB, demo_db: Path, tmp_path: Path
) -> None:
    """A real read-only mount (tmpfs, remounted ro): create exits 4 naming the cause, not
    "permission denied"; prune --dry-run still plans (it takes no lock); nothing is written."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root (CI does)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        (mnt / "backups").mkdir(mode=0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        env = {"DATABASE_URL": f"sqlite:///{demo_db}", "DB_BACKUP_PATH": str(mnt / "backups")}
        res = sb("create", env=env)
        assert res.code == 4, (res.code, res.err)
        assert res.err.strip().splitlines() == [
            f"sbbackup: error: cannot write to backup directory {mnt / 'backups'}: "
            "read-only file system"
        ], res.err
        assert list((mnt / "backups").iterdir()) == []
        res = sb("prune", "--dry-run", env=env)  # a plan only: it never writes
        assert res.code == 0, (res.code, res.err)
        assert list((mnt / "backups").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_deep_verify_reads_a_backup_with_the_engine_that_wrote_it(sb: SB, demo_db: Path) -> None:
    """A SQLite backup deep-verifies where the configuration names PostgreSQL, or nothing:
    the manifest says which engine's structure rules apply (no connection is made)."""
    rec = sb.ok("create", "--json", env={"DATABASE_URL": f"sqlite:///{demo_db}"}).json()
    env = {k: v for k, v in sb.env.items() if k != "DATABASE_URL"}
    unset = SB(sb.backup_path, env)
    unset.ok("verify", "--deep", rec["id"])
    pg_env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere"}
    sb.ok("verify", "--deep", rec["id"], env=pg_env)
    data = sb.backup_path / rec["filename"]
    data.write_bytes(data.read_bytes()[:-1])
    res = sb("verify", "--deep", rec["id"], env=pg_env)
    assert res.code == 13, res.err
