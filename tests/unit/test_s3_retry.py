"""The retry wrapper (sbbackup.storage.retry) over boto3 against moto (``mock_aws``).

moto is for these unit tests only (the S3 backend's own tests use a real S3-compatible
server). Faults are injected in botocore's event hooks of one real boto3 client:

- ``before-send`` raising ConnectionClosedError: the connection reset before the server saw
  the request (nothing happened);
- ``before-send`` returning a 503 SlowDown / 403 AccessDenied response: moto's own handler
  still serves the request after ours (it runs later in the same event), so it is a server that
  did the work and then answered with an error, the harder case for a conditional put;
- ``after-call`` raising ConnectionClosedError: the request was served, the answer was lost;
- a GetObject body that breaks mid-stream with ResponseStreamingError (a reset connection).

botocore's own retries are off (``total_max_attempts: 1``), so every retry seen is the
wrapper's. Sleep and jitter are injected: nothing sleeps, nothing depends on chance.
"""

from __future__ import annotations

import hashlib
import logging
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from sbbackup.errors import StorageError
from sbbackup.storage.retry import (
    LOGGER_NAME,
    RetryingStorage,
    RetryPolicy,
    botocore_transient,
    offers_offset,
    retry_call,
)

BUCKET = "backups"
NO_BOTO_RETRIES = Config(retries={"total_max_attempts": 1}, region_name="us-east-1")


class BotoStorage:
    """The part of a Storage these tests use, over one bucket, mapping errors the way a backend
    does: a missing key is FileNotFoundError, a failed ``If-None-Match: *`` FileExistsError,
    anything else a StorageError (exit 4) raised from the botocore error."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.url = f"s3://{BUCKET}"

    def _fail(self, exc: Exception, name: str) -> None:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else ""
        if code in ("NoSuchKey", "404"):
            raise FileNotFoundError(name) from exc
        if code in ("PreconditionFailed", "412"):
            raise FileExistsError(name) from exc
        raise StorageError(f"{self.url}/{name}: {exc}") from exc

    def read_bytes(self, name: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=BUCKET, Key=name)["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, name)
            raise

    def open_read(self, name: str, offset: int = 0) -> Any:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self.client.get_object(Bucket=BUCKET, Key=name, **extra)["Body"]
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, name)
            raise

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=BUCKET, Key=name, Body=data)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, name)

    def create_exclusive(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=BUCKET, Key=name, Body=data, IfNoneMatch="*")
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, name)

    def size(self, name: str) -> int:
        try:
            return int(self.client.head_object(Bucket=BUCKET, Key=name)["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, name)
            raise


class WholeReadStorage(BotoStorage):
    """A backend without the ``offset`` extension: a resumed read starts over and skips."""

    def open_read(self, name: str) -> Any:  # type: ignore[override]
        return super().open_read(name)


class CutBody:
    """A GetObject body whose connection resets after ``cut_at`` bytes."""

    def __init__(self, body: Any, cut_at: int) -> None:
        self.body = body
        self.cut_at = cut_at
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.cut_at:
            raise ResponseStreamingError(error=ConnectionResetError(104, "Connection reset"))
        room = self.cut_at - self.pos
        data = bytes(self.body.read(room if n is None or n < 0 else min(n, room)))
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.body.close()


class Faults:
    """Per operation, a queue of faults for its next calls; records every request sent."""

    def __init__(self, client: Any) -> None:
        self.queued: dict[str, list[str]] = {}
        self.sent: Counter[str] = Counter()
        self.ranges: list[str | None] = []
        self.cut_at = 0
        self.on_reset: Callable[[], None] | None = None
        client.meta.events.register("before-send.s3", self._before_send)
        client.meta.events.register("after-call.s3", self._after_call)

    def add(self, op: str, *faults: str) -> None:
        self.queued.setdefault(op, []).extend(faults)

    def _next(self, op: str, when: set[str]) -> str | None:
        queue = self.queued.get(op, [])
        if queue and queue[0] in when:
            return queue.pop(0)
        return None

    def _before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        op = event_name.rsplit(".", 1)[-1]
        self.sent[op] += 1
        if op == "GetObject":
            value = request.headers.get("Range")
            self.ranges.append(value.decode() if isinstance(value, bytes) else value)
        fault = self._next(op, {"reset", "slowdown", "denied"})
        if fault == "reset":
            if self.on_reset is not None:
                self.on_reset()
            raise ConnectionClosedError(endpoint_url=request.url)
        if fault in ("slowdown", "denied"):
            status, code = (503, "SlowDown") if fault == "slowdown" else (403, "AccessDenied")
            body = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>injected {code} on call {self.sent[op]}</Message></Error>"
            ).encode()
            return AWSResponse(request.url, status, {}, MockRawResponse(body))  # type: ignore[arg-type]
        return None

    def _after_call(self, event_name: str, parsed: dict[str, Any], **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        fault = self._next(op, {"lost", "cut"})
        if fault == "lost":
            raise ConnectionClosedError(endpoint_url=f"http://lost-answer/{op}")
        if fault == "cut":
            parsed["Body"] = CutBody(parsed["Body"], self.cut_at)


class Recorder:
    """Injected sleep, jitter and log: what the wrapper would have slept and said."""

    def __init__(self, jitter: list[float]) -> None:
        self.jitter = list(jitter)
        self.slept: list[float] = []
        self.logged: list[str] = []

    def rng(self) -> float:
        return self.jitter.pop(0) if self.jitter else 0.5

    def wrap(self, inner: Any, **kw: Any) -> RetryingStorage:
        return RetryingStorage(
            inner,
            botocore_transient,
            sleep=self.slept.append,
            rng=self.rng,
            log=self.logged.append,
            **kw,
        )


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Faults]]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", config=NO_BOTO_RETRIES)
        client.create_bucket(Bucket=BUCKET)
        yield client, Faults(client)


def test_put_that_fails_twice_then_succeeds(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    rec = Recorder(jitter=[0.999, 0.25])
    storage = rec.wrap(BotoStorage(client))
    faults.add("PutObject", "slowdown", "reset")
    storage.write_bytes_atomic("a.json", b'{"id": "a"}')
    assert client.get_object(Bucket=BUCKET, Key="a.json")["Body"].read() == b'{"id": "a"}'
    assert faults.sent["PutObject"] == 3
    assert len(rec.logged) == 2, rec.logged
    assert "SlowDown" in rec.logged[0] and "retry 1 of 4" in rec.logged[0]
    assert "Connection was closed" in rec.logged[1] and "retry 2 of 4" in rec.logged[1]
    assert "write a.json (s3://backups)" in rec.logged[0]
    # Full jitter: rng() x min(max_delay, 0.2 x 2**(k-1)), inside [0, cap)
    assert rec.slept == pytest.approx([0.999 * 0.2, 0.25 * 0.4])
    policy = storage.policy
    assert all(0 <= s < policy.cap(k) for k, s in enumerate(rec.slept, start=1))


def test_part_retried_on_its_own_with_retry_call(s3: tuple[Any, Faults]) -> None:
    """What the S3 writer does per part: the part fails twice (503, reset), then lands; the
    completed object is whole."""
    client, faults = s3
    rec = Recorder(jitter=[0.5, 0.5])
    policy = RetryPolicy(
        botocore_transient, sleep=rec.slept.append, rng=rec.rng, log=rec.logged.append
    )
    upload = client.create_multipart_upload(Bucket=BUCKET, Key="big.dump")["UploadId"]
    parts = [random.Random(7).randbytes(5 << 20), b"tail"]
    faults.add("UploadPart", "slowdown", "reset")
    done = []
    for number, body in enumerate(parts, start=1):
        answer = retry_call(
            lambda n=number, b=body: client.upload_part(
                Bucket=BUCKET, Key="big.dump", UploadId=upload, PartNumber=n, Body=b
            ),
            policy,
            f"upload part {number} of big.dump",
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(
        Bucket=BUCKET, Key="big.dump", UploadId=upload, MultipartUpload={"Parts": done}
    )
    assert faults.sent["UploadPart"] == 4  # part 1 three times, part 2 once
    assert [m.split(":")[0] for m in rec.logged] == ["upload part 1 of big.dump"] * 2
    assert rec.slept == [0.5 * 0.2, 0.5 * 0.4]
    head = client.head_object(Bucket=BUCKET, Key="big.dump")
    assert head["ContentLength"] == sum(map(len, parts))


def test_access_denied_is_not_retried(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    client.put_object(Bucket=BUCKET, Key="m.json", Body=b"{}")
    rec = Recorder(jitter=[])
    storage = rec.wrap(BotoStorage(client))
    faults.add("GetObject", "denied")
    with pytest.raises(StorageError, match="AccessDenied") as caught:
        storage.read_bytes("m.json")
    assert caught.value.exit_code == 4
    assert faults.sent["GetObject"] == 1
    assert rec.slept == [] and rec.logged == []


def test_missing_object_is_not_retried(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    rec = Recorder(jitter=[])
    storage = rec.wrap(BotoStorage(client))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("absent.json")
    with pytest.raises(FileNotFoundError):
        storage.open_read("absent.dump")
    assert faults.sent["GetObject"] == 2
    assert rec.slept == []


def test_attempts_exhausted_raise_the_last_error(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    rec = Recorder(jitter=[0.9] * 10)
    storage = rec.wrap(BotoStorage(client), attempts=6, base_delay=1.0, max_delay=3.0)
    faults.add("HeadObject", *["slowdown"] * 6)
    client.put_object(Bucket=BUCKET, Key="x.dump", Body=b"12345")
    with pytest.raises(StorageError) as caught:
        storage.size("x.dump")
    assert caught.value.exit_code == 4
    assert faults.sent["HeadObject"] == 6
    assert "(gave up after 6 attempts)" in getattr(caught.value, "__notes__", [])
    # the last error raised, the one from the 6th response
    cause = caught.value.__cause__
    assert isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "SlowDown"
    assert "injected SlowDown on call 6" in str(cause)
    assert len(rec.logged) == 5
    # the delay's cap doubles from 1 s and stops at max_delay
    assert [storage.policy.cap(k) for k in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert rec.slept == pytest.approx([0.9, 1.8, 2.7, 2.7, 2.7])


def test_read_cut_mid_stream_resumes_at_the_offset(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    data = random.Random(15).randbytes(300_000)
    client.put_object(Bucket=BUCKET, Key="d.dump", Body=data)
    rec = Recorder(jitter=[0.5])
    inner = BotoStorage(client)
    assert offers_offset(inner)
    storage = rec.wrap(inner)
    faults.cut_at = 100_003
    faults.add("GetObject", "cut")
    with storage.open_read("d.dump") as fh:
        got = b"".join(iter(lambda: fh.read(10_000), b""))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert got == data
    assert faults.ranges == [None, "bytes=100003-"]
    assert len(rec.logged) == 1 and "at byte 100003" in rec.logged[0]
    assert "ResponseStreamingError" in rec.logged[0]


def test_read_cut_without_offset_support_starts_over_and_skips(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    data = random.Random(16).randbytes(200_000)
    client.put_object(Bucket=BUCKET, Key="d.dump", Body=data)
    rec = Recorder(jitter=[0.5, 0.5])
    inner = WholeReadStorage(client)
    assert not offers_offset(inner)
    storage = rec.wrap(inner)
    faults.cut_at = 70_000
    faults.add("GetObject", "cut", "reset")  # the cut, then the re-open itself resets once
    with storage.open_read("d.dump") as fh:
        got = fh.read()
    assert got == data
    assert faults.ranges == [None, None, None]
    assert len(rec.logged) == 2


def test_read_cuts_counted_consecutively(s3: tuple[Any, Faults]) -> None:
    """Three separate cuts with progress between them survive attempts=2: progress resets
    the count, so a long download is not doomed by its length."""
    client, faults = s3
    data = random.Random(17).randbytes(400_000)
    client.put_object(Bucket=BUCKET, Key="d.dump", Body=data)
    rec = Recorder(jitter=[])
    storage = rec.wrap(BotoStorage(client), attempts=2)
    faults.cut_at = 90_000
    faults.add("GetObject", "cut", "cut", "cut")
    with storage.open_read("d.dump") as fh:
        got = fh.read()
    assert got == data
    assert faults.ranges == [None, "bytes=90000-", "bytes=180000-", "bytes=270000-"]
    assert len(rec.logged) == 3


def test_conditional_put_whose_answer_was_lost_is_ours(s3: tuple[Any, Faults]) -> None:
    """The put landed, the answer was lost; the retry gets 412; the object holds our bytes,
    so the reservation is ours."""
    client, faults = s3
    rec = Recorder(jitter=[0.5])
    storage = rec.wrap(BotoStorage(client))
    faults.add("PutObject", "lost")
    storage.create_exclusive("b.json", b'{"host": "h1", "pid": 1}')
    assert faults.sent["PutObject"] == 2
    assert faults.sent["GetObject"] == 1  # read back once
    assert "retry 1 of 4" in rec.logged[0]
    assert "the earlier attempt had landed" in rec.logged[1]


def test_conditional_put_503_after_the_work_is_ours(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    rec = Recorder(jitter=[0.5])
    storage = rec.wrap(BotoStorage(client))
    faults.add("PutObject", "slowdown")  # moto stores the object, then we answer 503
    storage.create_exclusive("b.json", b"mine")
    assert client.get_object(Bucket=BUCKET, Key="b.json")["Body"].read() == b"mine"
    assert faults.sent["PutObject"] == 2


def test_conditional_put_taken_meanwhile_by_another_writer(s3: tuple[Any, Faults]) -> None:
    """The first attempt never arrived; meanwhile another host reserved the name: the retry's
    412 is theirs, and FileExistsError stands."""
    client, faults = s3
    rec = Recorder(jitter=[0.5])
    storage = rec.wrap(BotoStorage(client))
    other = boto3.client("s3", config=NO_BOTO_RETRIES)  # no fault hooks
    faults.on_reset = lambda: other.put_object(Bucket=BUCKET, Key="b.json", Body=b"theirs")
    faults.add("PutObject", "reset")
    with pytest.raises(FileExistsError):
        storage.create_exclusive("b.json", b"mine")
    assert client.get_object(Bucket=BUCKET, Key="b.json")["Body"].read() == b"theirs"
    assert len(rec.logged) == 1


def test_conditional_put_refused_at_once_is_not_read_back(s3: tuple[Any, Faults]) -> None:
    client, faults = s3
    client.put_object(Bucket=BUCKET, Key="b.json", Body=b"mine")
    rec = Recorder(jitter=[])
    storage = rec.wrap(BotoStorage(client))
    with pytest.raises(FileExistsError):
        storage.create_exclusive("b.json", b"mine")  # identical bytes, but no attempt failed
    assert faults.sent["GetObject"] == 0
    assert rec.logged == []


def test_default_log_is_the_storage_logger(
    s3: tuple[Any, Faults], caplog: pytest.LogCaptureFixture
) -> None:
    client, faults = s3
    storage = RetryingStorage(BotoStorage(client), botocore_transient, sleep=lambda s: None)
    faults.add("PutObject", "reset")
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        storage.write_bytes_atomic("c.json", b"{}")
    records = [r for r in caplog.records if r.name == "sbbackup.storage"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert "retry 1 of 4" in records[0].getMessage()


def test_interrupts_are_never_retried() -> None:
    calls = []

    def interrupted() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    policy = RetryPolicy(lambda exc: True, sleep=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        retry_call(interrupted, policy, "anything")
    assert calls == [1]


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


def _wrapped(inner: BaseException, outer: BaseException, hide: bool = False) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            if hide:
                raise outer from None
            raise outer from exc
    except BaseException as got:
        return got


URL = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("Throttling", 400), True),
        (_client_error("RequestLimitExceeded", 400), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("503", 503), True),
        (_client_error("502", 502), True),
        (_client_error("TooManyRequests", 429), True),
        (_client_error("RequestTimeout", 400), True),
        (_client_error("ConditionalRequestConflict", 409), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("InvalidAccessKeyId", 403), False),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("NoSuchBucket", 404), False),
        (_client_error("PreconditionFailed", 412), False),
        (_client_error("InvalidRequest", 400), False),
        (EndpointConnectionError(endpoint_url=URL), True),
        (ConnectTimeoutError(endpoint_url=URL), True),
        (ReadTimeoutError(endpoint_url=URL), True),
        (ConnectionClosedError(endpoint_url=URL), True),
        (ResponseStreamingError(error=ConnectionResetError()), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError(), True),
        (NoCredentialsError(), False),
        (ValueError("x"), False),
        (_wrapped(_client_error("SlowDown", 503), StorageError("s3: slow")), True),
        (_wrapped(_client_error("SlowDown", 503), StorageError("s3: slow"), hide=True), True),
        (_wrapped(_client_error("AccessDenied", 403), StorageError("s3: denied")), False),
        (_wrapped(ConnectionClosedError(endpoint_url=URL), FileNotFoundError("k")), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_botocore_transient(exc: BaseException, transient: bool) -> None:
    assert botocore_transient(exc) is transient


@given(
    st.integers(1, 100),
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 5),
    st.floats(0, 60),
)
def test_jittered_delay_within_bounds(retry: int, draw: float, base: float, most: float) -> None:
    slept: list[float] = []
    policy = RetryPolicy(
        lambda exc: True, base_delay=base, max_delay=most, rng=lambda: draw, sleep=slept.append
    )
    cap = policy.cap(retry)
    assert cap == min(most, base * 2 ** (retry - 1))
    assert 0 <= policy.delay(retry) <= cap <= most
    policy.wait(OSError("x"), retry, "op")
    assert slept == [policy.delay(retry)]


def test_importing_the_wrapper_loads_no_botocore() -> None:
    """botocore is imported inside botocore_transient only (a local path never loads it)."""
    code = (
        "import sys, sbbackup.storage.retry, sbbackup.storage.s3plan; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'boto3')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
