"""An aborted backup writer throws its partial away without finishing its stages: closing a
multithreaded zstd stream would first compress everything it has queued (a SIGTERM at level
19 once waited minutes for that)."""

from __future__ import annotations

import os

from sbbackup.pipeline import BackupWriter, Compression


class Dest:
    """An AtomicWriter that counts what reaches it."""

    def __init__(self) -> None:
        self.written = 0
        self.aborted = self.committed = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        assert not self.aborted, "written after abort"
        self.written += len(data)
        return len(data)

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


def test_abort_never_flushes_a_multithreaded_zstd_stream() -> None:
    dest = Dest()
    writer = BackupWriter(dest, Compression(19, 2))
    for _ in range(24):
        writer.write(os.urandom(1 << 20))  # incompressible: queued jobs, little written yet
    queued = 24 * (1 << 20) - dest.written
    assert queued > 1 << 20, "zstd wrote everything as it went: nothing to prove"
    before = dest.written
    writer.abort()
    assert dest.written == before, "abort compressed and wrote what zstd had queued"
    assert dest.aborted and not dest.committed
    assert writer.stages == []


def test_finish_still_flushes_everything() -> None:
    dest = Dest()
    writer = BackupWriter(dest, Compression(3, 2))
    data = os.urandom(3 << 20)
    writer.write(data)
    result = writer.finish()
    assert dest.committed and result.size == dest.written and dest.written > len(data)
