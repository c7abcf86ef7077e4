#!/usr/bin/env bash
# What the tests need from Debian: a PostgreSQL server (initdb) with the contrib extensions the
# fidelity tests use (file_fdw, hstore, pg_trgm), the age and zstd CLIs, strace.
# Installs only what is missing; fails loudly if it cannot.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have_initdb() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
need=()
# Debian's postgresql-NN ships contrib; elsewhere it may be a package of its own.
have_contrib() { ls /usr/lib/postgresql/*/lib/file_fdw.so /usr/lib/postgresql/*/lib/hstore.so \
  /usr/lib/postgresql/*/lib/pg_trgm.so >/dev/null 2>&1; }
have_initdb || need+=(postgresql postgresql-contrib)
have_initdb && ! have_contrib && need+=(postgresql-contrib)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client)
command -v age >/dev/null 2>&1 || need+=(age)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v strace >/dev/null 2>&1 || need+=(strace)  # the fault suite's kill at each commit step
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
have_initdb || { echo "initdb still missing after installing postgresql" >&2; exit 1; }
have_contrib || { echo "file_fdw/hstore/pg_trgm missing after installing postgresql-contrib" >&2; exit 1; }
command -v age >/dev/null && command -v zstd >/dev/null || { echo "age/zstd missing" >&2; exit 1; }
