"""README "Install for real use", run for real in a temporary PREFIX and VENV: `make install`
(a venv, pip install of the checkout, the command linked into PREFIX/bin, the man page in
PREFIX/share/man/man1), the installed command working, its crontab naming it, and
`make uninstall` taking it all away.

pip runs with --no-deps (the dependencies come from this test's own environment through a .pth
file) so the test takes seconds, not the half minute a full download-and-install takes;
`make install` without PIP_ARGS is the same steps with the dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _copy_checkout(dest: Path) -> Path:
    """The files a build needs, so the build's own files stay out of the checkout."""
    for name in ("pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "man", dest / "man")
    shutil.copytree(
        ROOT / "sbbackup", dest / "sbbackup", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd="/",  # not the checkout: `python -c` would import sbbackup from the current directory
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_and_uninstall(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy_checkout(src)
    prefix, venv = tmp_path / "usr-local", tmp_path / "opt-sbbackup"
    make = ["make", "-s", "-C", src, f"PREFIX={prefix}", f"VENV={venv}", f"PYTHON={sys.executable}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    _run(*make, "install", "PIP_ARGS=--no-deps", env=env)

    link = prefix / "bin" / "sbbackup"
    assert link.is_symlink() and Path(os.readlink(link)) == venv / "bin" / "sbbackup"
    page = prefix / "share" / "man" / "man1" / "sbbackup.1"
    assert page.read_bytes() == (ROOT / "man" / "sbbackup.1").read_bytes()
    assert (venv / "share" / "man" / "man1" / "sbbackup.1").is_file()  # pip's copy, for pipx
    if shutil.which("man"):
        found = _run("man", "-w", "sbbackup", env={**env, "MANPATH": str(prefix / "share/man")})
        assert found.strip() == str(page)

    site = Path(
        _run(
            venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).strip()
    )
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run(venv / "bin/python", "-c", "import sbbackup; print(sbbackup.__file__)")
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    assert _run(link, "--version").strip() == "sbbackup, version 0.1.0"
    run_env = {**env, "DB_BACKUP_PATH": str(tmp_path / "backups")}
    crontab = _run(link, "crontab", "--cron", "debian", env=run_env)
    jobs = [ln for ln in crontab.splitlines() if ln and not ln.startswith("#")]
    assert jobs and all(f" {link} run-schedule " in ln for ln in jobs), jobs

    _run(*make, "uninstall", env=env)
    assert not link.exists() and not link.is_symlink() and not page.exists()
    assert not venv.exists()
    print(f"installed {link} -> {venv}/bin/sbbackup and {page}; {len(jobs)} crontab lines")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("case", ["empty VENV", "empty PREFIX", "not a venv"])
def test_make_uninstall_refuses_what_it_did_not_install(tmp_path: Path, case: str) -> None:
    """`rm -rf $(VENV)` never runs on an empty VENV or on a directory that is no virtual
    environment (VENV=/usr by mistake), and an empty PREFIX touches nothing under /."""
    prefix, venv = tmp_path / "usr-local", tmp_path / "not-a-venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "sbbackup").write_text("keep\n")
    venv.mkdir()
    (venv / "precious").write_text("keep\n")
    values = {
        "empty VENV": (f"PREFIX={prefix}", "VENV="),
        "empty PREFIX": ("PREFIX=", f"VENV={venv}"),
        "not a venv": (f"PREFIX={prefix}", f"VENV={venv}"),
    }[case]
    proc = subprocess.run(
        ["make", "-s", "-C", ROOT, *values, "uninstall"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    expected = "no virtual environment" if case == "not a venv" else "must not be empty"
    assert expected in proc.stderr, proc.stderr
    assert (venv / "precious").read_text() == "keep\n"
    assert (prefix / "bin" / "sbbackup").read_text() == "keep\n"
    print(f"{case}: make uninstall exit {proc.returncode}, nothing removed")
