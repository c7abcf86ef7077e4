"""The API's trust boundary, against the real HTTP server and real PostgreSQL/SQLite.

A client names things (a backup ID, a declared target, a bare database or file name); it never
sends a URL, a path or a libpq parameter. It cannot make a backup weaker than the
configuration, its jobs are capped, and clients without a token cannot starve the ones with.
Every refusal is checked for its status and for what did not happen: no database created or
dropped, no file written, no connection made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.api_server import TOKEN, Client, Reply, api_servers, url_of
from helpers.pgcluster import PASSWORD, Cluster
from test_api import audit_lines, read_response, small_table

from sbbackup import api
from sbbackup.config import load_settings
from sbbackup.crypto import age
from sbbackup.errors import ConfigError

Start = Callable[..., Client]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Start]:
    """Start servers with an ``api:`` (and ``backup:``) configuration; each is shut down and
    drained afterwards."""
    with api_servers() as start:
        count = 0

        def start_with(
            database_url: str,
            api_cfg: dict[str, Any] | None = None,
            backup_cfg: dict[str, Any] | None = None,
            encryption_cfg: dict[str, Any] | None = None,
            public_health: bool = False,
            log: Callable[[str], None] = lambda _: None,
        ) -> Client:
            nonlocal count
            n, count = count, count + 1
            config = tmp_path / f"config{n}.yaml"
            doc = {"api": api_cfg or {}, "backup": backup_cfg or {}}
            if encryption_cfg:
                doc["encryption"] = encryption_cfg
            config.write_text(yaml.safe_dump(doc))
            backups = tmp_path / f"backups{n}"
            env = {**os.environ, "DATABASE_URL": database_url, "DB_BACKUP_PATH": str(backups)}
            env["SBBACKUP_CONFIG"] = str(config)
            env.pop("SBBACKUP_STATE_DIR", None)
            srv = start(load_settings(env=env), public_health=public_health, log=log)
            return Client(url_of(srv), backups, env, srv)

        yield start_with


def databases(pg: Cluster) -> list[str]:
    return pg.psql("SELECT datname FROM pg_database ORDER BY 1").splitlines()


def restore(c: Client, backup_id: str, body: dict[str, Any]) -> Reply:
    return c.call("POST", f"/api/backup/{backup_id}/restore", body)


def restore_when_free(c: Client, backup_id: str, body: dict[str, Any]) -> Reply:
    """A restore as a client following Retry-After makes it: the previous restore's record is
    final a moment before its job has ended, and until then the cap (one restore) answers 429."""
    deadline = time.monotonic() + 30
    while True:
        reply = restore(c, backup_id, body)
        if reply.status != 429 or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def restore_records(c: Client) -> list[str]:
    store = c.backup_path / "restores"
    return sorted(p.name for p in store.iterdir()) if store.is_dir() else []


def wait_restore(c: Client, reply: Reply, timeout: float = 120) -> dict[str, Any]:
    assert reply.status == 202, reply
    rec: dict[str, Any] = c.poll(
        reply.headers["Location"], lambda b: b["status"] != "in_progress", timeout
    )
    return rec


class Decoy:
    """A listening socket standing in for a server a hostile URL points at: nothing may ever
    connect to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


class Locker:
    """A psql session holding a lock (or an open transaction) until released."""

    def __init__(self, pg: Cluster, db: str, sql: str) -> None:
        self.proc = subprocess.Popen(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=pg.env(),
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"BEGIN; {sql}; SELECT 'held';\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for_waiters(pg: Cluster, count: int = 1, timeout: float = 60) -> None:
    """Until ``count`` sessions wait for a lock: the jobs are surely running, and blocked."""
    deadline = time.monotonic() + timeout
    sql = "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
    while int(pg.psql(sql)) < count:
        assert time.monotonic() < deadline, "nothing ever waited for the lock"
        time.sleep(0.02)


@pytest.fixture
def source(pg: Cluster, fresh_db: str) -> str:
    small_table(pg, fresh_db, 300)
    return fresh_db


@pytest.fixture
def victim(pg: Cluster) -> Iterator[str]:
    """A database that no API request may touch."""
    name = "api_victim"
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql("CREATE TABLE precious AS SELECT g FROM generate_series(1, 42) g", db=name)
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


# --- PostgreSQL targets ------------------------------------------------------------------


def test_target_urls_are_refused_in_every_form(
    server: Start, pg: Cluster, source: str, victim: str
) -> None:
    """No URL, libpq string or URL parameter reaches the engine: 400 before anything is
    connected, created or dropped."""
    c = server(pg.url(source))
    backup = c.call("POST", "/api/backup?wait=true")
    assert backup.status == 201, backup
    bid = backup.body["id"]
    decoy = Decoy()
    real = f"127.0.0.1:{pg.port}"
    cred = f"postgres:{PASSWORD}@"
    hostile = [
        # the is-source probe fails on the decoy, the drop falls through to the real cluster
        f"postgresql://{cred}127.0.0.1:{decoy.port},{real}/{source}",
        f"postgresql://{cred}{real}/other?dbname={victim}",
        f"postgresql://{cred}{real}/{victim}_new?hostaddr=127.0.0.1&port={decoy.port}",
        f"postgresql://{cred}{real}/x_new?passfile=/etc/shadow",
        f"postgresql://{cred}{real}/x_new?options=-c%20default_transaction_read_only%3Doff",
        f"postgresql://{cred}{real}/x_new?sslmode=disable",
        f"postgresql://{cred}{real}/{victim}",
        f"host=127.0.0.1 port={decoy.port} dbname={victim}",
        victim,
        "sqlite:////etc/passwd",
    ]
    before = databases(pg)
    try:
        for url in hostile:
            for extra in ({}, {"createTarget": True}, {"clean": True, "confirm": True}):
                reply = restore(c, bid, {"targetUrl": url, **extra})
                assert reply.status == 400, (url, extra, reply)
                message = reply.error["message"]
                assert "targetDatabase" in message and "api.restoreTargets" in message
                assert PASSWORD not in json.dumps(reply.body) and victim not in message
            drill = c.call("POST", "/api/backup/test", {"targetUrl": url})
            assert drill.status == 400 and "api.restoreTargets" in drill.error["message"]
        assert decoy.connections() == 0
    finally:
        decoy.close()
    assert databases(pg) == before
    assert pg.psql("SELECT count(*) FROM precious", db=victim) == "42"
    assert pg.psql("SELECT count(*) FROM public.items", db=source) == "300"
    assert restore_records(c) == []
    statuses = [x["result"] for x in audit_lines(c) if x["operation"] == "api:restoreBackup"]
    assert statuses == ["400"] * (len(hostile) * 3)


def test_bare_names_and_declared_targets_are_a_policy(
    server: Start, pg: Cluster, source: str, victim: str
) -> None:
    declared = f"{source}_staging"
    c = server(pg.url(source), {"restoreTargets": {"staging": pg.url(declared)}})
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    before = databases(pg)
    undeclared = ["nope", "STAGING", "staging ", "../staging", "a" * 65, "", "staging\x00", "é"]
    messages = set()
    for name in undeclared:
        for extra in ({}, {"createTarget": True}, {"clean": True, "confirm": True}):
            reply = restore(c, bid, {"target": name, **extra})
            assert reply.status == 403, (name, reply)
            messages.add(reply.error["message"])
        drill = c.call("POST", "/api/backup/test", {"target": name})
        assert drill.status == 403, (name, drill)
        messages.add(drill.error["message"])
    assert len(messages) == 1  # malformed or unknown: the same answer, no echo
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"targetDatabase": source}, 403, "allowRestoreOverSource"),
        ({"targetDatabase": source, "confirm": True}, 403, "allowRestoreOverSource"),
        ({"targetDatabase": source, "clean": True, "confirm": True}, 403, "source"),
        ({"targetDatabase": "x_new", "clean": True}, 403, "declared target"),
        ({"targetDatabase": victim, "clean": True, "confirm": True}, 403, "declared target"),
        ({"targetDatabase": "x_new", "createTarget": False}, 400, "always created"),
        ({"targetFile": "x.db"}, 400, "SQLite"),
        ({"targetDatabase": "x_new", "target": "staging"}, 400, "exactly one"),
        ({}, 400, "exactly one"),
        ({"createTarget": True, "confirm": True}, 400, "exactly one"),
        ({"target": 5}, 400, "string"),
        ({"targetDatabase": "sbbackup_test_0123abcd"}, 400, "drills"),
        ({"targetDatabase": "template1"}, 403, "system database"),
        ({"targetDatabase": "postgres"}, 403, "system database"),
    ]
    for bad in ("", "a b", "x;drop database y", "1abc", "a" * 64, "é", "x/y", "x?dbname=y", "-x"):
        refusals.append(({"targetDatabase": bad}, 400, "invalid targetDatabase"))
    for body, status, needle in refusals:
        reply = restore(c, bid, body)
        assert reply.status == status and needle in reply.error["message"], (body, reply)
    assert databases(pg) == before
    assert pg.psql("SELECT count(*) FROM precious", db=victim) == "42"
    assert restore_records(c) == []

    # What is allowed works: a new database, and the declared target (created, then cleaned).
    new = f"{source}_new"
    try:
        rec = wait_restore(c, restore_when_free(c, bid, {"targetDatabase": new}))
        assert rec["status"] == "completed", rec
        assert pg.psql("SELECT count(*) FROM public.items", db=new) == "300"
        rec = wait_restore(
            c, restore_when_free(c, bid, {"target": "staging", "createTarget": True})
        )
        assert rec["status"] == "completed" and PASSWORD not in json.dumps(rec), rec
        rec = wait_restore(c, restore_when_free(c, bid, {"target": "staging", "clean": True}))
        assert rec["status"] == "completed", rec
        assert pg.psql("SELECT count(*) FROM public.items", db=declared) == "300"
        drill = c.call("POST", "/api/backup/test?wait=true", {"target": "staging"})
        assert drill.status == 200 and drill.body["result"]["drill"]["status"] == "passed", drill
    finally:
        for db in (new, declared):
            pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
    targets = [x.get("restoreTarget") for x in audit_lines(c) if x["result"] == "202"]
    assert targets == [f"database:{new}", "declared:staging", "declared:staging"]


def test_an_existing_database_is_never_a_target_database(
    server: Start, pg: Cluster, source: str, victim: str
) -> None:
    """The engine refuses it (409, ``must_be_new``) before it writes a restore record, and
    the database keeps what it held."""
    c = server(pg.url(source))
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    before = databases(pg)
    exists = restore(c, bid, {"targetDatabase": victim})
    assert exists.status == 409 and exists.error["kind"] == "conflict", exists
    assert pg.psql("SELECT count(*) FROM precious", db=victim) == "42"
    assert pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'items'", db=victim) == "0"
    assert restore_records(c) == [] and databases(pg) == before


def test_over_the_source_only_when_allowed_and_confirmed(
    server: Start, pg: Cluster, source: str
) -> None:
    c = server(pg.url(source), {"allowRestoreOverSource": True})
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    refused = restore(c, bid, {"targetDatabase": source})
    assert refused.status == 400 and '"confirm": true' in refused.error["message"]
    assert restore(c, bid, {"targetDatabase": source, "confirm": 1}).status == 400  # a boolean
    pg.psql("INSERT INTO public.items VALUES (301, 'later')", db=source)
    body = {"targetDatabase": source, "clean": True, "confirm": True}
    rec = wait_restore(c, restore_when_free(c, bid, body))
    assert rec["status"] == "completed", rec
    assert pg.psql("SELECT count(*) FROM public.items", db=source) == "300"


def test_a_declared_target_that_is_the_source_needs_the_setting(
    server: Start, pg: Cluster, source: str
) -> None:
    """A declared target spelled differently from database.url but reaching the source (same
    name, same cluster) is refused with 403 unless api.allowRestoreOverSource is on."""
    alias = f"postgresql://postgres:{PASSWORD}@localhost:{pg.port}/{source}"
    c = server(pg.url(source), {"restoreTargets": {"alias": alias}})
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    pg.psql("INSERT INTO public.items VALUES (302, 'kept')", db=source)
    refused = restore(c, bid, {"target": "alias", "clean": True, "confirm": True})
    assert refused.status == 403, refused.body
    assert "source" in refused.error["message"] and PASSWORD not in json.dumps(refused.body)
    assert pg.psql("SELECT count(*) FROM public.items WHERE id = 302", db=source) == "1"


# --- SQLite files ------------------------------------------------------------------------


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Path:
    src = tmp_path / "app.db"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}",) for i in range(25)])
    con.commit()
    con.close()
    return src


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` but the backup directories: a file's bytes, a symlink's
    target."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith("backups"):
            continue
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_sqlite_files_stay_inside_restore_dir(
    server: Start, tmp_path: Path, sqlite_source: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.db"
    victim.write_bytes(b"precious, not a database")
    rdir = tmp_path / "restores-here"
    rdir.mkdir(mode=0o700)
    (rdir / "taken.db").write_bytes(b"already here")
    (rdir / "link.db").symlink_to(victim)
    (rdir / "dangling.db").symlink_to(outside / "no-such-file.db")
    (rdir / "subdir").mkdir()
    (rdir / "up").symlink_to(outside, target_is_directory=True)
    c = server(f"sqlite:///{sqlite_source}", {"restoreDir": str(rdir)})
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    before = tree(tmp_path)
    refusals: list[tuple[dict[str, Any], int]] = [
        ({"targetFile": "../outside/victim.db"}, 400),
        ({"targetFile": "..", "clean": False}, 400),
        ({"targetFile": str(victim)}, 400),
        ({"targetFile": "/etc/passwd"}, 400),
        ({"targetFile": "subdir/x.db"}, 400),
        ({"targetFile": "up/victim.db"}, 400),
        ({"targetFile": "up/new.db"}, 400),
        ({"targetFile": ".hidden.db"}, 400),
        ({"targetFile": "x\x00y.db"}, 400),
        ({"targetFile": "a" * 201}, 400),
        ({"targetFile": "a..b"}, 400),
        ({"targetFile": "new.db", "clean": True}, 403),
        ({"targetFile": "new.db", "createTarget": False}, 400),
        ({"targetDatabase": "new"}, 400),
        ({"targetUrl": f"sqlite:///{victim}"}, 400),
        ({"targetUrl": str(rdir / "new.db"), "createTarget": True}, 400),
        ({"target": "anything"}, 403),
        ({"targetFile": "taken.db"}, 409),
        ({"targetFile": "subdir"}, 409),
        ({"targetFile": "link.db"}, 409),
        ({"targetFile": "dangling.db"}, 409),
    ]
    answers = {}
    for body, status in refusals:
        reply = restore(c, bid, body)
        assert reply.status == status, (body, reply)
        text = json.dumps(reply.body)
        assert str(outside) not in text and "victim" not in text, (body, reply)
        answers[json.dumps(body)] = reply.error["kind"]
    # A symlink out of the directory answers as any taken name does, whether its target
    # exists or not: nothing is learnt about paths outside.
    assert answers['{"targetFile": "link.db"}'] == answers['{"targetFile": "dangling.db"}']
    assert tree(tmp_path) == before
    assert restore_records(c) == []

    rec = wait_restore(c, restore_when_free(c, bid, {"targetFile": "restored.db"}))
    assert rec["status"] == "completed", rec
    con = sqlite3.connect(rdir / "restored.db")
    assert con.execute("SELECT count(*) FROM notes").fetchone() == (25,)
    con.close()
    restored = (rdir / "restored.db").read_bytes()
    assert tree(tmp_path) == {**before, "restores-here/restored.db": restored}
    assert victim.read_bytes() == b"precious, not a database"
    assert not (outside / "no-such-file.db").exists()

    # Without api.restoreDir there is no file target at all.
    c2 = server(f"sqlite:///{sqlite_source}")
    bid2 = c2.call("POST", "/api/backup?wait=true").body["id"]
    off = restore(c2, bid2, {"targetFile": "new.db"})
    assert off.status == 403 and "api.restoreDir" in off.error["message"]


def test_restore_dir_must_be_private(tmp_path: Path, sqlite_source: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    env = {
        "DATABASE_URL": f"sqlite:///{sqlite_source}",
        "DB_BACKUP_PATH": str(tmp_path / "b"),
        "SBBACKUP_API_RESTORE_DIR": str(shared),
    }
    tokens = [api.Token("ci", TOKEN.encode())]
    with pytest.raises(ConfigError, match="writable by group or others"):
        api.make_server(load_settings(env=env), "127.0.0.1", 0, tokens)
    env["SBBACKUP_API_RESTORE_DIR"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="api.restoreDir"):
        api.make_server(load_settings(env=env), "127.0.0.1", 0, tokens)


# --- backups cannot be weakened ----------------------------------------------------------


def test_a_client_cannot_weaken_a_backup(server: Start, pg: Cluster, source: str) -> None:
    recipient = age.X25519Identity(os.urandom(32)).recipient().public_key_str
    enc = {"recipients": [recipient]}
    c = server(pg.url(source), backup_cfg={"encryption": True}, encryption_cfg=enc)
    refused = [
        ("POST", "/api/backup", {"encryption": False}),
        ("POST", "/api/backup", {"compression": False}),
        ("POST", "/api/backup?wait=true", {"encryption": False, "compression": True}),
        ("POST", "/api/backup", {"encrypt": False}),  # the deprecated name, refused the same
        ("POST", "/api/backup", {"compress": False}),
        (
            "POST",
            "/api/backup/schedules",
            {"id": "plain", "cron": "0 1 * * *", "retentionDays": 3, "encryption": False},
        ),
        (
            "POST",
            "/api/backup/schedules",
            {"scheduleId": "raw", "cron": "0 1 * * *", "retentionDays": 3, "compression": False},
        ),
        ("POST", "/api/backup/schedules/weekly", {"encryption": False}),
        ("POST", "/api/backup/schedules/monthly", {"encryption": False, "description": "x"}),
        ("POST", "/api/backup/schedules/daily", {"compression": False}),
    ]
    for method, path, body in refused:
        reply = c.call(method, path, body)
        assert reply.status == 403 and "allowWeakerBackups" in reply.error["message"], (path, reply)
    assert c.call("GET", "/api/backup").body == []
    assert not (c.backup_path / "schedules.toml").exists()
    weekly = c.call("GET", "/api/backup/schedules/weekly").body
    assert weekly["encryption"] is True
    # Stronger is fine: the configuration's encryption, compression on, a new encrypted one.
    made = c.call("POST", "/api/backup?wait=true", {"encryption": True, "compression": True})
    assert made.status == 201 and made.body["encryption"]["recipients"] == [recipient], made
    added = c.call(
        "POST",
        "/api/backup/schedules",
        {"scheduleId": "safe", "cron": "0 1 * * *", "retentionDays": 3, "encryption": True},
    )
    assert added.status == 201, added
    lines = audit_lines(c)
    assert [x["result"] for x in lines if x["operation"].startswith("api:")][: len(refused)] == [
        "403"
    ] * len(refused)
    assert not [x for x in lines if "encryption" in x or "compression" in x]


def test_weaker_backups_when_allowed_are_audited(server: Start, pg: Cluster, source: str) -> None:
    recipient = age.X25519Identity(os.urandom(32)).recipient().public_key_str
    c = server(
        pg.url(source),
        {"allowWeakerBackups": True},
        backup_cfg={"encryption": True},
        encryption_cfg={"recipients": [recipient]},
    )
    made = c.call("POST", "/api/backup?wait=true", {"encryption": False, "compression": False})
    assert made.status == 201 and made.body["encryption"] is None, made
    assert made.body["compression"] is None
    changed = c.call("POST", "/api/backup/schedules/weekly", {"encryption": False})
    assert changed.status == 200 and changed.body["encryption"] is False, changed
    lines = audit_lines(c)
    api_create = next(x for x in lines if x["operation"] == "api:createBackup")
    create = next(x for x in lines if x["operation"] == "create")
    for line in (api_create, create):
        assert line["encryption"] == "off" and line["compression"] == "off", line
    sched = [x for x in lines if x["operation"] in ("api:updateSchedule", "schedules")]
    assert len(sched) == 2 and all(x["encryption"] == "off" for x in sched), sched
    assert all("compression" not in x for x in sched)


# --- the API bounds its work -------------------------------------------------------------


def test_job_caps_answer_429_before_any_work(server: Start, pg: Cluster, source: str) -> None:
    c = server(pg.url(source))
    locker = Locker(pg, source, "LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
    try:
        first = c.call("POST", "/api/backup")
        assert first.status == 202, first
        wait_for_waiters(pg)  # pg_dump waits behind the lock: the backup is running
        for method, path in (
            ("POST", "/api/backup"),
            ("POST", "/api/backup?wait=true"),
            ("POST", "/api/backup/schedules/daily/run"),
        ):
            busy = c.call(method, path)
            assert busy.status == 429, (path, busy)
            assert busy.headers["Retry-After"] == str(api.RETRY_AFTER)
            assert busy.headers["Content-Type"] == "application/json"
            assert busy.error["kind"] == "too_many_jobs" and busy.error["code"] == 11
            assert "api.maxBackupJobs" in busy.error["message"]
        assert [b["id"] for b in c.call("GET", "/api/backup").body] == [first.body["id"]]
        drill = c.call("POST", "/api/backup/test", {})  # its own cap: it may start
        assert drill.status == 202, drill
        wait_for_waiters(pg, 2)  # the drill's backup waits too
        second = c.call("POST", "/api/backup/test", {"drill": False})
        assert second.status == 429 and "api.maxTestJobs" in second.error["message"]
    finally:
        locker.release()
    done = c.poll(first.headers["Location"], lambda b: b["status"] != "in_progress", 120)
    assert done["status"] == "completed", done
    c.poll(drill.headers["Location"], lambda b: b["status"] != "in_progress", 120)
    assert c.call("POST", "/api/backup?wait=true").status == 201  # free again
    assert [b["status"] for b in c.call("GET", "/api/backup?scheduleId=daily").body] == []


def blocked_restore(pg: Cluster, c: Client, bid: str, db: str) -> tuple[Locker, Reply]:
    """A restore into declared target ``staging`` (database ``db``, made afresh) that stays
    running: a session holds pg_database in SHARE mode, so the CREATE DATABASE of the
    restore's staging database waits (the load never touches the target itself)."""
    pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {db}")
    locker = Locker(pg, "postgres", "LOCK TABLE pg_catalog.pg_database IN SHARE MODE")
    try:
        first = restore(c, bid, {"target": "staging"})
        assert first.status == 202, first
        wait_for_waiters(pg)
    except BaseException:
        locker.release()
        raise
    return locker, first


def test_restore_cap_answers_429(server: Start, pg: Cluster, source: str) -> None:
    staging, other = f"{source}_stg", f"{source}_other"
    c = server(
        pg.url(source), {"restoreTargets": {"staging": pg.url(staging), "other": pg.url(other)}}
    )
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    locker, first = blocked_restore(pg, c, bid, staging)
    try:
        before = databases(pg)
        for body in (
            {"targetDatabase": f"{source}_new"},
            {"target": "other", "createTarget": True},
            {"target": "staging"},
        ):
            capped = restore(c, bid, body)
            assert capped.status == 429 and "api.maxRestoreJobs" in capped.error["message"]
            assert capped.headers["Retry-After"] == str(api.RETRY_AFTER)
        assert databases(pg) == before and len(restore_records(c)) == 1
    finally:
        locker.release()
        rec = wait_restore(c, first)
        pg.psql(f"DROP DATABASE IF EXISTS {staging} WITH (FORCE)", check=False)
    assert rec["status"] == "completed", rec


def test_second_restore_into_a_held_target_gets_409(
    server: Start, pg: Cluster, source: str
) -> None:
    """Below the cap, a restore into the target a running restore holds is refused (the
    engine's target lock) before it writes a record or touches the database."""
    staging = f"{source}_stg"
    c = server(
        pg.url(source), {"restoreTargets": {"staging": pg.url(staging)}, "maxRestoreJobs": 2}
    )
    bid = c.call("POST", "/api/backup?wait=true").body["id"]
    locker, first = blocked_restore(pg, c, bid, staging)
    started = [first]
    try:
        second = restore(c, bid, {"target": "staging"})
        if second.status == 202:
            started.append(second)
        assert second.status == 409 and second.error["code"] == 11, second
        assert len(restore_records(c)) == 1
    finally:
        locker.release()
        recs = [wait_restore(c, reply) for reply in started]
        pg.psql(f"DROP DATABASE IF EXISTS {staging} WITH (FORCE)", check=False)
    assert recs[0]["status"] == "completed", recs


def test_unauthenticated_clients_cannot_starve_real_ones(
    server: Start, pg: Cluster, source: str
) -> None:
    """100 token-less clients (keep-alive requests, idle connections, half-sent headers) hold
    at most MAX_UNAUTHENTICATED places; an authenticated client still gets its answer, and a
    401 closes its connection."""
    c = server(pg.url(source), public_health=True)
    crowd: list[socket.socket] = []
    answered = 0
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
            crowd.append(s)
            if i % 3 == 0:
                s.sendall(b"GET /api/backup HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            elif i % 3 == 1:
                s.sendall(b"GET /api/backup HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        for _ in range(3):
            assert c.call("GET", "/api/backup").status == 200
            assert c.call("POST", "/api/backup/schedules/daily/disable").status == 200
        authenticated, unauthenticated = c.server.slots.counts()
        assert unauthenticated <= api.MAX_UNAUTHENTICATED
        for i, s in enumerate(crowd):
            if i % 3:
                continue
            try:
                data = read_response(s)
            except ConnectionResetError:  # evicted with its request unread
                continue
            if data:  # answered before an eviction: a 401, then the server hangs up
                assert data.startswith(b"HTTP/1.1 401") and b"Connection: close" in data, data
                answered += 1
                assert s.recv(1024) == b""
        # Public health stays open, one answer per connection.
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_response(s)
            assert data.split()[1] in (b"200", b"503") and b"Connection: close" in data
            assert s.recv(1024) == b""
    finally:
        for s in crowd:
            s.close()
    print(f"\nslots: {answered} of 34 token-less requests answered 401 before eviction")


# --- secrets stay home -------------------------------------------------------------------


def test_token_file_readable_by_others_is_refused(tmp_path: Path, pg: Cluster) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBBACKUP_")}
    env.update(
        DATABASE_URL=pg.url(),
        DB_BACKUP_PATH=str(tmp_path / "b"),
        SBBACKUP_API_TOKEN_FILE=str(token_file),
    )
    run = [sys.executable, "-m", "sbbackup", "serve", "--port", "0"]
    for mode in (0o644, 0o640, 0o620, 0o602, 0o660):
        token_file.chmod(mode)
        res = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, (oct(mode), res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "chmod 600" in lines[0] and f"{mode:o}" in lines[0], lines
        assert TOKEN not in res.stderr
    token_file.chmod(0o600)
    proc = subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert "listening on" in line and proc.returncode == 0


def test_the_log_escapes_control_characters(server: Start, pg: Cluster, source: str) -> None:
    lines: list[str] = []
    c = server(pg.url(source), log=lines.append)
    forged = b"\r\n127.0.0.1 - FORGED \x1b[2J\x85"
    for request in (
        b"GET /api/backup" + forged.replace(b"\n", b"") + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/x\x1b]0;title\x07 HTTP/1.1\r\nHost: x\r\n"  # valid: answered 404
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),
        b"\x1b[31mBREW /\r HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
            s.sendall(request)
            assert read_response(s).startswith(b"HTTP/1.1 4")
    assert c.call("GET", "/api/backup").status == 200  # the server is fine
    assert lines, "nothing was logged"
    control = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
    for line in lines:
        assert not control.search(line), repr(line)
        assert TOKEN not in line
    text = "\n".join(lines)
    assert "\\x0d" in text and "\\x1b" in text and "\\x85" in text
    assert not any(line.startswith("127.0.0.1 - FORGED") for line in lines)


def test_public_health_names_no_host_user_or_url(server: Start, pg: Cluster, source: str) -> None:
    """A failed run's error names the server, port and user; the public body has none of it,
    the authenticated one has the reason (with the password masked)."""
    wrong = f"postgresql://postgres:not-the-{PASSWORD}@127.0.0.1:{pg.port}/{source}"
    c = server(wrong, public_health=True)
    run = c.call("POST", "/api/backup/schedules/daily/run")
    if run.status == 202:
        c.poll(run.headers["Location"], lambda b: b["status"] != "in_progress")
    public = c.call("GET", "/api/health", token=None)
    assert public.status == 503 and public.body["ok"] is False, public
    text = json.dumps(public.body)
    for secret in ("127.0.0.1", str(pg.port), "postgres", "postgresql://", PASSWORD, source):
        assert secret not in text, (secret, text)
    failed = [p for p in public.body["problems"] if p["check"] == "last-run-failed"]
    assert failed == [{"check": "last-run-failed", "scheduleId": "daily"}]
    private = c.call("GET", "/api/health")
    reason = next(p["reason"] for p in private.body["problems"] if p["check"] == "last-run-failed")
    assert "postgres" in reason and PASSWORD not in json.dumps(private.body), reason
    assert c.call("GET", "/metrics", token=None).status == 200
