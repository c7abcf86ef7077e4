"""S3-compatible storage: ``s3://bucket/prefix`` behind the storage Protocol.

boto3 is imported here only, and this module only for an ``s3://`` backup path (never for a
local path or ``--help``). The client is built on first use.

- **Configuration.** ``S3Options`` (the ``s3.*`` settings) override boto3's own environment
  (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``,
  ``AWS_CA_BUNDLE``) only where they are set. Credentials come from the standard AWS chain;
  nothing here reads, stores or prints them. botocore's own retries are off: retrying is
  ``RetryingStorage``'s job (one wrapper, one log line per retry) and, for the parts of an
  upload, ``retry_call`` per part. ``s3.checksums: when_required`` (the default for an
  endpoint that is not AWS) keeps boto3 >= 1.36 from adding the CRC checksum headers that R2,
  B2 and MinIO reject; integrity is then carried by ``Content-MD5`` on every put and part.
- **Writes.** ``open_write`` streams: the bytes fill a part (sized by ``s3plan``), each full part
  is sent by a small thread pool with at most ``parts_in_flight`` parts queued or in flight
  (memory is bounded by ``(parts_in_flight + 1) x part size`` whatever the backup's size,
  nothing staged on disk), each with its ``Content-MD5`` and retried on its own. The upload
  starts when the writer opens (a dead writer's upload is listed by ``unfinished``).
  ``commit`` refuses to overwrite an object, completes the upload, then HEADs the object: a
  size other than what was written, or no ETag, fails the backup (and the object is deleted).
  Failure, ``abort`` or an interrupt aborts the multipart upload, so no
  orphan parts stay billed.
- **The commit marker.** ``create_exclusive`` is a HEAD, then a ``PutObject`` with
  ``If-None-Match: *``: a server that honours it answers 412 to the second of two writers
  (FileExistsError); one that ignores it (rclone serve s3) still loses a race only inside the
  window between the HEAD and the put.
- **Reads** stream ``GetObject`` bodies; ``open_read(name, offset)`` sends a ``Range`` request
  so ``RetryingStorage`` resumes a broken download where it stopped. A body that ends before
  its ``Content-Length`` is an error (retried), never a short file.
- **Listing** pages ``ListObjectsV2`` with a ``/`` delimiter: the objects directly under the
  prefix, past any number of 1,000-key pages.
- **Errors** become FileNotFoundError (no such key), FileExistsError (412) or StorageError
  (exit 4) with one line naming the endpoint and bucket: never a credential. The botocore error
  stays the StorageError's context, so ``botocore_transient`` still judges it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ..errors import StorageError
from ..state.files import check_name
from .retry import LOGGER_NAME, RetryPolicy, botocore_transient, describe, retry_call
from .s3options import S3Location, S3Options, checksum_mode, parse_s3_url
from .s3plan import MiB, largest_object, next_part_size, plan_part_size

_log = logging.getLogger(LOGGER_NAME)

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_EXISTS = frozenset({"PreconditionFailed", "412"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
    }
)
_NO_BUCKET = frozenset({"NoSuchBucket"})
PROBE_NAME = ".sbbackup-probe"
_HEX32 = re.compile(r"[0-9a-f]{32}")


def _code(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def _md5(data: bytes) -> tuple[str, str]:
    """(Content-MD5 header value, hex digest: a single-part object's or a part's ETag)."""
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii"), digest.hex()


class S3Storage:
    """One bucket and prefix. Names are flat (validated by the caller); a name's key is
    ``prefix + name``."""

    def __init__(
        self,
        location: S3Location,
        options: S3Options | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.location = location
        self.options = options or S3Options()
        self.url = location.url
        self.bucket = location.bucket
        self.policy = policy or RetryPolicy(botocore_transient)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, location: str, options: S3Options | None) -> S3Storage:
        return cls(parse_s3_url(location), options)

    # --- the client ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StorageError(
                f"{self.url}: S3 storage needs boto3 (pip install 'sbbackup[s3]')"
            ) from None
        o = self.options
        session = boto3.session.Session(profile_name=o.profile) if o.profile else boto3.Session()
        endpoint = o.endpoint_url or _env_endpoint()
        verify: bool | str = o.ca_bundle if o.ca_bundle else o.verify_tls

        def build(mode: str) -> Any:
            config = Config(
                retries={"max_attempts": 1, "mode": "standard"},  # RetryingStorage retries
                s3={"addressing_style": o.addressing_style},
                request_checksum_calculation=mode,
                response_checksum_validation=mode,
                max_pool_connections=o.parts_in_flight + 8,
                connect_timeout=10,
                read_timeout=120,
                user_agent_extra="sbbackup",
            )
            try:
                return session.client(
                    "s3",
                    endpoint_url=o.endpoint_url,
                    region_name=o.region,
                    verify=verify,
                    config=config,
                )
            except Exception as exc:
                why = describe(exc)
                raise StorageError(f"{self.url}: cannot set up the S3 client: {why}") from None

        mode = checksum_mode(o, endpoint)
        client = build(mode)
        # the endpoint may come from a profile's config file: judge the one boto3 resolved
        resolved = client.meta.endpoint_url
        if checksum_mode(o, resolved) != mode:
            client = build(checksum_mode(o, resolved))
        return client

    @property
    def endpoint(self) -> str:
        """The endpoint the client talks to (for messages; it holds no credential)."""
        try:
            return str(self.client.meta.endpoint_url)
        except StorageError:
            return self.options.endpoint_url or _env_endpoint() or "the default AWS endpoint"

    def where(self) -> str:
        return f"endpoint {self.endpoint}, bucket {self.bucket}"

    def key(self, name: str) -> str:
        """The object key of a valid name (StorageError, exit 4, for an invalid one)."""
        return self.location.key(check_name(name))

    # --- errors ----------------------------------------------------------------------------

    def error(self, exc: BaseException, what: str) -> BaseException:
        """The error to raise for ``exc`` (raise it ``from None``: the botocore error stays
        as the context, which ``botocore_transient`` reads)."""
        code, status = _code(exc)
        if code in _NOT_FOUND or status == 404 and code not in _NO_BUCKET:
            return FileNotFoundError(f"{what}: no such object ({self.where()})")
        if code in _EXISTS or status == 412:
            return FileExistsError(f"{what}: the object already exists ({self.where()})")
        if code in _NO_BUCKET:
            return StorageError(f"{what}: the bucket does not exist ({self.where()})")
        if code in _DENIED or status == 403:
            reason = {
                "InvalidAccessKeyId": "the access key is not known to the server",
                "SignatureDoesNotMatch": "the secret key is wrong (signature does not match)",
            }.get(code, "access denied")
            return StorageError(f"{what}: {reason} ({self.where()}; code {code or status})")
        if status is not None:
            return StorageError(f"{what}: {code or 'HTTP error'} {status} ({self.where()})")
        return StorageError(f"{what}: {describe(exc)} ({self.where()})")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            raise self.error(exc, what) from exc

    # --- the Protocol ----------------------------------------------------------------------

    def check_writable(self) -> None:
        """The bucket exists and these credentials reach it (HEAD bucket). Whether a write is
        allowed shows at the first put; ``preflight`` writes and deletes a probe."""
        what = f"cannot use {self.url}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except StorageError:
            raise
        except Exception as exc:
            error = self.error(exc, what)
            if isinstance(error, FileNotFoundError):  # HEAD has no body: a bare 404
                error = StorageError(f"{what}: the bucket does not exist ({self.where()})")
            raise error from exc

    def open_write(self, name: str, expected_size: int | None = None) -> S3Writer:
        """Starts the multipart upload at once: a writer that dies is then listed by
        ``unfinished`` (and swept), and a second writer of a name in flight is refused."""
        self.key(name)
        if self.uploads(name):
            raise StorageError(f"{self.url}/{name}: another upload of it is in flight")
        writer = S3Writer(self, name, expected_size)
        writer.start()
        return writer

    def open_read(self, name: str, offset: int = 0) -> BinaryIO:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        what = f"cannot read {self.url}/{name}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name), **extra)
        except StorageError:
            raise
        except Exception as exc:
            code, status = _code(exc)
            if offset and (code == "InvalidRange" or status == 416):
                return io.BytesIO(b"")  # resuming exactly at the end
            raise self.error(exc, what) from exc
        return io.BufferedReader(_Body(self, response, what), buffer_size=1 << 16)

    def read_bytes(self, name: str) -> bytes:
        """The whole (small) object. Where its ETag is its MD5 (a single put, no SSE-KMS or
        SSE-C), the bytes are checked against it: a server that replaces an object in place
        (rclone serve s3 over a directory) can serve a mix of two versions while a put runs.
        A mismatch is a ConnectionError, so ``RetryingStorage`` reads it again, whole."""
        what = f"cannot read {self.url}/{name}"
        response = self._call(
            what, lambda: self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        )
        with io.BufferedReader(_Body(self, response, what), buffer_size=1 << 16) as stream:
            data = stream.read()
        etag = str(response.get("ETag", "")).strip('"').lower()
        plain = response.get("ServerSideEncryption") in (None, "AES256") and not response.get(
            "SSECustomerAlgorithm"
        )
        if plain and _HEX32.fullmatch(etag) and _md5(data)[1] != etag:
            raise ConnectionError(f"{what}: the bytes read do not match the object's MD5 ETag")
        return data

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        """A PutObject is atomic: readers see the old object or the new one, never a mix."""
        self._put(name, data)

    def create_exclusive(self, name: str, data: bytes) -> None:
        if self.exists(name):
            raise FileExistsError(f"{self.url}/{name} already exists ({self.where()})")
        self._put(name, data, IfNoneMatch="*")

    def _put(self, name: str, data: bytes, **extra: str) -> None:
        self.key(name)
        self._put_key(self.key(name), name, data, **extra)

    def _put_key(self, key: str, name: str, data: bytes, **extra: str) -> None:
        md5, _ = _md5(data)
        what = f"cannot write {self.url}/{name}"
        response = self._call(
            what,
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentMD5=md5,
                ContentLength=len(data),
                **self.sse_args(),
                **extra,
            ),
        )
        if not response.get("ETag"):
            raise StorageError(f"{what}: the server answered without an ETag ({self.where()})")

    def sse_args(self) -> dict[str, str]:
        o = self.options
        args = {"ServerSideEncryption": o.sse} if o.sse else {}
        if o.sse_kms_key_id:
            args["SSEKMSKeyId"] = o.sse_kms_key_id
        return args

    def head(self, name: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.key(name)
            )
            return response
        except StorageError:
            raise
        except Exception as exc:
            error = self.error(exc, f"cannot look up {self.url}/{name}")
            if isinstance(error, FileNotFoundError):
                return None
            raise error from exc

    def exists(self, name: str) -> bool:
        return self.head(name) is not None

    def size(self, name: str) -> int:
        head = self.head(name)
        return int(head["ContentLength"]) if head is not None else -1

    def delete(self, name: str) -> None:
        self._call(
            f"cannot delete {self.url}/{name}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key(name)),
        )

    def list_sizes(self) -> Mapping[str, int]:
        """Every object directly under the prefix, with its size, over every page."""
        prefix = self.location.prefix
        out: dict[str, int] = {}

        def run() -> None:
            out.clear()
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(prefix) :]
                    if name and "/" not in name:
                        out[name] = int(item.get("Size", 0))

        self._call(f"cannot list {self.url}", run)
        return out

    def list_names(self) -> list[str]:
        return list(self.list_sizes())

    def uploads(self, name: str | None = None) -> list[tuple[str, str]]:
        """(name, upload ID) of the multipart uploads pending under the prefix (or for one
        name), over every page."""
        prefix = self.key(name) if name is not None else self.location.prefix
        out: list[tuple[str, str]] = []

        def run() -> None:
            out.clear()
            paginator = self.client.get_paginator("list_multipart_uploads")
            try:
                pages = list(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
            except Exception as exc:
                code, status = _code(exc)
                if status == 404 and code != "NoSuchBucket":
                    return  # rclone serve s3: 404 (NoSuchUpload) when none is pending
                raise
            for page in pages:
                for upload in page.get("Uploads", ()):
                    rest = upload["Key"][len(self.location.prefix) :]
                    if rest and "/" not in rest and (name is None or rest == name):
                        out.append((rest, upload["UploadId"]))

        self._call(f"cannot list the unfinished uploads of {self.url}", run)
        return out

    def unfinished(self) -> list[str]:
        return [name for name, _ in self.uploads()]

    def sweep(self, name: str) -> list[str]:
        removed = []
        for key_name, upload_id in self.uploads(name):
            self.abort_upload(key_name, upload_id)
            removed.append(f"{key_name} (multipart upload {upload_id[:16]})")
        return removed

    def abort_upload(self, name: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload_id
            )
        except Exception as exc:
            code, status = _code(exc)
            if code == "NoSuchUpload" or status == 404:
                return  # already gone (some servers answer so to a repeated abort)
            raise self.error(exc, f"cannot abort the upload of {self.url}/{name}") from exc

    def usage(self) -> tuple[int | None, int | None]:
        return sum(max(s, 0) for s in self.list_sizes().values()), None

    # --- sbbackup test ---------------------------------------------------------------------

    def preflight(self, expected_size: int | None) -> str:
        """Bucket reachable, credentials valid, a probe object written, read back and deleted;
        and the part plan for ``expected_size``. StorageError (exit 4) naming the endpoint
        and bucket when any step fails."""
        self.check_writable()
        probe = f"{PROBE_NAME}-{os.getpid()}-{os.urandom(4).hex()}"  # hidden: never a backup
        key = self.location.prefix + probe
        data = os.urandom(32)
        what = f"cannot write a probe object to {self.url}"
        self._put_key(key, probe, data)
        try:
            got = self._call(
                what, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            )
            if got != data:
                raise StorageError(f"{self.url}: the probe object read back differs")
        finally:
            self._call(
                f"cannot delete the probe object from {self.url}",
                lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
            )
        return f"{self.where()}: probe written, read and deleted; {self.part_plan(expected_size)}"

    def part_plan(self, expected_size: int | None) -> str:
        o = self.options
        base = plan_part_size(expected_size, o.part_size, o.max_parts)
        largest = largest_object(base, o.max_parts)
        parts = -(-expected_size // base) if expected_size else None
        about = f"about {parts} part(s) of {base // MiB} MiB" if parts else f"{base // MiB} MiB"
        return (
            f"multipart {about} (limit {o.max_parts} parts, "
            f"largest backup {largest / (1 << 30):,.0f} GiB)"
        )


def _as_storage_error(exc: BaseException) -> StorageError:
    """A write's failure is a storage error (exit 4), even a 404 (the upload vanished)."""
    return exc if isinstance(exc, StorageError) else StorageError(str(exc))


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class _Body(io.RawIOBase):
    """A GetObject body as a raw stream; one that ends short of its Content-Length raises
    ConnectionError (transient: ``RetryingStorage`` resumes it with a Range request)."""

    def __init__(self, storage: S3Storage, response: dict[str, Any], what: str) -> None:
        super().__init__()
        self._storage = storage
        self._body = response["Body"]
        length = response.get("ContentLength")
        self._left = int(length) if length is not None else None
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._body.read(len(buffer))
        except Exception as exc:
            if type(exc).__name__ == "IncompleteReadError":  # botocore: body ended short
                raise ConnectionError(f"{self._what}: the stream ended early") from exc
            raise self._storage.error(exc, self._what) from exc
        n = len(data)
        if n == 0 and self._left:
            raise ConnectionError(f"{self._what}: the stream ended {self._left} bytes early")
        buffer[:n] = data
        if self._left is not None:
            self._left -= n
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class S3Writer:
    """A streaming upload (see the module docstring). Single-use: ``commit`` or ``abort``."""

    def __init__(self, storage: S3Storage, name: str, expected_size: int | None = None) -> None:
        self.storage = storage
        self.name = name
        self.key = storage.key(name)
        o = storage.options
        self.base = plan_part_size(expected_size, o.part_size, o.max_parts)
        self.max_parts = o.max_parts
        self.in_flight = o.parts_in_flight
        self.upload_id: str | None = None
        self.parts: dict[int, str] = {}  # part number -> ETag
        self.pending: deque[Future[None]] = deque()
        self.written = 0
        self.part_number = 0
        self._chunks: list[bytes] = []
        self._filled = 0
        self._pool: ThreadPoolExecutor | None = None
        self._done = False
        self._failed: BaseException | None = None
        self.what = f"cannot upload {storage.url}/{name}"

    def start(self) -> None:
        self._create()

    def _part_size(self) -> int:
        return next_part_size(min(self.part_number + 1, self.max_parts), self.base, self.max_parts)

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._done or self.upload_id is None:
            raise StorageError(f"{self.what}: the upload is closed")
        self._raise_failed()
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            room = self._part_size() - self._filled
            take = view[:room]
            self._chunks.append(bytes(take))
            self._filled += len(take)
            view = view[len(take) :]
            if self._filled >= self._part_size():
                self._send_part()
        self.written += total
        return total

    def _take(self) -> bytes:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self._filled = 0
        return data

    def _send_part(self) -> None:
        """Queue the filled buffer as the next part, waiting while ``in_flight`` are queued."""
        if self.part_number >= self.max_parts:
            raise StorageError(
                f"{self.what}: the backup outgrew {self.max_parts} parts "
                "(raise s3.maxParts or s3.partSize)"
            )
        data = self._take()
        self.part_number += 1
        number = self.part_number
        while len(self.pending) >= self.in_flight:
            self._wait_oldest()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="s3-part")
        self.pending.append(self._pool.submit(self._upload_part, number, data))

    def _create(self) -> None:
        s = self.storage
        response = s._call(
            self.what,
            lambda: s.client.create_multipart_upload(Bucket=s.bucket, Key=self.key, **s.sse_args()),
        )
        self.upload_id = str(response["UploadId"])

    def _upload_part(self, number: int, data: bytes) -> None:
        s = self.storage
        md5, etag_hex = _md5(data)
        what = f"upload part {number} of {s.url}/{self.name}"

        def send() -> str:
            response = s.client.upload_part(
                Bucket=s.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=md5,
                ContentLength=len(data),
            )
            etag = response.get("ETag")
            if not etag:
                raise StorageError(f"{what}: the server answered without an ETag")
            return str(etag)

        try:
            self.parts[number] = retry_call(send, s.policy, what)
        except StorageError:
            raise
        except Exception as exc:
            raise _as_storage_error(s.error(exc, f"{self.what} (part {number})")) from exc

    def _wait_oldest(self) -> None:
        future = self.pending.popleft()
        try:
            future.result()
        except BaseException as exc:
            self._failed = exc
            raise

    def _raise_failed(self) -> None:
        while self.pending and self.pending[0].done():
            self._wait_oldest()
        if self._failed is not None:
            raise StorageError(f"{self.what}: an earlier part failed")

    def commit(self) -> None:
        if self._done:
            return
        try:
            self._raise_failed()
            if self._filled or self.part_number == 0:
                self._send_part()  # the last part (or the only one, maybe empty)
            while self.pending:
                self._wait_oldest()
            if self.storage.exists(self.name):
                raise StorageError(f"refusing to overwrite existing {self.storage.url}/{self.name}")
            self._complete()
            self._check_stored()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._shutdown()

    def _complete(self) -> None:
        s = self.storage
        parts = [{"PartNumber": n, "ETag": self.parts[n]} for n in sorted(self.parts)]
        if len(parts) != self.part_number:
            raise StorageError(f"{self.what}: {self.part_number - len(parts)} part(s) missing")

        def complete() -> Any:
            return s.client.complete_multipart_upload(
                Bucket=s.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )

        try:
            response = retry_call(complete, s.policy, f"complete {s.url}/{self.name}")
        except Exception as exc:
            code, _ = _code(exc)
            if code == "NoSuchUpload" and self._stored_size() == self.written:
                # an earlier attempt completed it and its answer was lost
                self.upload_id = None
                return
            raise _as_storage_error(s.error(exc, self.what)) from exc
        if not response.get("ETag"):
            raise StorageError(f"{self.what}: completing answered without an ETag")
        self.upload_id = None  # completed: nothing left to abort

    def _stored_size(self) -> int | None:
        head = self.storage.head(self.name)
        return int(head["ContentLength"]) if head is not None else None

    def _check_stored(self) -> None:
        """HEAD the object: it must exist, with an ETag and exactly the bytes written."""
        s = self.storage
        head = retry_call(lambda: s.head(self.name), s.policy, f"check {s.url}/{self.name}")
        if head is None:
            raise StorageError(f"{self.what}: the object is missing after the upload")
        size = int(head.get("ContentLength", -1))
        if size != self.written or not head.get("ETag"):
            with contextlib.suppress(Exception):
                s.delete(self.name)
            why = f"{size} bytes stored of {self.written} written" if size != self.written else ""
            raise StorageError(f"{self.what}: {why or 'no ETag'} ({s.where()})")

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        for future in self.pending:
            future.cancel()
        self._shutdown()
        self.pending.clear()
        self._chunks = []
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                retry_call(
                    lambda: self.storage.abort_upload(self.name, upload_id),
                    self.storage.policy,
                    f"abort the upload of {self.storage.url}/{self.name}",
                )
            except Exception as exc:
                _log.info(
                    "%s: the multipart upload %s could not be aborted (%s); "
                    "the next run or prune removes it",
                    self.what,
                    upload_id,
                    describe(exc),
                )

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
