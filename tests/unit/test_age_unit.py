"""The age module on its own: round trips, streaming shapes, and every kind of damage."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbbackup.crypto import age
from sbbackup.errors import IntegrityError, WrongKeyError

CHUNK = age.CHUNK
ENC = age.ENC_CHUNK
ME = age.generate_identity()
ESCROW = age.generate_identity()
EDGES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * 1024 * 1024 + 3]


def encrypt_in_pieces(data: bytes, pieces: list[int], recipients: list[age.Recipient]) -> bytes:
    """Write through AgeWriter in the given piece sizes, as the pipeline does."""
    out = io.BytesIO()
    w = age.AgeWriter(out, recipients)
    view, pos = memoryview(data), 0
    for size in pieces:
        w.write(view[pos : pos + size])
        pos += size
    w.write(view[pos:])
    w.close()
    w.close()  # idempotent
    assert len(out.getvalue()) == expected_size(out.getvalue(), len(data))
    return out.getvalue()


def expected_size(enc: bytes, n: int) -> int:
    header = enc.index(b"\n---") + 1
    header = enc.index(b"\n", header) + 1
    chunks = max(1, -(-n // CHUNK))
    return header + 16 + n + 16 * chunks


def read_in_pieces(enc: bytes, identities: list[age.Identity], size: int) -> bytes:
    reader = age.AgeReader(io.BytesIO(enc), identities)
    out = bytearray()
    while chunk := reader.read(size):
        out += chunk
    assert reader.read(size) == b""
    return bytes(out)


@pytest.mark.parametrize("size", EDGES)
def test_round_trip_edges(size: int) -> None:
    data = os.urandom(size)
    enc = encrypt_in_pieces(data, [], [ME.recipient()])
    assert age.decrypt(enc, [ME]) == data
    # A full last chunk is flagged last, not followed by an empty chunk.
    assert len(enc) == expected_size(enc, size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.sampled_from(EDGES), st.integers(0, 4 * CHUNK + 10)),
    pieces=st.lists(st.integers(0, 3 * CHUNK), max_size=6),
    read_size=st.sampled_from([1, 7, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 1 << 20]),
)
def test_round_trip_any_write_and_read_shape(size: int, pieces: list[int], read_size: int) -> None:
    data = os.urandom(size)
    enc = encrypt_in_pieces(data, pieces, [ME.recipient(), ESCROW.recipient()])
    if read_size < 64 and size > 3 * CHUNK:
        read_size = 4096  # keep the byte-at-a-time reads short
    assert read_in_pieces(enc, [ME], read_size) == data
    assert read_in_pieces(enc, [ESCROW], CHUNK) == data


def test_several_mib_round_trip_and_readinto() -> None:
    data = os.urandom(7 * 1024 * 1024 + 12345)
    enc = age.encrypt(data, [ME.recipient()])
    reader = age.AgeReader(io.BytesIO(enc), [ME])
    buf = bytearray(1 << 20)
    out = bytearray()
    while n := reader.readinto(buf):
        out += buf[:n]
    assert out == data


def test_multiple_recipients_and_identities() -> None:
    others = [age.generate_identity() for _ in range(3)]
    enc = age.encrypt(b"x" * 1000, [o.recipient() for o in others])
    assert enc.count(b"\n-> X25519 ") == 3
    for o in others:
        assert age.decrypt(enc, [ME, o]) == b"x" * 1000
    with pytest.raises(WrongKeyError, match="no identity matches this backup"):
        age.decrypt(enc, [ME, ESCROW])


def test_scrypt_round_trip_and_rules() -> None:
    enc = age.encrypt(b"secret", [age.ScryptRecipient(b"pw", 10)])
    assert b"\n-> scrypt " in enc and enc.count(b"\n-> ") == 1
    assert age.decrypt(enc, [ME, age.ScryptIdentity(b"pw")]) == b"secret"
    with pytest.raises(age.NoIdentityMatchError):
        age.decrypt(enc, [age.ScryptIdentity(b"wrong")])
    with pytest.raises(age.HeaderError, match="above the limit"):
        age.decrypt(enc, [age.ScryptIdentity(b"pw", max_work_factor_log2=9)])


def test_scrypt_identity_derives_once_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore opens a passphrase file twice (key check, then load): one scrypt, not two."""
    calls: list[int] = []
    real = age._scrypt

    def counting(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
        calls.append(work_factor)
        return real(passphrase, salt, work_factor)

    enc = age.encrypt(b"twice", [age.ScryptRecipient(b"pw", 10)])
    other = age.encrypt(b"other", [age.ScryptRecipient(b"pw", 10)])
    monkeypatch.setattr(age, "_scrypt", counting)
    ident = age.ScryptIdentity(b"pw")
    assert age.decrypt(enc, [ident]) == age.decrypt(enc, [ident]) == b"twice"
    assert calls == [10]
    assert age.decrypt(other, [ident]) == b"other"  # another salt is derived anew
    assert calls == [10, 10]


def test_huge_work_factor_is_refused_without_computing() -> None:
    import time

    enc = age.encrypt(b"secret", [age.ScryptRecipient(b"pw", 10)])
    for wf in (b"23", b"40", b"99999999999999999999"):
        bad = enc.replace(b" 10\n", b" " + wf + b"\n", 1)
        start = time.monotonic()
        with pytest.raises(age.HeaderError):
            age.decrypt(bad, [age.ScryptIdentity(b"pw")])
        assert time.monotonic() - start < 0.5


def small_file() -> tuple[bytes, int, int]:
    """Three chunks, the last one short: (file, where the payload nonce starts, header end)."""
    enc = age.encrypt(os.urandom(2 * CHUNK + 100), [ME.recipient()])
    mac_line = enc.index(b"\n---") + 1
    nonce_at = enc.index(b"\n", mac_line) + 1
    return enc, nonce_at, mac_line


def flip_positions(enc: bytes, nonce_at: int) -> list[int]:
    """Every byte of the header, the nonce and the chunk edges, plus a sample of the rest."""
    first = nonce_at + 16
    last = first + 2 * ENC
    head = list(range(first + 64))
    edges = [*range(first + ENC - 64, first + ENC + 64), *range(last, len(enc))]
    sample = list(range(first + 64, len(enc), 997))
    return sorted(set(head + edges + sample))


def test_flip_each_byte_fails() -> None:
    enc, nonce_at, _ = small_file()
    failures = 0
    positions = flip_positions(enc, nonce_at)
    for pos in positions:
        for bit in (0x01, 0x80):
            bad = bytearray(enc)
            bad[pos] ^= bit
            with pytest.raises((IntegrityError, WrongKeyError)):
                age.decrypt(bytes(bad), [ME])
            failures += 1
    assert failures == 2 * len(positions) and len(positions) > 600


def test_flip_every_byte_of_a_tiny_file() -> None:
    enc = age.encrypt(b"tiny payload", [ME.recipient()])
    for pos in range(len(enc)):
        bad = bytearray(enc)
        bad[pos] ^= 0x04
        with pytest.raises((IntegrityError, WrongKeyError)):
            age.decrypt(bytes(bad), [ME])


def test_flips_map_to_the_right_error() -> None:
    enc, nonce_at, mac_line = small_file()

    def flipped(pos: int) -> bytes:
        bad = bytearray(enc)
        bad[pos] ^= 1
        return bytes(bad)

    def swapped(pos: int) -> bytes:
        # Another base64 character: flipping a bit of 'A', 'a', 'Z', 'z', '+' or '/' leaves the
        # alphabet, which is a malformed header (HeaderError), not the failure meant here.
        bad = bytearray(enc)
        bad[pos] = ord("B") if bad[pos] == ord("A") else ord("A")
        return bytes(bad)

    with pytest.raises(age.HeaderError):  # the version line
        age.decrypt(flipped(3), [ME])
    with pytest.raises(age.NoIdentityMatchError):  # the stanza body: nothing unwraps
        age.decrypt(swapped(mac_line - 5), [ME])
    with pytest.raises(age.HeaderMACError):  # the MAC itself
        age.decrypt(swapped(mac_line + 10), [ME])
    with pytest.raises(age.PayloadError):  # the nonce
        age.decrypt(flipped(nonce_at), [ME])
    with pytest.raises(age.PayloadError):  # the last chunk
        age.decrypt(flipped(len(enc) - 1), [ME])


def released_before_error(enc: bytes) -> tuple[bytes, Exception]:
    reader = age.AgeReader(io.BytesIO(enc), [ME])
    out = bytearray()
    with pytest.raises(age.PayloadError) as info:
        while chunk := reader.read(CHUNK):
            out += chunk
    with pytest.raises(age.PayloadError):  # the error sticks
        reader.read(CHUNK)
    return bytes(out), info.value


def test_truncation_anywhere_fails() -> None:
    enc, nonce_at, _ = small_file()
    first = nonce_at + 16
    cuts = [first, first + 1, first + ENC - 1, first + ENC, first + 2 * ENC, len(enc) - 1]
    for cut in cuts:
        out, exc = released_before_error(enc[:cut])
        assert len(out) % CHUNK == 0  # only whole, authenticated chunks came out
    with pytest.raises(age.HeaderError):
        age.decrypt(enc[: nonce_at + 5], [ME])
    with pytest.raises(age.HeaderError):
        age.decrypt(enc[: nonce_at - 5], [ME])


def test_truncation_at_a_chunk_boundary_says_so() -> None:
    enc, nonce_at, _ = small_file()
    out, exc = released_before_error(enc[: nonce_at + 16 + 2 * ENC])
    assert len(out) == 2 * CHUNK
    assert "truncated" in str(exc)


@pytest.mark.parametrize("extra", [b"\0", b"garbage", os.urandom(ENC), os.urandom(ENC + 5)])
def test_appended_data_fails(extra: bytes) -> None:
    enc, _, _ = small_file()
    out, exc = released_before_error(enc + extra)
    assert out == age.decrypt(enc, [ME])[: len(out)]


def test_appended_data_after_a_full_last_chunk() -> None:
    enc = age.encrypt(os.urandom(2 * CHUNK), [ME.recipient()])
    _, exc = released_before_error(enc + b"x")
    assert "after its last chunk" in str(exc)


def test_reordered_dropped_and_duplicated_chunks_fail() -> None:
    enc, nonce_at, _ = small_file()
    first = nonce_at + 16
    head = enc[:first]
    c0, c1, c2 = (
        enc[first : first + ENC],
        enc[first + ENC : first + 2 * ENC],
        enc[first + 2 * ENC :],
    )
    for body in (c1 + c0 + c2, c0 + c2, c0 + c1 + c1 + c2, c0 + c0 + c1 + c2, c0 + c1 + c2 + c2):
        _, exc = released_before_error(head + body)
    other = age.encrypt(os.urandom(2 * CHUNK + 100), [ME.recipient()])
    other_first = other.index(b"\n", other.index(b"\n---") + 1) + 1 + 16
    spliced = head + c0 + other[other_first + ENC : other_first + 2 * ENC] + c2
    released_before_error(spliced)  # a chunk from another file, same position


def test_empty_last_chunk_after_the_first_fails() -> None:
    """A correctly flagged and authenticated, but empty, last chunk after a full one."""
    enc, nonce_at, _ = small_file()
    aead = age.AgeReader(io.BytesIO(enc), [ME])._aead  # the payload key, from the real header
    first = nonce_at + 16
    c0 = enc[first : first + ENC]  # a full, non-last chunk (counter 0)
    empty_last = aead.encrypt((1).to_bytes(11, "big") + b"\1", b"", None)
    out, exc = released_before_error(enc[:first] + c0 + empty_last)
    assert "empty last chunk" in str(exc) and len(out) == CHUNK


def test_not_an_age_file() -> None:
    for junk in (b"", b"hello", b"age-encryption.org/v2\n", os.urandom(3 * CHUNK)):
        with pytest.raises(age.HeaderError):
            age.decrypt(junk, [ME])


def test_identity_and_recipient_parsing(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    from sbbackup.errors import ConfigError

    d = Path(tmp_path)
    pub = ME.recipient().public_key_str
    assert age.parse_recipient(f"  {pub}\n").public_key_str == pub
    zero = age.bech32_encode(age.RECIPIENT_HRP, bytes(32))  # a low-order point
    with pytest.raises(ConfigError, match="low-order"):
        age.parse_recipient(zero)
    for bad in ("age1notakey", pub[:-1] + ("q" if pub[-1] != "q" else "p"), "", "ssh-ed25519 AAA"):
        with pytest.raises(ConfigError):
            age.parse_recipient(bad)
    with pytest.raises(ConfigError) as info:
        age.parse_recipient(ME.secret_str)
    assert ME.secret_str not in info.value.message and "secret" in info.value.message
    ids = d / "ids.txt"
    ids.write_text(f"# created: now\n\n{ME.secret_str}\n{ESCROW.secret_str.lower()}\n")
    parsed = age.parse_identity_file(ids)
    assert [i.recipient().public_key_str for i in parsed] == [
        pub,
        ESCROW.recipient().public_key_str,
    ]
    ids.write_text(f"{ME.secret_str[:-1]}x\n")
    with pytest.raises(ConfigError) as info:
        age.parse_identity_file(ids)
    assert ME.secret_str[:-1] not in info.value.message
    ids.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no keys"):
        age.parse_identity_file(ids)
    rec = d / "rec.txt"
    rec.write_text(f"{pub}\nage1bogus\n")
    with pytest.raises(ConfigError, match="line 2"):
        age.parse_recipients_file(rec)
    assert "AGE-SECRET" not in repr(ME)
