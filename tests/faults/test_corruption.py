"""Bit flips and truncations of data files and manifests: ``verify --deep`` fails with a
documented exit code, ``restore`` never reports success, and the other backups stay whole."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from _pytest.mark.structures import ParameterSet
from helpers.cli import Result
from helpers.manifests import manifest_path, read_manifest, replace_data
from helpers.pgcluster import Cluster

from faults.harness import (
    SEED,
    Bench,
    RestoreSkipsContentChecksum,
    Tally,
    VerifyNeedsDatabaseUrl,
    check_invariant,
    no_leftovers,
    sample,
)
from sbbackup.crypto import age
from sbbackup.errors import ExitCode

pytestmark = pytest.mark.faults

DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.OK), int(ExitCode.UNEXPECTED)}
VARIANTS = ["sqlite", "sqlite-age", "pg"]


@dataclass(frozen=True)
class Damage:
    """What is done to one stored backup: ``where`` is "data" or "manifest"; ``kind`` "flip"
    (one bit at ``at``, a fraction of the length), "truncate" (to ``at`` of it) or "append";
    ``recompute``: the manifest's size and checksum are made to match the damaged data, so
    only the formats' own checks and the content checksum can object."""

    where: str
    kind: str
    at: float = 0.0
    recompute: bool = False
    key: str = ""  # manifest damage: flip a bit in this field's value (else anywhere)

    def __str__(self) -> str:
        more = "-resummed" if self.recompute else ""
        what = f"-{self.key}" if self.key else f"{self.at:g}"
        return f"{self.where}-{self.kind}{what}{more}"

    @property
    def seen_by_list(self) -> bool:
        """list reads manifests and sizes, never data: it sees a changed size or name, a
        broken manifest, not a flipped data byte or checksum (that is verify's job)."""
        if self.where == "manifest":
            return self.key not in ("checksum", "contentChecksum")
        return self.kind != "flip" and not self.recompute

    def apply(self, directory: Path, backup_id: str) -> None:
        if self.where == "manifest":
            path = manifest_path(directory, backup_id)
            raw = path.read_bytes()
            if self.key:  # the last character of the value: a digit or a hex digit
                start = raw.index(f'"{self.key}": '.encode()) + len(self.key) + 4
                end = start + 1
                while raw[end : end + 1] not in (b",", b"\n", b"}"):
                    end += 1
                pos = end - 2 if raw[end - 1 : end] == b'"' else end - 1
                raw = raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :]
                path.write_bytes(raw)
            else:
                path.write_bytes(self.mangle(raw))
            return
        doc = read_manifest(directory, backup_id)
        data = self.mangle((directory / doc["filename"]).read_bytes())
        if self.recompute:
            replace_data(directory, backup_id, data)
        else:
            (directory / doc["filename"]).write_bytes(data)

    def mangle(self, data: bytes) -> bytes:
        pos = min(len(data) - 1, int(len(data) * self.at))
        if self.kind == "flip":
            return data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1 :]
        if self.kind == "truncate":
            return data[:pos]
        return data + b"\0garbage"


DAMAGES = [
    *(Damage("data", "flip", at, r) for r in (False, True) for at in (0.0, 0.001, 0.5, 0.9999)),
    *(Damage("data", "truncate", at, r) for r in (False, True) for at in (0.0, 0.5, 0.9999)),
    Damage("data", "append", 1.0, True),
    # A manifest flip that lands in, say, ``duration`` changes nothing verify checks; these
    # hit what it must check (and the JSON structure itself).
    *(Damage("manifest", "flip", key=k) for k in ("checksum", "contentChecksum", "size", "id")),
    Damage("manifest", "flip", key="filename"),
    Damage("manifest", "flip", 0.0),
    *(Damage("manifest", "truncate", at) for at in (0.0, 0.5, 0.99)),
]
CASES = [(v, d) for v in VARIANTS for d in DAMAGES]


@pytest.fixture
def variant_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]]:
    """(environment, the arguments naming a fresh restore target) for a variant."""

    def make(variant: str) -> tuple[dict[str, str], Callable[[], list[str]]]:
        if variant == "pg":
            pg: Cluster = request.getfixturevalue("pg")
            src = str(request.getfixturevalue("small_pg_source"))
            return {"DATABASE_URL": src}, lambda: [
                "--target-url",
                pg.url("r_" + uuid.uuid4().hex[:10]),
                "--create-target",
            ]
        env = {"DATABASE_URL": str(request.getfixturevalue("small_sqlite_source"))}
        if variant == "sqlite-age":
            me = age.generate_identity()
            ident = tmp_path / "identity.txt"
            ident.write_text(me.secret_str + "\n")
            ident.chmod(0o600)
            env |= {
                "DB_BACKUP_ENCRYPTION": "true",
                "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
                "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(ident),
            }
        return env, lambda: [
            "--target-url",
            f"sqlite:///{tmp_path / ('r_' + uuid.uuid4().hex[:8] + '.db')}",
        ]

    return make


def case_id(case: tuple[str, Damage]) -> str:
    return f"{case[0]}-{case[1]}"


def case_marks(case: tuple[str, Damage]) -> list[pytest.MarkDecorator]:
    return []  # restore checks contentChecksum now (it skipped it: a known defect, fixed)


@pytest.mark.parametrize("source", ["sqlite", "sqlite-age", "pg"])
def test_undamaged_backup_verifies_and_restores(
    bench: Bench,
    variant_env: Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]],
    source: str,
) -> None:
    """The control: the same harness restores an undamaged backup of each variant."""
    env, target = variant_env(source)
    bench.env.update(env)
    backup = bench.ok("create", "--json").json()["id"]
    bench.ok("verify", "--deep", backup)
    res = bench.ok("restore", backup, *target(), "--json")
    assert res.json()["status"] == "completed"


@pytest.mark.parametrize("case", sample(CASES, keep=4, ids=case_id, marks=case_marks))
def test_damaged_backup_fails_verify_and_restore(
    bench: Bench,
    variant_env: Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]],
    tally: Callable[[str], Tally],
    case: tuple[str, Damage],
) -> None:
    variant, damage = case
    env, target = variant_env(variant)
    bench.env.update(env)
    t = tally(f"{damage.where} {damage.kind} ({variant})")
    keep = bench.ok("create", "--json").json()["id"]  # an undamaged neighbour
    victim = bench.ok("create", "--json").json()["id"]
    damage.apply(bench.backup_dir, victim)

    res = bench.run("verify", "--deep", victim)
    assert res.code != 0, f"verify --deep passed a damaged backup ({damage})"
    assert res.code in DOCUMENTED, (res.code, res.err)
    res = bench.run("restore", victim, *target(), "--json")
    if res.code == 0 and damage.key == "contentChecksum":
        raise RestoreSkipsContentChecksum(f"restore of {victim} reported {res.out[:200]}")
    assert res.code != 0 and '"completed"' not in res.out, (res.code, res.out)
    assert res.code in DOCUMENTED, (res.code, res.err)
    # list still parses and shows the victim as anything but a good backup, unless only its
    # bytes changed (list reads manifests and sizes, never data: a same-size flip is for verify)
    listed = {r["id"]: r["status"] for r in bench.ok("list", "--json").json()}
    assert listed[keep] == "completed"
    if damage.seen_by_list:
        assert listed.get(victim, "corrupt") != "completed", listed

    report = check_invariant(bench, damaged=frozenset({victim}))
    t.add(reached=True, held=report.held)
    assert report.held, report.problems
    assert keep in report.completed
    no_leftovers(report)


def test_verify_deep_of_a_sqlite_backup_needs_no_database_url(
    bench: Bench, small_sqlite_source: str
) -> None:
    """verify reads a stored backup: the engine to check it with is the one its manifest
    names, so a verification host without DATABASE_URL must not fail a good backup."""
    backup = bench.ok("create", "--json", env={"DATABASE_URL": small_sqlite_source}).json()["id"]
    res = bench.run("verify", "--deep", backup)
    if res.code == 13 and "completion marker" in res.err:
        raise VerifyNeedsDatabaseUrl(res.err.strip())
    assert res.code == 0, res.err


# --- issue 12 rows 7 and 8: flips, truncations and appends at scale -------------------------
#
# Seven kinds of stored backup (plain and custom PostgreSQL dumps, with and without zstd and
# age), each made once per module; every trial damages a copy and runs the real CLI on it.
# Two manifest modes: "intact" (the manifest as written: plain ``verify`` must catch the
# damage) and "resummed" (``checksum`` and ``size`` rewritten to match the damaged file,
# ``contentChecksum`` left alone: ``verify --deep`` and ``restore`` must catch it).

AGE = {"DB_BACKUP_ENCRYPTION": "true"}
KINDS: dict[str, dict[str, str]] = {
    "plain": {"DB_BACKUP_FORMAT": "plain", "DB_BACKUP_COMPRESSION": "false"},
    "plain+zstd": {"DB_BACKUP_FORMAT": "plain", "DB_BACKUP_COMPRESSION": "true"},
    "plain+age": {"DB_BACKUP_FORMAT": "plain", "DB_BACKUP_COMPRESSION": "false", **AGE},
    "plain+zstd+age": {"DB_BACKUP_FORMAT": "plain", "DB_BACKUP_COMPRESSION": "true", **AGE},
    "custom": {"DB_BACKUP_FORMAT": "custom", "DB_BACKUP_COMPRESSION": "false"},
    "custom+zstd": {"DB_BACKUP_FORMAT": "custom", "DB_BACKUP_COMPRESSION": "true"},
    "custom+age": {"DB_BACKUP_FORMAT": "custom", "DB_BACKUP_COMPRESSION": "false", **AGE},
}
MODES = {"intact": "manifest intact", "resummed": "checksum recomputed"}
FLIPS_PER_CASE = 75  # 7 kinds x 2 modes x 75 = 1,050 flips in the full run
FLIPS_IN_SAMPLE = 2
RESTORE_EVERY = 15  # 5 restores per kind and mode in the full run (see flip_trials)
POOL = 3  # CLI subprocesses at once, each on its own copy of the backup directory
HEADER, TAIL = 256, 64 << 10


@dataclass(frozen=True)
class Stored:
    """One undamaged backup of a kind: its directory, ID, bytes and environment."""

    kind: str
    backup_id: str
    filename: str
    data: bytes
    manifest: bytes
    env: dict[str, str]


@dataclass(frozen=True)
class Trial:
    """One damage to a copy: ``op`` "flip" (bit ``bit`` of byte ``pos``), "truncate" (to
    ``pos`` bytes) or "append" (``extra``); ``restore`` "new", "existing" or ""."""

    n: int
    op: str
    label: str
    pos: int = 0
    bit: int = 0
    extra: bytes = b""
    restore: str = ""

    def apply(self, data: bytes) -> bytes:
        if self.op == "flip":
            return (
                data[: self.pos] + bytes([data[self.pos] ^ (1 << self.bit)]) + data[self.pos + 1 :]
            )
        if self.op == "truncate":
            return data[: self.pos]
        return data + self.extra


def _cli(env: dict[str, str], *args: str) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "sbbackup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _clean_environ(home: Path) -> dict[str, str]:
    prefixes = ("DB_BACKUP_", "SBBACKUP_", "PG", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"HOME": str(home)}


@pytest.fixture(scope="module")
def stored(
    request: pytest.FixtureRequest,
    pg: Cluster,
    small_pg_source: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Stored]:
    """A backup of every kind, made once; each verifies deep before it is ever damaged. The
    trials are drawn from the suite's seed (``harness.SEED``: pytest's header says it)."""
    root = tmp_path_factory.mktemp("stored")
    me = age.generate_identity()
    ident = root / "identity.txt"
    ident.write_text(me.secret_str + "\n")
    ident.chmod(0o600)
    keys = {
        "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(ident),
    }
    base = _clean_environ(root / "home") | {"DATABASE_URL": small_pg_source}

    def make(kind: str) -> Stored:
        env = base | KINDS[kind] | (keys if "age" in kind else {})
        backups = root / kind.replace("+", "-")
        res = _cli(env | {"DB_BACKUP_PATH": str(backups)}, "create", "--json")
        assert res.code == 0, f"create ({kind}) exited {res.code}: {res.err}"
        backup_id = res.json()["id"]
        res = _cli(env | {"DB_BACKUP_PATH": str(backups)}, "verify", "--deep", backup_id)
        assert res.code == 0, f"the undamaged {kind} backup fails verify --deep: {res.err}"
        doc = read_manifest(backups, backup_id)
        assert doc["format"] == KINDS[kind]["DB_BACKUP_FORMAT"], doc
        assert bool(doc.get("compression")) == ("zstd" in kind), doc
        assert bool(doc.get("encryption")) == ("age" in kind), doc
        filename = str(doc["filename"])
        data = (backups / filename).read_bytes()
        return Stored(
            kind, backup_id, filename, data, manifest_path(backups, backup_id).read_bytes(), env
        )

    with ThreadPoolExecutor(POOL) as pool:
        return dict(zip(KINDS, pool.map(make, KINDS), strict=True))


def flip_trials(size: int, rng: random.Random, count: int, at: int) -> list[Trial]:
    """``count`` flips, a third each in the first 256 bytes, anywhere, and the last 64 KiB;
    every ``RESTORE_EVERY``-th from trial ``at`` on is restored too."""
    trials = []
    for n in range(count):
        region = ("header", "middle", "tail")[n % 3]
        if region == "header":
            pos = rng.randrange(min(HEADER, size))
        elif region == "tail":
            pos = rng.randrange(max(0, size - TAIL), size)
        else:
            pos = rng.randrange(size)
        bit = rng.randrange(8)
        restore = ("new", "existing")[(n // RESTORE_EVERY) % 2] if n % RESTORE_EVERY == at else ""
        trials.append(Trial(n, "flip", f"{region} byte {pos} bit {bit}", pos, bit, b"", restore))
    return trials


def cut_trials(size: int) -> list[Trial]:
    """Truncations: to 0, 1, 10 and 100 bytes, to half, and 100, 20 and 1 bytes off the end."""
    keep = [0, 1, 10, 100, size // 2, size - 100, size - 20, size - 1]
    return [
        Trial(n, "truncate", f"truncated to {k} of {size} bytes", k, restore=_restore_of(n))
        for n, k in enumerate(keep)
    ]


def append_trials(rng: random.Random) -> list[Trial]:
    """Appends: a byte, a line, an extra zstd frame, an age-looking chunk (a full 64 KiB
    chunk and its tag, random as ciphertext is) and a short one."""
    extras = {
        "an extra zstd frame": zstandard.ZstdCompressor(write_checksum=True).compress(
            b"DROP TABLE t;\n"
        ),
        "a NUL byte": b"\0",
        "a line": b"-- appended\n",
        "an age-looking full chunk": rng.randbytes((64 << 10) + 16),
        "an age-looking short chunk": rng.randbytes(16 + 100),
    }
    return [
        Trial(n, "append", f"appended {what}", extra=extra, restore=_restore_of(n))
        for n, (what, extra) in enumerate(extras.items())
    ]


def _restore_of(n: int) -> str:
    return ("", "new", "existing")[n % 3]


def _one_line(res: Result) -> str | None:
    """Why ``res`` is not exit 13 with one line on stderr, or None."""
    lines = res.err.strip().splitlines()
    if res.code != 13 or len(lines) != 1 or "Traceback" in res.err:
        return f"exit {res.code}, stderr {res.err.strip()[-300:]!r}"
    return None


def run_trial(stored: Stored, mode: str, trial: Trial, work: Path, pg: Cluster) -> list[str]:
    """Damage a copy, run the CLI on it; the problems seen (none: the trial held)."""
    backups = work / f"t{trial.n}"
    backups.mkdir(mode=0o700)
    data = trial.apply(stored.data)
    assert data != stored.data, f"{trial.label} changed no byte"
    manifest_path(backups, stored.backup_id).write_bytes(stored.manifest)
    if mode == "resummed":
        replace_data(backups, stored.backup_id, data)
    else:
        (backups / stored.filename).write_bytes(data)
    env = stored.env | {"DB_BACKUP_PATH": str(backups)}
    problems = []
    runs = [("verify", stored.backup_id)] if mode == "intact" else []
    for args in (*runs, ("verify", "--deep", stored.backup_id)):
        if why := _one_line(_cli(env, *args)):
            problems.append(f"{' '.join(args[:-1])}: {why}")
    if trial.restore:
        problems += _restore_fails(env, stored.backup_id, trial.restore, pg)
    return [f"{trial.label}: {p}" for p in problems]


def _restore_fails(env: dict[str, str], backup_id: str, target: str, pg: Cluster) -> list[str]:
    """restore exits 13; a new target does not exist afterwards, an existing one (empty)
    holds no table."""
    name = "fl_" + uuid.uuid4().hex[:12]
    args = ["restore", backup_id, "--target-url", pg.url(name)]
    if target == "new":
        args.append("--create-target")
    else:
        pg.psql(f"CREATE DATABASE {name}")
    try:
        res = _cli(env, *args)
        problems = [f"restore ({target} target): {why}"] if (why := _one_line(res)) else []
        exists = pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"
        if target == "new" and exists:
            problems.append("restore into a new target left the database behind")
        if exists:
            tables = pg.psql(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND "
                "relnamespace = 'public'::regnamespace",
                db=name,
            )
            if tables != "0":
                problems.append(f"restore ({target} target) left {tables} table(s)")
        return problems
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def run_trials(
    stored: Stored, mode: str, trials: list[Trial], work: Path, pg: Cluster, t: Tally
) -> None:
    with ThreadPoolExecutor(POOL) as pool:
        found = list(pool.map(lambda tr: run_trial(stored, mode, tr, work, pg), trials))
    for problems in found:
        t.add(reached=True, held=not problems)
    bad = [p for ps in found for p in ps]
    print(f"seed {SEED}: {t.fault_class}: {t.held}/{t.trials} trials exited 13 throughout")
    assert not bad, f"seed {SEED} (SBBACKUP_FAULT_SEED), {len(bad)} problem(s): " + "; ".join(
        bad[:8]
    )


def batches(split: Callable[[str, str], list[str]]) -> list[ParameterSet]:
    """Per kind and mode a "sample" batch (every run) and, for the full run, the "rest"."""
    return [
        pytest.param(kind, mode, batch, id=f"{kind}-{mode}-{batch}", marks=marks)
        for kind in KINDS
        for mode in MODES
        for batch, marks in (("sample", ()), ("rest", (pytest.mark.fault_full,)))
        if batch in split(kind, mode)
    ]


def _pick(trials: list[Trial], batch: str, keep: Sequence[int]) -> list[Trial]:
    return [tr for tr in trials if (tr.n in keep) == (batch == "sample")]


@pytest.mark.parametrize(("kind", "mode", "batch"), batches(lambda k, m: ["sample", "rest"]))
def test_bit_flips(
    record_property: Callable[[str, object], None],
    stored: dict[str, Stored],
    pg: Cluster,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    kind: str,
    mode: str,
    batch: str,
) -> None:
    """Row 7: single-bit flips anywhere in the stored file exit 13, never 0, 1 or 12."""
    record_property("seed", SEED)
    s = stored[kind]
    rng = random.Random(f"{SEED}-{kind}-{mode}-flip")
    # The sample restores a flip in resummed mode only: in intact mode restore's first step
    # (the stored checksum) catches every one, the same way verify does.
    trials = flip_trials(len(s.data), rng, FLIPS_PER_CASE, 0 if mode == "resummed" else 7)
    run_trials(
        s,
        mode,
        _pick(trials, batch, range(FLIPS_IN_SAMPLE)),
        tmp_path,
        pg,
        tally(f"bit flip, {MODES[mode]} ({kind})"),
    )


@pytest.mark.parametrize(("kind", "mode", "batch"), batches(lambda k, m: ["sample", "rest"]))
def test_truncations(
    record_property: Callable[[str, object], None],
    stored: dict[str, Stored],
    pg: Cluster,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    kind: str,
    mode: str,
    batch: str,
) -> None:
    """Row 8: a stored file cut short, at its start, its middle or its last bytes, exits 13."""
    record_property("seed", SEED)
    s = stored[kind]
    trials = cut_trials(len(s.data))
    run_trials(
        s,
        mode,
        _pick(trials, batch, (6,)),
        tmp_path,
        pg,
        tally(f"truncation, {MODES[mode]} ({kind})"),
    )


@pytest.mark.parametrize(("kind", "mode", "batch"), batches(lambda k, m: ["sample", "rest"]))
def test_appends(
    record_property: Callable[[str, object], None],
    stored: dict[str, Stored],
    pg: Cluster,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    kind: str,
    mode: str,
    batch: str,
) -> None:
    """Row 8: anything after the end of the stored file (a byte, a line, a zstd frame, an
    age-looking chunk) exits 13."""
    record_property("seed", SEED)
    s = stored[kind]
    trials = append_trials(random.Random(f"{SEED}-{kind}-append"))
    run_trials(
        s,
        mode,
        _pick(trials, batch, (0,)),
        tmp_path,
        pg,
        tally(f"appended data, {MODES[mode]} ({kind})"),
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_restores_undamaged(
    stored: dict[str, Stored], pg: Cluster, tmp_path: Path, kind: str
) -> None:
    """The control for the rows above: each stored backup, copied undamaged, restores."""
    s = stored[kind]
    backups = tmp_path / "copy"
    backups.mkdir(mode=0o700)
    manifest_path(backups, s.backup_id).write_bytes(s.manifest)
    (backups / s.filename).write_bytes(s.data)
    name = "fl_" + uuid.uuid4().hex[:12]
    try:
        res = _cli(
            s.env | {"DB_BACKUP_PATH": str(backups)},
            "restore",
            s.backup_id,
            "--target-url",
            pg.url(name),
            "--create-target",
            "--json",
        )
        assert res.code == 0, res.err
        assert pg.psql("SELECT count(*) FROM t", db=name) == "3000"
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
