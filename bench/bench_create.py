"""Benchmark: `sbbackup create` before and after the trust-boundary rewrite, on the same database.

The baseline (commit 837f83d) counted every table's rows with a second full scan in pg_dump's
exported snapshot (a psql session running count(*) while pg_dump streamed). HEAD counts a plain
dump's rows from the dump stream itself (copycount); a custom-format dump is still counted in
the snapshot, by a psycopg session. This script times both checkouts against bare pg_dump.

Dataset: a throwaway cluster with `pgbench -i -s SCALE` plus `docs`, 1,000,000 rows of md5 text
and jsonb (data that compresses poorly, as real data does), unless --url or DATABASE_URL names
an existing database, which is then used as it is. A password belongs in DATABASE_URL, never
in --url (argv).

Every variant is a whole child process of this script, run in rounds (each round runs every
variant once, the order reversed every other round, so drift and cache state hit all alike).
Medians of: wall time; CPU time (user+sys) of the process tree, from wait4 (pg_dump and psql
children included); server CPU, the CPU of the backends the run started (the postmaster's
reaped-children time, throwaway cluster only: where the baseline's second scan shows up); peak
RSS from wait4 (the largest single process of the tree, not a sum). Each create writes into a
fresh 0700 backup directory that is deleted after the run.

Usage (as root; the cluster runs as the postgres user):
  .venv/bin/python bench/bench_create.py [--scale 50] [--runs 5] \
      [--baseline /work/baseline/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DOCS_SQL = (
    "CREATE TABLE docs AS SELECT g AS id, md5(g::text) AS h, md5((g*7)::text) AS h2, "
    "jsonb_build_object('id', g, 'h', md5(g::text), "
    "'tags', jsonb_build_array(md5((g+1)::text), g % 97)) AS doc "
    "FROM generate_series(1, {rows}) g"
)
# Variables of ours that would change what a child does; the children get only what we set.
SCRUBBED_PREFIXES = ("DB_BACKUP_", "SBBACKUP_", "PG")
SCRUBBED = {"DATABASE_URL"}


@dataclass
class Variant:
    label: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    backup: bool = False  # a create: gets a fresh DB_BACKUP_PATH per run
    ref: str = ""  # label of the pg_dump of the same format
    counts: bool = True  # a create: whether its manifest must carry row counts
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Sample:
    wall: float
    cpu: float
    server_cpu: float | None
    rss_kib: int
    stored: int | None  # a create: the stored file's bytes and the dump's, from its manifest
    dumped: int | None


class ServerCpu:
    """CPU seconds of the backends a run started: exited backends are reaped by the
    postmaster, so their time accumulates in its cutime/cstime (fields 16 and 17 of
    /proc/PID/stat). Waits until the run's backends are gone before reading."""

    def __init__(self, postmaster: int) -> None:
        self.pid = postmaster
        self.resident = self._children()  # checkpointer, walwriter, ...: not ours
        self.tick = os.sysconf("SC_CLK_TCK")

    def _children(self) -> set[int]:
        kids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    kids.add(int(entry.name))
        return kids

    def reaped(self) -> float:
        deadline = time.monotonic() + 10
        while self._children() - self.resident and time.monotonic() < deadline:
            time.sleep(0.05)
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / self.tick  # cutime, cstime


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED and not k.startswith(SCRUBBED_PREFIXES)
    }


def libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password (for pg_dump's argv) and PGPASSWORD."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    conninfo = make_conninfo(**{k: str(v) for k, v in params.items()})
    return conninfo, {"PGPASSWORD": str(password)} if password else {}


def run_once(v: Variant, server: ServerCpu | None) -> Sample:
    backup_dir = tempfile.mkdtemp(prefix="sbbackup-bench-") if v.backup else None  # 0700
    env = dict(v.env, DB_BACKUP_PATH=backup_dir) if backup_dir else v.env
    before = server.reaped() if server else None
    try:
        with open(os.devnull, "wb") as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(v.cmd, env=env, cwd=v.cwd, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                msg = err.read().decode(errors="replace").strip()
                raise SystemExit(f"{v.label} failed (exit {proc.returncode}): {msg}")
        stored = dumped = None
        if backup_dir:
            stored, dumped = manifest_sizes(v, Path(backup_dir))
    finally:
        if backup_dir:
            shutil.rmtree(backup_dir)
    server_cpu = server.reaped() - before if server and before is not None else None
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(wall, cpu, server_cpu, usage.ru_maxrss, stored, dumped)


def manifest_sizes(v: Variant, backup_dir: Path) -> tuple[int, int]:
    """Stored and uncompressed size from the run's manifest, which must be there and carry
    row counts exactly when they were asked for (else the run did not measure the variant)."""
    manifests = list(backup_dir.glob("*.json"))
    if len(manifests) != 1:
        raise SystemExit(f"{v.label}: expected one manifest, found {len(manifests)}")
    doc = json.loads(manifests[0].read_text())
    if (doc.get("contents") is not None) != v.counts:
        raise SystemExit(f"{v.label}: row counts {'missing' if v.counts else 'present'}")
    return int(doc["size"]), int(doc["uncompressedSize"])


def variants(url: str, head: Path, baseline: Path | None) -> list[Variant]:
    """The references, then plain creates, then custom ones (baseline before HEAD)."""
    conninfo, pgpass = libpq_args(url)
    dump_env = {**clean_env(), **pgpass}
    on = dict(clean_env(), DATABASE_URL=url)
    off = dict(on, DB_BACKUP_ROW_COUNTS="false")
    fp, fc = "pg_dump -Fp > /dev/null", "pg_dump -Fc -Z0 > /dev/null"
    out = [
        Variant(fp, ["pg_dump", "-Fp", "-d", conninfo], dump_env, ref=fp),
        Variant(fc, ["pg_dump", "-Fc", "-Z0", "-d", conninfo], dump_env, ref=fc),
    ]
    checkouts = ([("base", baseline)] if baseline else []) + [("HEAD", head)]
    for fmt, ref in (("plain", fp), ("custom", fc)):
        for name, python in checkouts:
            cmd = [str(python), "-m", "sbbackup", "create", "--format", fmt]
            cwd = python.parents[2]  # CHECKOUT/.venv/bin/python
            out.append(Variant(f"{name} create {fmt}", cmd, on, cwd, True, ref))
            if name == "HEAD" or fmt == "plain":
                label = f"{name} create {fmt}, no counts"
                out.append(Variant(label, cmd, off, cwd, True, ref, counts=False))
    return out


def checkout(python: Path) -> str:
    """The commit a checkout runs, and its uncommitted changes to sbbackup/ (files and a
    digest of the diff, so two runs can tell whether they measured the same code)."""
    git = ["git", "-C", str(python.parents[2])]
    rev = subprocess.check_output([*git, "rev-parse", "--short", "HEAD"], text=True).strip()
    status = subprocess.check_output([*git, "status", "--porcelain", "--", "sbbackup"], text=True)
    files = [line[3:] for line in status.splitlines() if line.strip()]
    if not files:
        return f"{python.parents[2]} at {rev}"
    diff = subprocess.check_output([*git, "diff", "HEAD", "--", "sbbackup"])
    digest = hashlib.sha256(diff).hexdigest()[:12]
    return f"{python.parents[2]} at {rev} + uncommitted {', '.join(files)} (diff {digest})"


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def plain_size(v: Variant) -> int:
    """Bytes of one plain dump (an untimed run that also warms the caches)."""
    proc = subprocess.Popen(v.cmd, env=v.env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    if proc.wait() != 0:
        raise SystemExit(f"{v.label} failed (exit {proc.returncode})")
    return total


def report(vs: list[Variant], head_info: dict[str, str]) -> None:
    med = {v.label: statistics.median(s.wall for s in v.samples) for v in vs}
    print(
        f"{'variant':31s} {'wall s':>7s} {'min-max':>11s} {'/-Fp':>5s} {'/same':>5s} "
        f"{'CPU s':>6s} {'srv CPU':>7s} {'RSS MiB':>7s} {'dump MiB':>8s} {'stored MiB':>10s}"
    )
    for v in vs:
        walls = [s.wall for s in v.samples]
        srv = [s.server_cpu for s in v.samples if s.server_cpu is not None]
        stored = [s.stored for s in v.samples if s.stored is not None]
        dumped = [s.dumped for s in v.samples if s.dumped is not None]
        print(
            f"{v.label:31s} {med[v.label]:7.2f} {min(walls):5.1f}-{max(walls):<5.1f} "
            f"{med[v.label] / med[vs[0].label]:5.2f} {med[v.label] / med[v.ref]:5.2f} "
            f"{statistics.median(s.cpu for s in v.samples):6.2f} "
            f"{f'{statistics.median(srv):7.2f}' if srv else '      -'} "
            f"{statistics.median(s.rss_kib for s in v.samples) / 1024:7.0f} "
            f"{f'{statistics.median(dumped) / 2**20:8.1f}' if dumped else '       -'} "
            f"{f'{statistics.median(stored) / 2**20:10.1f}' if stored else '         -'}"
        )
    for k, val in head_info.items():
        print(f"{k}: {val}")


def run(url: str, args: argparse.Namespace, server: ServerCpu | None) -> None:
    vs = variants(url, args.head, args.baseline)
    size = plain_size(vs[0])
    pythons = {"HEAD": args.head} | ({"base": args.baseline} if args.baseline else {})
    at_start = {name: checkout(python) for name, python in pythons.items()}
    for r in range(args.runs):
        for v in vs if r % 2 == 0 else reversed(vs):
            v.samples.append(run_once(v, server))
            print(
                f"round {r + 1}/{args.runs} {v.label}: {v.samples[-1].wall:.2f}s", file=sys.stderr
            )
    client = subprocess.check_output(["pg_dump", "--version"], text=True).strip()
    info = {
        "plain dump": f"{size / 2**20:.1f} MiB ({size} bytes, pg_dump -Fp)",
        "runs": f"{args.runs} per variant, medians; /-Fp and /same: median wall over "
        "pg_dump -Fp's and over the same format's pg_dump",
    }
    for name, python in pythons.items():
        now = checkout(python)
        info[name] = at_start[name] + ("" if now == at_start[name] else f"; at the end: {now}")
    info.update(
        {
            "cores": str(os.cpu_count()),
            "PostgreSQL": f"server {server_version(url)}; {client}",
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
    )
    report(vs, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--docs-rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--url", help="an existing database (password in DATABASE_URL instead)")
    ap.add_argument("--head", type=Path, default=ROOT / ".venv/bin/python")
    ap.add_argument("--baseline", type=Path, help="the baseline checkout's .venv/bin/python")
    args = ap.parse_args()
    url = args.url or os.environ.get("DATABASE_URL")
    if args.url:
        from psycopg.conninfo import conninfo_to_dict

        if "password" in conninfo_to_dict(args.url):
            raise SystemExit("put the password in DATABASE_URL, not in --url (argv)")
    if url:
        run(url, args, None)
        return
    from helpers.pgcluster import destroy_cluster, pgbench_cluster

    print(f"building pgbench -s {args.scale} + docs ({args.docs_rows} rows)", file=sys.stderr)
    cluster = pgbench_cluster(args.scale)
    try:
        cluster.psql(DOCS_SQL.format(rows=args.docs_rows), db="bench")
        # Set hint bits and visibility now, so the first timed scan does not write.
        cluster.psql("VACUUM (FREEZE, ANALYZE)", db="bench")
        cluster.psql("CHECKPOINT")
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        run(cluster.url("bench"), args, ServerCpu(postmaster))
    finally:
        destroy_cluster(cluster)


if __name__ == "__main__":
    main()
