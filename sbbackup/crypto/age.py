"""The age v1 file format (C2SP age specification), streaming, from ``cryptography``'s primitives.

A file is a text header (version line, one stanza per recipient, an HMAC over the header), a
16-byte nonce, then the payload in the STREAM construction: 64 KiB ChaCha20-Poly1305 chunks whose
12-byte nonce is an 11-byte big-endian counter plus a last-chunk flag. Files written here open
with the stock ``age`` CLI, and files ``age`` wrote open here.

Both directions use constant memory (one 64 KiB chunk). The reader releases a chunk's plaintext
only after its tag has been checked, and it refuses a stream that ends without a flagged last
chunk (truncation), an empty last chunk after the first, reordered chunks and trailing data.

Supported recipient types: X25519 (``age1...`` / ``AGE-SECRET-KEY-1...``) and scrypt
(passphrases). Other stanza types in a header are skipped, as the specification requires.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import ConfigError, IntegrityError, WrongKeyError

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
ENC_CHUNK = CHUNK + TAG
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
MAC_SIZE = 32
COLUMNS = 64
MAX_WORK_FACTOR = 22
MAX_HEADER = 1 << 20  # about 9000 X25519 stanzas: far more than anyone configures
MAX_COUNTER = 1 << 88
ZERO_NONCE = bytes(12)
X25519_LABEL = b"age-encryption.org/v1/X25519"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"

_ARG = re.compile(rb"[\x21-\x7e]+")
_WORK_FACTOR = re.compile(r"[1-9][0-9]{0,1}")


# --- errors: the testkit's four failure classes, each under the exit code users see ------


class HeaderError(IntegrityError):
    """The header does not parse, or a stanza is malformed."""


class HeaderMACError(IntegrityError):
    """A file key was unwrapped but the header MAC does not match: the header was changed."""


class PayloadError(IntegrityError):
    """The STREAM payload failed: tampering, truncation, reordering or appended data."""


class NoIdentityMatchError(WrongKeyError):
    """The header parsed, but none of the identities unwraps any stanza."""


# --- encodings -----------------------------------------------------------------------------


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding, as the age header uses it."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes) -> bytes:
    """Strict and canonical: no padding, no stray characters, unused bits zero."""
    if b"=" in text or len(text) % 4 == 1:
        raise HeaderError("malformed age header: invalid base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise HeaderError("malformed age header: invalid base64") from None
    if b64encode(data) != text:
        raise HeaderError("malformed age header: non-canonical base64")
    return data


_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_BECH32_GEN):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Sequence[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        raise ValueError("invalid bech32 padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Bech32 (BIP 173 checksum, no length limit, as age uses it); lower case."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    poly = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[d] for d in values + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Return (hrp in lower case, data). Raises ValueError on any defect."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("separator misplaced")
    hrp = text[:pos]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("invalid character in prefix")
    values = [_BECH32.find(c) for c in text[pos + 1 :]]
    if -1 in values:
        raise ValueError("invalid character")
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("bad checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))


# --- primitives ----------------------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_mac(file_key: bytes, header_up_to_dashes: bytes) -> HMAC:
    h = HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    h.update(header_up_to_dashes)
    return h


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


@dataclass(frozen=True)
class Stanza:
    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        line = b"-> " + " ".join((self.type, *self.args)).encode() + b"\n"
        body = b64encode(self.body)
        lines = [body[i : i + COLUMNS] for i in range(0, len(body), COLUMNS)]
        if len(body) % COLUMNS == 0:
            lines.append(b"")  # the body always ends with a line shorter than 64 columns
        return line + b"".join(x + b"\n" for x in lines)


# --- recipients and identities -------------------------------------------------------------


class Recipient(Protocol):
    def wrap(self, file_key: bytes) -> list[Stanza]: ...


class Identity(Protocol):
    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key, or None if no stanza is for this identity. HeaderError if malformed."""


class X25519Recipient:
    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        self.public_key = public_key
        self.public_key_str = bech32_encode(RECIPIENT_HRP, public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public_key))
        key = _hkdf(shared, share + self.public_key, X25519_LABEL)
        body = ChaCha20Poly1305(key).encrypt(ZERO_NONCE, file_key, None)
        return [Stanza("X25519", (b64encode(share).decode(),), body)]

    def __repr__(self) -> str:
        return f"X25519Recipient({self.public_key_str})"


class X25519Identity:
    def __init__(self, secret: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self._public = self._key.public_key().public_bytes_raw()

    @property
    def secret_str(self) -> str:
        return bech32_encode(IDENTITY_HRP, self._key.private_bytes_raw()).upper()

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            share = _x25519_share(stanza)
            try:
                shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # OpenSSL refuses the all-zero shared secret
                raise HeaderError(
                    "malformed age header: X25519 share is a low-order point"
                ) from None
            if shared == bytes(32):
                raise HeaderError("malformed age header: X25519 share is a low-order point")
            key = _hkdf(shared, share + self._public, X25519_LABEL)
            try:
                return ChaCha20Poly1305(key).decrypt(ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue
        return None

    def __repr__(self) -> str:
        return f"X25519Identity({self.recipient().public_key_str})"  # never the secret


class ScryptRecipient:
    """A passphrase. An scrypt stanza must be the only stanza of its file."""

    def __init__(self, passphrase: bytes, work_factor_log2: int = 18) -> None:
        if not passphrase:
            raise ValueError("empty passphrase")
        if not 1 <= work_factor_log2 <= MAX_WORK_FACTOR:
            raise ValueError(f"scrypt work factor must be 1..{MAX_WORK_FACTOR}")
        self._passphrase = passphrase
        self.work_factor_log2 = work_factor_log2

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(16)
        key = _scrypt(self._passphrase, salt, self.work_factor_log2)
        body = ChaCha20Poly1305(key).encrypt(ZERO_NONCE, file_key, None)
        args = (b64encode(salt).decode(), str(self.work_factor_log2))
        return [Stanza("scrypt", args, body)]

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor_log2={self.work_factor_log2})"


class ScryptIdentity:
    def __init__(self, passphrase: bytes, max_work_factor_log2: int = MAX_WORK_FACTOR) -> None:
        self._passphrase = passphrase
        self.max_work_factor_log2 = max_work_factor_log2
        # (salt, work factor) -> derived key: opening the same file twice (check the key, then
        # restore) costs one scrypt, not two.
        self._keys: dict[tuple[bytes, int], bytes] = {}

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "scrypt":
                continue
            salt, work_factor = _scrypt_args(stanza)
            if work_factor > self.max_work_factor_log2:
                raise HeaderError(
                    f"scrypt work factor 2^{work_factor} is above the limit "
                    f"2^{self.max_work_factor_log2}"
                )
            key = self._keys.get((salt, work_factor))
            if key is None:
                key = self._keys[(salt, work_factor)] = _scrypt(self._passphrase, salt, work_factor)
            try:
                return ChaCha20Poly1305(key).decrypt(ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue
        return None

    def __repr__(self) -> str:
        return "ScryptIdentity()"


def _scrypt(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    try:
        return kdf.derive(passphrase)
    except (ValueError, MemoryError) as exc:
        raise IntegrityError(
            f"cannot compute scrypt with work factor 2^{work_factor}: {exc}"
        ) from None


def _x25519_share(stanza: Stanza) -> bytes:
    if len(stanza.args) != 1:
        raise HeaderError("malformed age header: an X25519 stanza has exactly one argument")
    share = b64decode(stanza.args[0].encode())
    if len(share) != 32 or len(stanza.body) != FILE_KEY_SIZE + TAG:
        raise HeaderError("malformed age header: invalid X25519 stanza")
    return share


def _scrypt_args(stanza: Stanza) -> tuple[bytes, int]:
    if len(stanza.args) != 2:
        raise HeaderError("malformed age header: an scrypt stanza has exactly two arguments")
    salt = b64decode(stanza.args[0].encode())
    if len(salt) != 16 or len(stanza.body) != FILE_KEY_SIZE + TAG:
        raise HeaderError("malformed age header: invalid scrypt stanza")
    # Decimal, no sign, no leading zero; checked before any work so 2^64 never starts.
    if not _WORK_FACTOR.fullmatch(stanza.args[1]):
        raise HeaderError("malformed age header: invalid scrypt work factor")
    work_factor = int(stanza.args[1])
    if work_factor > MAX_WORK_FACTOR:
        raise HeaderError(
            f"scrypt work factor 2^{work_factor} is above the limit 2^{MAX_WORK_FACTOR}"
        )
    return salt, work_factor


def _check_stanzas(stanzas: Sequence[Stanza]) -> None:
    """Structural rules for the stanza types we know, whatever identities are at hand."""
    for stanza in stanzas:
        if stanza.type == "X25519":
            _x25519_share(stanza)
        elif stanza.type == "scrypt":
            _scrypt_args(stanza)
            if len(stanzas) != 1:
                raise HeaderError("malformed age header: an scrypt stanza must be the only stanza")


# --- keys as text --------------------------------------------------------------------------


def parse_recipient(text: str) -> X25519Recipient:
    """An ``age1...`` X25519 recipient. ConfigError (exit 2) for anything else."""
    s = text.strip()
    if s.upper().startswith(IDENTITY_HRP):
        raise ConfigError(
            "a secret age identity was given where a public recipient (age1...) is expected; "
            "use its public key (`age-keygen -y`)"
        )
    shown = s[:100]
    if s.startswith(("ssh-", "ecdsa-")):
        raise ConfigError(f"SSH recipients are not supported: {shown!r}; use an age1... key")
    try:
        hrp, data = bech32_decode(s)
    except ValueError as exc:
        raise ConfigError(f"invalid age recipient {shown!r}: {exc}") from None
    if hrp != RECIPIENT_HRP or len(data) != 32:
        raise ConfigError(
            f"unsupported age recipient {shown!r}: only X25519 recipients (age1...) are supported"
        )
    if _low_order(data):
        raise ConfigError(
            f"invalid age recipient {shown!r}: a low-order X25519 point (such as all zeros), "
            "which would give every reader the file key"
        )
    return X25519Recipient(data)


def _low_order(public_key: bytes) -> bool:
    """Does an exchange with this point give the all-zero secret? (OpenSSL refuses it.)"""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return True
    return False


def parse_identity(text: str) -> X25519Identity:
    """An ``AGE-SECRET-KEY-1...`` identity. The message never repeats the secret."""
    try:
        hrp, data = bech32_decode(text.strip())
    except ValueError as exc:
        raise ConfigError(f"invalid age identity: {exc}") from None
    if hrp != IDENTITY_HRP.lower() or len(data) != 32:
        raise ConfigError("invalid age identity: not an X25519 identity (AGE-SECRET-KEY-1...)")
    return X25519Identity(data)


def _key_lines(path: Path, what: str) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{what} {path}: cannot read ({reason})") from None
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            found.append((n, line))
    if not found:
        raise ConfigError(f"{what} {path} holds no keys")
    return found


def parse_recipients_file(path: Path) -> list[X25519Recipient]:
    """One recipient a line, ``#`` comments and blank lines ignored, as ``age -R``."""
    out = []
    for n, line in _key_lines(path, "recipients file"):
        try:
            out.append(parse_recipient(line))
        except ConfigError as exc:
            raise ConfigError(f"recipients file {path} line {n}: {exc.message}") from None
    return out


def parse_identity_file(path: Path) -> list[X25519Identity]:
    """``AGE-SECRET-KEY-1...`` lines, ``#`` comments and blank lines ignored, as ``age -i``."""
    out = []
    for n, line in _key_lines(path, "identity file"):
        if line.startswith(VERSION_LINE.decode()):
            raise ConfigError(
                f"identity file {path} is itself age-encrypted: decrypt it first "
                "(passphrase-protected identity files are not supported)"
            )
        if not line.upper().startswith(IDENTITY_HRP + "1"):
            raise ConfigError(
                f"identity file {path} line {n}: not an age X25519 identity "
                "(AGE-SECRET-KEY-1...); SSH and plugin identities are not supported"
            )
        try:
            out.append(parse_identity(line))
        except ConfigError as exc:
            raise ConfigError(f"identity file {path} line {n}: {exc.message}") from None
    return out


def generate_identity() -> X25519Identity:
    return X25519Identity(X25519PrivateKey.generate().private_bytes_raw())


# --- the header ----------------------------------------------------------------------------


def encode_header(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    head = VERSION_LINE + b"\n" + b"".join(s.encode() for s in stanzas) + b"---"
    mac = _header_mac(file_key, head).finalize()
    return head + b" " + b64encode(mac) + b"\n"


class _HeaderParser:
    """Reads header lines from ``src`` in blocks; what follows the header stays in ``rest``."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.buf = bytearray()
        self.pos = 0

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                out = bytes(self.buf[self.pos : end])
                self.pos = end + 1
                return out
            if len(self.buf) >= MAX_HEADER:
                raise HeaderError("malformed age header: header too long")
            more = self.src.read(16384)
            if not more:
                raise HeaderError("malformed age header: file ends inside the header")
            self.buf += more

    def parse(self) -> tuple[list[Stanza], bytes, bytes]:
        """Return (stanzas, the header bytes the MAC covers, the MAC)."""
        if self.line() != VERSION_LINE:
            raise HeaderError("not an age v1 file: unknown or missing version line")
        stanzas: list[Stanza] = []
        while True:
            start = self.pos
            line = self.line()
            if line.startswith(b"--- "):
                mac = b64decode(line[4:])
                if len(mac) != MAC_SIZE:
                    raise HeaderError("malformed age header: invalid MAC line")
                return stanzas, bytes(self.buf[: start + 3]), mac
            if not line.startswith(b"-> "):
                raise HeaderError("malformed age header: expected a stanza or the MAC line")
            args = line[3:].split(b" ")
            if not all(_ARG.fullmatch(a) for a in args):
                raise HeaderError("malformed age header: invalid stanza argument")
            stanzas.append(
                Stanza(args[0].decode(), tuple(a.decode() for a in args[1:]), self.body())
            )

    def body(self) -> bytes:
        parts = []
        while True:
            line = self.line()
            if len(line) > COLUMNS:
                raise HeaderError("malformed age header: stanza body line longer than 64 columns")
            parts.append(b64decode(line))
            if len(line) < COLUMNS:
                return b"".join(parts)

    def rest(self) -> bytearray:
        return self.buf[self.pos :]


# --- writing -------------------------------------------------------------------------------


class AgeWriter:
    """A pipeline stage: ``write`` plaintext, ``close`` seals the last chunk.

    The header is written at construction. ``close`` never closes ``out``. A full chunk is held
    back until more data arrives, because only ``close`` knows which chunk is the last.
    """

    def __init__(self, out: Any, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise ValueError("age needs at least one recipient")
        if any(isinstance(r, ScryptRecipient) for r in recipients) and len(recipients) != 1:
            raise ValueError("a passphrase (scrypt) must be the only recipient of a file")
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = [s for r in recipients for s in r.wrap(file_key)]
        nonce = os.urandom(NONCE_SIZE)
        out.write(encode_header(stanzas, file_key))
        out.write(nonce)
        self._out = out
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._counter = 0
        self._closed = False

    def _seal(self, plaintext: bytes | bytearray | memoryview, last: bool) -> None:
        if self._counter >= MAX_COUNTER - 1:
            raise ValueError("age stream is too long")
        nonce = _chunk_nonce(self._counter, last)
        self._out.write(self._aead.encrypt(nonce, plaintext, None))
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._closed:
            raise ValueError("write to a closed AgeWriter")
        view = memoryview(data).cast("B")
        n = len(view)
        if self._buf:
            need = CHUNK - len(self._buf)
            if n <= need:
                self._buf += view
                return n
            self._buf += view[:need]
            view = view[need:]
            self._seal(self._buf, last=False)  # more data follows: not the last chunk
            self._buf.clear()
        # Whole chunks straight from the caller's buffer; keep the tail (1..64 KiB) back.
        offset = 0
        while len(view) - offset > CHUNK:
            self._seal(view[offset : offset + CHUNK], last=False)
            offset += CHUNK
        self._buf += view[offset:]
        return n

    def flush(self) -> None:
        """Nothing to do: a partial chunk cannot be sealed before the stream ends."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._seal(self._buf, last=True)  # empty only if the whole payload is empty
        self._buf = bytearray()


def encrypt(plaintext: bytes, recipients: Sequence[Recipient]) -> bytes:
    """Whole-buffer convenience for tests and small files."""
    out = io.BytesIO()
    w = AgeWriter(out, recipients)
    w.write(plaintext)
    w.close()
    return out.getvalue()


# --- reading -------------------------------------------------------------------------------


class AgeReader(io.RawIOBase):
    """A readable file of the plaintext of the age file in ``src``.

    The constructor reads the header: NoIdentityMatchError (a WrongKeyError, exit 12) if no
    identity opens it, HeaderError or HeaderMACError (IntegrityError, exit 13) if it is malformed
    or changed. ``read`` raises PayloadError (IntegrityError) on any payload defect, after
    releasing only chunks that authenticated. b"" means the whole stream authenticated.
    ``close`` does not close ``src``.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[Identity]) -> None:
        super().__init__()
        parser = _HeaderParser(src)
        stanzas, mac_input, mac = parser.parse()
        _check_stanzas(stanzas)
        file_key = None
        for identity in identities:
            file_key = identity.unwrap(stanzas)
            if file_key is not None:
                break
        if file_key is None:
            tried = f"{len(identities)} identit{'y' if len(identities) == 1 else 'ies'}"
            raise NoIdentityMatchError(
                "no identity matches this backup: check DB_BACKUP_ENCRYPTION_IDENTITY_FILE "
                f"or the passphrase ({tried} tried against {len(stanzas)} recipient stanza(s))"
            )
        try:
            _header_mac(file_key, mac_input).verify(mac)
        except InvalidSignature:
            raise HeaderMACError("age header MAC mismatch: the header was altered") from None
        self._src = src
        self._pending = parser.rest()
        nonce = self._read_exact(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise HeaderError("age file is truncated: the payload nonce is missing")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._seen_last = False
        self._eof = False
        self._error: IntegrityError | None = None
        self._out: bytes = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _read_exact(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of ``src``."""
        parts: list[bytes] = []
        have = 0
        if self._pending:
            parts.append(bytes(self._pending[:n]))
            del self._pending[:n]
            have = len(parts[0])
        while have < n:
            more = self._src.read(n - have)
            if not more:
                break
            parts.append(more)
            have += len(more)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _open(self, chunk: bytes, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(_chunk_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            return None

    def _next_chunk(self) -> bytes | None:
        """The next authenticated chunk's plaintext, or None at the authenticated end."""
        if self._eof:
            return None
        if self._error is not None:
            raise self._error
        try:
            return self._decrypt_next()
        except PayloadError as exc:
            self._error = exc
            raise

    def _decrypt_next(self) -> bytes | None:
        if self._seen_last:
            if self._read_exact(1):
                raise PayloadError("age file has data after its last chunk (appended data)")
            self._eof = True
            return None
        data = self._read_exact(ENC_CHUNK)
        where = f"age payload chunk {self._counter}"
        if not data:
            if self._counter == 0:
                raise PayloadError("age file is truncated: it has no payload chunk")
            raise PayloadError(f"age file is truncated: it ends before {where} (no last chunk)")
        if len(data) < ENC_CHUNK:  # a short chunk can only be the last one
            last, plaintext = True, self._open(data, last=True)
        else:  # a full chunk is usually not the last, but may be
            last, plaintext = False, self._open(data, last=False)
            if plaintext is None:
                last, plaintext = True, self._open(data, last=True)
        if plaintext is None:
            raise PayloadError(f"{where} failed authentication: tampered, reordered or truncated")
        if last and not plaintext and self._counter > 0:
            raise PayloadError(f"{where} is an empty last chunk, which age forbids")
        self._counter += 1
        self._seen_last = last
        return plaintext

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        if n == 0:
            return b""
        while self._pos >= len(self._out):
            chunk = self._next_chunk()
            if chunk is None:
                return b""
            self._out, self._pos = chunk, 0
        if self._pos == 0 and n >= len(self._out):
            data = self._out  # the common case: hand the whole chunk over without a copy
        else:
            data = self._out[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def decrypt(data: bytes, identities: Sequence[Identity]) -> bytes:
    """Whole-buffer convenience for tests and small files."""
    return AgeReader(io.BytesIO(data), identities).readall()
