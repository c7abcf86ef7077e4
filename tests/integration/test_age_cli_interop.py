"""Interoperability with the stock ``age`` CLI, both ways, for X25519 keys and passphrases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.age_cli import age_with_tty, require_age

from sbbackup.crypto import age
from sbbackup.errors import IntegrityError

SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536 + 17]
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def cli_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An identity made by age-keygen: (its file, its public key)."""
    require_age()
    path = tmp_path_factory.mktemp("keys") / "cli_key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return path, public


@pytest.fixture(scope="module")
def our_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, age.X25519Identity]:
    """An identity made by sbbackup's age module, written like age-keygen writes one."""
    identity = age.generate_identity()
    path = tmp_path_factory.mktemp("keys") / "our_key.txt"
    path.write_text(f"# public key: {identity.recipient().public_key_str}\n{identity.secret_str}\n")
    path.chmod(0o600)
    return path, identity


def payload(size: int) -> bytes:
    return os.urandom(size)


def test_keys_are_bech32_compatible(cli_key: tuple[Path, str], our_key: tuple[Path, Any]) -> None:
    path, public = cli_key
    [identity] = age.parse_identity_file(path)
    assert identity.recipient().public_key_str == public
    assert age.parse_recipient(public).public_key_str == public
    ours_path, ours = our_key
    derived = subprocess.run(
        ["age-keygen", "-y", str(ours_path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert derived == ours.recipient().public_key_str


@pytest.mark.parametrize("size", SIZES)
def test_age_cli_opens_what_we_write(
    size: int, tmp_path: Path, cli_key: tuple[Path, str], our_key: tuple[Path, Any]
) -> None:
    data = payload(size)
    recipients = [age.parse_recipient(cli_key[1]), our_key[1].recipient()]
    enc = tmp_path / "f.age"
    enc.write_bytes(age.encrypt(data, recipients))
    for key in (cli_key[0], our_key[0]):  # either recipient opens it
        out = subprocess.run(["age", "-d", "-i", str(key), str(enc)], capture_output=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout == data


@pytest.mark.parametrize("size", SIZES)
def test_we_open_what_age_cli_writes(size: int, tmp_path: Path, cli_key: tuple[Path, str]) -> None:
    data = payload(size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    other = age.generate_identity()
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# ops\n{cli_key[1]}\n\n# escrow\n{other.recipient().public_key_str}\n")
    assert len(age.parse_recipients_file(rfile)) == 2
    for args in (["-r", cli_key[1]], ["-R", str(rfile)]):
        enc = tmp_path / "f.age"
        subprocess.run(["age", *args, "-o", str(enc), str(plain)], check=True)
        identities = age.parse_identity_file(cli_key[0])
        assert age.decrypt(enc.read_bytes(), identities) == data
        if args[0] == "-R":
            assert age.decrypt(enc.read_bytes(), [other]) == data
        enc.unlink()


def test_age_cli_rejects_our_tampered_or_truncated_files(
    tmp_path: Path, cli_key: tuple[Path, str]
) -> None:
    data = payload(3 * 65536)
    good = age.encrypt(data, [age.parse_recipient(cli_key[1])])
    flipped = good[:-50] + bytes([good[-50] ^ 1]) + good[-49:]  # always a change
    for bad in (good[:-1], good[: len(good) - 65536 - 16], flipped):
        enc = tmp_path / "bad.age"
        enc.write_bytes(bad)
        out = subprocess.run(["age", "-d", "-i", str(cli_key[0]), str(enc)], capture_output=True)
        assert out.returncode != 0


def test_passphrase_we_write_age_cli_opens(tmp_path: Path) -> None:
    require_age()
    data = payload(70000)
    enc = tmp_path / "p.age"
    enc.write_bytes(age.encrypt(data, [age.ScryptRecipient(PASSPHRASE.encode(), 12)]))
    out = tmp_path / "out"
    code, said = age_with_tty(["age", "-d", "-o", str(out), str(enc)], PASSPHRASE)
    assert code == 0, said
    assert out.read_bytes() == data
    out.unlink()
    code, said = age_with_tty(["age", "-d", "-o", str(out), str(enc)], "wrong passphrase")
    assert code != 0 and "incorrect passphrase" in said.lower(), said


def test_passphrase_age_cli_writes_we_open(tmp_path: Path, cli_key: tuple[Path, str]) -> None:
    """``age -p`` (work factor 2^18) and ``age -r`` files, opened with X25519 + passphrase."""
    require_age()
    data = payload(100_000)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    penc, xenc = tmp_path / "p.age", tmp_path / "x.age"
    code, said = age_with_tty(["age", "-p", "-o", str(penc), str(plain)], PASSPHRASE)
    assert code == 0, said
    subprocess.run(["age", "-r", cli_key[1], "-o", str(xenc), str(plain)], check=True)
    identities: list[age.Identity] = [
        age.ScryptIdentity(PASSPHRASE.encode()),
        *age.parse_identity_file(cli_key[0]),
    ]
    assert penc.read_bytes().split(b"\n")[1].startswith(b"-> scrypt ")
    assert age.decrypt(penc.read_bytes(), identities) == data
    assert age.decrypt(xenc.read_bytes(), identities) == data
    with pytest.raises(age.NoIdentityMatchError, match="no identity matches this backup"):
        age.decrypt(penc.read_bytes(), [age.ScryptIdentity(b"nope")])
    with pytest.raises(ValueError):  # like age, a passphrase cannot share a file
        age.AgeWriter(
            open(os.devnull, "wb"),  # noqa: SIM115
            [age.ScryptRecipient(b"x", 10), age.parse_recipient(cli_key[1])],
        )


def test_armored_files_are_refused_not_misread(tmp_path: Path, cli_key: tuple[Path, str]) -> None:
    """Armor (``age -a``) is not supported: it fails as a header error, never as garbage."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"hello")
    enc = tmp_path / "a.age"
    subprocess.run(["age", "-a", "-r", cli_key[1], "-o", str(enc), str(plain)], check=True)
    with pytest.raises(IntegrityError):
        age.decrypt(enc.read_bytes(), age.parse_identity_file(cli_key[0]))
