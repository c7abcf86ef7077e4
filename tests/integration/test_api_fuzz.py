"""Fuzz the REST API from its own OpenAPI document with schemathesis, on loopback.

The bar is no 500 for any generated request (valid or not); the other checks keep the
document honest about status codes, content types and response shapes. Bounded: a fixed
number of examples per operation and a wall-clock budget for the whole run. The budget
(60 s; a run takes about 20 s) only trims operations that already made ``MIN_REQUESTS``
requests, and an operation that ends with fewer, for whatever reason (a spent budget, an
operation hypothesis could not generate for), fails: the test never passes without fuzzing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.api_server import api_servers, url_of
from helpers.pgcluster import Cluster
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from sbbackup import api  # noqa: E402
from sbbackup.config import load_settings  # noqa: E402

TOKEN = "fuzz-token-0123456789abcdef"
EXAMPLES = int(os.environ.get("SBBACKUP_FUZZ_EXAMPLES", "40"))
BUDGET = float(os.environ.get("SBBACKUP_FUZZ_SECONDS", "60"))
MIN_REQUESTS = min(10, EXAMPLES)  # per operation, whatever the budget
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
schema = schemathesis.openapi.from_dict(api.openapi_document())
TALLY: dict[str, Counter[int]] = {}
STARTED: list[float] = []


@pytest.fixture(scope="module")
def base_url(pg: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = "api_fuzz"
    pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {db}")
    pg.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", db=db)
    backups: Path = tmp_path_factory.mktemp("fuzz") / "backups"
    env = {"DATABASE_URL": pg.url(db), "DB_BACKUP_PATH": str(backups), "PATH": os.environ["PATH"]}
    with api_servers(join_timeout=120) as start:
        yield url_of(start(load_settings(env=env), TOKEN, token_name="fuzz", grace=60))
    total = sum(sum(c.values()) for c in TALLY.values())
    statuses: Counter[int] = Counter()
    for c in TALLY.values():
        statuses.update(c)
    print(
        f"\nfuzz: {total} requests over {len(TALLY)} operations in "
        f"{time.monotonic() - STARTED[0]:.1f}s; status counts {dict(sorted(statuses.items()))}"
    )
    pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)


def _requests() -> int:
    return sum(c.total() for c in TALLY.values())


@pytest.fixture
def at_least_min_requests() -> Iterator[None]:
    """Fail the operation (in teardown: hypothesis has run all its examples) unless it made
    ``MIN_REQUESTS`` requests: a fuzz test that sent nothing must not pass."""
    before = _requests()
    yield
    made = _requests() - before
    assert made >= MIN_REQUESTS, (
        f"only {made} request(s), fewer than the minimum of {MIN_REQUESTS} "
        f"(budget {BUDGET:.0f}s spent: {bool(STARTED) and time.monotonic() - STARTED[0] > BUDGET})"
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: Any, base_url: str, at_least_min_requests: None) -> None:
    if not STARTED:
        STARTED.append(time.monotonic())
    made = TALLY.setdefault(case.operation.label, Counter())
    if time.monotonic() - STARTED[0] > BUDGET and made.total() >= MIN_REQUESTS:
        return  # out of time, and this operation had its minimum: skip the rest
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = case.call(base_url=base_url, headers=headers, timeout=30)
    made[response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)
