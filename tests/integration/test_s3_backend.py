"""The S3 backend against real servers on 127.0.0.1 (SeaweedFS and rclone serve s3): what the
Protocol contract cannot see (parts, pending uploads, pages, the error line)."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers.s3server import S3Server

from sbbackup.errors import StorageError
from sbbackup.storage import open_storage
from sbbackup.storage.s3options import S3Options
from sbbackup.storage.s3plan import MiB

SERVERS = ["s3_seaweedfs", "s3_rclone"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    srv: S3Server = request.getfixturevalue(request.param)
    for key, value in srv.env().items():
        monkeypatch.setenv(key, value)
    return srv


def pending(server: S3Server, bucket: str) -> list[Any]:
    try:
        return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    except Exception as exc:  # rclone: 404 when none is pending
        if getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return []
        raise


def test_a_streamed_upload_goes_in_parts_and_reads_back_whole(server: S3Server) -> None:
    bucket = server.new_bucket()
    store = open_storage(f"s3://{bucket}/pg", S3Options(part_size=5 * MiB, parts_in_flight=2))
    block = bytes(range(256)) * 4096  # 1 MiB
    writer = store.open_write("big.sql.zst")
    digest = hashlib.sha256()
    for i in range(13):  # 13 MiB: parts of 5, 5 and 3 MiB
        chunk = block[i:] + block[:i]
        writer.write(chunk)
        digest.update(chunk)
    assert not store.exists("big.sql.zst")  # invisible until commit
    writer.commit()
    head = server.client().head_object(Bucket=bucket, Key="pg/big.sql.zst")
    assert head["ContentLength"] == 13 * MiB
    if server.name == "seaweedfs":
        assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag: 3 parts
    else:  # rclone serve s3 answers the MD5 of the whole object, not S3's "md5-of-md5s-N"
        assert (
            head["ETag"].strip('"')
            == hashlib.md5(
                b"".join(block[i:] + block[:i] for i in range(13)), usedforsecurity=False
            ).hexdigest()
        )
    with store.open_read("big.sql.zst") as stream:
        got = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    assert pending(server, bucket) == []


def test_an_aborted_upload_leaves_no_object_and_no_pending_upload(server: S3Server) -> None:
    bucket = server.new_bucket()
    store = open_storage(f"s3://{bucket}/pg", S3Options(part_size=5 * MiB))
    writer = store.open_write("cut.sql.zst")
    writer.write(b"x" * (6 * MiB))  # one part sent, one begun
    assert len(pending(server, bucket)) == 1
    writer.abort()
    assert pending(server, bucket) == []
    assert store.list_names() == []
    assert not store.exists("cut.sql.zst")


def test_listing_pages_past_1000_keys(server: S3Server) -> None:
    bucket = server.new_bucket()
    client = server.client()
    names = [f"b{i:05d}.json" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: client.put_object(Bucket=bucket, Key=f"pg/{n}", Body=b"{}"), names))
    client.put_object(Bucket=bucket, Key="pg/nested/x.json", Body=b"{}")  # not directly under
    client.put_object(Bucket=bucket, Key="other/y.json", Body=b"{}")
    store = open_storage(f"s3://{bucket}/pg")
    assert sorted(store.list_names()) == names
    assert set(store.list_sizes().values()) == {2}


def test_a_wrong_secret_is_one_line_naming_endpoint_and_bucket_never_the_secret(
    server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = server.new_bucket()
    secret = "wrong-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store = open_storage(f"s3://{bucket}/pg")
    with pytest.raises(StorageError) as err:
        store.check_writable()
    message = err.value.message
    assert err.value.exit_code == 4
    assert server.endpoint in message and bucket in message
    assert secret not in message and "\n" not in message


def test_preflight_writes_and_deletes_a_probe_and_gives_the_part_plan(server: S3Server) -> None:
    bucket = server.new_bucket()
    store = open_storage(f"s3://{bucket}/pg")
    report = store.inner.preflight(50 * (1 << 30))  # type: ignore[attr-defined]
    assert "probe written, read and deleted" in report
    assert "multipart about 3200 part(s) of 16 MiB" in report, report
    assert server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
