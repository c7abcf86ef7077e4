#!/usr/bin/env python3
"""Write docs/RELIABILITY.md from a run of the fault suite (tests/faults).

    .venv/bin/python scripts/reliability-report.py                 # runs the full fault suite
    .venv/bin/python scripts/reliability-report.py --junit run.xml # reads a run's junit xml

Each fault test records junit properties (tests/faults/conftest.py ``tally``): its fault
class, trials, how many reached their moment, how many held THE INVARIANT, and which known
defects showed. The report is a table of fault classes with those sums, the strict xfails
(known defects) with their reasons, and any failure. It is generated: never edit it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "RELIABILITY.md"


# Issue 12's fault table: (row, fault, expected, the fault classes that cover it). A row no
# fault class matches is printed as such: a gap shows, it is never left out.
TABLE: list[tuple[int, str, str, str]] = [
    (
        1,
        "kill -9 of create at 50+ random moments and at each commit step",
        "invariant; next create sweeps",
        r"^SIGKILL during create|^kill -9 at each commit step|^random signal at random delay"
        r"|^kill -9 between data rename",
    ),
    (2, "kill -9 of pg_dump", "3, names the signal", r"pg_dump"),
    (
        3,
        "SIGTERM/SIGINT at start-up, mid-dump, mid-commit",
        "130, no orphan process, invariant",
        r"^SIG(TERM|INT) during create|^SIGTERM in the first",
    ),
    (4, "server stopped mid-dump", "3", r"server stopped"),
    (
        5,
        "disk full (tmpfs), including exactly at the manifest",
        '4, "No space left on device"',
        r"^disk full",
    ),
    (6, "read-only path", "4 before pg_dump starts", r"read-only"),
    (
        7,
        "1,000+ bit flips across plain, zstd, age and custom, manifest intact and checksum "
        "recomputed",
        "13 every time, with --deep for the second kind",
        r"^bit flip|^data flip",
    ),
    (
        8,
        "truncation and appended data, same two kinds",
        "13",
        r"^truncation|^appended|^data (truncate|append)",
    ),
    (
        9,
        "wrong identity, wrong passphrase",
        "12, target untouched",
        r"wrong (identity|passphrase|key)",
    ),
    (
        10,
        "100 trials of two concurrent run-schedule",
        "one backup, one exit 11",
        r"^two concurrent run-schedule",
    ),
    (11, "kill -9 while holding the lock", "the next run proceeds", r"holding (its|the) lock"),
    (
        12,
        "five failing runs, then retention, now and 60 and 400 days later",
        "every good backup kept that should be",
        r"retention",
    ),
    (13, "umask 000", "0600 files, 0700 directories, parents included", r"umask"),
    (
        14,
        "a password in the URL",
        "never in any /proc/*/cmdline or environ, file or stderr",
        r"password|secret",
    ),
    (
        15,
        "damaged manifests: missing, truncated, wrong types, ../ names, newer schema, deeply "
        "nested, huge",
        "flagged, 13 from verify, never counted good, never a traceback",
        r"^damaged manifest|^manifest (flip|truncate)",
    ),
    (
        16,
        "20 concurrent creates x 20 rounds, mixed formats, plus concurrent prune and delete",
        "zero lost, zero failed",
        r"concurrent creates|same millisecond|mixed|prune and delete",
    ),
]
REPRODUCE = "SBBACKUP_FAULTS=full .venv/bin/pytest -m faults"


@dataclass
class Row:
    tests: int = 0
    passed: int = 0
    xfailed: int = 0
    failed: int = 0
    trials: int = 0
    reached: int = 0
    held: int = 0
    defects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    nodes: set[str] = field(default_factory=set)  # file::function, to reproduce it


def run_suite(junit: Path) -> None:
    cmd = [
        str(ROOT / ".venv" / "bin" / "pytest"),
        "-q",
        "-m",
        "faults",
        "tests/faults",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=legacy",  # per-test properties
        f"--junitxml={junit}",
    ]
    print("running:", " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, cwd=ROOT)
    if not junit.exists():
        sys.exit(f"the fault suite wrote no junit xml (exit {proc.returncode})")


def fault_class(case: ET.Element, props: dict[str, str]) -> str:
    if "fault_class" in props:
        return props["fault_class"]
    name = re.sub(r"\[.*\]$", "", case.get("name", "?"))
    return name.removeprefix("test_").replace("_", " ")


def outcome(case: ET.Element) -> tuple[str, str]:
    for child in case:
        if child.tag == "skipped" and child.get("type") == "pytest.xfail":
            return "xfailed", child.get("message", "")
        if child.tag == "skipped":
            return "skipped", child.get("message", "")
        if child.tag in ("failure", "error"):
            return "failed", (child.get("message") or "").splitlines()[0][:160]
    return "passed", ""


def pg_version() -> str:
    for tool in ("postgres", "pg_dump"):
        found = shutil.which(tool) or next(
            (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))), None
        )
        if found:
            out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
            return out.strip()
    return "not found"


def report(junit: Path) -> str:
    tree = ET.parse(junit)
    suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else list(tree.getroot())
    rows: dict[str, Row] = defaultdict(Row)
    known: dict[str, tuple[str, str]] = {}  # test -> (class, reason)
    failures: list[tuple[str, str]] = []
    seconds = sum(float(s.get("time", 0)) for s in suites)
    seeds = {
        p.get("value")
        for s in suites
        for p in s.iter("property")  # the suite's, and each test's (xdist drops the former)
        if p.get("name") == "fault_seed"
    }
    seed = ", ".join(sorted(str(x) for x in seeds if x)) or "not recorded"
    for case in (c for s in suites for c in s.iter("testcase")):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        # a test with several tallies records several fault_class values; use the last
        cls = fault_class(case, props)
        state, message = outcome(case)
        row = rows[cls]
        test = re.sub(r"\[.*$", "", case.get("name", "?"))
        row.nodes.add(f"{case.get('file', '?')}::{test}")
        row.tests += 1
        if state == "passed":
            row.passed += 1
        elif state == "xfailed":
            row.xfailed += 1
            known[case.get("name", "?")] = (cls, message.removeprefix("reason: "))
        elif state == "failed":
            row.failed += 1
            failures.append((case.get("name", "?"), message))
        row.trials += int(props.get("trials", 0) or 0)
        row.reached += int(props.get("reached", 0) or 0)
        row.held += int(props.get("held", 0) or 0)
        for name, n in json.loads(props.get("defects", "{}") or "{}").items():
            row.defects[name] += n

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability: the fault suite",
        "",
        "<!-- generated by scripts/reliability-report.py (`make reliability`); do not edit -->",
        "",
        f"Generated {now} on {os.cpu_count()} cores, {pg_version()}, Python "
        f"{sys.version.split()[0]}; the suite ran {seconds:.0f} s (`make faults`) with seed "
        f"{seed} (`SBBACKUP_FAULT_SEED={seed} make faults` replays it).",
        "",
        "Every trial drives the real `sbbackup` command line against SQLite or the test "
        "PostgreSQL cluster, injects one fault, then checks THE INVARIANT "
        "(`tests/faults/harness.py:check_invariant`): every completed manifest points at a "
        "data file of its size and SHA-256, `list --json` parses and lists it, "
        "`verify --deep` passes, no run printed a traceback, and a following `create` "
        "succeeds. *Reached* counts trials whose fault hit the create mid-flight (a moment "
        "the create ran past is tried again). *Defects seen* are known defects observed "
        "while the invariant was otherwise checked; each has a strict xfail below.",
        "",
        "| fault class | tests | trials | reached | invariant held | defects seen | "
        "passed / xfail / failed |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for cls in sorted(rows):
        r = rows[cls]
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(r.defects.items())) or "-"
        trials = str(r.trials) if r.trials else "-"
        reached = str(r.reached) if r.trials else "-"
        held = f"{r.held}/{r.trials}" if r.trials else "-"
        lines.append(
            f"| {cls} | {r.tests} | {trials} | {reached} | {held} | {seen} | "
            f"{r.passed} / {r.xfailed} / {r.failed} |"
        )
    total = Row()
    for r in rows.values():
        total.tests += r.tests
        total.trials += r.trials
        total.held += r.held
        total.xfailed += r.xfailed
        total.failed += r.failed
    lines += ["", *fault_table(rows)]
    lines += [
        "",
        f"Total: {total.tests} tests, {total.trials} trials, invariant held in "
        f"{total.held}; {total.xfailed} known-defect xfails, {total.failed} failures.",
        "",
        "## Known defects (strict xfail: each turns into a failure once fixed)",
        "",
    ]
    reasons: dict[str, list[str]] = defaultdict(list)
    for test, (_cls, reason) in sorted(known.items()):
        reasons[reason].append(test)
    for reason, tests in sorted(reasons.items()):
        lines.append(f"- {reason}  \n  ({', '.join(f'`{t}`' for t in tests)})")
    if not reasons:
        lines.append("- none")
    lines += ["", "## Failures", ""]
    lines += [f"- `{t}`: {m}" for t, m in failures] or ["- none"]
    return "\n".join(lines) + "\n"


def fault_table(rows: dict[str, Row]) -> list[str]:
    """Issue 12's table, row by row: the fault classes covering it, their sums, and the
    command that runs them again."""
    out = [
        "## The fault table, row by row",
        "",
        "| # | fault | expected | trials | invariant held | passed / xfail / failed | reproduce |",
        "| ---: | --- | --- | ---: | ---: | --- | --- |",
    ]
    for number, fault, expected, pattern in TABLE:
        mine = [r for cls, r in rows.items() if re.search(pattern, cls)]
        if not mine:
            out.append(f"| {number} | {fault} | {expected} | - | - | no test | - |")
            continue
        trials, held = sum(r.trials for r in mine), sum(r.held for r in mine)
        tests = [sum(getattr(r, k) for r in mine) for k in ("passed", "xfailed", "failed")]
        nodes = sorted({n for r in mine for n in r.nodes})
        cmd = f"`{REPRODUCE} {' '.join(nodes)}`"
        out.append(
            f"| {number} | {fault} | {expected} | {trials or '-'} | "
            f"{f'{held}/{trials}' if trials else '-'} | {' / '.join(map(str, tests))} | {cmd} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, help="read this junit xml instead of running")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.junit:
        junit = args.junit
    else:
        junit = Path(tempfile.mkdtemp(prefix="sbbackup-faults-")) / "faults.xml"
        run_suite(junit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(junit))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
