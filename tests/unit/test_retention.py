"""Retention is a pure function: table-driven cases and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers.records import record
from hypothesis import given, settings
from hypothesis import strategies as st

from sbbackup.catalog import BackupRecord
from sbbackup.policy.retention import RetentionPolicy, plan, plan_all

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def rec(days_ago: float, status: str = "completed", schedule: str | None = "daily") -> BackupRecord:
    return record(NOW - timedelta(days=days_ago), schedule, status)


CASES = [
    # (name, [(days_ago, status)], retentionDays, minKeep, expected kept days_ago)
    ("all young", [(1, "completed"), (2, "completed")], 7, 1, {1, 2}),
    ("old pruned", [(1, "completed"), (8, "completed"), (30, "completed")], 7, 1, {1}),
    ("newest kept past retention", [(10, "completed"), (20, "completed")], 7, 1, {10}),
    (
        "minKeep 2 past retention",
        [(10, "completed"), (20, "completed"), (30, "completed")],
        7,
        2,
        {10, 20},
    ),
    (
        "failures never delete the last good copy",
        [(1, "failed"), (2, "failed"), (9, "completed"), (12, "completed")],
        7,
        1,
        {1, 2, 9},
    ),
    ("old failures age out", [(1, "completed"), (8, "failed"), (3, "failed")], 7, 1, {1, 3}),
    ("missing is not a good copy", [(8, "missing"), (9, "completed")], 7, 1, {9}),
    (
        "corrupt young kept, old removed",
        [(2, "corrupt"), (8, "corrupt"), (1, "completed")],
        7,
        1,
        {1, 2},
    ),
    ("exactly at retention is removed", [(7, "completed"), (1, "completed")], 7, 1, {1}),
    ("just inside retention is kept", [(6.99, "completed"), (1, "completed")], 7, 1, {1, 6.99}),
    ("nothing completed: only age counts", [(1, "failed"), (9, "failed")], 7, 1, {1}),
    ("empty", [], 7, 1, set()),
]


@pytest.mark.parametrize(
    ("name", "backups", "days", "min_keep", "kept"), CASES, ids=[c[0] for c in CASES]
)
def test_plan_table(
    name: str, backups: list[tuple[float, str]], days: int, min_keep: int, kept: set[float]
) -> None:
    records = [rec(d, s) for d, s in backups]
    by_id = {r.id: d for r, (d, _) in zip(records, backups, strict=True)}
    result = plan(records, RetentionPolicy(days, min_keep), NOW)
    assert {by_id[d.id] for d in result.keep} == kept
    assert len(result.decisions) == len(records)
    assert all(d.reason for d in result.decisions)


def test_reasons_explain_each_decision() -> None:
    records = [rec(10), rec(20), rec(2, "failed"), rec(9, "failed")]
    reasons = {d.id: (d.action, d.reason) for d in plan(records, RetentionPolicy(7), NOW).decisions}
    assert reasons[records[0].id] == ("keep", "newest completed backup (minKeep 1)")
    assert reasons[records[1].id] == ("remove", "completed backup older than 7-day retention")
    assert reasons[records[2].id] == ("keep", "within 7-day retention")
    assert reasons[records[3].id] == ("remove", "failed attempt older than 7-day retention")


def test_plan_all_groups_by_schedule_and_manual_policy() -> None:
    records = [
        rec(3, schedule="daily"),
        rec(9, schedule="daily"),
        rec(20, schedule="weekly"),
        rec(40, schedule="weekly"),
        rec(10, schedule=None),
        rec(45, schedule=None),
        rec(50, schedule="gone"),
        rec(60, schedule="gone"),
    ]
    policies = {
        None: RetentionPolicy(30),
        "daily": RetentionPolicy(7),
        "weekly": RetentionPolicy(30),
    }
    result = plan_all(records, policies, NOW)
    removed = {r.id for r in records} & {d.id for d in result.remove}
    assert removed == {records[1].id, records[3].id, records[5].id, records[7].id}
    gone = next(d for d in result.decisions if d.id == records[7].id)
    assert "no longer exists" in gone.reason
    only = plan_all(records, policies, NOW, only={"weekly"})
    assert {d.scheduleId for d in only.decisions} == {"weekly"}


# --- properties ----------------------------------------------------------------------------

STATUSES = st.sampled_from(["completed", "completed", "failed", "missing", "corrupt"])
BACKUPS = st.lists(
    st.tuples(st.floats(0, 400, allow_nan=False), STATUSES),
    max_size=30,
    unique_by=lambda t: round(t[0], 6),
)
POLICIES = st.builds(RetentionPolicy, st.integers(1, 365), st.integers(1, 5))


def _records(backups: list[tuple[float, str]]) -> list[BackupRecord]:
    out = []
    for i, (days, status) in enumerate(backups):
        out.append(record(NOW - timedelta(days=days), "daily", status, tag=str(i)))
    return out


@settings(max_examples=300, deadline=None)
@given(BACKUPS, POLICIES)
def test_never_removes_newest_completed(
    backups: list[tuple[float, str]], policy: RetentionPolicy
) -> None:
    records = _records(backups)
    completed = sorted(
        (r for r in records if r.status == "completed"),
        key=lambda r: (r.createdAt, r.id),
        reverse=True,
    )
    removed = {d.id for d in plan(records, policy, NOW).remove}
    for r in completed[: policy.minKeep]:
        assert r.id not in removed


@settings(max_examples=300, deadline=None)
@given(BACKUPS, POLICIES)
def test_never_removes_anything_younger_than_retention(
    backups: list[tuple[float, str]], policy: RetentionPolicy
) -> None:
    records = _records(backups)
    by_id = {r.id: r for r in records}
    for d in plan(records, policy, NOW).remove:
        assert NOW - by_id[d.id].created >= timedelta(days=policy.retentionDays)


@settings(max_examples=300, deadline=None)
@given(BACKUPS, POLICIES)
def test_idempotent(backups: list[tuple[float, str]], policy: RetentionPolicy) -> None:
    records = _records(backups)
    first = plan(records, policy, NOW)
    kept = {d.id for d in first.keep}
    second = plan([r for r in records if r.id in kept], policy, NOW)
    assert second.remove == []
    assert {d.id for d in second.keep} == kept


def test_an_undated_manifest_is_kept_and_never_takes_the_last_good_copys_place() -> None:
    # A hand-edited manifest's createdAt sorted as the "newest" string; it must neither crash
    # the plan nor count as the one copy minKeep protects.
    garbage, naive, good, old = rec(0), rec(1, "failed"), rec(10), rec(20)
    garbage.createdAt = "garbage"
    naive.createdAt = naive.createdAt.rstrip("Z")  # no zone: read as UTC
    decisions = {
        d.id: d for d in plan([garbage, naive, good, old], RetentionPolicy(7), NOW).decisions
    }
    assert decisions[garbage.id].action == "keep"
    assert "'garbage' is not a time" in decisions[garbage.id].reason
    assert decisions[naive.id].reason == "within 7-day retention"
    assert decisions[good.id].reason == "newest completed backup (minKeep 1)"
    assert decisions[old.id].action == "remove"
    # and only the undated one is kept when it is all there is besides a failure
    fail = rec(30, "failed")
    assert [d.action for d in plan([garbage, fail], RetentionPolicy(7), NOW).decisions] == [
        "remove",
        "keep",
    ]


def test_a_backup_dated_in_the_future_is_kept() -> None:
    # Clock skew: the future-dated copy is a good copy and is kept (younger than any cutoff);
    # the older ones age out as usual, so a good copy always remains.
    future, recent, old = rec(-30), rec(3), rec(10)
    result = plan([old, recent, future], RetentionPolicy(7), NOW)
    assert [d.id for d in result.keep] == [future.id, recent.id]
    assert [d.id for d in result.remove] == [old.id]
    assert plan_all([old, recent, future], {None: RetentionPolicy(7)}, NOW).decisions[0].id == (
        future.id
    )
