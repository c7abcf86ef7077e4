"""The zstd frame walker against real zstandard output: whole frames pass at any feed size;
every cut, any appended byte or frame, a skippable frame and a frame without its content
checksum fail with IntegrityError."""

from __future__ import annotations

import io
import os
import random

import pytest
import zstandard

from sbbackup.errors import ExitCode, IntegrityError
from sbbackup.zstdframes import FrameWalker

SEED = 20261202


def compress(data: bytes, level: int = 3, threads: int = -1, checksum: bool = True) -> bytes:
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=checksum)
    with cctx.stream_writer(out, closefd=False) as writer:
        writer.write(data)
    return out.getvalue()


def walk(stream: bytes, step: int = 4096) -> None:
    walker = FrameWalker()
    for i in range(0, len(stream), step):
        walker.feed(stream[i : i + step])
    walker.finish()


PAYLOADS = {
    "empty": b"",
    "one byte": b"x",
    "rle": b"a" * 1_000_000,
    "random": random.Random(SEED).randbytes(600_000),
    "text": b"".join(b'%d\tname %d\t{"k": %d}\n' % (i, i * 7, i) for i in range(60_000)),
}


@pytest.mark.parametrize("level,threads", [(1, 0), (3, -1), (19, 2)])
@pytest.mark.parametrize("name", PAYLOADS)
def test_whole_streams_pass_and_every_cut_fails(name: str, level: int, threads: int) -> None:
    stream = compress(PAYLOADS[name], level, threads)
    for step in (1, 3, 4096, len(stream) or 1):
        if step == 1 and len(stream) > 20_000:
            continue
        walk(stream, step)
    rng = random.Random(SEED)
    cuts = range(len(stream)) if len(stream) < 2000 else rng.sample(range(len(stream)), 300)
    for cut in cuts:
        with pytest.raises(IntegrityError, match="truncated|corrupt"):
            walk(stream[:cut])


@pytest.mark.parametrize(
    "extra",
    [b"\0", compress(b"more"), compress(b""), b"\x50\x2a\x4d\x18\x04\0\0\0abcd"],
    ids=["byte", "frame", "empty frame", "skippable frame"],
)
def test_anything_after_the_frame_fails(extra: bytes) -> None:
    stream = compress(PAYLOADS["text"])
    with pytest.raises(IntegrityError, match="unexpected data after the end") as exc:
        walk(stream + extra)
    assert exc.value.exit_code == ExitCode.INTEGRITY


def test_a_frame_that_is_not_ours_fails() -> None:
    with pytest.raises(IntegrityError, match="no content checksum"):
        walk(compress(b"data", checksum=False))
    with pytest.raises(IntegrityError, match="no zstd frame"):
        walk(b"\x50\x2a\x4d\x18\x04\0\0\0abcd" + compress(b"data"))
    with pytest.raises(IntegrityError, match="truncated"):
        walk(b"")


def test_flipped_header_bits_never_pass_silently() -> None:
    """A flip in a frame or block header either fails here or changes nothing the walker
    reads (then the decompressor's checksum and the content digest are what catch it)."""
    stream = compress(os.urandom(300_000), level=1, threads=0)  # raw blocks: headers 128 KiB apart
    headers = [0, 1, 2, 3, 4, 5]
    flips = 0
    for pos in headers:
        for bit in range(8):
            bad = bytearray(stream)
            bad[pos] ^= 1 << bit
            try:
                walk(bytes(bad))
            except IntegrityError:
                flips += 1
    assert flips >= 32, flips  # the magic alone gives 32
