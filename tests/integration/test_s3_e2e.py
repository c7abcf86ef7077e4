"""End to end on S3 with PostgreSQL: every command with ``DB_BACKUP_PATH=s3://...``, against
SeaweedFS and rclone serve s3 on 127.0.0.1, through the real CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import SB
from helpers.age_cli import require_age
from helpers.pgcluster import Cluster
from helpers.s3server import S3Server


@pytest.fixture(params=["s3_seaweedfs", "s3_rclone"])
def s3sb(request: pytest.FixtureRequest, sb: SB, tmp_path: Path) -> tuple[SB, S3Server, str]:
    server: S3Server = request.getfixturevalue(request.param)
    bucket = server.new_bucket()
    sb.env.update(server.env())
    sb.env["DB_BACKUP_PATH"] = f"s3://{bucket}/pg"
    sb.env["SBBACKUP_STATE_DIR"] = str(tmp_path / "state")
    return sb, server, bucket


def test_every_command_works_on_s3_like_a_local_path(
    s3sb: tuple[SB, S3Server, str], pg: Cluster, fresh_db: str, tmp_path: Path
) -> None:
    require_age()
    sb, server, bucket = s3sb
    pg.psql(
        "CREATE TABLE public.items AS SELECT g AS id, md5(g::text) AS v "
        "FROM generate_series(1, 20000) g",
        db=fresh_db,
    )
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    sb.env.update(
        DATABASE_URL=pg.url(fresh_db),
        DB_BACKUP_ENCRYPTION_RECIPIENTS=public,
        DB_BACKUP_ENCRYPTION_IDENTITY_FILE=str(key),
    )

    plain = sb.ok("create", "--json").json()
    encrypted = sb.ok("create", "--encrypt", "--json").json()
    assert plain["status"] == encrypted["status"] == "completed"
    assert encrypted["encryption"] and plain["compression"]["algorithm"] == "zstd"
    keys = {o["Key"] for o in server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"pg/{encrypted['filename']}" in keys and f"pg/{plain['id']}.json" in keys

    listed = sb.ok("list", "--json").json()
    assert [b["id"] for b in listed] == [encrypted["id"], plain["id"]]
    for backup in (plain, encrypted):
        assert "ok" in sb.ok("verify", "--deep", backup["id"]).out

    target = f"{fresh_db}_s3r"
    try:
        sb.ok(
            "restore",
            encrypted["id"],
            "--target-url",
            pg.url(target),
            "--create-target",
            "--yes",
        )
        assert pg.psql("SELECT count(*) FROM public.items", db=target) == "20000"
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", check=False)

    tested = sb("test")
    assert tested.code == 0, tested.out + tested.err
    assert "probe written, read and deleted" in tested.out
    assert "multipart" in tested.out

    # A bit flip in the stored object: verify --deep says integrity (13)
    client = server.client()
    stored = client.get_object(Bucket=bucket, Key=f"pg/{plain['filename']}")["Body"].read()
    flipped = bytearray(stored)
    flipped[len(flipped) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=f"pg/{plain['filename']}", Body=bytes(flipped))
    assert sb("verify", "--deep", plain["id"]).code == 13

    sb.ok("delete", plain["id"], "--yes")
    left = [b["id"] for b in sb.ok("list", "--json").json()]
    assert plain["id"] not in left and encrypted["id"] in left  # and the drill's backup
    sb.ok("prune", "--json")
    assert encrypted["id"] in [b["id"] for b in sb.ok("list", "--json").json()]
    assert not any(k.endswith(plain["filename"]) for k in _keys(server, bucket))


def _keys(server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_wrong_secret_a_missing_bucket_and_no_endpoint_give_exit_4(
    s3sb: tuple[SB, S3Server, str], pg: Cluster, fresh_db: str
) -> None:
    sb, server, bucket = s3sb
    sb.env["DATABASE_URL"] = pg.url(fresh_db)
    secret = "not-the-secret-" + bucket
    cases = {
        "wrong secret": {"AWS_SECRET_ACCESS_KEY": secret},
        "missing bucket": {"DB_BACKUP_PATH": "s3://no-such-bucket-sbx/pg"}
        | (
            {
                "AWS_ACCESS_KEY_ID": server.ro_access_key,
                "AWS_SECRET_ACCESS_KEY": server.ro_secret_key,
            }
            if server.ro_access_key and server.ro_secret_key
            else {}
        ),
        "unreachable endpoint": {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"},
    }
    for why, env in cases.items():
        for args in (("create",), ("list",)):
            res = sb(*args, env=env)
            assert res.code == 4, (why, args, res.err)
            line = res.err.strip()
            assert len(line.splitlines()) == 1, (why, res.err)
            assert "bucket" in line and "127.0.0.1" in line, (why, line)
            assert secret not in line and server.secret_key not in line
        tested = sb("test", env=env)
        assert tested.code == 4, (why, tested.out, tested.err)
