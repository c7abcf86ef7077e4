"""The fault suite (a package, so this conftest never shadows tests/conftest.py for the
``from conftest import SB`` of other tests).

Sample and full runs: every test module here is marked ``faults``; the cases beyond a small
sample are also marked ``fault_full`` (``harness.sample``). A default run (``make pytest``,
no ``-m``) deselects the ``fault_full`` cases, so it runs a short sample of every fault class;
``-m faults`` (``make faults``) or ``SBBACKUP_FAULTS=full`` runs them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from faults.harness import (  # noqa: F401 - fixtures, registered by being here
    FULL_MARK,
    HERE,
    SEED,
    bench,
    pg_source,
    small_pg_source,
    small_sqlite_source,
    source,
    sqlite_source,
    tally,
)


def full_run(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr") or "")
    return os.environ.get("SBBACKUP_FAULTS") == "full" or (
        "faults" in expr and "not faults" not in expr
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_run(config):
        return
    drop = [i for i in items if i.get_closest_marker(FULL_MARK) and HERE in i.path.parents]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if i not in set(drop)]


def pytest_report_header(config: pytest.Config) -> str:
    return f"fault suite seed: {SEED} (SBBACKUP_FAULT_SEED={SEED} replays this run)"


@pytest.fixture(scope="session", autouse=True)
def _record_seed(record_testsuite_property: Callable[[str, object], None]) -> None:
    record_testsuite_property("fault_seed", SEED)
