"""A walk of a zstd stream's frame structure (RFC 8878, section 3.1), as the bytes go by.

The decompressor tells us when a block is corrupt (the frame checksum), but not when the
stream ends early: python-zstandard's streaming reader returns what it has at EOF, so a file
cut inside its last frame decompresses to a shorter dump without an error. Nor does it object
to frames appended after ours. This walker reads only headers, skips block payloads without
looking at them, and fails unless the stream is exactly what ``BackupWriter`` writes: one
zstd frame, with a content checksum, whose last block and checksum are complete, and nothing
after it.

Memory is a few bytes whatever the stream's size; the cost is one header per block (blocks
are at most 128 KiB).
"""

from __future__ import annotations

from .errors import IntegrityError

__all__ = ["FrameWalker"]

MAGIC = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528, little-endian
_DICT_ID_SIZE = (0, 1, 2, 4)
_FCS_SIZE = (0, 2, 4, 8)  # flag 0 means 1 byte when Single_Segment is set
_BLOCK_HEADER = 3
_CHECKSUM = 4
_MAX_BLOCK = 128 * 1024

# States: what the next bytes are.
_MAGIC, _DESCRIPTOR, _HEADER_REST, _BLOCK, _PAYLOAD, _CHECKSUM_BYTES, _DONE = range(7)


class FrameWalker:
    """``feed`` the stored compressed bytes in order, then ``finish``; both raise
    IntegrityError (exit 13) with the reason."""

    def __init__(self) -> None:
        self._state = _MAGIC
        self._need = len(MAGIC)  # bytes still wanted for the current header field
        self._buf = bytearray()
        self._skip = 0  # payload bytes still to skip
        self._last = False
        self.offset = 0  # bytes seen

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._state == _DONE:
                raise IntegrityError(
                    f"unexpected data after the end of the compressed stream (offset {self.offset})"
                )
            if self._state == _PAYLOAD:
                n = min(self._skip, len(view))
                self._skip -= n
                self.offset += n
                view = view[n:]
                if not self._skip:
                    self._after_block()
                continue
            n = min(self._need - len(self._buf), len(view))
            self._buf += view[:n]
            self.offset += n
            view = view[n:]
            if len(self._buf) == self._need:
                field, self._buf = bytes(self._buf), bytearray()
                self._parse(field)

    def finish(self) -> None:
        if self._state != _DONE:
            what = "no zstd frame" if self.offset == 0 else "the last zstd frame is incomplete"
            raise IntegrityError(f"compressed stream is truncated ({what}, {self.offset} bytes)")

    def _parse(self, field: bytes) -> None:
        if self._state == _MAGIC:
            if field != MAGIC:
                raise IntegrityError(
                    f"compressed stream is corrupt (no zstd frame at offset {self.offset - 4})"
                )
            self._state, self._need = _DESCRIPTOR, 1
        elif self._state == _DESCRIPTOR:
            fhd = field[0]
            single_segment = bool(fhd & 0x20)
            if fhd & 0x08:
                raise IntegrityError("compressed stream is corrupt (reserved frame header bit set)")
            if not fhd & 0x04:
                raise IntegrityError("compressed stream has no content checksum (not ours)")
            fcs_flag = fhd >> 6
            fcs = 1 if (fcs_flag == 0 and single_segment) else _FCS_SIZE[fcs_flag]
            rest = (0 if single_segment else 1) + _DICT_ID_SIZE[fhd & 0x03] + fcs
            if rest:
                self._state, self._need = _HEADER_REST, rest
            else:
                self._state, self._need = _BLOCK, _BLOCK_HEADER
        elif self._state == _HEADER_REST:
            self._state, self._need = _BLOCK, _BLOCK_HEADER
        elif self._state == _BLOCK:
            header = int.from_bytes(field, "little")
            self._last = bool(header & 1)
            kind = (header >> 1) & 0x03
            size = header >> 3
            if kind == 3 or size > _MAX_BLOCK:
                raise IntegrityError(
                    f"compressed stream is corrupt (bad block header at offset {self.offset - 3})"
                )
            self._skip = 1 if kind == 1 else size  # an RLE block stores one byte
            if self._skip:
                self._state = _PAYLOAD
            else:
                self._after_block()
        elif self._state == _CHECKSUM_BYTES:
            self._state, self._need = _DONE, 0

    def _after_block(self) -> None:
        if self._last:
            self._state, self._need = _CHECKSUM_BYTES, _CHECKSUM
        else:
            self._state, self._need = _BLOCK, _BLOCK_HEADER
