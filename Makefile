# `make demo`: install sbbackup and back up, verify and restore an example SQLite database.
# `make test`: install everything the tests need, then ruff, mypy and pytest.
.PHONY: demo test deps lint typecheck pytest bench clean

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

bench: deps
	.venv/bin/python bench/bench_dump.py

clean:
	rm -rf .venv build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
