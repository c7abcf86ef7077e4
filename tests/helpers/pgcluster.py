"""A throwaway PostgreSQL cluster for tests and benchmarks.

postgres refuses to run as root, so when we are root the cluster lives in a directory
under /tmp owned by the ``postgres`` user and every server binary runs through
``runuser -u postgres``. It listens on a unix socket in that directory and on
127.0.0.1 with scram-sha-256 password auth (so URL passwords are exercised for real).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "s3cr3t-Pa55word"


def pg_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise RuntimeError(
        "initdb not found: run `make test` (it installs postgresql) or apt install postgresql"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    base: Path
    port: int
    bindir: Path
    as_user: list[str]

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / "sock"

    def url(self, db: str = "postgres", password: bool = True) -> str:
        cred = f"postgres:{PASSWORD}@" if password else "postgres@"
        return f"postgresql://{cred}127.0.0.1:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PGHOST=str(self.sockdir), PGPORT=str(self.port), PGUSER="postgres")
        env.pop("PGPASSWORD", None)
        return env

    def psql(self, sql: str, db: str = "postgres", check: bool = True) -> str:
        res = subprocess.run(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def psql_file(self, path: Path, db: str) -> None:
        subprocess.run(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", str(path)],
            env=self.env(),
            check=True,
            capture_output=True,
        )

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.pg_ctl(
            "-l",
            str(self.base / "log"),
            "-o",
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("-m", "fast", "stop")

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()


def create_cluster() -> Cluster:
    bindir = pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="sbbackup-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(base=base, port=free_port(), bindir=bindir, as_user=as_user)
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(cluster.datadir),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "-A",
            "trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    sock = cluster.sockdir
    sock.mkdir()
    if as_user:
        os.chown(sock, pwd.getpwnam("postgres").pw_uid, -1)
    with open(cluster.datadir / "postgresql.conf", "a") as fh:
        fh.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
    cluster.start()
    for _ in range(100):
        if (
            subprocess.run(
                ["pg_isready", "-h", str(sock), "-p", str(cluster.port)], capture_output=True
            ).returncode
            == 0
        ):
            break
        time.sleep(0.1)
    return cluster


def destroy_cluster(cluster: Cluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)


def pgbench_cluster(scale: int, dbname: str = "bench") -> Cluster:
    """A throwaway cluster holding a `pgbench -i -s SCALE` database (for the benchmarks)."""
    cluster = create_cluster()
    cluster.psql(f"CREATE DATABASE {dbname}")
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "-d", dbname],
        env=cluster.env(),
        check=True,
        capture_output=True,
    )
    return cluster


def dump_bytes(pg: Cluster, db: str, *extra: str) -> bytes:
    """``pg_dump`` of ``db`` (``extra``: its options) without the ``\\restrict`` and
    ``\\unrestrict`` lines, whose key is random per dump (PostgreSQL 15.14+): two dumps of
    equal databases compare equal."""
    res = subprocess.run(
        ["pg_dump", "--no-password", *extra, "-d", db],
        env=pg.env(),
        capture_output=True,
        check=True,
    )
    return b"".join(
        ln
        for ln in res.stdout.splitlines(keepends=True)
        if not ln.startswith((b"\\restrict ", b"\\unrestrict "))
    )


def plain_dump(pg: Cluster, db: str, *extra: str) -> str:
    """``dump_bytes`` as text."""
    return dump_bytes(pg, db, *extra).decode()
