"""`sbbackup serve`: a small JSON REST API over the same ``ops`` functions as the CLI.

Built on the standard library's ``ThreadingHTTPServer``. Contracts:

- every request needs ``Authorization: Bearer <token>`` (``/api/health`` and ``/metrics`` may be
  opened with ``public_health``, then without any detail that could name a host, a user or a
  URL); tokens come from the environment or a private file, never from argv, and are compared
  in constant time; a missing or wrong token gets the same 401, before any routing, so nothing
  about what exists leaks, and the connection is closed after it;
- a connection takes one of ``MAX_CONNECTIONS`` slots only once a request on it carried a valid
  token; before that it holds one of ``MAX_UNAUTHENTICATED`` places, and a newcomer evicts the
  oldest, so idle or token-less clients cannot starve authenticated ones;
- a client never sends a URL, a path or a libpq parameter: a restore goes to a new database
  named by a bare name on the source's server, to a target the operator declared
  (``api.restoreTargets``), or (SQLite) to a new file named by a bare name in ``api.restoreDir``;
- a client can make a backup stronger, never weaker than the configuration (encryption,
  compression), unless ``api.allowWeakerBackups``, which then marks the audit lines;
- running jobs are capped per kind (``api.maxBackupJobs``, ...): past the cap, 429;
- IDs in paths are percent-decoded per segment and validated by their owners' validators
  (``validate_backup_id``, ``validate_schedule_id``, ...) before any filesystem access;
- bodies are JSON objects of at most ``MAX_BODY`` bytes with a Content-Length;
- long operations (backup, restore, self test, schedule run) run as background jobs; the
  server's shutdown lets them finish for ``grace`` seconds, then interrupts them, which makes
  ``create_backup`` remove its partial file and record the attempt as interrupted;
- every mutating request appends one audit line (remote address, token label, operation, ID,
  HTTP status) besides the lines the operations write themselves;
- messages that reach a client or the log are passed through ``redact_secrets``, and the log
  escapes control characters, so a request line cannot forge log lines.

The package, from the bottom up (each module imports only those above it in this list):

- ``wire``: ID patterns, statuses, limits, body and query fields, the error shape;
- ``auth``: tokens (loading, matching, keeping them out of logs);
- ``jobs``: background jobs, their caps and their drain on shutdown;
- ``context``: one request (``Request``, ``Response``, ``ApiContext``);
- ``policy``: what a client may ask for (restore targets, never a weaker backup);
- ``app``: ``Api``, what one server holds for all requests;
- ``handlers_backups``, ``handlers_schedules``, ``handlers_system``: body -> options -> one
  ops call each;
- ``routes``: the route table, bound to those handler functions;
- ``openapi_schemas``, ``openapi``: the document, built from the table and ``wire``;
- ``slots``, ``server``: HTTP plumbing, connection slots, limits, ``make_server``, ``serve``.
"""

from __future__ import annotations

from .app import Api
from .auth import TOKEN_ENV, TOKEN_FILE_ENV, Token, generate_token, load_tokens
from .context import ApiContext, Request, Response
from .jobs import JOB_CAPS, RETRY_AFTER, Job, Jobs
from .openapi import openapi_document
from .routes import ROUTES, Route
from .server import ApiServer, Handler, make_server, serve
from .slots import MAX_CONNECTIONS, MAX_UNAUTHENTICATED, ConnectionSlots
from .wire import MAX_BODY, QUERY_PARAMS, SCHEDULE_FIELDS, HttpError

__all__ = [
    "JOB_CAPS",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_UNAUTHENTICATED",
    "QUERY_PARAMS",
    "RETRY_AFTER",
    "ROUTES",
    "SCHEDULE_FIELDS",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "Api",
    "ApiContext",
    "ApiServer",
    "ConnectionSlots",
    "Handler",
    "HttpError",
    "Job",
    "Jobs",
    "Request",
    "Response",
    "Route",
    "Token",
    "generate_token",
    "load_tokens",
    "make_server",
    "openapi_document",
    "serve",
]
