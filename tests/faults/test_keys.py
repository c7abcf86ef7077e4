"""Wrong keys (row 9 of issue 12's fault table): an encrypted backup opened with the wrong age
identity, with no identity, or with the wrong passphrase. ``verify --deep``, ``restore`` (into
a new target, and with ``--clean`` over an existing one) and the drill all exit 12 with one
line; the target is untouched (a new one is never created, an existing one keeps what it
held); the backup itself still verifies with the right key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.pgcluster import Cluster

from faults.harness import Bench, Tally, check_invariant, sample
from sbbackup.crypto import age
from sbbackup.errors import ExitCode

pytestmark = pytest.mark.faults


def private(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@dataclass(frozen=True)
class Key:
    name: str
    scrypt: bool  # the backup is encrypted to a passphrase, not a recipient
    wrong: str  # "other" (another identity or passphrase) or "none" (no identity at all)


KEYS = [Key("wrong-identity", False, "other"), Key("no-identity", False, "none")]
KEYS += [Key("wrong-passphrase", True, "other")]


def table_count(pg: Cluster, db: str) -> str:
    return pg.psql(
        "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = "
        "'public'::regnamespace",
        db=db,
    )


@pytest.mark.parametrize("key", sample(KEYS, keep=1, ids=lambda k: k.name))
def test_a_wrong_key_exits_12_and_leaves_the_target_untouched(
    bench: Bench,
    tmp_path: Path,
    pg: Cluster,
    small_pg_source: str,
    tally: Callable[[str], Tally],
    key: Key,
) -> None:
    t = tally("wrong identity, wrong passphrase")
    bench.env |= {"DATABASE_URL": small_pg_source, "DB_BACKUP_ENCRYPTION": "true"}
    if key.scrypt:
        right = {"DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE": private(tmp_path / "pw", "right one\n")}
        wrong = {"DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE": private(tmp_path / "bad", "not it\n")}
    else:
        me, other = age.generate_identity(), age.generate_identity()
        right = {
            "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
            "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": private(tmp_path / "me", me.secret_str + "\n"),
        }
        wrong = {
            "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
            "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": private(
                tmp_path / "other", other.secret_str + "\n"
            ),
        }
        if key.wrong == "none":
            del wrong["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"]
    bench.env |= right
    backup = bench.ok("create", "--json").json()["id"]
    for k in right:
        bench.env.pop(k)
    bench.env |= wrong

    existing = "k_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {existing}")
    pg.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1), (2)", db=existing)
    new = "k_" + uuid.uuid4().hex[:10]
    runs = {
        "verify --deep": ("verify", "--deep", backup),
        "restore new": ("restore", backup, "--target-url", pg.url(new), "--create-target"),
        "restore --clean": ("restore", backup, "--target-url", pg.url(existing), "--clean"),
        "drill": ("test", "--backup", backup),
    }
    for what, args in runs.items():
        res = bench.run(*args)
        assert res.code == ExitCode.WRONG_KEY, f"{what} exited {res.code}: {res.err}"
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1, res.err
    exists = pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{new}'")
    assert exists == "0", "a restore with the wrong key created its target"
    assert pg.psql("SELECT array_agg(x ORDER BY x) FROM keep", db=existing) == "{1,2}"
    assert table_count(pg, existing) == "1"

    for k in wrong:
        bench.env.pop(k)
    bench.env |= right
    report = check_invariant(bench)  # the right key: verify --deep of every backup passes
    t.add(reached=True, held=report.held)
    assert report.held, report.problems
    pg.psql(f"DROP DATABASE {existing}")
