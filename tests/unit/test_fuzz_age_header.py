"""Fuzzing the age header parser: random mutations of a valid age file (bit flips, truncation,
extra or replaced stanzas, spliced bytes) only ever raise the module's typed errors
(``HeaderError``, ``HeaderMACError``, ``PayloadError``: exit 13; ``NoIdentityMatchError``:
exit 12), or decrypt to the original plaintext when the mutation changed nothing that counts.
"""

from __future__ import annotations

import io

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbbackup.crypto import age
from sbbackup.errors import IntegrityError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow],
)
ME = age.generate_identity()
OTHER = age.generate_identity()
PLAIN = bytes(range(256)) * 300  # two chunks
X25519_FILE = age.encrypt(PLAIN, [ME.recipient(), OTHER.recipient()])
SCRYPT_FILE = age.encrypt(PLAIN, [age.ScryptRecipient(b"pw", work_factor_log2=2)])
# A scrypt work factor above this is refused before any work: no mutation can cost 4 GiB.
IDENTITIES: list[age.Identity] = [ME, age.ScryptIdentity(b"pw", max_work_factor_log2=8)]
TYPED = (age.HeaderError, age.HeaderMACError, age.PayloadError, age.NoIdentityMatchError)


def header_len(data: bytes) -> int:
    return data.index(b"\n", data.index(b"\n---") + 1) + 1


def open_all(data: bytes) -> bytes | Exception:
    try:
        return age.AgeReader(io.BytesIO(data), IDENTITIES).readall()
    except (IntegrityError, age.NoIdentityMatchError) as exc:
        return exc


stanza_lines = st.one_of(
    st.sampled_from(
        [
            b"-> X25519 AAAA\n\n",
            b"-> X25519 " + b"A" * 43 + b"\n" + b"A" * 43 + b"\n",
            b"-> scrypt AAAAAAAAAAAAAAAAAAAAAA 99\n" + b"A" * 43 + b"\n",
            b"-> scrypt AAAAAAAAAAAAAAAAAAAAAA 2\n" + b"A" * 43 + b"\n",
            b"-> unknown-type arg\n\n",
            b"-> \n\n",
            b"->\n",
            b"-> x " + b"y" * 70 + b"\n" + b"A" * 64 + b"\n" + b"A" * 64 + b"\n\n",
            b"-> grease " + b"\x7f" + b"\n\n",
        ]
    ),
    st.binary(max_size=80).map(lambda b: b"-> " + b + b"\n"),
)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([X25519_FILE, SCRYPT_FILE])))
    head = header_len(bytes(data))
    kind = draw(st.sampled_from(["flip", "truncate", "stanza", "splice", "mac", "many"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, head + 40))  # the header and the payload nonce
            data[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "stanza":
        pos = data.index(b"\n") + 1 if draw(st.booleans()) else bytes(data).index(b"\n---") + 1
        data[pos:pos] = draw(stanza_lines)
    elif kind == "splice":
        pos = draw(st.integers(0, head))
        cut = draw(st.integers(0, 8))
        data[pos : pos + cut] = draw(st.binary(max_size=12))
    elif kind == "mac":
        start = bytes(data).index(b"\n---") + 1
        data[start:head] = b"--- " + draw(st.binary(max_size=50)) + b"\n"
    else:  # a header past the size bound
        pos = data.index(b"\n") + 1
        data[pos:pos] = b"-> grease x\n" + b"A" * 63 + b"\n"
        data[pos:pos] = draw(st.sampled_from([b"-> g\n\n" * 200_000, b"-> g\n" + b"A" * 64 * 5]))
    return bytes(data)


@FUZZ
@given(data=mutations())
@example(data=b"")
@example(data=age.VERSION_LINE)
@example(data=age.VERSION_LINE + b"\n")
@example(data=X25519_FILE[: header_len(X25519_FILE)])
@example(data=X25519_FILE[: header_len(X25519_FILE) + 5])
def test_mutated_header_raises_only_typed_errors(data: bytes) -> None:
    outcome = open_all(data)
    if isinstance(outcome, bytes):
        assert outcome == PLAIN
    else:
        assert isinstance(outcome, TYPED), type(outcome)


@FUZZ
@given(prefix=st.binary(max_size=300), cut=st.integers(0, 2000))
def test_random_bytes_raise_only_typed_errors(prefix: bytes, cut: int) -> None:
    for data in (prefix, age.VERSION_LINE + b"\n" + prefix, X25519_FILE[:cut] + prefix):
        outcome = open_all(data)
        assert isinstance(outcome, (bytes, TYPED)), type(outcome)
