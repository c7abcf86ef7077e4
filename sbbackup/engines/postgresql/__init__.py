"""PostgreSQL: psycopg 3 for every query; pg_dump, psql and pg_restore dump and load.

``engine`` holds ``PostgreSQLEngine``; ``conn`` the connection parameters and the target
policy; ``client`` the tools, children and sessions; ``inventory`` the catalog queries;
``dump`` and ``restore`` the runs of pg_dump, psql and pg_restore; ``trailer`` how a whole
plain dump ends; ``copycount`` the counter of a plain dump's COPY blocks.

Trust boundaries. What a database contains (names, settings, catalog rows, even from the server
being backed up) is data, never code:

- every query goes through psycopg; identifiers are composed with ``psycopg.sql.Identifier``
  and values travel as parameters; psql's stdin carries only a dump being restored, and
  nothing is parsed back out of a client tool's text output;
- row counts of a plain dump come from the dump stream itself (``copycount``): each
  ``COPY ... FROM stdin`` block is counted as it streams past, so they cover exactly what
  pg_dump wrote and what a restore loads. A custom-format dump is counted by a session in
  pg_dump's exported snapshot while pg_dump runs;
- a target is resolved once (``resolve_target``): connect, read the server's system identifier
  and the host and port actually used, and pin them for every later step (create, drop, load,
  validate), so a name that resolves elsewhere later cannot redirect a DROP;
- children get a minimal environment; a password reaches them only through a private passfile.
"""

from __future__ import annotations

from .client import TOOLS
from .engine import PostgreSQLEngine

__all__ = ["TOOLS", "PostgreSQLEngine", "preload"]


def preload() -> None:
    """Import now what this engine imports on first use (psycopg, its ``sql``, the COPY
    counter): see ``sbbackup.engines.preload``."""
    import psycopg  # noqa: F401
    from psycopg import sql  # noqa: F401

    from . import copycount  # noqa: F401
