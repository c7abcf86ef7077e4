"""Benchmark: CopyCounter throughput against bare ``bytes.count(b"\\n")`` on the same bytes.

Generates plain-dump text in memory (or reads one with --file) and feeds it in chunks the
way sbbackup's pipeline does, timing the counter alone (no pg_dump, no I/O). Shapes:
``data`` (pgbench-like narrow rows), ``text`` (wide text rows with escapes and NULLs) and
``ddl`` (a schema-only dump: many tables, views and functions, no rows) for the SQL lexer.
Usage: python bench/bench_copycount.py [--size-mb 256] [--chunk-kib 1024] [--runs 3]
       python bench/bench_copycount.py --file dump.sql
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbbackup.engines.postgresql.copycount import CopyCounter  # noqa: E402

HEAD = (
    b"\\restrict abc123\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
    b"SET standard_conforming_strings = on;\n"
    b"SELECT pg_catalog.set_config('search_path', '', false);\n\n"
)
TAIL = b"\\unrestrict abc123\n\n"


def data_rows(rng: random.Random, n: int) -> bytes:
    return b"".join(
        b"%d\t%d\t%d\t%s\n" % (i, rng.randrange(100), rng.randrange(-5000, 5000), b" " * 84)
        for i in range(n)
    )


def text_rows(rng: random.Random, n: int) -> bytes:
    words = [
        b"alpha",
        b"beta",
        b"gamma",
        b"delta\\tx",
        b"eps\\\\ilon",
        b"zeta\\nline",
        b"\xc3\xa9t\xc3\xa9",
    ]
    out = []
    for i in range(n):
        body = b" ".join(rng.choice(words) for _ in range(rng.randrange(5, 40)))
        note = b"\\N" if i % 3 == 0 else b"%f" % rng.random()
        out.append(b"%d\t%s\t%s\t2024-01-%02d 12:00:00+00\n" % (i, body, note, i % 28 + 1))
    return b"".join(out)


def table_dump(rows: Callable[[random.Random, int], bytes], size: int) -> bytes:
    """Tables of ~8 MiB each until ``size`` bytes."""
    rng = random.Random(7)
    block = rows(rng, 20000)
    parts = [HEAD]
    total, t = len(HEAD), 0
    while total < size:
        parts.append(
            b"CREATE TABLE public.t%d (\n    a integer,\n    b text,\n    c text,\n"
            b"    d text\n);\n\nCOPY public.t%d (a, b, c, d) FROM stdin;\n" % (t, t)
        )
        reps = max(1, (8 << 20) // len(block))
        parts.append(block * reps)
        parts.append(b"\\.\n\n\n")
        total += len(block) * reps + 120
        t += 1
    parts.append(TAIL)
    return b"".join(parts)


def ddl_dump(size: int) -> bytes:
    parts = [HEAD]
    total, t = len(HEAD), 0
    while total < size:
        stmt = (
            b"--\n-- Name: t%d; Type: TABLE; Schema: public; Owner: postgres\n--\n\n"
            b'CREATE TABLE public.t%d (\n    id bigint NOT NULL,\n    "Mixed Name" text DEFAULT '
            b"'it''s'::text,\n    amount numeric(12,2) CHECK ((amount > (0)::numeric)),\n"
            b"    created timestamp with time zone DEFAULT now()\n);\n\n"
            b"ALTER TABLE public.t%d OWNER TO postgres;\n\n"
            b"CREATE VIEW public.v%d AS\n SELECT t.id, t.amount\n   FROM public.t%d t\n"
            b"  WHERE (t.amount > (10)::numeric);\n\n"
            b"CREATE FUNCTION public.f%d(x integer) RETURNS integer\n    LANGUAGE plpgsql\n"
            b"    AS $$\nBEGIN\n  RETURN x + 1; -- 'quoted'\nEND;\n$$;\n\n"
            b"COMMENT ON TABLE public.t%d IS 'a table; with \"quotes\"';\n\n" % ((t,) * 7)
        )
        parts.append(stmt)
        total += len(stmt)
        t += 1
    parts.append(TAIL)
    return b"".join(parts)


def chunks(buf: bytes, size: int) -> list[bytes]:
    return [buf[i : i + size] for i in range(0, len(buf), size)]


def timed(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def count_with(parts: list[bytes]) -> dict[tuple[str, str], int]:
    counter = CopyCounter()
    for part in parts:
        counter.feed(part)
    return counter.finish()


def views(parts: list[bytes]) -> list[memoryview]:
    """As pipeline.pump_fd hands blocks on: views of part of a larger buffer (copied once)."""
    return [memoryview(bytearray(part) + b"\0")[: len(part)] for part in parts]


def count_views(parts: list[memoryview]) -> dict[tuple[str, str], int]:
    counter = CopyCounter()
    for part in parts:
        counter.feed(part)
    return counter.finish()


def report(name: str, buf: bytes, chunk: int, runs: int) -> None:
    parts = chunks(buf, chunk)
    mb = len(buf) / 1e6
    counts = count_with(parts)
    t_counter = timed(lambda: count_with(parts), runs)
    mviews = views(parts)
    t_views = timed(lambda: count_views(mviews), runs)
    t_count = timed(lambda: [p.count(b"\n") for p in parts], runs)
    rows = sum(counts.values())
    print(
        f"{name:5} {mb:8.1f} MB  {len(counts):5} tables {rows:11} rows | "
        f"CopyCounter {mb / t_counter:7.0f} MB/s  (memoryview slices {mb / t_views:7.0f} MB/s)"
        f" | bytes.count {mb / t_count:7.0f} MB/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", type=Path, help="a plain pg_dump to read instead of generating")
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    chunk = args.chunk_kib << 10
    print(f"chunks of {args.chunk_kib} KiB, best of {args.runs}")
    if args.file:
        report("file", args.file.read_bytes(), chunk, args.runs)
        return
    size = args.size_mb << 20
    report("data", table_dump(data_rows, size), chunk, args.runs)
    report("text", table_dump(text_rows, size), chunk, args.runs)
    report("ddl", ddl_dump(min(size, 32 << 20)), chunk, args.runs)


if __name__ == "__main__":
    main()
