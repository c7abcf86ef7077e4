"""Fixtures: a real throwaway PostgreSQL cluster per test session, and a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers.cli import Result  # noqa: E402
from helpers.pgcluster import Cluster, create_cluster, destroy_cluster  # noqa: E402
from helpers.s3server import S3Server, start_rclone, start_seaweedfs  # noqa: E402
from helpers.schemas import check_run  # noqa: E402

HERE = Path(__file__).parent
CLEAN_PREFIXES = ("DB_BACKUP_", "SBBACKUP_", "PG", "DATABASE_URL", "AWS_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DB_BACKUP_*/SBBACKUP_*/PG* leaks in from the developer's shell (borg's clean_env)."""
    for name in list(os.environ):
        if name.startswith(CLEAN_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SBBACKUP_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        destroy_cluster(cluster)


@pytest.fixture
def fresh_db(pg: Cluster) -> Iterator[str]:
    """An empty database of its own; yields its name."""
    name = "t_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {name}")
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


@pytest.fixture(scope="session")
def rich_db(pg: Cluster) -> str:
    """A database with the rich-types schema (read-only for tests)."""
    pg.psql("CREATE DATABASE richsrc")
    pg.psql_file(HERE / "data" / "rich_schema.sql", "richsrc")
    return "richsrc"


@dataclass
class SB:
    """Runs the real ``sbbackup`` command line in a subprocess."""

    backup_path: Path
    env: dict[str, str]

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        input: str | None = None,
    ) -> Result:
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "sbbackup", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input if input is not None else "",
        )
        check_run(args, proc.returncode, proc.stdout, proc.stderr)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: object) -> Result:
        res = self(*args, **kw)  # type: ignore[arg-type]
        assert res.code == 0, f"sbbackup {' '.join(args)} exited {res.code}: {res.err}"
        return res


@pytest.fixture
def sb(tmp_path: Path) -> SB:
    backups = tmp_path / "backups"
    env = {k: v for k, v in os.environ.items()}
    env["DB_BACKUP_PATH"] = str(backups)
    env.pop("SBBACKUP_STATE_DIR", None)
    return SB(backups, env)


# --- S3-compatible servers on 127.0.0.1 (started by the first test that asks) ---------------


@pytest.fixture(scope="session")
def s3_seaweedfs() -> Iterator[S3Server]:
    server = start_seaweedfs(Path(tempfile.mkdtemp(prefix="sb-seaweedfs-", dir="/tmp")))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_rclone() -> Iterator[S3Server]:
    server = start_rclone(Path(tempfile.mkdtemp(prefix="sb-rclone-", dir="/tmp")))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
