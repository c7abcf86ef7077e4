"""HTTP plumbing: the threading server, its connection slots and limits, and the request
handler (auth, route, body, handler, JSON out, audit line)."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..config import Settings
from ..errors import ConfigError, SbbackupError
from .app import Api
from .auth import TOKEN_ENV, TOKEN_FILE_ENV, Token, scrub
from .context import Request, Response
from .jobs import Job
from .openapi import openapi_document
from .routes import PUBLIC_HEALTH_PATHS, Route, resolve
from .slots import MAX_CONNECTIONS, MAX_UNAUTHENTICATED, ConnectionSlots
from .wire import (
    MAX_BODY,
    MAX_ID,
    HttpError,
    check_query,
    error_body,
    exc_body,
    query_bool,
    status_for,
)

DRAIN_LIMIT = 8 * MAX_BODY  # a refused body up to this size is read and dropped, not reset
SOCKET_TIMEOUT = 30.0  # seconds a client gets to send a whole request (line, headers, body)
DEFAULT_GRACE = 60.0  # seconds running jobs get to finish on shutdown
_LENGTH_RE = re.compile(r"\d{1,12}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DeadlineReader(io.RawIOBase):
    """The socket's reading side, where no single ``recv`` may wait past ``deadline``: the
    socket timeout alone bounds each silence, so a client trickling a byte now and then could
    otherwise hold its connection (and one of ``MAX_CONNECTIONS``) for ever."""

    def __init__(self, sock: Any, timeout: float) -> None:
        super().__init__()
        self.sock, self.timeout = sock, timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client took too long to send its request")
            self.sock.settimeout(min(self.timeout, left))
        try:
            return int(self.sock.recv_into(buffer))
        finally:
            self.sock.settimeout(self.timeout)  # writes keep the full timeout


class Handler(BaseHTTPRequestHandler):
    """One request: auth, route, body, handler, JSON out, audit line."""

    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "sbbackup"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    body_consumed = False

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the stdlib's reader: it holds a reference that keeps the fd open
        self.reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        """A client gets ``timeout`` seconds, from the end of its previous request, to send the
        whole of the next one (line, headers and body)."""
        self.reader.deadline = time.monotonic() + self.timeout
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        """``100 Continue`` only for a valid token: a body is never invited before that."""
        if self.server.api.authenticate(self.headers.get("Authorization")) is None:
            return True  # no 100; dispatch answers 401 and closes
        return super().handle_expect_100()

    def __getattr__(self, name: str) -> Any:
        """Every method (GET, POST, TRACE, CONNECT, ...) is routed: 401, 404 or 405, not 501."""
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def admit(self, label: str | None, path: str) -> None:
        """Move an authenticated connection to its slot; an unauthenticated one gets this one
        answer (public health, or 401) and is closed after it."""
        slots = self.server.slots
        if label is not None:
            outcome = slots.promote(self.connection)
            if outcome == "ok":
                return
            self.close_connection = True
            if outcome == "evicted":  # its socket is shut already: nobody to answer
                raise ConnectionAbortedError("evicted")
            raise HttpError(
                503, "busy", "too many connections: retry shortly", {"Retry-After": "1"}
            )
        slots.serving(self.connection)
        self.close_connection = True
        if not (self.server.api.public_health and path in PUBLIC_HEALTH_PATHS):
            raise HttpError(
                401, "unauthorized", "authentication required", {"WWW-Authenticate": "Bearer"}
            )

    def dispatch(self) -> None:
        api = self.server.api
        label: str | None = None
        route: Route | None = None
        params: dict[str, str] = {}
        req: Request | None = None
        try:
            url = urlsplit(self.path)
            label = api.authenticate(self.headers.get("Authorization"))
            self.admit(label, url.path)
            segments = [unquote(s, errors="strict") for s in url.path.strip("/").split("/")]
            route, params = resolve(self.command, segments)
            body = self.read_body()
            query = parse_qs(url.query, keep_blank_values=True, errors="strict")
            ctx = api.context(self.client_address[0], label)
            req = Request(self.command, url.path, params, query, body, ctx)
            req.wait = "wait" in query and query_bool(query, "wait")
            check_query(query, route.query)
            response = route.handler(api, req)
        except ConnectionAbortedError:
            return
        except Exception as exc:  # noqa: BLE001 - the request's error boundary
            response = self.error_response(exc)
        if self.body_unread():
            self.discard_body()
            self.close_connection = True  # what is left of it would be read as the next request
        # Audit before answering: a client that has its answer finds the line written.
        if self.command not in ("GET", "HEAD"):
            extra = req.ctx.audit_extra if req is not None else {}
            self.audit(route, params, label, response.status, extra)
        self.respond(response)

    def error_response(self, exc: Exception) -> Response:
        """The answer for an exception raised while handling a request (called in ``except``)."""
        if isinstance(exc, HttpError):
            return Response(exc.status, error_body(exc.code, exc.kind, exc.message), exc.headers)
        if isinstance(exc, SbbackupError):
            return Response(status_for(exc), exc_body(exc))
        if isinstance(exc, UnicodeDecodeError):
            return Response(400, error_body(2, "usage", "the URL is not valid UTF-8"))
        self.server.api.log_traceback()
        message = f"unexpected error ({type(exc).__name__}): please report it"
        return Response(500, error_body(1, "unexpected", message))

    def body_unread(self) -> bool:
        if self.body_consumed:
            return False
        length = self.headers.get("Content-Length", "0").strip()
        return bool(self.headers.get("Transfer-Encoding")) or length not in ("", "0")

    def discard_body(self) -> None:
        """Read a refused body (up to ``DRAIN_LIMIT``) so that a client still sending it gets to
        read the answer instead of a reset connection; a larger or chunked one is not read."""
        length = self.headers.get("Content-Length", "").strip()
        if self.headers.get("Transfer-Encoding") or not _LENGTH_RE.fullmatch(length):
            return
        left = int(length)
        if left > DRAIN_LIMIT:
            return
        with contextlib.suppress(OSError):
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        self.body_consumed = True

    def read_body(self) -> dict[str, Any]:
        if self.command != "POST":
            return {}
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "length_required", "send a Content-Length, not chunked bodies")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(411, "length_required", "POST needs a Content-Length header")
        if not _LENGTH_RE.fullmatch(raw_length.strip()):
            raise HttpError(400, "usage", "invalid Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise HttpError(413, "too_large", f"the body is over {MAX_BODY} bytes")
        if length == 0:
            return {}
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, "unsupported_media_type", "send Content-Type: application/json")
        raw = self.rfile.read(length)
        self.body_consumed = True
        if len(raw) != length:
            raise HttpError(400, "usage", "the body ended early")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise HttpError(400, "usage", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "usage", "the body must be a JSON object")
        return body

    def respond(self, response: Response) -> None:
        if isinstance(response.body, str):
            payload = response.body.encode()
        else:
            payload = (json.dumps(response.body, indent=2) + "\n").encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(OSError):
                self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, header limits) in our JSON shape."""
        self.close_connection = True
        status = HTTPStatus(code)
        body = error_body(2 if code < 500 else 1, "http", message or status.phrase)
        with contextlib.suppress(OSError):
            self.respond(Response(code, body))

    def audit(
        self,
        route: Route | None,
        params: dict[str, str],
        label: str | None,
        status: int,
        extra: Mapping[str, Any],
    ) -> None:
        api = self.server.api
        target = scrub(next(iter(params.values())), api.tokens) if params else None
        try:
            api.state.audit(
                f"api:{route.operation if route else self.command}",
                target[:MAX_ID] if target else None,
                str(status),
                **extra,
                remote=self.client_address[0],
                token=label,
                method=self.command,
                path=scrub(self.path, api.tokens)[:MAX_ID],
            )
        except SbbackupError as exc:
            api.log(f"sbbackup serve: audit log: {exc.message}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        api = self.server.api
        api.log(f"{self.client_address[0]} - {scrub(format % args, api.tokens)}")


class ApiServer(ThreadingHTTPServer):
    """One thread per connection, bounded by ``ConnectionSlots``: at most ``max_connections``
    authenticated and ``max_unauthenticated`` other connections, so slow, idle or token-less
    clients cannot make the server start threads without bound, nor starve real clients."""

    daemon_threads = True
    request_queue_size = 128
    max_connections = MAX_CONNECTIONS
    max_unauthenticated = MAX_UNAUTHENTICATED

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        self.slots = ConnectionSlots(self.max_connections, self.max_unauthenticated)
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.admit(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def shutdown_request(self, request: Any) -> None:
        self.slots.release(request)  # before the close: see ConnectionSlots.admit
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was evicted) mid-answer is no error worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        self.api.log_traceback()


def make_server(
    settings: Settings,
    host: str,
    port: int,
    tokens: list[Token],
    public_health: bool = False,
    log: Callable[[str], None] | None = None,
) -> ApiServer:
    """Refuse to start without a token: on a non-loopback address that would expose backups,
    and on loopback every request would get 401 anyway."""
    if not tokens:
        where = "" if is_loopback(host) else f" on {host}"
        raise ConfigError(
            f"refusing to serve{where} without an API token: set {TOKEN_FILE_ENV} "
            f"(or {TOKEN_ENV}); `sbbackup serve --generate-token` makes one"
        )
    api = Api(settings, tokens, public_health, log, document=openapi_document())
    try:
        return ApiServer((host, port), api)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(server: ApiServer, grace: float = DEFAULT_GRACE) -> list[Job]:
    """Serve until ``server.shutdown()`` (the CLI calls it on SIGTERM), then drain the jobs.
    Returns the jobs that had to be interrupted."""
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return server.api.jobs.drain(grace)
