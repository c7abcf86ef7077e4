"""API tokens: where they come from (the environment or a private file, never argv), how a
request's ``Authorization`` header is matched against them (constant time, every token), and
how they are kept out of the logs."""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .wire import QUERY_PARAMS

TOKEN_ENV = "SBBACKUP_API_TOKEN"
TOKEN_FILE_ENV = "SBBACKUP_API_TOKEN_FILE"
MIN_TOKEN = 16  # characters


@dataclass(frozen=True)
class Token:
    label: str  # written to the audit log; the secret never is
    secret: bytes = field(repr=False)


def generate_token() -> str:
    return "sbb_" + secrets.token_urlsafe(32)


def load_tokens(env: Mapping[str, str]) -> list[Token]:
    """Tokens from ``SBBACKUP_API_TOKEN_FILE`` (lines ``TOKEN`` or ``LABEL TOKEN``, ``#``
    comments) and ``SBBACKUP_API_TOKEN`` (label ``env``). Several lines allow rotation."""
    tokens: list[Token] = []
    path = env.get(TOKEN_FILE_ENV, "")
    if path:
        text = _read_token_file(Path(path).expanduser())
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ConfigError(f"{path}:{n}: expected TOKEN or LABEL TOKEN")
            label, secret = (parts[0], parts[1]) if len(parts) == 2 else (f"file:{n}", parts[0])
            tokens.append(Token(label, _token_bytes(secret, f"{path}:{n}")))
    if env.get(TOKEN_ENV, ""):
        tokens.append(Token("env", _token_bytes(env[TOKEN_ENV].strip(), TOKEN_ENV)))
    return tokens


def _read_token_file(path: Path) -> str:
    """The token file's text, refused when group or others may read or write it (as identity
    files are): a token there is anyone's token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{TOKEN_FILE_ENV}: cannot read {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{TOKEN_FILE_ENV}: {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{TOKEN_FILE_ENV}: {path} is readable or writable by group or others "
                f"(mode {st.st_mode & 0o777:o}): chmod 600 it"
            )
        raw = fh.read(1 << 20)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{TOKEN_FILE_ENV}: {path} is not UTF-8 text") from None


def _token_bytes(secret: str, where: str) -> bytes:
    if len(secret) < MIN_TOKEN:
        raise ConfigError(
            f"{where}: the API token is too short (use `sbbackup serve --generate-token`)"
        )
    return secret.encode()


def authenticate(tokens: Sequence[Token], header: str | None) -> str | None:
    """The label of the token a ``Bearer`` header carries, or None. Every token is compared,
    in constant time, whatever matched earlier."""
    if not header:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    candidate = given.strip().encode("utf-8", "surrogateescape")
    label = None
    for token in tokens:
        if hmac.compare_digest(candidate, token.secret) and label is None:
            label = token.label
    return label


_QUERY_PAIR = re.compile(r"([?&])([^&\s\"'#]*)")


def scrub(text: str, tokens: Sequence[Token]) -> str:
    """``text`` (a request line or path) fit for the log and the audit log: the values of
    query parameters the API does not take are masked, so a client that puts its token in
    ``?access_token=`` does not get it written down, and so is any configured token."""

    def mask(m: re.Match[str]) -> str:
        name, eq, _ = m.group(2).partition("=")
        return m.group(0) if name in QUERY_PARAMS else f"{m.group(1)}{name if eq else ''}{eq}***"

    text = _QUERY_PAIR.sub(mask, text)
    for token in tokens:
        text = text.replace(token.secret.decode("utf-8", "replace"), "***")
    return text
