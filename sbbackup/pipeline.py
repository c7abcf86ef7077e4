"""The streaming pipeline.

Backup:  dump bytes -> [zstd] -> [encryption hook] -> hashing writer -> atomic writer
Read:    stored file -> hashing reader -> [decryption hook] -> [zstd] -> consumer

Every stage is a small file-like object; nothing holds more than one block in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

import zstandard

from .errors import IntegrityError
from .storage import AtomicWriter
from .zstdframes import FrameWalker

BLOCK = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Writer(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


class Digest(Protocol):
    """A hashlib object."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class Stage(Writer, Protocol):
    def close(self) -> None:
        """Flush everything downstream; never close the downstream writer."""


# An encryption (or any other) stage: wraps the writer below it.
StageFactory = Callable[[Writer], Stage]
# A decryption stage: wraps the reader below it.
ReaderFactory = Callable[[BinaryIO], BinaryIO]


@dataclass(frozen=True)
class Compression:
    level: int = 3
    threads: int = -1

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": "zstd", "level": self.level, "frameChecksum": True}


@dataclass(frozen=True)
class PipelineResult:
    size: int
    checksum: str  # SHA-256 of the stored bytes
    uncompressed_size: int
    content_checksum: str  # SHA-256 of the dump stream itself, before zstd and age


class HashingWriter:
    """SHA-256 and byte count of exactly the bytes stored (borg's FileHashingWrapper)."""

    def __init__(self, dest: Writer) -> None:
        self.dest = dest
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.hash.update(data)
        n = len(data)
        self.size += n
        self.dest.write(data)
        return n

    def close(self) -> None:
        pass


class BackupWriter:
    """The write side of the pipeline. ``write`` dump bytes, then ``finish`` or ``abort``."""

    def __init__(
        self,
        dest: AtomicWriter,
        compression: Compression | None,
        encrypt: StageFactory | None = None,
    ) -> None:
        self.dest = dest
        self.hashing = HashingWriter(dest)
        self.stages: list[Stage] = []
        head: Writer = self.hashing
        if encrypt is not None:
            stage = encrypt(head)
            self.stages.append(stage)
            head = stage
        if compression is not None:
            cctx = zstandard.ZstdCompressor(
                level=compression.level, threads=compression.threads, write_checksum=True
            )
            zw = cctx.stream_writer(head, closefd=False, write_size=BLOCK)  # type: ignore[arg-type]
            self.stages.append(zw)
            head = zw
        self.head = head
        self.uncompressed = 0
        # Stored bytes == dump bytes without stages: the stored hash is the content hash.
        self.content: Digest | None = hashlib.sha256() if self.stages else None

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.uncompressed += len(data)
        if self.content is not None:
            self.content.update(data)
        self.head.write(data)
        return len(data)

    def finish(self) -> PipelineResult:
        """Close stages top-down (zstd, then encryption), then commit the file."""
        for stage in reversed(self.stages):
            stage.close()
        self.dest.commit()
        stored = self.hashing.hash.hexdigest()
        content = self.content.hexdigest() if self.content is not None else stored
        return PipelineResult(self.hashing.size, stored, self.uncompressed, content)

    def abort(self) -> None:
        """Remove the partial file; never finish the stages. Closing a multithreaded zstd
        stream compresses everything it has queued (a SIGTERM at level 19 waited minutes for
        it), and even freeing its context waits, holding the GIL, for the jobs in flight. So
        the stages are dropped unfinished and kept referenced (``_UNFINISHED``): a CLI run is
        about to exit, and a server frees the oldest once more than a few are kept."""
        self.dest.abort()
        _UNFINISHED.append(self.stages)
        self.stages = []
        del _UNFINISHED[:-_KEEP_UNFINISHED]


_UNFINISHED: list[list[Stage]] = []
_KEEP_UNFINISHED = 4


def enlarge_pipe(fd: int) -> None:
    """pg_dump's default 64 KiB pipe makes a Python reader context-switch-bound."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def pump_fd(fd: int, sink: Writer, progress: Callable[[int], None] | None = None) -> int:
    """Copy everything from a raw fd into ``sink`` in large blocks; return the byte count."""
    enlarge_pipe(fd)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            return total
        sink.write(view[:n])
        total += n
        if progress is not None:
            progress(total)


# A progress meter: ``meter(label, total)`` starts one bar (``total`` bytes, None if not
# known) and returns what to call with the bytes done so far. The CLI's is a rich display on a
# terminal; off a terminal there is none (None), and nothing is printed.
Meter = Callable[[str, "int | None"], Callable[[int], None]]


class HashingReader:
    """Reads the stored bytes and hashes them on the way through (``progress``, if given, is
    told the bytes read so far)."""

    def __init__(self, src: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        self.src = src
        self.hash = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.hash.update(data)
        self.size += len(data)
        if self.progress is not None:
            self.progress(self.size)
        return data

    def readinto(self, buf: Any) -> int:
        n = self.src.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self.hash.update(memoryview(buf)[:n])
            self.size += n
            if self.progress is not None:
                self.progress(self.size)
        return int(n or 0)

    def drain(self) -> None:
        while self.read(BLOCK):
            pass

    def readable(self) -> bool:
        return True


def check_digest(actual: str, expected: str | None, what: str) -> None:
    if expected is None or not hmac.compare_digest(actual, expected):
        raise IntegrityError(f"checksum mismatch for {what}: expected {expected}, got {actual}")


def sha256_of(fh: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while True:
        n = fh.readinto(buf)  # type: ignore[attr-defined]
        if not n:
            return h.hexdigest(), size
        h.update(view[:n])
        size += n


class _WalkedReader:
    """Hands the compressed bytes to the decompressor and, on the way, to a FrameWalker."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.walker = FrameWalker()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.walker.feed(data)
        return data

    def readable(self) -> bool:
        return True


def iter_plaintext(
    raw: HashingReader,
    compressed: bool,
    decrypt: ReaderFactory | None = None,
    content: Digest | None = None,
) -> Iterator[bytes]:
    """Yield the dump bytes, block by block, and feed them to ``content`` (a hashlib object)
    when given. Afterwards ``raw`` holds the stored file's hash. A zstd stream must be one
    whole frame with nothing after it (see ``zstdframes``), else IntegrityError."""
    src: BinaryIO = raw  # type: ignore[assignment]
    if decrypt is not None:
        src = decrypt(src)
    if compressed:
        walked = _WalkedReader(src)
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, walked), read_across_frames=True, read_size=BLOCK, closefd=False
        )
        try:
            while True:
                chunk = reader.read(BLOCK)
                if not chunk:
                    break
                if content is not None:
                    content.update(chunk)
                yield chunk
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"compressed stream is corrupt ({exc})") from None
        while walked.read(BLOCK):  # anything after the last frame is not ours
            pass
        walked.walker.finish()
    else:
        while True:
            chunk = src.read(BLOCK)
            if not chunk:
                break
            if content is not None:
                content.update(chunk)
            yield chunk
    raw.drain()
