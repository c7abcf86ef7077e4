"""The storage contract: every backend in the registry passes the same tests, through the
``Storage`` and ``AtomicWriter`` Protocols only (``sbbackup.storage``).

A backend joins by adding one entry to ``BACKENDS``: how to make a fresh, empty storage,
and the storages of that kind that must be refused with a StorageError (exit 4). An S3
backend would make a bucket prefix per test and list, say, a bucket it may not write.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SB
from helpers.s3server import S3Server

from sbbackup.catalog import PARTIAL_SUFFIX
from sbbackup.errors import ConfigError, ExitCode, StorageError
from sbbackup.storage import Storage, open_storage


@dataclass(frozen=True)
class Backend:
    name: str
    # a fresh, empty storage (it may not exist yet); the request reaches server fixtures
    make: Callable[[Path, pytest.FixtureRequest], Storage]
    # Storages that must be refused with StorageError (exit 4) when opened or used, and why.
    refused: Callable[[Path, pytest.FixtureRequest], list[tuple[str, Callable[[], Storage]]]]


def local_refused(
    tmp: Path, _request: pytest.FixtureRequest
) -> list[tuple[str, Callable[[], Storage]]]:
    """Root passes every permission bit, so a chmod 000 directory would not stop these tests.
    What does stop root: a path under a regular file (ENOTDIR from the kernel), and the
    state-directory rule (ssh's StrictModes), which refuses a directory owned by another
    user or writable by others whoever runs sbbackup."""
    (tmp / "a-file").write_bytes(b"")
    other = tmp / "not-mine"
    other.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(other, nobody.pw_uid, nobody.pw_gid)
    shared = tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    return [
        ("its parent is a regular file", lambda: open_storage(str(tmp / "a-file" / "backups"))),
        ("it is owned by another user", lambda: open_storage(str(other))),
        ("it is writable by others", lambda: open_storage(str(shared))),
    ]


def s3_server(request: pytest.FixtureRequest, fixture: str) -> S3Server:
    """The session's server, with its credentials in this test's environment (so child
    processes that open ``store.url`` find them too, as the CLI would)."""
    server: S3Server = request.getfixturevalue(fixture)
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


def s3_make(fixture: str) -> Callable[[Path, pytest.FixtureRequest], Storage]:
    def make(_tmp: Path, request: pytest.FixtureRequest) -> Storage:
        server = s3_server(request, fixture)
        return open_storage(f"s3://{server.new_bucket()}/backups/{uuid.uuid4().hex[:8]}")

    return make


def s3_refused(
    fixture: str,
) -> Callable[[Path, pytest.FixtureRequest], list[tuple[str, Callable[[], Storage]]]]:
    def refused(
        _tmp: Path, request: pytest.FixtureRequest
    ) -> list[tuple[str, Callable[[], Storage]]]:
        server = s3_server(request, fixture)
        bucket = server.new_bucket()
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")

        def using(key: str | None, secret: str | None, url: str) -> Callable[[], Storage]:
            def make() -> Storage:
                monkeypatch.setenv("AWS_ACCESS_KEY_ID", key or server.access_key)
                monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or server.secret_key)
                return open_storage(url)

            return make

        # SeaweedFS creates a missing bucket on a put by an admin identity: the missing
        # bucket is tried with its read-only identity (rclone has none: its own keys)
        missing = f"s3://gone-{uuid.uuid4().hex[:12]}/p"
        return [
            ("the secret key is wrong", using(None, "not-the-secret", f"s3://{bucket}/p")),
            (
                "the bucket does not exist",
                using(server.ro_access_key, server.ro_secret_key, missing),
            ),
        ]

    return refused


BACKENDS = [
    Backend("local", lambda tmp, _request: open_storage(str(tmp / "backups")), local_refused),
    Backend("s3-seaweedfs", s3_make("s3_seaweedfs"), s3_refused("s3_seaweedfs")),
    Backend("s3-rclone", s3_make("s3_rclone"), s3_refused("s3_rclone")),
]

# Known defects, as strict xfails: the contract is what should hold; when a fix lands the
# test passes, pytest reports XPASS as a failure, and the entry is removed.
DEFECTS: dict[tuple[str, str], str] = {}

# Provider quirks that make a test pass or fail by chance, as non-strict xfails (reported,
# never silently skipped): rclone serve s3 ignores If-None-Match, so among 8 racing
# processes more than one may pass the HEAD before any has put.
QUIRKS: dict[tuple[str, str], str] = {
    (
        "test_create_exclusive_has_one_winner_among_racing_processes",
        "s3-rclone",
    ): "rclone serve s3 ignores If-None-Match: * (a HEAD-then-put race remains)",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``backend`` runs once per entry of ``BACKENDS``."""
    if "backend" not in metafunc.fixturenames:
        return
    test = metafunc.function.__name__
    params = [
        pytest.param(
            b,
            id=b.name,
            marks=_defect(DEFECTS.get((test, b.name))) + _quirk(QUIRKS.get((test, b.name))),
        )
        for b in BACKENDS
    ]
    metafunc.parametrize("backend", params)


def _defect(reason: str | None) -> list[pytest.MarkDecorator]:
    return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []


def _quirk(reason: str | None) -> list[pytest.MarkDecorator]:
    return [pytest.mark.xfail(reason=reason, strict=False)] if reason else []


@pytest.fixture
def store(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    return backend.make(tmp_path, request)


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def backups(store: Storage) -> list[str]:
    """The names a catalog would take for objects: in-flight partials are not objects."""
    return sorted(n for n in store.list_names() if not n.endswith(PARTIAL_SUFFIX))


def test_a_new_storage_is_empty(store: Storage) -> None:
    assert store.list_names() == []
    assert store.list_sizes() == {}
    assert store.unfinished() == []
    assert not store.exists("x.sql.zst")
    assert store.url


def test_commit_makes_the_written_bytes_readable_under_the_name(store: Storage) -> None:
    data = payload(300_000)
    writer = store.open_write("b1.sql.zst")
    for i in range(0, len(data), 65536):  # bytes, bytearray and memoryview all count
        piece = data[i : i + 65536]
        kind = (bytes, bytearray, memoryview)[i // 65536 % 3]
        assert writer.write(kind(piece)) == len(piece)
    assert not store.exists("b1.sql.zst")
    writer.commit()
    writer.commit()  # twice is a no-op
    writer.abort()  # abort after commit is a no-op
    assert store.read_bytes("b1.sql.zst") == data
    with store.open_read("b1.sql.zst") as fh:
        assert fh.read() == data
    assert store.exists("b1.sql.zst") and store.size("b1.sql.zst") == len(data)
    assert store.list_names() == ["b1.sql.zst"]


def test_an_uncommitted_write_is_invisible_under_its_name(store: Storage) -> None:
    writer = store.open_write("b2.sql.zst")
    writer.write(b"half a backup")
    assert not store.exists("b2.sql.zst")
    assert backups(store) == []
    # Whatever else a backend lists while a write is in flight ends in the partial suffix
    # (the catalog skips such names).
    assert all(n.endswith(PARTIAL_SUFFIX) for n in store.list_names())
    with pytest.raises(FileNotFoundError):
        store.read_bytes("b2.sql.zst")
    writer.abort()


def test_abort_leaves_nothing(store: Storage) -> None:
    writer = store.open_write("b3.sql.zst")
    writer.write(payload(10_000))
    writer.abort()
    writer.abort()  # twice is a no-op
    assert store.list_names() == []
    assert store.list_sizes() == {}
    assert not store.exists("b3.sql.zst")
    assert store.unfinished() == []
    store.open_write("b3.sql.zst").abort()  # the name is free again


def test_commit_never_overwrites_an_object(store: Storage) -> None:
    store.write_bytes_atomic("b4", b"first")
    writer = store.open_write("b4")
    writer.write(b"second")
    with pytest.raises(StorageError):
        writer.commit()
    assert store.read_bytes("b4") == b"first"
    assert backups(store) == ["b4"]
    writer.abort()  # the caller's duty after a failed commit: the partial goes
    assert store.list_names() == ["b4"]


def test_a_second_writer_of_a_name_in_flight_is_refused(store: Storage) -> None:
    first = store.open_write("b5")
    first.write(b"one")
    with pytest.raises(StorageError) as err:
        store.open_write("b5")
    assert err.value.exit_code == ExitCode.STORAGE
    first.commit()
    assert store.read_bytes("b5") == b"one"


def test_write_bytes_atomic_replaces_and_a_reader_never_sees_a_mix(store: Storage) -> None:
    old, new = payload(200_000, 1), payload(150_000, 2)
    store.write_bytes_atomic("m.json", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(store.read_bytes("m.json"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            store.write_bytes_atomic("m.json", new if i % 2 == 0 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new} and seen
    assert store.read_bytes("m.json") == old
    assert store.list_names() == ["m.json"]  # no temporary object left


def test_list_names_and_list_sizes_agree(store: Storage) -> None:
    objects = {"a.json": payload(10), "b.sql.zst": payload(70_000), "empty": b""}
    for name, data in objects.items():
        if name == "b.sql.zst":
            writer = store.open_write(name)
            writer.write(data)
            writer.commit()
        else:
            store.write_bytes_atomic(name, data)
    sizes = store.list_sizes()
    assert sorted(store.list_names()) == sorted(sizes) == sorted(objects)
    assert sizes == {name: len(data) for name, data in objects.items()}
    assert all(store.size(name) == sizes[name] for name in objects)
    used, free = store.usage()
    assert used == sum(sizes.values())
    assert free is None or free > 0


def test_delete_removes_and_a_missing_name_is_fine(store: Storage) -> None:
    store.write_bytes_atomic("d1", b"x")
    store.write_bytes_atomic("d2", b"y")
    store.delete("d1")
    assert store.list_names() == ["d2"]
    assert not store.exists("d1")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("d1")
    store.delete("d1")
    store.delete("never-there")
    assert store.read_bytes("d2") == b"y"


def test_reading_a_missing_name_raises_file_not_found(store: Storage) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing.json")  # the storage does not exist yet
    store.write_bytes_atomic("other", b"")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing.json")
    with pytest.raises(FileNotFoundError):
        store.open_read("missing.json")
    assert not store.exists("missing.json")


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden", ".", "..", "nul\0byte"])
def test_invalid_names_are_refused(store: Storage, name: str) -> None:
    refuses_every_use_of(store, name)


def test_the_empty_name_is_refused(store: Storage) -> None:
    refuses_every_use_of(store, "")


def refuses_every_use_of(store: Storage, name: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.open_write(name),
        lambda: store.open_read(name),
        lambda: store.read_bytes(name),
        lambda: store.write_bytes_atomic(name, b"x"),
        lambda: store.delete(name),
        lambda: store.exists(name),
    ]
    for call in calls:
        with pytest.raises(StorageError):
            call()
    assert store.list_names() == []


def test_a_storage_it_may_not_use_is_refused_with_exit_4(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for why, make in backend.refused(tmp_path, request):
        try:
            store = make()
        except StorageError as exc:  # refused as soon as it is opened
            assert exc.exit_code == ExitCode.STORAGE == 4, why
            continue
        for call in uses(store):
            with pytest.raises(StorageError) as err:
                call()
            assert err.value.exit_code == ExitCode.STORAGE == 4, why


def uses(store: Storage) -> list[Callable[[], object]]:
    return [
        lambda: store.open_write("b.sql.zst"),
        lambda: store.write_bytes_atomic("m.json", b"{}"),
        lambda: store.list_names(),
        lambda: store.read_bytes("m.json"),
        lambda: store.unfinished(),
    ]


def test_unfinished_names_what_a_dead_writer_left_and_sweep_removes_only_that(
    store: Storage,
) -> None:
    live = store.open_write("live.sql.zst")
    live.write(b"still going")
    # A writer in another process that dies without commit or abort.
    code = (
        "import os, sys\n"
        "from sbbackup.storage import open_storage\n"
        "w = open_storage(sys.argv[1]).open_write('dead.sql.zst')\n"
        "w.write(b'cut short')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, store.url], check=True, timeout=60)
    assert not store.exists("dead.sql.zst")
    # A storage cannot tell a dead writer from a live one: the caller's lock does.
    assert sorted(store.unfinished()) == ["dead.sql.zst", "live.sql.zst"]
    swept = store.sweep("dead.sql.zst")
    assert len(swept) == 1 and "dead.sql.zst" in swept[0]
    assert store.sweep("dead.sql.zst") == []
    assert store.unfinished() == ["live.sql.zst"]
    live.write(b" and done")
    live.commit()
    assert store.read_bytes("live.sql.zst") == b"still going and done"
    assert backups(store) == ["live.sql.zst"]
    assert store.unfinished() == []


def test_create_exclusive_writes_once_and_never_replaces(store: Storage) -> None:
    store.create_exclusive("m1.json", b'{"a": 1}')
    assert store.read_bytes("m1.json") == b'{"a": 1}'
    with pytest.raises(FileExistsError):
        store.create_exclusive("m1.json", b'{"a": 2}')
    assert store.read_bytes("m1.json") == b'{"a": 1}'
    store.write_bytes_atomic("m2.json", b"x")
    with pytest.raises(FileExistsError):
        store.create_exclusive("m2.json", b"y")
    assert store.read_bytes("m2.json") == b"x"
    assert sorted(store.list_names()) == ["m1.json", "m2.json"]  # no temp file left
    assert store.unfinished() == []


def test_create_exclusive_has_one_winner_among_racing_processes(store: Storage) -> None:
    code = (
        "import sys\n"
        "from sbbackup.storage import open_storage\n"
        "s = open_storage(sys.argv[1])\n"
        "try:\n"
        "    s.create_exclusive('race.json', sys.argv[2].encode())\n"
        "    print('won')\n"
        "except FileExistsError:\n"
        "    print('lost')\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, store.url, str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in range(8)
    ]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    winner = outcomes.index("won")
    assert store.read_bytes("race.json") == str(winner).encode()


# --- the registry and what the user sees -----------------------------------------------------


def test_the_registry_picks_local_for_a_path_or_file_url(tmp_path: Path) -> None:
    plain = open_storage(str(tmp_path / "b"))
    url = open_storage(f"file://{tmp_path / 'b'}")
    plain.write_bytes_atomic("x", b"1")
    assert url.read_bytes("x") == b"1"
    with pytest.raises(ConfigError):
        open_storage(f"nosuch://{uuid.uuid4().hex}/b")


def test_the_cli_maps_a_missing_backup_to_10_and_a_refused_directory_to_4(
    sb: SB, tmp_path: Path
) -> None:
    open_storage(str(sb.backup_path)).write_bytes_atomic("unrelated", b"")
    missing = sb("show", "streambuddy_backup_2020-01-01T00-00-00-000Z")
    assert missing.code == 10, missing.err
    assert "not found" in missing.err and len(missing.err.strip().splitlines()) == 1
    (tmp_path / "a-file").write_bytes(b"")
    refused = sb("list", env={"DB_BACKUP_PATH": str(tmp_path / "a-file" / "backups")})
    assert refused.code == 4, refused.err
    assert len(refused.err.strip().splitlines()) == 1
