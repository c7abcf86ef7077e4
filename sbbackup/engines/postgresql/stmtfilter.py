"""``--no-owner`` and ``--no-privileges`` for plain dumps: psql has no such flags, so the
statements pg_restore would skip are left out of the stream instead.

pg_dump writes an object's owner as one statement ``ALTER <kind> <name> OWNER TO <role>;``
and its privileges as ``GRANT``/``REVOKE`` statements (and ``ALTER DEFAULT PRIVILEGES``),
each starting a line. Only statements that start at top level count: where a statement
starts is decided by ``CopyCounter``'s lexer (the way psql reads the dump), so COPY data, a
string, a dollar-quoted function body or a quoted name that merely looks like one never
matches. A statement is judged whole (quoted names may hold newlines); ``OWNER TO`` must sit
outside every quote. The stream passes through in bulk between candidate lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .copycount import CopyCounter

_KEYWORDS = (b"ALTER ", b"GRANT ", b"REVOKE ")
_LONGEST = max(len(k) for k in _KEYWORDS)
_CANDIDATE = re.compile(rb"\n(?=ALTER |GRANT |REVOKE )")
MAX_STATEMENT = 1 << 20  # an owner or ACL statement is short; a longer one passes unjudged

_ROLE = rb'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)'
_OWNER = re.compile(rb"(ALTER [A-Z][A-Z ]* .*) OWNER TO " + _ROLE + rb";\n", re.DOTALL)
_ACL = re.compile(rb"(?:GRANT |REVOKE |ALTER DEFAULT PRIVILEGES ).*;\n", re.DOTALL)


def dropped(stmt: bytes, owner: bool, privileges: bool) -> bool:
    """Whether the whole top-level statement ``stmt`` (ending in ``;\\n``) is one to leave
    out: an owner (``owner``) or a privilege statement (``privileges``)."""
    if privileges and _ACL.fullmatch(stmt):
        return True
    if owner:
        m = _OWNER.fullmatch(stmt)
        if m:
            lexer = CopyCounter()
            lexer.feed(m.group(1))
            return lexer.in_plain_sql()  # "OWNER TO" itself is not inside a quoted name
    return False


def filter_statements(
    chunks: Iterable[bytes], owner: bool = False, privileges: bool = False
) -> Iterator[bytes]:
    """``chunks`` of a plain dump without its owner (``owner``) and privilege
    (``privileges``) statements. With neither, ``chunks`` unchanged."""
    if not (owner or privileges):
        yield from chunks
        return
    f = _Filter(owner, privileges)
    for chunk in chunks:
        yield from f.feed(bytes(chunk), final=False)
    yield from f.feed(b"", final=True)


class _Filter:
    def __init__(self, owner: bool, privileges: bool) -> None:
        self.owner, self.privileges = owner, privileges
        self.lexer = CopyCounter()
        self.buf = b""  # not yet passed on; begins a line when ``line_start``
        self.line_start = True
        self.stmt: bytearray | None = None  # the candidate statement being collected

    def _emit(self, data: bytes) -> bytes:
        self.lexer.feed(data)
        return data

    def feed(self, chunk: bytes, final: bool) -> Iterator[bytes]:
        buf = self.buf + chunk
        pos = 0
        while pos < len(buf):
            if self.stmt is not None:  # inside a candidate: take whole lines
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if not final:
                        break
                    nl = len(buf) - 1
                line = buf[pos : nl + 1]
                self.stmt += line
                self.lexer.feed(line)
                pos = nl + 1
                if self.lexer.at_statement_start() or final or len(self.stmt) > MAX_STATEMENT:
                    stmt, self.stmt = bytes(self.stmt), None
                    if not dropped(stmt, self.owner, self.privileges):
                        yield stmt
                continue
            if self.line_start and self.lexer.at_statement_start():
                head = buf[pos : pos + _LONGEST]
                if head.startswith(_KEYWORDS):
                    self.stmt = bytearray()
                    continue
                if not final and len(head) < _LONGEST and _prefix(head):
                    break  # "ALT" at the end of the chunk: wait for the rest
            m = _CANDIDATE.search(buf, pos)
            if m is not None:  # pass on up to and including that newline
                yield self._emit(buf[pos : m.start() + 1])
                pos, self.line_start = m.start() + 1, True
                continue
            # No candidate ahead: pass everything on but a possible keyword's beginning.
            cut = len(buf)
            if not final:
                nl = buf.rfind(b"\n", pos)
                tail = buf[nl + 1 :] if nl >= 0 else b""
                if nl >= 0 and len(tail) < _LONGEST and _prefix(tail):
                    cut = nl + 1
            if cut > pos:
                yield self._emit(buf[pos:cut])
                self.line_start = buf[cut - 1] == 10
                pos = cut
            break
        self.buf = buf[pos:]


def _prefix(data: bytes) -> bool:
    """Whether ``data`` may be the beginning of a candidate keyword."""
    return any(k.startswith(data) for k in _KEYWORDS)
