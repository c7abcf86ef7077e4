"""The one bootstrap for the API under test: ``sbbackup.api`` on 127.0.0.1 port 0 in a thread,
and a urllib client for it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbbackup import api
from sbbackup.config import Settings

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.body["error"]
        return err


@dataclass
class Client:
    base: str
    backup_path: Path
    env: dict[str, str]
    server: api.ApiServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.setdefault("Authorization", f"Bearer {token}")
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if data is None and method == "POST":
            data = b""
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return _reply(resp.status, dict(resp.headers), resp.read(), resp.headers)
        except urllib.error.HTTPError as exc:
            return _reply(exc.code, dict(exc.headers), exc.read(), exc.headers)

    def poll(self, path: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.call("GET", path)
            assert reply.status == 200, (path, reply)
            if done(reply.body) or time.monotonic() > deadline:
                return reply.body
            time.sleep(0.05)


def _reply(status: int, headers: dict[str, str], raw: bytes, msg: Any) -> Reply:
    ctype = msg.get("Content-Type", "")
    body: Any = json.loads(raw) if ctype.startswith("application/json") and raw else raw.decode()
    return Reply(status, headers, body)


def url_of(server: api.ApiServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


StartServer = Callable[..., api.ApiServer]


@contextmanager
def api_servers(join_timeout: float = 60) -> Iterator[StartServer]:
    """Yields ``start(settings, token=TOKEN, *, token_name="ci", public_health=False, grace=30,
    log=...)``, which serves ``settings`` on 127.0.0.1 port 0 in a thread and returns the server;
    on exit each server is shut down and its jobs drained (``api.serve`` with ``grace``)."""
    running: list[tuple[api.ApiServer, threading.Thread]] = []

    def start(
        settings: Settings,
        token: str = TOKEN,
        *,
        token_name: str = "ci",
        public_health: bool = False,
        grace: float = 30,
        log: Callable[[str], None] = lambda _: None,
    ) -> api.ApiServer:
        tokens = [api.Token(token_name, token.encode())]
        server = api.make_server(settings, "127.0.0.1", 0, tokens, public_health, log=log)
        thread = threading.Thread(target=api.serve, args=(server, grace), daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    try:
        yield start
    finally:
        for server, thread in running:
            server.shutdown()
            thread.join(join_timeout)
