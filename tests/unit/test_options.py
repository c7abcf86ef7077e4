"""The use cases' options validate themselves: the one check behind the CLI and the API."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sbbackup.errors import UsageError
from sbbackup.ops import CreateOptions, RestoreOptions


def test_create_options_accept_the_documented_values() -> None:
    assert CreateOptions().level is None
    for level in (1, 3, 22):
        assert CreateOptions(level=level).level == level
    for fmt in ("plain", "custom"):
        assert CreateOptions(format=fmt).format == fmt


@pytest.mark.parametrize("level", [0, 23, -1, True, "3", 3.0])
def test_create_options_refuse_a_bad_level(level: object) -> None:
    with pytest.raises(UsageError, match=r"^field 'level' must be an integer from 1 to 22$"):
        CreateOptions(level=level)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["tar", "", "PLAIN"])
def test_create_options_refuse_an_unknown_format(fmt: str) -> None:
    with pytest.raises(UsageError, match=r"^field 'format' must be one of plain, custom$"):
        CreateOptions(format=fmt)


@pytest.mark.parametrize("jobs", [0, 65, False, "2"])
def test_restore_options_refuse_bad_jobs(jobs: object) -> None:
    with pytest.raises(UsageError, match=r"^field 'jobs' must be an integer from 1 to 64$"):
        RestoreOptions("b", jobs=jobs)  # type: ignore[arg-type]


def test_replace_validates_again() -> None:
    opts = RestoreOptions("b", jobs=64)
    assert replace(opts, restore_id="r").jobs == 64
    with pytest.raises(UsageError):
        replace(opts, jobs=0)
    with pytest.raises(UsageError):
        replace(CreateOptions(level=5), level=99)
