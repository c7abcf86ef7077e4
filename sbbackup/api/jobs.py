"""Background jobs: long operations (backup, restore, self test, schedule run) run in threads,
capped per kind, remembered for their status URLs, drained on shutdown."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InterruptedError_, SbbackupError
from ..model import iso
from .wire import HttpError, JobStatus, exc_body

JOB_HISTORY = 500  # finished jobs remembered for their status URLs
RETRY_AFTER = 5  # seconds a client is told to wait when the job cap is reached
# What a job kind counts against: (the kinds that share its cap, the setting, its config key).
JOB_CAPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "backup": (("backup", "run"), "api_max_backup_jobs", "api.maxBackupJobs"),
    "run": (("backup", "run"), "api_max_backup_jobs", "api.maxBackupJobs"),
    "restore": (("restore",), "api_max_restore_jobs", "api.maxRestoreJobs"),
    "test": (("test",), "api_max_test_jobs", "api.maxTestJobs"),
}


@dataclass
class Job:
    kind: str
    id: str
    startedAt: str
    thread: threading.Thread | None = None
    status: JobStatus = JobStatus.IN_PROGRESS
    result: Any = None  # what ``fn`` returned: a result of ``sbbackup.results``, a record
    error: SbbackupError | None = None
    finishedAt: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    extra: dict[str, Any] = field(default_factory=dict)
    cancel: Callable[[], None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        result = self.result.to_json() if hasattr(self.result, "to_json") else self.result
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "result": result,
            "error": exc_body(self.error)["error"] if self.error else None,
            **self.extra,
        }


class Jobs:
    """Background threads for long operations, remembered for their status URLs."""

    def __init__(
        self,
        caps: Mapping[str, int] | None = None,
        on_crash: Callable[[], None] = traceback.print_exc,
    ) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._last_backup_time: datetime | None = None
        self.accepting = True
        self.caps = dict(caps or {})  # setting name (api_max_backup_jobs, ...) -> limit
        self.on_crash = on_crash  # logs an unexpected exception (called inside ``except``)

    def check_cap(self, kind: str) -> None:
        """429 when ``kind``'s cap is reached. ``start`` checks again under its lock."""
        with self._lock:
            self._check_cap(kind)

    def _check_cap(self, kind: str) -> None:
        if kind not in JOB_CAPS:
            return
        kinds, setting, key = JOB_CAPS[kind]
        limit = self.caps.get(setting)
        if limit is None:
            return
        running = sum(1 for j in self._jobs.values() if j.kind in kinds and not j.done.is_set())
        if running >= limit:
            raise HttpError(
                429,
                "too_many_jobs",
                f"{running} {'/'.join(kinds)} job(s) already running, the most the configuration "
                f"allows ({key}: {limit}): retry later",
                {"Retry-After": str(RETRY_AFTER)},
            )

    def start(
        self,
        kind: str,
        job_id: str,
        fn: Callable[[], Any],
        cancel: Callable[[], None] | None = None,
        **extra: Any,
    ) -> Job:
        """Run ``fn`` in a thread; ``cancel`` stops its child processes at shutdown. Refused
        (429) past the kind's cap, counted under the same lock that registers the job."""
        job = Job(kind, job_id, iso(datetime.now(UTC)) or "", extra=extra, cancel=cancel)
        job.thread = threading.Thread(
            target=self._run, args=(job, fn), name=f"sbbackup-{kind}-{job_id}", daemon=True
        )
        with self._lock:
            if not self.accepting:
                raise HttpError(503, "shutting_down", "the server is shutting down")
            self._check_cap(kind)
            self._jobs[job_id] = job
            self._forget_old()
        job.thread.start()
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> None:
        try:
            job.result = fn()
            job.status = JobStatus.COMPLETED
        except SbbackupError as exc:
            job.error, job.status = exc, JobStatus.FAILED
        except KeyboardInterrupt:
            job.error = InterruptedError_("interrupted by server shutdown")
            job.status = JobStatus.INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - a job thread is an error boundary too
            self.on_crash()
            job.error, job.status = SbbackupError(f"unexpected error: {exc}"), JobStatus.FAILED
        finally:
            job.finishedAt = iso(datetime.now(UTC))
            job.done.set()

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.done.is_set()]
        for key in finished[: max(0, len(self._jobs) - JOB_HISTORY)]:
            del self._jobs[key]

    def get(self, job_id: str, kind: str | None = None) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and (kind is None or job.kind == kind) else None

    def running(self, kind: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if not j.done.is_set() and kind in (None, j.kind)]

    def backup_time(self) -> datetime:
        """A distinct millisecond per API backup, so the IDs it reserves never collide."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        with self._lock:
            if self._last_backup_time is not None and now <= self._last_backup_time:
                now = self._last_backup_time + timedelta(milliseconds=1)
            self._last_backup_time = now
        return now

    def drain(self, grace: float) -> list[Job]:
        """Stop accepting jobs, let running ones finish for ``grace`` seconds, then interrupt
        them (KeyboardInterrupt, which every operation turns into cleanup and a record)."""
        with self._lock:
            self.accepting = False
        deadline = time.monotonic() + grace
        for job in self.running():
            job.done.wait(max(0.0, deadline - time.monotonic()))
        late = self.running()
        for job in late:
            if job.thread is not None and job.thread.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(job.thread.ident), ctypes.py_object(KeyboardInterrupt)
                )
            # The exception lands at the thread's next bytecode; one blocked reading pg_dump
            # (waiting on a lock, say) gets there once its children are gone.
            if job.cancel is not None:
                with contextlib.suppress(Exception):
                    job.cancel()
        for job in late:
            job.done.wait(30)
        return late


def wait_for(job: Job) -> Any:
    """The job's result once it is done; its error raised if it failed."""
    job.done.wait()
    if job.error is not None:
        raise job.error
    return job.result
