"""Faults on S3 (a SeaweedFS server of the test's own, on 127.0.0.1): the server killed in the
middle of an upload. The upload fails (exit 4), nothing looks like a backup, earlier backups
stay intact, and the next run sweeps the multipart upload the dead server kept."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SB
from helpers.pgcluster import Cluster
from helpers.s3server import S3Server, start_seaweedfs


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        yield server
    finally:
        server.stop()


def uploads(server: S3Server, bucket: str) -> list[Any]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_server_killed_mid_upload_fails_4_and_the_next_run_sweeps_the_upload(
    own_server: S3Server, sb: SB, pg: Cluster, fresh_db: str, tmp_path: Path
) -> None:
    server = own_server
    bucket = server.new_bucket()
    sb.env.update(server.env())
    sb.env.update(
        DATABASE_URL=pg.url(fresh_db),
        DB_BACKUP_PATH=f"s3://{bucket}/pg",
        SBBACKUP_STATE_DIR=str(tmp_path / "state"),
        DB_BACKUP_COMPRESSION="false",
    )
    pg.psql(
        "CREATE TABLE public.items AS SELECT g AS id, md5(g::text) AS v "
        "FROM generate_series(1, 500000) g",
        db=fresh_db,
    )
    first = sb.ok("create", "--json").json()

    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "create"],
        env=sb.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not uploads(server, bucket):  # the second create's upload has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    server.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert len(err.strip().splitlines()) == 1 and "127.0.0.1" in err, err

    server.restart()
    listed = sb.ok("list", "--json").json()
    completed = [b["id"] for b in listed if b["status"] == "completed"]
    assert completed == [first["id"]]
    assert sb("verify", "--deep", first["id"]).code == 0
    keys = [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert [k for k in keys if k.endswith(".sql")] == [f"pg/{first['filename']}"]
    # the abort could not reach a dead server: the next create sweeps what it kept
    sb.ok("create")
    assert uploads(server, bucket) == []
