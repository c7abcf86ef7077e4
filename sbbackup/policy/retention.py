"""Retention: a pure function from (backups, policy, now) to keep/remove, with a reason each.

Like restic's ``forget``: nothing here touches storage. The rules, per schedule:

1. the newest ``minKeep`` completed backups (completed and file present: not missing, not
   corrupt) are kept whatever their age, so a run of failures never deletes the last good copy;
2. anything younger than ``retentionDays`` is kept;
3. everything else (old completed backups, failed attempts, missing or corrupt ones, orphan
   data files without a manifest) is removed;
4. never removed, whatever their age: a backup still in progress or abandoned (the sweep of
   dead writers owns those), and a manifest written by a newer sbbackup (that version can
   still read it).

A manifest whose ``createdAt`` is not a time (edited or damaged by hand) is kept, says so, and
never counts as one of the ``minKeep`` good copies: its age is unknown, and letting it take
that place could remove the real newest copy. A backup dated in the future (clock skew) is
younger than any cutoff, so it is kept until the clock catches up.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..model import SCHEMA_VERSION, BackupRecord, Status, parse_iso
from ..results import KEEP, REMOVE, Decision, RetentionPlan

MANUAL = "manual"
DRILL = "test"  # the scheduleId of `sbbackup test`'s own backups (its restore drills)
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RetentionPolicy:
    retentionDays: int
    minKeep: int = 1


def record_time(record: BackupRecord) -> datetime | None:
    """When ``record`` was made, or None when its ``createdAt`` is not a time. A time without
    a zone is read as UTC (sbbackup always writes UTC)."""
    value = record.createdAt
    if not isinstance(value, str):
        return None
    try:
        when = parse_iso(value)
    except ValueError:
        return None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def plan(
    backups: Iterable[BackupRecord],
    policy: RetentionPolicy,
    now: datetime,
    label: str | None = None,
) -> RetentionPlan:
    """Decide every backup of ONE schedule (or the manual group). Newest first in the result."""
    dated = [(t, r) for r in backups if (t := record_time(r)) is not None]
    dated.sort(key=lambda tr: (tr[0], tr[1].id), reverse=True)
    cutoff = now - timedelta(days=policy.retentionDays)
    days = f"{policy.retentionDays}-day retention" + (f" ({label})" if label else "")
    good = [r.id for _, r in dated if r.status == Status.COMPLETED][: policy.minKeep]
    decisions = []
    for created, r in dated:
        if (untouchable := _untouchable(r)) is not None:
            action, reason = KEEP, untouchable
        elif r.id in good:
            rank = good.index(r.id)
            action, reason = (
                KEEP,
                (
                    f"newest completed backup (minKeep {policy.minKeep})"
                    if rank == 0
                    else f"one of the newest {policy.minKeep} completed backups (minKeep)"
                ),
            )
            if created > cutoff:
                reason = f"within {days}; " + reason
        elif created > cutoff:
            action, reason = KEEP, f"within {days}"
        else:
            action, reason = REMOVE, f"{_what(r)} older than {days}"
        decisions.append(_decision(r, action, reason))
    for r in backups:
        if record_time(r) is None:
            reason = (
                f"createdAt {str(r.createdAt)[:40]!r} is not a time, so its age is unknown: "
                "kept (fix or delete this manifest by hand)"
            )
            decisions.append(_decision(r, KEEP, reason))
    return RetentionPlan(decisions)


def _decision(r: BackupRecord, action: str, reason: str) -> Decision:
    return Decision(r.id, r.scheduleId, str(r.createdAt), r.status, r.size, action, reason)


def _untouchable(r: BackupRecord) -> str | None:
    """Why retention must leave ``r`` alone whatever its age, or None."""
    if r.status in (Status.IN_PROGRESS, Status.ABANDONED):
        return f"{r.status}: left to its writer, or to the sweep of dead writers"
    if r.schemaVersion > SCHEMA_VERSION:
        return "written by a newer sbbackup: kept (that version can still read it)"
    return None


def _what(r: BackupRecord) -> str:
    if r.status == Status.COMPLETED:
        return "completed backup"
    if r.status == Status.FAILED:
        return "failed attempt"
    if r.status == Status.ORPHAN:
        return "orphan data file (no manifest)"
    return f"{r.status} backup"


def plan_all(
    backups: Sequence[BackupRecord],
    policies: Mapping[str | None, RetentionPolicy],
    now: datetime,
    only: Collection[str | None] | None = None,
) -> RetentionPlan:
    """Group by ``scheduleId`` and plan each group with its policy; with ``only``, just the
    groups of those schedule IDs (``None`` in it is the manual group).

    ``policies[None]`` is the manual policy (``DB_BACKUP_RETENTION_DAYS``). Backups of a
    schedule that no longer exists follow it too, keeping their own newest copy.
    ``policies[DRILL]``, when given, is the drill backups' own policy
    (``DB_BACKUP_TEST_RETENTION_DAYS``).
    """
    groups: dict[str | None, list[BackupRecord]] = {}
    for r in backups:
        if only is None or r.scheduleId in only:
            groups.setdefault(r.scheduleId, []).append(r)
    manual = policies[None]
    times = {r.id: record_time(r) for r in backups}
    decisions: list[Decision] = []
    for sid, records in groups.items():
        if sid is None:
            part = plan(records, manual, now, MANUAL)
        elif sid == DRILL and DRILL in policies:
            part = plan(records, policies[DRILL], now, "drill backups")
        elif sid in policies:
            part = plan(records, policies[sid], now, f"schedule {sid}")
        else:
            part = plan(
                records,
                RetentionPolicy(manual.retentionDays, max(manual.minKeep, 1)),
                now,
                f"schedule {sid} no longer exists: manual policy",
            )
        decisions.extend(part.decisions)
    # Newest first; manifests without a valid time last.
    decisions.sort(key=lambda d: (times[d.id] or _NEVER, d.id), reverse=True)
    return RetentionPlan(decisions)
