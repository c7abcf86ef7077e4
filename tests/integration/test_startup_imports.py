"""The small commands load only what they use: the non-timed guard of start-up speed.

Each case runs one command in-process in a fresh interpreter (``sbbackup.cli.main``, what the
console script calls), then prints ``sorted(sys.modules)``. ``--help`` must load neither
rich, yaml, cryptography, psycopg, the use cases, the renderer nor the engines' registry;
``list --json`` neither rich, yaml, cryptography, psycopg nor an engine (the SQLite and
PostgreSQL engines, sqlite3: the catalog is JSON files); the human ``list`` may load rich,
nothing else of those.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from sbbackup.cli import main
sys.argv = ["sbbackup", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stderr.write("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

ENGINES = ("sbbackup.engines.sqlite", "sbbackup.engines.sqlite_dump", "sbbackup.engines.postgresql")
NEVER = ("yaml", "cryptography", "psycopg", "sqlite3", "sbbackup.crypto", *ENGINES)
HEAVY = ("rich", "sbbackup.ops", "sbbackup.render", "sbbackup.engines", "zstandard", *NEVER)


def loaded(env: dict[str, str], *args: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    err, _, probe = proc.stderr.rpartition("\nMODULES ")
    assert probe, proc.stderr
    report = json.loads(probe)
    return report["code"], proc.stdout, report["modules"]


def matching(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``packages`` or inside one."""
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A SQLite source and a catalog of two backups (one of them listed as missing)."""
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_BACKUP_", "SBBACKUP_"))}
    env |= {"DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_PATH": str(tmp_path / "b")}
    for _ in range(2):
        made = subprocess.run(
            [sys.executable, "-m", "sbbackup", "create", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
    (tmp_path / "b" / json.loads(made.stdout)["filename"]).unlink()
    return env


@pytest.mark.parametrize("args", [["--help"], ["list", "--help"], ["create", "--help"], []])
def test_help_loads_no_use_case_no_renderer_and_no_engine(
    env: dict[str, str], args: list[str]
) -> None:
    code, out, modules = loaded(env, *args)
    assert code == 0
    assert "Usage: sbbackup" in out
    assert matching(modules, HEAVY) == []
    assert "click" in modules  # the probe saw the command line's own imports


def test_list_json_loads_no_rich_no_yaml_no_crypto_and_no_engine(env: dict[str, str]) -> None:
    code, out, modules = loaded(env, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert sorted(r["status"] for r in rows) == ["completed", "missing"]
    assert matching(modules, ("rich", *NEVER)) == []
    assert "sbbackup.catalog" in modules  # it did read the catalog


def test_the_human_list_loads_rich_and_still_no_engine(env: dict[str, str]) -> None:
    code, out, modules = loaded(env, "list")
    assert code == 0
    assert out.splitlines()[0].startswith("ID ")
    assert matching(modules, NEVER) == []
    assert "rich.console" in modules


def test_an_error_line_needs_no_rich(env: dict[str, str]) -> None:
    code, out, modules = loaded(env, "show", "nosuch", "--json")
    assert code == 2
    assert matching(modules, ("rich", *NEVER)) == []


SERVER_PROBE = """
import json, os, sys, threading
from sbbackup import api
from sbbackup.config import load_settings
settings = load_settings(None)
server = api.make_server(settings, "127.0.0.1", 0, api.load_tokens(os.environ))
threads = threading.active_count()
server.server_close()
print(json.dumps({"threads": threads, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize(
    ("url", "engine"),
    [
        ("postgresql://backup@127.0.0.1:1/app", ("psycopg", "psycopg.sql", "psycopg.pq")),
        ("sqlite:///{tmp}/app.db", ("sbbackup.engines.sqlite", "sqlite3")),
        # a SQLite source, but a declared restore target on PostgreSQL: its driver too
        ("sqlite:///{tmp}/app.db pg-target", ("sqlite3", "psycopg", "psycopg.sql")),
    ],
)
def test_the_api_server_imports_what_its_threads_use_before_they_start(
    tmp_path: Path, url: str, engine: tuple[str, ...]
) -> None:
    """Request and job threads import nothing for the first time: two of them doing so at once
    can get a half-initialised module. The server is made (no thread yet) with the engine,
    its driver, age and cryptography already loaded; nothing connects to the URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_BACKUP_", "SBBACKUP_"))}
    env = {k: v for k, v in env.items() if not k.startswith("PG")}
    url, _, target = url.partition(" ")
    if target:
        config = tmp_path / "config.yaml"
        config.write_text("api:\n  restoreTargets:\n    staging: postgresql://r@127.0.0.1:1/s\n")
        config.chmod(0o600)
        env["SBBACKUP_CONFIG"] = str(config)
    env |= {
        "DATABASE_URL": url.format(tmp=tmp_path),
        "DB_BACKUP_PATH": str(tmp_path / "b"),
        "SBBACKUP_API_TOKEN": "t" * 40,
    }
    proc = subprocess.run(
        [sys.executable, "-c", SERVER_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["threads"] == 1  # made in the main thread alone
    wanted = (
        "sbbackup.encryption",
        "sbbackup.crypto.age",
        "cryptography.hazmat.primitives.kdf.scrypt",
        *engine,
    )
    missing = [m for m in wanted if m not in report["modules"]]
    assert missing == []
    print(f"{url.split(':')[0]}: {len(report['modules'])} modules loaded before any thread")
