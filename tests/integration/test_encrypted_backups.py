"""Encrypted backups end to end: age files that the stock `age` CLI opens, fail-closed."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import SB
from helpers.age_cli import age_with_tty, require_age
from helpers.manifests import replace_data
from helpers.pgcluster import Cluster

from sbbackup.crypto import age

ENC_CHUNK = age.ENC_CHUNK


@pytest.fixture
def keys(sb: SB, tmp_path: Path) -> dict[str, str]:
    require_age()
    key = tmp_path / "key.txt"
    res = sb.ok("keygen", "--output", str(key))
    public = res.out.strip().split()[-1]
    assert public.startswith("age1")
    assert key.stat().st_mode & 0o777 == 0o600
    assert sb("keygen", "--output", str(key)).code == 2  # never overwrites
    derived = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True)
    assert derived.stdout.strip() == public  # the stock tool reads our identity file
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    return {"key": str(key), "public": public, "other": str(other)}


def enc_env(pg: Cluster, db: str, keys: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg.url(db),
        "DB_BACKUP_ENCRYPTION": "true",
        "DB_BACKUP_ENCRYPTION_RECIPIENTS": keys["public"],
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": keys["key"],
        **extra,
    }


def database_exists(pg: Cluster, name: str) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"


def replace_data_file(sb: SB, rec: dict[str, Any], data: bytes, **manifest: Any) -> None:
    """Store new bytes and fix the manifest's checksum, so only the age layer can object."""
    replace_data(sb.backup_path, rec["id"], data, **manifest)


def test_encrypted_round_trip_and_age_cli(
    pg: Cluster, rich_db: str, sb: SB, keys: dict[str, str]
) -> None:
    env = enc_env(pg, rich_db, keys)
    rec = sb.ok("create", "--json", env=env).json()
    assert isinstance(rec, dict)
    assert rec["filename"].endswith(".sql.zst.age")
    assert rec["encryption"] == {
        "algorithm": "age-v1",
        "recipientType": "X25519",
        "recipients": [keys["public"]],
    }
    stored = sb.backup_path / rec["filename"]
    raw = stored.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert hashlib.sha256(raw).hexdigest() == rec["checksum"]  # of the stored, encrypted file
    assert "AGE-SECRET-KEY" not in (sb.backup_path / f"{rec['id']}.json").read_text()
    opened = subprocess.run(
        f"age -d -i {keys['key']} {stored} | zstd -d",
        shell=True,
        capture_output=True,
        check=True,
    ).stdout
    assert opened.startswith(b"--\n-- PostgreSQL database dump")
    assert b"-- PostgreSQL database dump complete" in opened[-200:]
    # Plain verify needs no key; deep verify decrypts.
    sb.ok("verify", rec["id"], env={k: v for k, v in env.items() if "IDENTITY" not in k})
    sb.ok("verify", "--deep", rec["id"], env=env)
    out = sb.ok(
        "restore", rec["id"], "--target-url", "enc_restored", "--create-target", "--json", env=env
    ).json()
    assert isinstance(out, dict) and out["status"] == "completed"
    assert out["validation"]["differences"] == []
    pg.psql("DROP DATABASE enc_restored")


@pytest.fixture
def enc_backup(
    pg: Cluster, fresh_db: str, sb: SB, keys: dict[str, str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """An encrypted plain-format backup of a few MB: several dozen age chunks."""
    pg.psql(
        "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g",
        db=fresh_db,
    )
    env = enc_env(pg, fresh_db, keys)
    rec = sb.ok("create", "--json", env=env).json()
    assert isinstance(rec, dict) and rec["size"] > 10 * ENC_CHUNK
    return env, rec


def test_wrong_key_restores_nothing(
    pg: Cluster, sb: SB, keys: dict[str, str], enc_backup: tuple[dict[str, str], dict[str, Any]]
) -> None:
    env, rec = enc_backup
    wrong = {**env, "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": keys["other"]}
    res = sb("verify", "--deep", rec["id"], env=wrong)
    assert res.code == 12 and "no identity matches this backup" in res.err
    res = sb("restore", rec["id"], "--target-url", "wk", "--create-target", env=wrong)
    assert res.code == 12 and "no identity matches this backup" in res.err
    assert res.out == ""
    assert not database_exists(pg, "wk")  # the key is checked before the target is touched
    no_key = {k: v for k, v in env.items() if "IDENTITY" not in k}
    res = sb("restore", rec["id"], "--target-url", "wk", "--create-target", env=no_key)
    assert res.code == 12 and not database_exists(pg, "wk")


def mutations(raw: bytes) -> dict[str, tuple[bytes, set[int]]]:
    """Damaged copies of an age file and the exit codes each may produce."""
    mac_line = raw.index(b"\n---") + 1
    nonce = raw.index(b"\n", mac_line) + 1
    first = nonce + 16

    def flip(pos: int) -> bytes:
        return raw[:pos] + bytes([raw[pos] ^ 1]) + raw[pos + 1 :]

    return {
        # A damaged stanza body either stops being canonical base64 (a malformed header) or
        # decodes and cannot be unwrapped: alone that looks like a wrong key, but the manifest
        # lists the configured identity's recipient, so it is damage (13) either way.
        "flip_stanza": (flip(mac_line - 10), {13}),
        "flip_mac": (flip(mac_line + 8), {13}),
        "flip_nonce": (flip(nonce + 3), {13}),
        "flip_first_chunk": (flip(first + 100), {13}),
        "flip_middle_chunk": (flip(first + 7 * ENC_CHUNK + 5), {13}),
        "flip_last_chunk": (flip(len(raw) - 100), {13}),
        "truncate_mid_chunk": (raw[: len(raw) - 70000], {13}),
        "truncate_at_chunk": (raw[: first + 10 * ENC_CHUNK], {13}),
        "appended": (raw + b"\0", {13}),
    }


def test_tampering_and_truncation_restore_nothing(
    pg: Cluster, sb: SB, enc_backup: tuple[dict[str, str], dict[str, Any]]
) -> None:
    env, rec = enc_backup
    original = (sb.backup_path / rec["filename"]).read_bytes()
    for label, (mutated, codes) in mutations(original).items():
        replace_data_file(sb, rec, mutated)
        res = sb("verify", "--deep", rec["id"], env=env)
        assert res.code in codes, (label, res.err)
        code = res.code
        res = sb("restore", rec["id"], "--target-url", label, "--create-target", env=env)
        assert res.code == code, (label, res.err)
        # The database this restore created is dropped again: no half-restored target remains.
        assert not database_exists(pg, label), label
    replace_data_file(sb, rec, original)
    sb.ok("verify", "--deep", rec["id"], env=env)


# bech32 of 32 zero bytes under "age": a valid encoding of a low-order point.
ZERO_RECIPIENT = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z"


def test_fail_closed_without_valid_recipients(
    pg: Cluster, fresh_db: str, sb: SB, keys: dict[str, str], tmp_path: Path
) -> None:
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    base = {"DATABASE_URL": pg.url(fresh_db), "DB_BACKUP_ENCRYPTION": "true"}
    res = sb("create", env=base)
    assert res.code == 2 and "no recipient" in res.err
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# ops\n{keys['public']}\nage1bogus\n")
    secret = Path(keys["key"]).read_text().splitlines()[-1]
    bad_settings = {
        "invalid key": {"DB_BACKUP_ENCRYPTION_RECIPIENTS": "age1notakey"},
        "one valid, one invalid": {
            "DB_BACKUP_ENCRYPTION_RECIPIENTS": f"{keys['public']},age1notakey"
        },
        "bad recipients file line": {"DB_BACKUP_ENCRYPTION_RECIPIENTS_FILE": str(rfile)},
        "missing recipients file": {"DB_BACKUP_ENCRYPTION_RECIPIENTS_FILE": str(tmp_path / "no")},
        "secret key as recipient": {"DB_BACKUP_ENCRYPTION_RECIPIENTS": secret},
        # The all-zero (low-order) point: every reader could compute the file key.
        "low-order recipient": {"DB_BACKUP_ENCRYPTION_RECIPIENTS": ZERO_RECIPIENT},
    }
    for label, extra in bad_settings.items():
        res = sb("create", env={**base, **extra})
        assert res.code == 2, (label, res.err)
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1, res.err
        assert secret not in res.err + res.out, f"{label}: the secret was echoed"
    # Nothing was dumped: no data file, no partial, no plaintext fallback. Encryption is
    # configured (not asked for on the command line), so each refusal is a failed record.
    left = [p for p in sb.backup_path.iterdir() if p.name.startswith("streambuddy")]
    assert left and all(p.suffix == ".json" for p in left), left
    records = sb.ok("list", "--json", env=base).json()
    assert len(records) == len(left) == 1 + len(bad_settings)
    assert all(r["status"] == "failed" and r["filename"] is None for r in records)


def test_passphrase_backup_opens_with_age_cli(
    pg: Cluster, fresh_db: str, sb: SB, tmp_path: Path
) -> None:
    require_age()
    pg.psql("CREATE TABLE t AS SELECT 1 AS x", db=fresh_db)
    pw = tmp_path / "pass"
    pw.write_text("correct horse battery staple\n")
    pw.chmod(0o600)
    env = {
        "DATABASE_URL": pg.url(fresh_db),
        "DB_BACKUP_ENCRYPTION": "true",
        "DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE": str(pw),
    }
    rec = sb.ok("create", "--json", env=env).json()
    assert isinstance(rec, dict)
    assert rec["encryption"]["recipientType"] == "scrypt"
    assert rec["encryption"]["workFactor"] == 18
    stored = sb.backup_path / rec["filename"]
    assert stored.read_bytes().split(b"\n")[1].endswith(b" 18")
    sb.ok("verify", "--deep", rec["id"], env=env)
    out = tmp_path / "dump.zst"
    code, said = age_with_tty(
        ["age", "-d", "-o", str(out), str(stored)], "correct horse battery staple"
    )
    assert code == 0, said
    dump = subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True).stdout
    assert b"-- PostgreSQL database dump complete" in dump[-200:]
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    wrong.chmod(0o600)
    res = sb(
        "verify",
        "--deep",
        rec["id"],
        env={**env, "DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE": str(wrong)},
    )
    assert res.code == 12 and "no identity matches this backup" in res.err
    pw.chmod(0o644)
    res = sb("verify", "--deep", rec["id"], env=env)
    assert res.code == 2 and "readable by others" in res.err


@pytest.mark.parametrize("how", ["-r", "-R", "-p"])
def test_restore_file_made_by_age_cli(
    pg: Cluster, fresh_db: str, sb: SB, keys: dict[str, str], tmp_path: Path, how: str
) -> None:
    """sbbackup restores a backup whose stored file was encrypted by the stock age CLI."""
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1234) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    rec = sb.ok("create", "--json", env=env).json()
    assert isinstance(rec, dict)
    plain = sb.backup_path / rec["filename"]
    enc = sb.backup_path / (rec["filename"] + ".age")
    encryption: dict[str, Any] = {
        "algorithm": "age-v1",
        "recipientType": "X25519",
        "recipients": [keys["public"]],
    }
    if how == "-r":
        subprocess.run(["age", "-r", keys["public"], "-o", str(enc), str(plain)], check=True)
        env["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"] = keys["key"]
    elif how == "-R":
        rfile = tmp_path / "recipients.txt"
        rfile.write_text(f"# ops key\n{keys['public']}\n")
        subprocess.run(["age", "-R", str(rfile), "-o", str(enc), str(plain)], check=True)
        env["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"] = keys["key"]
    else:
        code, said = age_with_tty(["age", "-p", "-o", str(enc), str(plain)], "hunter2 hunter2")
        assert code == 0, said
        pw = tmp_path / "pass"
        pw.write_text("hunter2 hunter2\n")
        pw.chmod(0o600)
        env["DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE"] = str(pw)
        encryption.update(recipientType="scrypt", recipients=[], workFactor=18)
    enc.chmod(0o600)
    plain.unlink()
    rec["filename"] = enc.name
    replace_data_file(sb, rec, enc.read_bytes(), filename=enc.name, encryption=encryption)
    out = sb.ok(
        "restore", rec["id"], "--target-url", "from_age_cli", "--create-target", "--json", env=env
    ).json()
    assert isinstance(out, dict) and out["status"] == "completed"
    assert pg.psql("SELECT count(*) FROM t", db="from_age_cli") == "1234"
    pg.psql("DROP DATABASE from_age_cli")


def test_no_plaintext_temp_files(
    pg: Cluster,
    fresh_db: str,
    keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process create and restore of an uncompressed custom-format encrypted backup with
    parallel restore configured: no temporary file is made, and no file on disk holds plaintext.
    (Unencrypted parallel restores spool to a temp file; encrypted ones must not.)"""
    from sbbackup import ops
    from sbbackup.config import load_settings

    marker = "plaintext-marker-7f3a"
    pg.psql(
        f"CREATE TABLE t AS SELECT g, '{marker}' || g AS m FROM generate_series(1, 20000) g",
        db=fresh_db,
    )

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a temporary file was created while handling an encrypted backup")

    for name in (
        "mkstemp",
        "mkdtemp",
        "NamedTemporaryFile",
        "TemporaryFile",
        "SpooledTemporaryFile",
    ):
        monkeypatch.setattr(tempfile, name, refuse)
    env = {
        **enc_env(pg, fresh_db, keys),
        "DB_BACKUP_PATH": str(tmp_path / "backups"),
        "SBBACKUP_STATE_DIR": str(tmp_path / "state"),
        "DB_BACKUP_FORMAT": "custom",
        "DB_BACKUP_COMPRESSION": "false",
        "DB_BACKUP_RESTORE_JOBS": "4",
    }
    ctx = ops.Context(load_settings(env=env))
    record = ops.create_backup(ctx, ops.CreateOptions())
    assert record.filename and record.filename.endswith(".dump.age")
    ops.restore_backup(ctx, ops.RestoreOptions(record.id, target="noplain", create_target=True))
    assert pg.psql("SELECT count(*) FROM t", db="noplain") == "20000"
    pg.psql("DROP DATABASE noplain")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), f"plaintext in {path}"
