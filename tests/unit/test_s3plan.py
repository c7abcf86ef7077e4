"""The multipart part-size plan: S3's limits hold for every part, and the documented maxima."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbbackup.storage import s3plan
from sbbackup.storage.s3plan import (
    DEFAULT_PART_SIZE,
    S3_MAX_OBJECT,
    S3_MAX_PART,
    S3_MIN_PART,
    GiB,
    MiB,
    TiB,
    largest_object,
    next_part_size,
    plan_part_size,
    schedule_capacity,
)

part_sizes = st.integers(S3_MIN_PART // MiB, S3_MAX_PART // MiB).map(lambda n: n * MiB)
part_limits = st.integers(1, 10_000)
estimates = st.one_of(st.none(), st.integers(0, 6 * TiB))


def _sizes(base: int, max_parts: int) -> list[int]:
    return [next_part_size(n, base, max_parts) for n in range(1, max_parts + 1)]


def test_documented_maxima_for_the_defaults() -> None:
    """The figures s3plan's docstring (and ARCHITECTURE.md) give, summed part by part."""
    big = sum(_sizes(DEFAULT_PART_SIZE, 10_000))
    small = sum(_sizes(DEFAULT_PART_SIZE, 1_000))
    assert big == schedule_capacity(DEFAULT_PART_SIZE, 10_000) == 9_280_000 * MiB  # 8.85 TiB
    assert largest_object(DEFAULT_PART_SIZE, 10_000) == S3_MAX_OBJECT
    assert small == largest_object(DEFAULT_PART_SIZE, 1_000) == 928_000 * MiB  # 906.25 GiB
    sizes = _sizes(DEFAULT_PART_SIZE, 10_000)
    reached = next(n for n, total in enumerate(accumulate(sizes), 1) if total >= S3_MAX_OBJECT)
    assert (reached, sizes[reached - 1]) == (9_212, S3_MAX_PART)
    # the first half stays flat: 5,000 x 16 MiB = 78.125 GiB in 16 MiB parts
    assert set(sizes[:5_000]) == {DEFAULT_PART_SIZE} and sizes[5_000] == 2 * DEFAULT_PART_SIZE


@given(part_sizes, part_limits)
def test_every_part_within_s3_limits(base: int, max_parts: int) -> None:
    sizes = _sizes(base, max_parts)
    assert all(S3_MIN_PART <= s <= S3_MAX_PART for s in sizes)
    assert all(s % MiB == 0 for s in sizes)
    assert sizes == sorted(sizes)  # never shrinks
    assert sizes[0] == base


@given(part_sizes, part_limits)
def test_capacity_is_the_sum_of_the_parts(base: int, max_parts: int) -> None:
    total = sum(_sizes(base, max_parts))
    assert schedule_capacity(base, max_parts) == total
    assert largest_object(base, max_parts) == min(total, S3_MAX_OBJECT)


@given(part_sizes.filter(lambda b: b >= 6 * MiB))
def test_ten_thousand_parts_hold_any_s3_object(base: int) -> None:
    """With the full part limit and any base from 6 MiB up (the default is 16), the schedule
    reaches S3's 5 TiB object limit; S3's smallest part, 5 MiB, stops just short of it."""
    assert sum(_sizes(base, 10_000)) >= S3_MAX_OBJECT
    assert schedule_capacity(5 * MiB, 10_000) == 5_140_000 * MiB  # 4.90 TiB


@given(estimates, part_limits)
def test_plan_holds_twice_the_estimate(expected: int | None, max_parts: int) -> None:
    base = plan_part_size(expected, DEFAULT_PART_SIZE, max_parts)
    assert DEFAULT_PART_SIZE <= base <= S3_MAX_PART
    assert base % MiB == 0
    if not expected:
        assert base == DEFAULT_PART_SIZE
        return
    # The flat parts alone hold twice the estimate over the whole limit, unless even 5 GiB
    # parts cannot; and the growing schedule holds at least as much.
    possible = max_parts * S3_MAX_PART
    assert base * max_parts >= min(2 * expected, possible)
    assert schedule_capacity(base, max_parts) >= min(2 * expected, possible)
    # The smallest such whole-MiB size: one MiB less would not do (or the minimum applies)
    if DEFAULT_PART_SIZE < base < S3_MAX_PART:
        assert (base - MiB) * max_parts < 2 * expected


@given(estimates, part_limits)
def test_estimate_fits_in_the_flat_half(expected: int | None, max_parts: int) -> None:
    """A dump no larger than its estimate never grows its parts (memory stays flat)."""
    base = plan_part_size(expected, DEFAULT_PART_SIZE, max_parts)
    if expected and 2 * expected <= max_parts * S3_MAX_PART and max_parts >= 2:
        flat = s3plan.flat_parts(max_parts)
        assert next_part_size(flat, base, max_parts) == base
        assert flat * base >= expected


def test_plan_examples() -> None:
    assert plan_part_size(None) == 16 * MiB
    assert plan_part_size(50 * GiB) == 16 * MiB  # 100 GiB fits in 10,000 x 16 MiB
    assert plan_part_size(100 * GiB) == 21 * MiB  # 200 GiB / 10,000 = 20.48 MiB, rounded up
    assert plan_part_size(100 * GiB, max_parts=1_000) == 205 * MiB
    assert plan_part_size(4 * TiB, max_parts=1_000) == S3_MAX_PART  # cannot do better


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plan_part_size(None, 4 * MiB), "part size"),
        (lambda: plan_part_size(None, 6 * GiB), "part size"),
        (lambda: plan_part_size(None, 16 * MiB, 0), "part limit"),
        (lambda: plan_part_size(None, 16 * MiB, 10_001), "part limit"),
        (lambda: next_part_size(0, 16 * MiB, 10), "part number"),
        (lambda: next_part_size(11, 16 * MiB, 10), "part number"),
    ],
)
def test_limits_s3_does_not_allow_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
