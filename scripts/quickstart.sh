#!/usr/bin/env bash
# The README's first command: install sbbackup, then back up, verify and restore a real
# (embedded SQLite) database. No server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap-venv.sh
demo=$(mktemp -d /tmp/sbbackup-demo.XXXXXX)
export DATABASE_URL="sqlite:///$demo/shop.db" DB_BACKUP_PATH="$demo/backups"
.venv/bin/python - "$demo/shop.db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.executescript("""
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                     total NUMERIC, note TEXT, payload BLOB);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
""")
con.executemany("INSERT INTO customers (name, email) VALUES (?, ?)",
                [(f"customer {i} \u00e9\U0001f600", f"c{i}@example.com") for i in range(1000)])
con.executemany("INSERT INTO orders (customer_id, total, note, payload) VALUES (?, ?, ?, ?)",
                [(i % 1000 + 1, i * 1.5, None if i % 7 else "it's 'quoted'", bytes(range(256)))
                 for i in range(5000)])
con.commit()
PY
sb=.venv/bin/sbbackup
set -x
$sb create
id=$($sb list --json --limit 1 | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$sb verify --deep "$id"
$sb restore "$id" --target-url "sqlite:///$demo/restored.db"
set +x
echo "quick start OK: backup $id verified and restored to $demo/restored.db"
