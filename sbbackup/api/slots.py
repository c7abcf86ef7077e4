"""Who may hold one of the server's connection threads."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import OrderedDict
from typing import Any

MAX_CONNECTIONS = 64  # connections whose requests carried a valid token
MAX_UNAUTHENTICATED = 16  # connections before (or without) one: the oldest is evicted


class ConnectionSlots:
    """Who may hold one of the server's connection threads.

    A new connection is unauthenticated: it holds one of ``unauthenticated`` places, from its
    accept until a request on it carries a valid token. A newcomer that finds them all taken
    evicts the oldest (preferring one still waiting for its request), whose socket is shut
    down, so idle, slow or token-less clients cannot keep anyone else out. A valid token moves
    the connection to one of ``authenticated`` slots, which it keeps until it closes; past
    that it gets 503.
    """

    def __init__(self, authenticated: int, unauthenticated: int) -> None:
        self._lock = threading.Lock()
        self._free = authenticated
        self._places = unauthenticated
        self._waiting: OrderedDict[Any, bool] = OrderedDict()  # socket -> answering a request
        self._authenticated: set[Any] = set()

    def admit(self, sock: Any) -> None:
        with self._lock:
            if len(self._waiting) >= self._places:
                idle = [s for s, answering in self._waiting.items() if not answering]
                victim = idle[0] if idle else next(iter(self._waiting))
                del self._waiting[victim]
                # Under the lock: a socket is released (here) before it is closed, so this
                # never reaches a descriptor that has since been reused.
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)  # its thread reads EOF and ends
            self._waiting[sock] = False

    def serving(self, sock: Any) -> None:
        with self._lock:
            if sock in self._waiting:
                self._waiting[sock] = True

    def promote(self, sock: Any) -> str:
        """``ok``, ``busy`` (no authenticated slot free) or ``evicted`` (too late)."""
        with self._lock:
            if sock in self._authenticated:
                return "ok"
            if sock not in self._waiting:
                return "evicted"
            if self._free <= 0:
                return "busy"
            del self._waiting[sock]
            self._free -= 1
            self._authenticated.add(sock)
            return "ok"

    def release(self, sock: Any) -> None:
        with self._lock:
            if sock in self._authenticated:
                self._authenticated.discard(sock)
                self._free += 1
            self._waiting.pop(sock, None)

    def counts(self) -> tuple[int, int]:
        """(authenticated, unauthenticated) connections held now."""
        with self._lock:
            return len(self._authenticated), len(self._waiting)
