"""Retries as one wrapper around a backend (restic's ``retry.Backend``), not threaded through it.

``RetryingStorage(inner, is_transient)`` retries every idempotent Storage call on an error
``is_transient`` accepts, with exponential backoff and full jitter: before retry ``k`` it
sleeps ``rng() * min(max_delay, base_delay * 2**(k-1))`` seconds, ``attempts`` tries in all;
then the last error is raised as the inner backend raised it (a StorageError, exit 4, from a
backend that maps its errors), with a note saying how many attempts were made. Every retry is
logged through ``log`` (default: the ``sbbackup.storage`` logger at INFO, which ``-v`` is to
show on stderr).

What is and is not retried:

- Reads, listings, ``size``, ``exists``, ``delete`` (deleting a missing object is a no-op),
  ``write_bytes_atomic`` (a whole put of the same bytes), ``sweep``, ``usage``: retried whole.
- ``create_exclusive``: a conditional put (``If-None-Match: *``) whose first attempt reached the
  server but whose answer was lost fails its retry with 412, i.e. FileExistsError. So a
  FileExistsError *after a failed attempt* reads the object back: the very bytes we were
  writing mean our own attempt landed (success); anything else is another writer (the
  FileExistsError stands). The bytes are what the caller reserves with (a manifest naming host,
  process and start time), so two writers never write identical ones.
- ``open_read`` streams: an error mid-stream re-opens the object where the stream broke, with
  ``inner.open_read(name, offset=N)`` when the backend offers it (the optional extension
  ``OffsetReadable``: S3 sends a ``Range`` request), else by reading the first N bytes again and
  dropping them. The failures counted are the consecutive ones: any progress resets the count,
  so a long download survives several separate cuts. What is read is still verified against the
  manifest's digests by the reader, so a changed object cannot be spliced in unnoticed.
- ``open_write`` streams are not retried whole (the data has gone by): a backend retries each
  part on its own with ``retry_call(fn, policy, what)``, where resending the part is idempotent.
  Opening the writer is not retried either: a multipart upload created twice leaves an orphan.

Interrupts (KeyboardInterrupt, SystemExit from the SIGTERM handler) are never retried: only
``Exception`` is caught. ``botocore_transient`` is the classifier for S3.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import io
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar

if TYPE_CHECKING:
    from .protocol import AtomicWriter, Storage

T = TypeVar("T")

LOGGER_NAME = "sbbackup.storage"


def _log_info(message: str) -> None:
    logging.getLogger(LOGGER_NAME).info(message)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; ``sleep``, ``rng`` and ``log`` are injectable so
    tests neither sleep nor depend on chance."""

    is_transient: Callable[[BaseException], bool]
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep)
    rng: Callable[[], float] = field(default=random.random)
    log: Callable[[str], None] = field(default=_log_info)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays cannot be negative")

    def cap(self, retry: int) -> float:
        """The upper bound of the delay before retry ``retry`` (1-based)."""
        # the exponent is bounded: 2**1024 and up cannot become a float
        return float(min(self.max_delay, self.base_delay * 2 ** min(retry - 1, 1000)))

    def delay(self, retry: int) -> float:
        """Full jitter (AWS's "Exponential Backoff And Jitter"): uniform in [0, cap)."""
        return self.rng() * self.cap(retry)

    def retries(self, exc: BaseException, failures: int) -> bool:
        """Whether a call that has failed ``failures`` times in a row, last with ``exc``, gets
        another attempt."""
        return failures < self.attempts and self.is_transient(exc)

    def wait(self, exc: BaseException, failures: int, what: str) -> None:
        """Log the retry and sleep before attempt ``failures + 1``."""
        pause = self.delay(failures)
        self.log(
            f"{what}: {describe(exc)}; retry {failures} of {self.attempts - 1} in {pause:.2f} s"
        )
        self.sleep(pause)


def retry_call(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """``fn()``, retried under ``policy``; the last error is raised once it gives up. ``what``
    names the operation in the log ("upload part 3 of NAME"). Only for idempotent ``fn``."""
    failures = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            failures += 1
            if not policy.retries(exc, failures):
                _note_attempts(exc, failures)
                raise
            policy.wait(exc, failures, what)


def describe(exc: BaseException) -> str:
    """One line naming an error: its type and its first line (never a multi-line dump)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _note_attempts(exc: BaseException, failures: int) -> None:
    if failures > 1:
        exc.add_note(f"(gave up after {failures} attempts)")


class OffsetReadable(Protocol):
    """The optional extension a backend offers to resume a broken download: the object's bytes
    from ``offset`` on (S3: ``GetObject`` with ``Range: bytes=offset-``)."""

    def open_read(self, name: str, offset: int = 0) -> BinaryIO: ...


def offers_offset(storage: object) -> bool:
    """Whether ``storage.open_read`` takes ``offset`` (the ``OffsetReadable`` extension)."""
    try:
        params = inspect.signature(storage.open_read).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return "offset" in params


class RetryingStorage:
    """A Storage whose idempotent calls retry transient errors (see the module docstring)."""

    def __init__(
        self,
        inner: Storage,
        is_transient: Callable[[BaseException], bool],
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        log: Callable[[str], None] = _log_info,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.policy = RetryPolicy(is_transient, attempts, base_delay, max_delay, sleep, rng, log)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return retry_call(fn, self.policy, f"{what} ({self.url})")

    def check_writable(self) -> None:
        self._call("check writable", self.inner.check_writable)

    def open_write(self, name: str) -> AtomicWriter:
        return self.inner.open_write(name)

    def open_read(self, name: str) -> BinaryIO:
        """A buffered reader that re-opens the object where a transient error broke it."""
        raw = _ResumingReader(self.inner, name, self.policy, f"read {name} ({self.url})")
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def read_bytes(self, name: str) -> bytes:
        return self._call(f"read {name}", lambda: self.inner.read_bytes(name))

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        self._call(f"write {name}", lambda: self.inner.write_bytes_atomic(name, data))

    def create_exclusive(self, name: str, data: bytes) -> None:
        """Retried; a FileExistsError after a lost answer is ours if the object is ``data``."""
        what = f"create {name} ({self.url})"
        failures = 0
        while True:
            try:
                self.inner.create_exclusive(name, data)
                return
            except FileExistsError as exc:
                if failures and self._holds(name, data):
                    self.policy.log(f"{what}: the earlier attempt had landed ({describe(exc)})")
                    return
                raise
            except Exception as exc:
                failures += 1
                if not self.policy.retries(exc, failures):
                    _note_attempts(exc, failures)
                    raise
                self.policy.wait(exc, failures, what)

    def _holds(self, name: str, data: bytes) -> bool:
        try:
            stored = self._call(f"read back {name}", lambda: self.inner.read_bytes(name))
        except FileNotFoundError:
            return False
        return hmac.compare_digest(stored, data)

    def exists(self, name: str) -> bool:
        return self._call(f"look up {name}", lambda: self.inner.exists(name))

    def size(self, name: str) -> int:
        return self._call(f"size {name}", lambda: self.inner.size(name))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self.inner.delete(name))

    def list_names(self) -> list[str]:
        return self._call("list", self.inner.list_names)

    def list_sizes(self) -> Mapping[str, int]:
        return self._call("list", self.inner.list_sizes)

    def unfinished(self) -> list[str]:
        return self._call("list unfinished", self.inner.unfinished)

    def sweep(self, name: str) -> list[str]:
        return self._call(f"sweep {name}", lambda: self.inner.sweep(name))

    def usage(self) -> tuple[int | None, int | None]:
        return self._call("usage", self.inner.usage)


_READ_BUFFER = 1 << 16


class _ResumingReader(io.RawIOBase):
    """The object's bytes; a transient error re-opens it at the offset reached. Opened on
    construction, so a missing object raises FileNotFoundError from ``open_read`` itself."""

    def __init__(self, inner: Storage, name: str, policy: RetryPolicy, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._name = name
        self._policy = policy
        self._what = what
        self._ranged = offers_offset(inner)
        self._pos = 0
        self._stream: BinaryIO | None = None
        self._stream = retry_call(lambda: self._open(0), policy, what)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        failures = 0
        while True:
            try:
                if self._stream is None:
                    self._stream = self._open(self._pos)
                data = self._stream.read(len(buffer))
            except Exception as exc:
                self._drop()
                failures += 1
                if not self._policy.retries(exc, failures):
                    _note_attempts(exc, failures)
                    raise
                self._policy.wait(exc, failures, f"{self._what} at byte {self._pos}")
                continue
            n = len(data)
            buffer[:n] = data
            self._pos += n
            return n

    def _open(self, offset: int) -> BinaryIO:
        if self._ranged:
            ranged: OffsetReadable = self._inner  # type: ignore[assignment]
            return ranged.open_read(self._name, offset=offset)
        stream = self._inner.open_read(self._name)
        try:
            _skip(stream, offset)
        except BaseException:
            stream.close()
            raise
        return stream

    def _drop(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._drop()
        super().close()


def _skip(stream: BinaryIO, count: int) -> None:
    """Read and drop ``count`` bytes (a backend without ``offset``); a short object is an
    error: it changed under us."""
    while count > 0:
        chunk = stream.read(min(count, _READ_BUFFER))
        if not chunk:
            raise OSError(f"object ended {count} bytes before the offset being resumed")
        count -= len(chunk)


_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",  # S3's 400 for a connection idle too long: resending succeeds
        "RequestTimeoutException",
        "ConditionalRequestConflict",  # 409: a concurrent conditional write; retry gets 412
    }
)
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def botocore_transient(exc: BaseException) -> bool:
    """Whether an error from boto3 is worth retrying: throttling (SlowDown, Throttling,
    RequestLimitExceeded, 429, 503), any 5xx, and a connection that failed, reset or timed out
    (EndpointConnectionError, ConnectionClosedError, read/connect timeouts, a response stream
    cut). Other 4xx (AccessDenied, NoSuchKey, NoSuchBucket, 412 PreconditionFailed) are not.
    An error a backend wrapped (a StorageError raised ``from`` a botocore error) is judged by
    what it wraps: its ``__cause__``, else its ``__context__`` even when raised ``from None``
    (a backend may hide the botocore error from tracebacks; it still decides). FileNotFoundError,
    FileExistsError and PermissionError end the walk: a missing or taken name, or a refusal, is
    never retried. botocore is imported here, only when an error is judged."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_one(current):
            return True
        if isinstance(current, FileNotFoundError | FileExistsError | PermissionError):
            return False
        current = current.__cause__ or current.__context__
    return False


def _transient_one(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code", ""))
        if code in _TRANSIENT_CODES:
            return True
        return isinstance(status, int) and (status in _TRANSIENT_STATUS or status >= 500)
    # ConnectionError: EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError;
    # HTTPClientError: ConnectionClosedError, ReadTimeoutError, ResponseStreamingError.
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    # The standard library's own: a socket reset or timeout that reached us unwrapped
    return isinstance(exc, ConnectionError | TimeoutError)
