"""The multipart part-size plan for a streaming upload: pure arithmetic, no I/O, no boto3.

S3's limits: at most 10,000 parts (some providers cap it at 1,000: ``max_parts``), every part
but the last at least 5 MiB, no part over 5 GiB, no object over 5 TiB. A dump's size is only
known once it has ended, so the plan has two layers:

- ``plan_part_size(expected)`` picks the *base* size: the smallest whole number of MiB, at
  least 16 MiB, such that ``base * max_parts`` holds twice the expected size (a database grows
  between the estimate and the dump). Whole MiB rather than doubling because the writer holds
  a bounded number of parts in memory: memory is parts-in-flight x part size, and rounding up
  to the next MiB costs at most 1 MiB a part, where doubling could cost half the part.
- ``next_part_size(n, base, max_parts)`` lets an upload outgrow even that: S3 accepts parts of
  different sizes. The first half of the part limit keeps the base size (that half alone holds
  the estimate, so a dump that stays within it never grows its parts: memory stays flat); past
  it the size doubles every tenth of the other half (every 500 parts of 10,000, every 50 of
  1,000), capped at 5 GiB. Growing from the first part on (doubling every 1,000 parts) would
  also fit, but would make every dump over a fifth of its estimate hold larger parts.

With the defaults (no estimate, base 16 MiB) the schedule's capacity is 8.85 TiB for 10,000
parts, i.e. any object up to S3's 5 TiB limit (the 5 TiB mark is reached at part 9,212, at
5 GiB a part; the first 78 GiB go in flat 16 MiB parts), and 906 GiB for 1,000 parts (a
provider capped at 1,000 parts can never store more than 1,000 x 5 GiB = 4.88 TiB: give an
estimate and the base grows). A fixed 16 MiB part would stop at 156.25 GiB (10,000 parts) and
15.6 GiB (1,000 parts): the "~15 GB" failure peers report. ``largest_object`` computes these
figures; ``tests/unit/test_s3plan.py`` checks them. The price of growth is memory: the part
being filled is as large as the tier it is in (a 5 TiB dump ends in 5 GiB parts).
"""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

S3_MIN_PART = 5 * MiB  # every part but the last
S3_MAX_PART = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT = 5 * TiB

DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_MAX_PARTS = S3_MAX_PARTS
HEADROOM = 2  # plan for twice the estimate
TIERS = 10  # past the flat half, the size doubles this many times (until 5 GiB)


def plan_part_size(
    expected_size: int | None,
    part_size_min: int = DEFAULT_PART_SIZE,
    max_parts: int = DEFAULT_MAX_PARTS,
) -> int:
    """The base part size: whole MiB, >= ``part_size_min``, <= 5 GiB, such that ``max_parts``
    parts of it hold ``HEADROOM`` x ``expected_size`` when that is possible at all (else 5 GiB,
    and ``next_part_size`` cannot help either: every part is already at the maximum).
    ``None`` (no estimate) gives ``part_size_min``. ValueError on limits S3 does not allow."""
    _check_limits(part_size_min, max_parts)
    if expected_size is None or expected_size <= 0:
        return part_size_min
    needed = -(-HEADROOM * expected_size // max_parts)  # ceiling division
    whole_mib = -(-needed // MiB) * MiB
    return min(max(part_size_min, whole_mib), S3_MAX_PART)


def next_part_size(part_number: int, base: int, max_parts: int = DEFAULT_MAX_PARTS) -> int:
    """The size of part ``part_number`` (1-based, as S3 numbers them) in an upload whose first
    part is ``base``: ``base`` up to ``flat_parts(max_parts)``, then doubled every
    ``tier_length(max_parts)`` parts, capped at 5 GiB. The writer fills each part to this size
    before sending it (the last part may be shorter)."""
    _check_limits(base, max_parts)
    if not 1 <= part_number <= max_parts:
        raise ValueError(f"part number {part_number} outside 1..{max_parts}")
    flat = flat_parts(max_parts)
    if part_number <= flat:
        return base
    tier = 1 + (part_number - flat - 1) // tier_length(max_parts)
    if tier >= 32:  # 5 MiB x 2**32 is far past the cap: no huge integers for nothing
        return S3_MAX_PART
    return min(base << tier, S3_MAX_PART)


def flat_parts(max_parts: int) -> int:
    """How many parts keep the base size: half the limit, rounded up (it holds the estimate)."""
    return (max_parts + 1) // 2


def tier_length(max_parts: int) -> int:
    """Past the flat half, how many parts share one size before it doubles."""
    return max(1, (max_parts - flat_parts(max_parts)) // TIERS)


def largest_object(base: int = DEFAULT_PART_SIZE, max_parts: int = DEFAULT_MAX_PARTS) -> int:
    """The largest object an upload starting at ``base`` can store in ``max_parts`` parts:
    the sum of the schedule, capped at S3's 5 TiB object limit."""
    return min(schedule_capacity(base, max_parts), S3_MAX_OBJECT)


def schedule_capacity(base: int, max_parts: int) -> int:
    """The sum of ``next_part_size`` over every part number (no object-size cap), computed
    run by run of equal sizes (no need to add 10,000 parts one by one)."""
    _check_limits(base, max_parts)
    total = 0
    first = 1
    while first <= max_parts:
        if first <= flat_parts(max_parts):
            count = flat_parts(max_parts)
        else:
            count = min(tier_length(max_parts), max_parts - first + 1)
        total += count * next_part_size(first, base, max_parts)
        first += count
    return total


def _check_limits(part_size: int, max_parts: int) -> None:
    if not S3_MIN_PART <= part_size <= S3_MAX_PART:
        raise ValueError(f"part size {part_size} outside S3's {S3_MIN_PART}..{S3_MAX_PART} bytes")
    if not 1 <= max_parts <= S3_MAX_PARTS:
        raise ValueError(f"part limit {max_parts} outside 1..{S3_MAX_PARTS}")
