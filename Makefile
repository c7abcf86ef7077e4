# `make demo`: install sbbackup and back up, verify and restore an example SQLite database.
# `make test`: install everything the tests need, then ruff, mypy and pytest.
# `make faults`: the whole fault suite (tests/faults: kill -9/SIGTERM/SIGINT of create, disk
#   full, read-only, bit flips, concurrent creates), each case checked against THE INVARIANT.
#   `make pytest` runs only its sample: tests/faults/conftest.py deselects the cases marked
#   `fault_full` unless pytest runs with -m faults or SBBACKUP_FAULTS=full.
# `make reliability`: `make faults`, then scripts/reliability-report.py writes docs/RELIABILITY.md.
# `make install`: README "Install for real use": a venv in VENV, the command linked into
#   PREFIX/bin, the man page in PREFIX/share/man/man1. `make uninstall` removes all three
#   (refusing an empty PREFIX or VENV, or a VENV without pyvenv.cfg).
#   `make install-check` runs the test that does both in a temporary directory.
FAULT_JOBS ?= 2  # pytest-xdist workers for `make faults`
PREFIX ?= /usr/local
VENV ?= /opt/sbbackup
PYTHON ?= python3
PIP_ARGS ?=
# An empty PREFIX would put the command in /bin; an empty or wrong VENV must never reach rm -rf.
CHECK_DIRS = test -n "$(strip $(PREFIX))" -a -n "$(strip $(VENV))" || \
	{ echo "make: PREFIX and VENV must not be empty" >&2; exit 2; }

.PHONY: demo test deps lint typecheck pytest faults reliability bench bench-cli clean install \
	uninstall install-check

demo:
	bash scripts/quickstart.sh

deps:
	bash scripts/install-test-deps.sh
	bash scripts/bootstrap-venv.sh dev

lint:
	.venv/bin/ruff check sbbackup tests bench
	.venv/bin/ruff format --check sbbackup tests bench
	.venv/bin/lint-imports

typecheck:
	.venv/bin/mypy

pytest:
	.venv/bin/pytest -q -n 2 -p no:cacheprovider

test: deps lint typecheck pytest

faults:
	mkdir -p build
	.venv/bin/pytest -q -n $(FAULT_JOBS) -m faults tests/faults -p no:cacheprovider \
		-o junit_family=legacy --junitxml=build/faults.xml

reliability:
	-$(MAKE) faults
	.venv/bin/python scripts/reliability-report.py --junit build/faults.xml

bench: deps
	.venv/bin/python bench/bench_dump.py

install:
	@$(CHECK_DIRS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(PIP_ARGS) .
	install -d $(PREFIX)/bin $(PREFIX)/share/man/man1
	ln -sfn $(VENV)/bin/sbbackup $(PREFIX)/bin/sbbackup
	install -m 0644 man/sbbackup.1 $(PREFIX)/share/man/man1/sbbackup.1
	-command -v mandb >/dev/null && mandb -q $(PREFIX)/share/man

uninstall:
	@$(CHECK_DIRS)
	@if [ -e "$(VENV)" ] && [ ! -f "$(VENV)/pyvenv.cfg" ]; then \
		echo "make uninstall: $(VENV) is no virtual environment (no pyvenv.cfg): not removed" >&2; \
		exit 2; fi
	rm -f $(PREFIX)/bin/sbbackup $(PREFIX)/share/man/man1/sbbackup.1
	rm -rf -- "$(VENV)"
	-command -v mandb >/dev/null && mandb -q $(PREFIX)/share/man

install-check:
	.venv/bin/pytest -q -p no:cacheprovider tests/integration/test_install.py

# `make bench-cli`: whole-process medians of `sbbackup --help`, `list --json` and `list` over
#   10,000 backups (bench/bench_cli.py; BENCH_ARGS="--python OTHER/.venv/bin/python" compares).
bench-cli:
	.venv/bin/python bench/bench_cli.py $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
