"""Benchmark: what age encryption costs on top of zstd, on the same dump, in both directions.

Creates a throwaway cluster with a `pgbench -i -s SCALE` database (unless DATABASE_URL is set),
dumps it once to a file, then times child processes of this script (the same process tree;
wall time, CPU time and peak RSS from wait4; other load on the machine shows up as noise in
wall time, so CPU time is printed too):

- write: dump file -> sbbackup's pipeline (zstd) -> stored file, against zstd -> age;
- read:  stored file -> (age ->) zstd -> /dev/null, as deep verify and restore read it;
- end to end: `sbbackup create` with and without `--encrypt`.

Usage: python bench/bench_age.py [--scale 20] [--noise-rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds of one command and its waited-for children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


Stats = tuple[float, int, float]


def pair(
    runs: int,
    base: list[str],
    enc: list[str],
    env: dict[str, str] | None = None,
    enc_env: dict[str, str] | None = None,
) -> tuple[Stats, Stats]:
    """Best wall, worst RSS, best CPU of each; runs interleaved so drift hits both alike."""
    a, b = [], []
    for _ in range(runs):
        a.append(timed(base, env))
        b.append(timed(enc, enc_env or env))

    def summary(rs: list[Stats]) -> Stats:
        return min(r[0] for r in rs), max(r[1] for r in rs), min(r[2] for r in rs)

    return summary(a), summary(b)


# --- child processes: one pipeline each ----------------------------------------------------


def child_write(dump: str, outdir: str, name: str, recipient: str | None) -> None:
    from sbbackup.crypto import age
    from sbbackup.pipeline import BackupWriter, Compression, pump_fd
    from sbbackup.storage.local import LocalStorage

    stage = None
    if recipient:
        recipients = [age.parse_recipient(recipient)]
        stage = lambda out: age.AgeWriter(out, recipients)  # noqa: E731
    (Path(outdir) / name).unlink(missing_ok=True)  # the previous run's output
    writer = BackupWriter(LocalStorage(Path(outdir)).open_write(name), Compression(), stage)
    fd = os.open(dump, os.O_RDONLY)
    try:
        pump_fd(fd, writer)
    finally:
        os.close(fd)
    writer.finish()


def child_read(stored: str, identity_file: str | None) -> None:
    from sbbackup.crypto import age
    from sbbackup.pipeline import HashingReader, iter_plaintext

    decrypt = None
    if identity_file:
        ids = age.parse_identity_file(Path(identity_file))
        decrypt = lambda src: age.AgeReader(src, ids)  # noqa: E731
    with open(stored, "rb") as fh:
        for _ in iter_plaintext(HashingReader(fh), True, decrypt):  # type: ignore[arg-type]
            pass


# --- the benchmark -------------------------------------------------------------------------


def report(label: str, base: Stats, enc: Stats) -> None:
    print(
        f"{label:7s} zstd {base[0]:5.2f}s wall {base[2]:5.2f}s cpu {base[1] / 1024:4.0f} MiB | "
        f"zstd+age {enc[0]:5.2f}s wall {enc[2]:5.2f}s cpu {enc[1] / 1024:4.0f} MiB | "
        f"wall {(enc[0] / base[0] - 1) * 100:+5.1f}%  cpu {(enc[2] / base[2] - 1) * 100:+5.1f}%"
    )


def run(url: str, args: argparse.Namespace) -> None:
    from sbbackup.crypto import age
    from sbbackup.engines.postgresql.conn import PgConn

    conn = PgConn.source(url, {})
    pg_env = dict(os.environ, PGPASSWORD=conn.password or "")
    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        dump = tmp / "dump.sql"
        conn_url = conn.conninfo()
        with dump.open("wb") as fh:
            subprocess.run(["pg_dump", "-Fp", "-d", conn_url], env=pg_env, stdout=fh, check=True)
        print(f"dump: {dump.stat().st_size / 2**20:.0f} MiB of plain SQL")
        identity = age.generate_identity()
        key = tmp / "key.txt"
        key.write_text(identity.secret_str + "\n")
        key.chmod(0o600)
        public = identity.recipient().public_key_str
        out = tmp / "out"
        out.mkdir()
        write = [*me, "--child-write", str(dump), str(out)]
        report(
            "write", *pair(args.runs, [*write, "plain.zst", ""], [*write, "enc.zst.age", public])
        )
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
        print(
            f"           stored: {', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sizes.items())}"
        )
        read = [*me, "--child-read"]
        report(
            "read",
            *pair(
                args.runs,
                [*read, str(out / "plain.zst"), ""],
                [*read, str(out / "enc.zst.age"), str(key)],
            ),
        )
        benv = dict(os.environ, DATABASE_URL=url, DB_BACKUP_PATH=str(tmp / "backups"))
        sb = [sys.executable, "-m", "sbbackup", "create"]
        enc_env = {**benv, "DB_BACKUP_ENCRYPTION_RECIPIENTS": public}
        report("create", *pair(args.runs, sb, [*sb, "--encrypt"], benv, enc_env))


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--child-write":
        child_write(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] or None)
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "--child-read":
        child_read(sys.argv[2], sys.argv[3] or None)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--noise-rows", type=int, default=1_000_000, help="0 for pgbench data only")
    args = ap.parse_args()
    cluster = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        from helpers.pgcluster import pgbench_cluster

        cluster = pgbench_cluster(args.scale)
        if args.noise_rows:
            # pgbench tables compress ~100x, so age would see almost nothing: add hex noise
            # that zstd only halves, so the age stage really has to work.
            cluster.psql(
                "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) "
                f"AS h FROM generate_series(1, {args.noise_rows}) g",
                db="bench",
            )
        url = cluster.url("bench")
    try:
        run(url, args)
    finally:
        if cluster is not None:
            from helpers.pgcluster import destroy_cluster

            destroy_cluster(cluster)


if __name__ == "__main__":
    main()
