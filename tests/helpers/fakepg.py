"""A fake PostgreSQL server for tests: stdlib sockets and threads, protocol v3.

It listens on a loopback address other than 127.0.0.1 (so a test can tell "the real cluster"
from "this server" by host alone), on port 0. It speaks enough of the wire protocol for libpq
clients (psycopg 3, psql, pg_restore): SSL/GSSENC requests are declined, trust, cleartext or md5
authentication, simple queries (several statements per message), the extended protocol
(Parse/Bind/Describe/Execute/Close/Sync/Flush, named statements and portals), COPY FROM STDIN,
COPY TO STDOUT, CancelRequest and Terminate.

What a query returns comes from a responder: a callable given a ``Query`` that returns ``Rows``,
``Command``, ``Error``, ``CopyIn``, ``CopyOut``, ``Sleep`` or ``Disconnect``, or ``None`` for the
default answer (``default_response``: a FROM-less ``SELECT`` answers one row, a ``SELECT ...
FROM`` none, ``SHOW`` the reported setting, other statements their command tag, ``COPY FROM
STDIN`` accepts the data). Everything a client sent is logged per connection (``Session``):
startup parameters, the password message, every executed statement with its parameters, COPY
data. Use it as a context manager::

    with FakePG(responder, auth="cleartext") as srv:
        psycopg.connect(srv.conninfo(password="pw"))
        assert srv.sessions[0].password == "pw"

A responder that raises, or a bug in the server itself, is answered to the client as an
``XX000`` error and re-raised when the ``with`` block ends, so a broken fixture never passes a
test silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

HOST = "127.0.0.2"
PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 19, 20, 21, 23, 25, 26
FLOAT4, FLOAT8, UNKNOWN, VARCHAR, NUMERIC = 700, 701, 705, 1043, 1700
TYPE_LEN = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, OID: 4, FLOAT4: 4, FLOAT8: 8, NAME: 64}
TEXTUAL = {TEXT, VARCHAR, NAME, UNKNOWN, 0, 1042}


# --- what a responder returns --------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """A result set. ``types`` are type OIDs per column; by default guessed from the values
    (int -> int8, bool, float -> float8, bytes -> bytea, anything else -> text). A ``bytes``
    value in a text column is sent as it is (for invalid UTF-8)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[object]] = ()
    types: Sequence[int] | None = None
    tag: str | None = None  # default "SELECT <number of rows>"


@dataclass(frozen=True)
class Command:
    tag: str


@dataclass(frozen=True)
class Error:
    message: str
    sqlstate: str = "XX000"
    severity: str = "ERROR"  # "FATAL" closes the connection after the message


@dataclass(frozen=True)
class CopyIn:
    """Accept COPY data from the client until CopyDone (or CopyFail)."""

    columns: int = 1


@dataclass(frozen=True)
class CopyOut:
    lines: Sequence[str | bytes] = ()
    columns: int = 1


@dataclass(frozen=True)
class Sleep:
    """Answer nothing for ``seconds`` (a CancelRequest ends it with 57014), then ``then``."""

    seconds: float
    then: Result | None = None


@dataclass(frozen=True)
class Disconnect:
    """Drop the connection without a word, like a server that crashed mid-query."""


Result = Rows | Command | Error | CopyIn | CopyOut | Sleep | Disconnect


@dataclass
class Session:
    """Everything one client connection sent."""

    number: int
    peer: tuple[str, int]
    pid: int
    key: int
    ssl_requests: int = 0
    gss_requests: int = 0
    protocol: int = 0
    startup: dict[str, str] = field(default_factory=dict)
    #: The last PasswordMessage exactly as it arrived (cleartext, or "md5..." for md5 auth);
    #: None when the client never sent one.
    password: str | None = None
    passwords: list[str] = field(default_factory=list)
    salt: bytes = b""
    authenticated: bool = False
    parameters: dict[str, str] = field(default_factory=dict)  # as reported (ParameterStatus)
    queries: list[Query] = field(default_factory=list)
    copy_data: list[bytes] = field(default_factory=list)
    copy_failures: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    terminated: bool = False  # the client said Terminate ('X')
    cancelled: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)  # the server hung up

    @property
    def user(self) -> str | None:
        return self.startup.get("user")

    @property
    def database(self) -> str | None:
        return self.startup.get("database", self.startup.get("user"))

    def md5_of(self, password: str) -> str:
        """What a client knowing ``password`` sends to this session's md5 challenge."""
        return md5_password(password, self.user or "", self.salt)


@dataclass(frozen=True)
class Query:
    """One statement a client asked to run."""

    text: str
    #: Bind parameter values (text form; bytes for bytea or an unknown binary type), or None
    #: for the simple query protocol.
    params: tuple[str | bytes | None, ...] | None
    param_types: tuple[int, ...] = ()
    session: Session | None = field(default=None, compare=False, repr=False)
    describing: bool = False  # asked by Describe of a statement: not executed, not logged

    @property
    def upper(self) -> str:
        return " ".join(self.text.split()).upper()


Responder = Callable[[Query], Result | None]


def md5_password(password: str, user: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


# --- a little SQL lexer: statement splitting and select lists ------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # word, ident (quoted), string, number, param, op, cast
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>--[^\n]*)
    |(?P<string>[eE]'(?:[^'\\]|\\.|'')*'?|'(?:[^']|'')*'?)
    |(?P<ident>"(?:[^"]|"")*"?)
    |(?P<param>\$\d+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<word>[^\W\d][\w$]*)
    |(?P<cast>::)
    |(?P<op>.)""",
    re.X | re.S,
)
_DOLLAR_RE = re.compile(r"\$([^\W\d]\w*)?\$")


def tokens(sql: str) -> list[Token]:
    """SQL tokens without whitespace and comments; strings, quoted names, dollar quotes and
    nested block comments are single tokens (an unterminated one runs to the end)."""
    out: list[Token] = []
    i = 0
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < len(sql) and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
            continue
        dollar = _DOLLAR_RE.match(sql, i)
        if dollar:
            close = sql.find(dollar.group(0), dollar.end())
            end = len(sql) if close < 0 else close + len(dollar.group(0))
            out.append(Token("string", sql[i:end], i, end))
            i = end
            continue
        m = _TOKEN_RE.match(sql, i)
        assert m is not None  # the last alternative matches any character
        kind = m.lastgroup or "op"
        if kind not in ("ws", "comment"):
            out.append(Token(kind, m.group(0), i, m.end()))
        i = m.end()
    return out


def split_statements(sql: str) -> list[str]:
    """The statements of a simple query, split at top-level semicolons (empty ones dropped)."""
    stmts: list[str] = []
    start, seen = 0, False
    for tok in tokens(sql):
        if tok.kind == "op" and tok.text == ";":
            if seen:
                stmts.append(sql[start : tok.start].strip())
            start, seen = tok.end, False
        else:
            seen = True
    if seen:
        stmts.append(sql[start:].strip())
    return stmts


def leading_words(sql: str, n: int = 4) -> list[str]:
    """The first ``n`` tokens, upper-cased (after any opening parentheses)."""
    toks = tokens(sql)
    while toks and toks[0].text == "(":
        toks = toks[1:]
    return [t.text.upper() for t in toks[:n]]


@dataclass(frozen=True)
class Column:
    name: str  # the output column name PostgreSQL would give (alias, column, function)
    expr: str  # the select-list expression, as written


@dataclass(frozen=True)
class Select:
    columns: tuple[Column, ...]
    has_from: bool
    grouped: bool


_SELECT_END = {
    "FROM",
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "FOR",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "INTO",
}
_NOT_ALIAS = {"END", "NULL", "TRUE", "FALSE", "ASC", "DESC", "ZONE", "DISTINCT", "ALL"}


def _unquote(tok: Token) -> str:
    if tok.kind == "ident":
        return tok.text[1:-1].replace('""', '"') if tok.text.endswith('"') else tok.text[1:]
    return tok.text.lower()


def _depths(toks: Sequence[Token]) -> Iterator[tuple[int, Token]]:
    """Each token with the bracket depth it sits at (a bracket at the depth outside it)."""
    depth = 0
    for tok in toks:
        if tok.kind == "op" and tok.text in ")]":
            depth -= 1
        yield depth, tok
        if tok.kind == "op" and tok.text in "([":
            depth += 1


def _split_commas(toks: Sequence[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    for depth, tok in _depths(toks):
        if depth == 0 and tok.kind == "op" and tok.text == ",":
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _column(sql: str, ex: list[Token]) -> Column:
    text = sql[ex[0].start : ex[-1].end]
    last = ex[-1]
    if last.kind in ("word", "ident") and len(ex) >= 2:
        prev = ex[-2]
        if prev.upper == "AS":
            return Column(_unquote(last), sql[ex[0].start : ex[-3].end] if len(ex) > 2 else "")
        follows_value = prev.kind not in ("op", "cast") or prev.text in (")", "]")
        if follows_value and last.upper not in _NOT_ALIAS:  # "count(*) n": a bare alias
            return Column(_unquote(last), sql[ex[0].start : prev.end])
    # No alias: a column reference names itself, a function call its function.
    body = ex
    for i, tok in enumerate(ex):
        if tok.kind == "cast":
            body = ex[:i]
            break
    if body and all(t.kind in ("word", "ident") or t.text == "." for t in body):
        return Column(_unquote(body[-1]), text)
    if len(body) >= 2 and body[1].text == "(" and body[0].kind in ("word", "ident"):
        return Column(_unquote(body[0]), text)
    if len(body) >= 4 and body[1].text == "." and body[3].text == "(":
        return Column(_unquote(body[2]), text)
    return Column("?column?", text)


def parse_select(sql: str) -> Select | None:
    """The output columns of a statement that returns rows (SELECT, WITH ... SELECT, VALUES,
    SHOW, TABLE, EXPLAIN), or None for one that does not."""
    toks = tokens(sql)
    while toks and toks[0].text == "(":
        toks = toks[1:]
    if not toks:
        return None
    head = toks[0].upper
    if head == "SHOW":
        name = " ".join(t.text.lower() for t in toks[1:]) or "?column?"
        return Select((Column(name, sql),), False, False)
    if head == "EXPLAIN":
        return Select((Column("QUERY PLAN", sql),), True, False)
    if head == "TABLE":
        return Select((Column("?column?", sql),), True, False)
    if head == "WITH":
        for depth, tok in _depths(toks[1:]):
            if depth == 0 and tok.upper in ("SELECT", "VALUES", "INSERT", "UPDATE", "DELETE"):
                if tok.upper not in ("SELECT", "VALUES"):
                    return None
                toks = toks[toks.index(tok) :]
                head = tok.upper
                break
        else:
            return None
    if head == "VALUES":
        inner: list[Token] = []
        for depth, tok in _depths(toks[1:]):
            if depth == 0 and tok.text == ")":
                break
            if depth >= 1:
                inner.append(tok)
        cols = [
            Column(f"column{i + 1}", sql[p[0].start : p[-1].end])
            for i, p in enumerate(_split_commas(inner))
        ]
        return Select(tuple(cols), False, False)
    if head != "SELECT":
        return None
    rest = toks[1:]
    if rest and rest[0].upper in ("DISTINCT", "ALL"):
        rest = rest[1:]
        if rest and rest[0].upper == "ON" and len(rest) > 1 and rest[1].text == "(":
            for i, (depth, tok) in enumerate(_depths(rest[1:])):
                if depth == 0 and tok.text == ")":
                    rest = rest[i + 2 :]
                    break
    select_list: list[Token] = []
    has_from = grouped = False
    for depth, tok in _depths(rest):
        if depth < 0:
            break
        if depth == 0 and (tok.upper in _SELECT_END or tok.text == ";"):
            has_from = tok.upper == "FROM"
            tail = rest[rest.index(tok) :]
            grouped = any(d == 0 and t.upper == "GROUP" for d, t in _depths(tail))
            has_from = has_from or any(d == 0 and t.upper == "FROM" for d, t in _depths(tail))
            break
        select_list.append(tok)
    found = tuple(_column(sql, part) for part in _split_commas(select_list))
    return Select(found or (Column("?column?", ""),), has_from, grouped)


_CAST_TYPES = {
    INT8: ("int8", "bigint"),
    INT4: ("int", "int4", "integer"),
    INT2: ("int2", "smallint"),
    BOOL: ("bool", "boolean"),
    FLOAT8: ("float8", "double precision", "float"),
    NUMERIC: ("numeric", "decimal"),
    OID: ("oid", "regclass", "regproc", "regtype"),
    BYTEA: ("bytea",),
    NAME: ("name",),
}


def union_branches(sql: str) -> list[str]:
    """The branches of a top-level UNION / INTERSECT / EXCEPT (the statement itself if none)."""
    toks = tokens(sql)
    out: list[str] = []
    start = 0
    depth = 0
    for i, tok in enumerate(toks):
        if tok.kind == "op" and tok.text in ")]":
            depth -= 1
        elif tok.kind == "op" and tok.text in "([":
            depth += 1
        elif depth == 0 and tok.upper in ("UNION", "INTERSECT", "EXCEPT"):
            out.append(sql[start : tok.start].strip())
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            start = nxt.end if nxt and nxt.upper in ("ALL", "DISTINCT") else tok.end
    out.append(sql[start:].strip())
    return out


def subquery(expr: str) -> str | None:
    """The SELECT inside a parenthesised scalar subquery expression, or None."""
    toks = tokens(expr)
    if len(toks) > 2 and toks[0].text == "(" and toks[-1].text == ")" and toks[1].upper == "SELECT":
        return expr[toks[1].start : toks[-1].start]
    return None


def guess_type(expr: str) -> int:
    """The type OID PostgreSQL would most likely report for a select-list expression."""
    inner = subquery(expr)
    if inner is not None:
        select = parse_select(inner)
        return guess_type(select.columns[0].expr) if select else TEXT
    text = " ".join(expr.split()).lower()
    cast = re.search(r"::\s*(?:pg_catalog\.)?([a-z0-9_ ]+?)\s*$", text)
    if cast:
        for oid, names in _CAST_TYPES.items():
            if cast.group(1) in names:
                return oid
        return TEXT
    if re.match(r"(pg_catalog\.)?count\s*\(", text) or text.startswith("pg_database_size("):
        return INT8
    if re.fullmatch(r"[+-]?\d+", text):
        return INT4 if abs(int(text)) < 2**31 else INT8
    if text in ("true", "false") or re.match(r"(not\s+)?exists\s*\(", text):
        return BOOL
    return TEXT


# --- the default answers ---------------------------------------------------------------------


def command_tag(sql: str) -> str:
    words = leading_words(sql, 6)
    if not words:
        return ""
    kw = words[0]
    if kw in ("CREATE", "ALTER", "DROP"):
        rest = [w for w in words[1:] if w not in ("OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY")]
        rest = [w for w in rest if w not in ("UNLOGGED", "GLOBAL", "LOCAL", "TRUSTED")]
        obj = rest[:2] if rest[:1] in (["MATERIALIZED"], ["FOREIGN"], ["EVENT"]) else rest[:1]
        return " ".join([kw, *obj])
    fixed = {
        "INSERT": "INSERT 0 1",
        "UPDATE": "UPDATE 0",
        "DELETE": "DELETE 0",
        "MERGE": "MERGE 0",
        "END": "COMMIT",
        "ABORT": "ROLLBACK",
        "DECLARE": "DECLARE CURSOR",
        "CLOSE": "CLOSE CURSOR",
        "LOCK": "LOCK TABLE",
        "TRUNCATE": "TRUNCATE TABLE",
        "MOVE": "MOVE 0",
        "FETCH": "FETCH 0",
        "COPY": "COPY 0",
    }
    if kw in fixed:
        return fixed[kw]
    if kw == "START":
        return "START TRANSACTION"
    if kw == "DISCARD":
        return " ".join(words[:2])
    if kw == "ROLLBACK" and "PREPARED" in words[:2]:
        return "ROLLBACK PREPARED"
    return kw


def _copy_response(sql: str) -> Result:
    toks = tokens(sql)
    columns = 1
    if len(toks) > 2 and toks[1].text != "(":
        after = toks[2:]
        while after and after[0].text == ".":  # schema.table
            after = after[2:]
        if after and after[0].text == "(":
            inner = []
            for depth, tok in _depths(after):
                if depth == 0 and tok.text == ")":
                    break
                if depth >= 1:
                    inner.append(tok)
            columns = max(1, len(_split_commas(inner)))
    words = [t.upper for d, t in _depths(toks) if d == 0]
    for i, word in enumerate(words[:-1]):
        if word == "FROM" and words[i + 1] == "STDIN":
            return CopyIn(columns)
        if word == "TO" and words[i + 1] == "STDOUT":
            return CopyOut((), columns)
    return Command("COPY 0")


def _literal(expr: str, query: Query) -> object:
    """The value of a FROM-less select-list expression the default answer can work out."""
    toks = tokens(expr)
    for i, tok in enumerate(toks):
        if tok.kind == "cast":
            toks = toks[:i]
            break
    session = query.session
    inner = subquery(expr)
    if inner is not None:
        answer = default_response(Query(inner, query.params, query.param_types, session))
        return answer.rows[0][0] if isinstance(answer, Rows) and answer.rows else None
    if len(toks) == 1:
        tok = toks[0]
        if tok.kind == "number":
            return int(tok.text) if tok.text.isdigit() else float(tok.text)
        if tok.upper in ("TRUE", "FALSE"):
            return tok.upper == "TRUE"
        if tok.kind == "string" and tok.text.startswith("'"):
            return tok.text[1:-1].replace("''", "'")
        if tok.kind == "param" and query.params is not None:
            n = int(tok.text[1:]) - 1
            return query.params[n] if n < len(query.params) else None
        if tok.upper in ("CURRENT_USER", "SESSION_USER", "USER", "CURRENT_ROLE") and session:
            return session.user
    name = "".join(t.text.lower() for t in toks)
    if session and name in ("current_database()", "pg_catalog.current_database()"):
        return session.database
    if session and name in ("version()", "pg_catalog.version()"):
        return f"PostgreSQL {session.parameters.get('server_version', '')} (fakepg)"
    if session and name in ("pg_backend_pid()", "pg_catalog.pg_backend_pid()"):
        return session.pid
    if name.startswith(("count(", "pg_catalog.count(")):
        return 0
    return None


def _show(name: str, session: Session | None) -> str | None:
    params = {k.lower(): v for k, v in (session.parameters if session else {}).items()}
    if name == "server_version_num":
        major, _, minor = params.get("server_version", "15.0").partition(".")
        return str(int(major) * 10000 + int(minor or 0))
    return params.get(name, "")


def default_response(query: Query) -> Result:
    """What an empty, obliging cluster answers."""
    words = leading_words(query.text, 2)
    kw = words[0] if words else ""
    if kw == "COPY":
        return _copy_response(query.text)
    if kw == "FETCH":
        return Rows(["?column?"], [], [TEXT], tag="FETCH 0")
    select = parse_select(query.text)
    if select is None:
        return Command(command_tag(query.text))
    names = [c.name for c in select.columns]
    types = [guess_type(c.expr) for c in select.columns]
    if kw == "SHOW":
        return Rows(names, [[_show(names[0], query.session)]], [TEXT])
    rows: list[list[object]] = []
    for branch in union_branches(query.text):  # UNION ALL: each branch's rows, in order
        rows += _default_rows(parse_select(branch) or select, query)
    return Rows(names, rows, types)


def _default_rows(select: Select, query: Query) -> list[list[object]]:
    cols = select.columns
    if not select.has_from:
        return [[_literal(c.expr, query) for c in cols]]
    if not select.grouped and all(
        guess_type(c.expr) == INT8 and "count" in c.expr.lower() for c in cols
    ):
        return [[0] * len(cols)]  # an aggregate over no rows still answers one row
    return []


# --- wire encoding -----------------------------------------------------------------------------


class _Closed(Exception):
    """The client went away (or the server is stopping)."""


def _cstr(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def _guess_oid(value: object) -> int:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT8
    if isinstance(value, float):
        return FLOAT8
    if isinstance(value, Decimal):
        return NUMERIC
    return TEXT


def _column_types(rows: Rows) -> list[int]:
    if rows.types is not None:
        return list(rows.types)
    types = []
    for i in range(len(rows.columns)):
        values = [r[i] for r in rows.rows if i < len(r) and r[i] is not None]
        types.append(_guess_oid(values[0]) if values else TEXT)
    return types


def _encode_value(value: object, oid: int, fmt: int) -> bytes | None:
    if value is None:
        return None
    if fmt == 1:
        return _encode_binary(value, oid)
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, bytes):
        return b"\\x" + value.hex().encode() if oid == BYTEA else value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode("utf-8", "surrogateescape")


def _encode_binary(value: Any, oid: int) -> bytes:
    ints = {INT2: ">h", INT4: ">i", INT8: ">q", OID: ">I"}
    if oid in ints:
        return struct.pack(ints[oid], int(value))
    if oid == BOOL:
        return b"\x01" if value in (True, "t", "true", 1) else b"\x00"
    if oid in (FLOAT4, FLOAT8):
        return struct.pack(">f" if oid == FLOAT4 else ">d", float(value))
    if isinstance(value, bytes):
        return value
    if oid in TEXTUAL:
        return str(value).encode("utf-8", "surrogateescape")
    raise ValueError(f"fakepg cannot send type {oid} in binary")


def _decode_numeric(data: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack(">hhHh", data[:8])
    special = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
    if sign in special:
        return special[sign]
    digits = struct.unpack(f">{ndigits}H", data[8 : 8 + 2 * ndigits])
    value = sum(Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits))
    return ("-" if sign == 0x4000 else "") + format(Decimal(value), f".{dscale}f")


def _decode_param(data: bytes | None, fmt: int, oid: int) -> str | bytes | None:
    if data is None:
        return None
    if fmt == 0:
        return data.decode("utf-8", "surrogateescape")
    ints = {INT2: ">h", INT4: ">i", INT8: ">q", OID: ">I"}
    if oid in ints:
        return str(struct.unpack(ints[oid], data)[0])
    if oid == BOOL:
        return "t" if data != b"\x00" else "f"
    if oid in (FLOAT4, FLOAT8):
        return repr(struct.unpack(">f" if oid == FLOAT4 else ">d", data)[0])
    if oid == NUMERIC:
        return _decode_numeric(data)
    if oid in TEXTUAL:
        return data.decode("utf-8", "surrogateescape")
    return data


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("message too short")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def cstr(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        out = self.buf[self.pos : end].decode("utf-8", "surrogateescape")
        self.pos = end + 1
        return out


# --- one connection ----------------------------------------------------------------------------


@dataclass
class _Statement:
    text: str
    types: tuple[int, ...]


@dataclass
class _Portal:
    query: Query
    formats: tuple[int, ...]
    result: Result | None = None
    pos: int = 0


_REPORTED = {
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
    "default_transaction_read_only",
    "is_superuser",
    "session_authorization",
}


class _Connection:
    def __init__(self, server: FakePG, sock: socket.socket, session: Session) -> None:
        self.server = server
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.session = session
        self.out = bytearray()
        self.txn = "I"
        self.skip_to_sync = False
        self.statements: dict[str, _Statement] = {}
        self.portals: dict[str, _Portal] = {}

    # I/O
    def read(self, n: int) -> bytes:
        self.flush()
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise _Closed
        return data

    def message(self) -> tuple[bytes, bytes]:
        head = self.read(5)
        length = struct.unpack(">i", head[1:])[0]
        if length < 4 or length > 1 << 30:
            raise _Closed
        return head[:1], self.read(length - 4)

    def send(self, kind: bytes, body: bytes = b"") -> None:
        self.out += kind + struct.pack(">i", len(body) + 4) + body

    def flush(self) -> None:
        if self.out:
            try:
                self.sock.sendall(bytes(self.out))
            except OSError:
                raise _Closed from None
            self.out.clear()

    def send_error(self, err: Error) -> None:
        sev = err.severity.encode()
        body = b"S" + sev + b"\0V" + sev + b"\0C" + err.sqlstate.encode() + b"\0"
        body += b"M" + _cstr(err.message) + b"\0"
        self.send(b"E", body)
        if err.severity in ("FATAL", "PANIC"):
            self.flush()
            raise _Closed

    def ready(self) -> None:
        self.send(b"Z", self.txn.encode())

    # startup and authentication
    def startup(self) -> bool:
        s = self.session
        for _ in range(4):
            length = struct.unpack(">i", self.read(4))[0]
            if length < 8 or length > 65536:
                return False
            body = _Reader(self.read(length - 4))
            code = body.int32()
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                if code == SSL_REQUEST:
                    s.ssl_requests += 1
                else:
                    s.gss_requests += 1
                self.sock.sendall(b"N")
                continue
            if code == CANCEL_REQUEST:
                self.server._cancel(body.int32(), body.int32())
                return False
            if code >> 16 != 3:
                self.send_error(Error("unsupported frontend protocol", "0A000", "FATAL"))
            s.protocol = code
            while body.pos < len(body.buf) and body.buf[body.pos] != 0:
                key = body.cstr()
                s.startup[key] = body.cstr()
            self.server._register(s)
            unknown = [k for k in s.startup if k.startswith("_pq_.")]
            if code & 0xFFFF or unknown:
                names = b"".join(_cstr(k) for k in unknown)
                self.send(b"v", struct.pack(">ii", PROTOCOL_3_0 & 0xFFFF, len(unknown)) + names)
            return True
        return False

    def authenticate(self) -> None:
        s, srv = self.session, self.server
        if srv.auth in ("cleartext", "md5"):
            if srv.auth == "md5":
                s.salt = secrets.token_bytes(4)
                self.send(b"R", struct.pack(">i", 5) + s.salt)
            else:
                self.send(b"R", struct.pack(">i", 3))
            kind, body = self.message()
            if kind != b"p":
                self.send_error(Error("expected password response", "08P01", "FATAL"))
            s.password = body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            s.passwords.append(s.password)
            if srv.password is not None:
                want = srv.password if srv.auth == "cleartext" else s.md5_of(srv.password)
                if s.password != want:
                    self.send_error(
                        Error(
                            f'password authentication failed for user "{s.user}"',
                            "28P01",
                            "FATAL",
                        )
                    )
        elif srv.auth != "trust":
            raise ValueError(f"unknown auth {srv.auth!r}")
        s.authenticated = True
        self.send(b"R", struct.pack(">i", 0))
        s.parameters.update(srv.parameters)
        s.parameters["session_authorization"] = s.user or ""
        s.parameters["application_name"] = s.startup.get("application_name", "")
        wanted = s.startup.get("client_encoding", "")
        if wanted and wanted.lower() != "auto":
            s.parameters["client_encoding"] = wanted.upper()
        for name, value in s.parameters.items():
            self.send(b"S", _cstr(name) + _cstr(value))
        self.send(b"K", struct.pack(">ii", s.pid, s.key))
        self.ready()

    # the message loop
    def serve(self) -> None:
        if not self.startup():
            return
        self.authenticate()
        handlers: dict[bytes, Callable[[_Reader], None]] = {
            b"Q": self.simple_query,
            b"P": self.parse,
            b"B": self.bind,
            b"D": self.describe,
            b"E": self.execute,
            b"C": self.close,
            b"S": self.sync,
            b"H": lambda body: self.flush(),
        }
        while True:
            kind, raw = self.message()
            if kind == b"X":
                self.session.terminated = True
                return
            if kind in (b"d", b"c", b"f"):
                continue  # stray COPY messages after a failed COPY: ignored, as PostgreSQL does
            if self.skip_to_sync and kind not in (b"S", b"Q"):
                continue
            handler = handlers.get(kind)
            if handler is None:
                self.session.unsupported.append(kind.decode("latin-1"))
                self.send_error(Error(f"fakepg does not support message {kind!r}", "0A000"))
                self.ready()
                continue
            try:
                handler(_Reader(raw))
            except (ValueError, struct.error) as exc:
                self.send_error(Error(f"invalid message: {exc}", "08P01", "FATAL"))

    def simple_query(self, body: _Reader) -> None:
        self.skip_to_sync = False
        text = body.cstr()
        stmts = split_statements(text)
        if not stmts:
            self.send(b"I")
        for stmt in stmts:
            result = self.run(Query(stmt, None, (), self.session))
            if isinstance(result, Rows):
                self.send_row_description(result, ())
            if not self.send_result(result, ()):
                break
        self.ready()

    def parse(self, body: _Reader) -> None:
        name, text = body.cstr(), body.cstr()
        types = tuple(body.int32() for _ in range(body.int16()))
        if len(split_statements(text)) > 1:
            self.fail(Error("cannot insert multiple commands into a prepared statement", "42601"))
            return
        self.statements[name] = _Statement(text, types)
        self.send(b"1")

    def bind(self, body: _Reader) -> None:
        portal, name = body.cstr(), body.cstr()
        fmts = [body.int16() for _ in range(body.int16())]
        values = []
        for _ in range(body.int16()):
            n = body.int32()
            values.append(None if n < 0 else body.take(n))
        results = tuple(body.int16() for _ in range(body.int16()))
        stmt = self.statements.get(name)
        if stmt is None:
            self.fail(Error(f'prepared statement "{name}" does not exist', "26000"))
            return
        types = stmt.types + (0,) * (len(values) - len(stmt.types))
        params = tuple(
            _decode_param(v, fmts[i] if len(fmts) > 1 else (fmts[0] if fmts else 0), types[i])
            for i, v in enumerate(values)
        )
        self.portals[portal] = _Portal(Query(stmt.text, params, types, self.session), results)
        self.send(b"2")

    def describe(self, body: _Reader) -> None:
        what, name = body.take(1), body.cstr()
        if what == b"S":
            stmt = self.statements.get(name)
            if stmt is None:
                self.fail(Error(f'prepared statement "{name}" does not exist', "26000"))
                return
            oids = [t or TEXT for t in stmt.types]
            self.send(b"t", struct.pack(f">h{len(oids)}i", len(oids), *oids))
            query = Query(stmt.text, (None,) * len(oids), stmt.types, self.session, True)
            result = self.server._respond(query, lambda: False)
            if isinstance(result, Rows):
                self.send_row_description(result, ())
            else:
                self.send(b"n")
            return
        portal = self.portals.get(name)
        if portal is None:
            self.fail(Error(f'portal "{name}" does not exist', "34000"))
            return
        if portal.result is None:
            portal.result = self.run(portal.query)
        if isinstance(portal.result, Rows):
            self.send_row_description(portal.result, portal.formats)
        elif isinstance(portal.result, Error):
            self.fail(portal.result)
        else:
            self.send(b"n")

    def execute(self, body: _Reader) -> None:
        name, limit = body.cstr(), body.int32()
        portal = self.portals.get(name)
        if portal is None:
            self.fail(Error(f'portal "{name}" does not exist', "34000"))
            return
        if not portal.query.text.strip(" \t\n;"):
            self.send(b"I")
            return
        if portal.result is None:
            portal.result = self.run(portal.query)
        result = portal.result
        if isinstance(result, Rows):
            end = len(result.rows) if limit <= 0 else min(len(result.rows), portal.pos + limit)
            self.send_data_rows(result, portal.formats, result.rows[portal.pos : end])
            portal.pos = end
            if end < len(result.rows):
                self.send(b"s")
            else:
                self.send(b"C", _cstr(result.tag or f"SELECT {len(result.rows)}"))
            return
        if not self.send_result(result, portal.formats):
            self.skip_to_sync = True

    def close(self, body: _Reader) -> None:
        what, name = body.take(1), body.cstr()
        if what == b"S":
            self.statements.pop(name, None)
        else:
            self.portals.pop(name, None)
        self.send(b"3")

    def sync(self, body: _Reader) -> None:
        self.skip_to_sync = False
        self.portals.pop("", None)
        self.ready()

    def fail(self, err: Error) -> None:
        self.send_error(err)
        self.skip_to_sync = True
        if self.txn == "T":
            self.txn = "E"

    # running one statement
    def run(self, query: Query) -> Result:
        """Log and answer one statement, tracking the transaction state like PostgreSQL."""
        self.session.queries.append(query)
        words = leading_words(query.text, 3)
        kw = words[0] if words else ""
        ends = kw in ("COMMIT", "END", "ROLLBACK", "ABORT")
        if self.txn == "E" and not ends:
            return Error(
                "current transaction is aborted, commands ignored until end of transaction block",
                "25P02",
            )
        result = self.server._respond(query, self.session.cancelled.is_set)
        if isinstance(result, Error):
            if self.txn == "T":
                self.txn = "E"
            return result
        if kw in ("BEGIN", "START") or (kw == "ROLLBACK" and "TO" in words[1:]):
            self.txn = "T"
        elif ends or (kw == "PREPARE" and words[1:2] == ["TRANSACTION"]):
            if self.txn == "E" and isinstance(result, Command):
                result = Command("ROLLBACK")
            self.txn = "I"
        elif kw == "SET":
            self.report_setting(query.text)
        return result

    def report_setting(self, text: str) -> None:
        toks = tokens(text)[1:]
        if toks and toks[0].upper in ("SESSION", "LOCAL"):
            toks = toks[1:]
        if len(toks) < 3 or toks[1].text not in ("=",) and toks[1].upper != "TO":
            return
        name = _unquote(toks[0])
        if name.lower() not in _REPORTED:
            return
        value = " ".join(t.text.strip("'") for t in toks[2:] if t.text != ",")
        if name.lower() == "client_encoding":
            value = value.upper()
        canonical = next((k for k in self.session.parameters if k.lower() == name.lower()), name)
        self.session.parameters[canonical] = value
        self.send(b"S", _cstr(canonical) + _cstr(value))

    def send_row_description(self, rows: Rows, formats: Sequence[int]) -> None:
        body = struct.pack(">h", len(rows.columns))
        for i, (name, oid) in enumerate(zip(rows.columns, _column_types(rows), strict=False)):
            fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
            body += _cstr(name) + struct.pack(">ihihih", 0, 0, oid, TYPE_LEN.get(oid, -1), -1, fmt)
        self.send(b"T", body)

    def send_data_rows(
        self, rows: Rows, formats: Sequence[int], chunk: Sequence[Sequence[object]]
    ) -> None:
        types = _column_types(rows)
        n = len(rows.columns)
        for row in chunk:
            body = struct.pack(">h", n)
            for i in range(n):
                fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
                data = _encode_value(row[i] if i < len(row) else None, types[i], fmt)
                body += (
                    struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data
                )
            self.send(b"D", body)

    def send_result(self, result: Result, formats: Sequence[int]) -> bool:
        """Send an answer after its RowDescription; False when it was an error."""
        if isinstance(result, Rows):
            self.send_data_rows(result, formats, result.rows)
            self.send(b"C", _cstr(result.tag or f"SELECT {len(result.rows)}"))
        elif isinstance(result, Command):
            self.send(b"C", _cstr(result.tag))
        elif isinstance(result, Error):
            self.send_error(result)
            if self.txn == "T":
                self.txn = "E"
            return False
        elif isinstance(result, CopyIn):
            return self.copy_in(result)
        elif isinstance(result, CopyOut):
            n = result.columns
            self.send(b"H", struct.pack(f">bh{n}h", 0, n, *([0] * n)))
            for line in result.lines:
                data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
                self.send(b"d", data)
            self.send(b"c")
            self.send(b"C", _cstr(f"COPY {len(result.lines)}"))
        elif isinstance(result, Disconnect):
            self.flush()
            raise _Closed
        return True

    def copy_in(self, copy: CopyIn) -> bool:
        n = copy.columns
        self.send(b"G", struct.pack(f">bh{n}h", 0, n, *([0] * n)))
        data = bytearray()
        while True:
            kind, body = self.message()
            if kind == b"d":
                data += body
                self.session.copy_data.append(body)
            elif kind == b"c":
                rows = [ln for ln in bytes(data).split(b"\n") if ln and ln != b"\\."]
                self.send(b"C", _cstr(f"COPY {len(rows)}"))
                return True
            elif kind == b"f":
                reason = _Reader(body).cstr()
                self.session.copy_failures.append(reason)
                self.send_error(Error(f"COPY from stdin failed: {reason}", "57014"))
                if self.txn == "T":
                    self.txn = "E"
                return False
            elif kind in (b"H", b"S"):
                continue
            else:
                self.send_error(
                    Error(f"unexpected message type {kind!r} during COPY from stdin", "08P01")
                )
                return False


# --- the server ----------------------------------------------------------------------------


class FakePG:
    """A fake PostgreSQL server on ``host`` (127.0.0.2 by default), port chosen by the kernel.

    ``auth``: "trust", "cleartext" or "md5". With ``password`` set, a wrong password is refused
    (28P01); without, any password is accepted (and recorded). ``parameters`` override the
    ParameterStatus values sent after authentication.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        auth: str = "trust",
        password: str | None = None,
        host: str = HOST,
        parameters: dict[str, str] | None = None,
        strict: bool = True,
    ) -> None:
        if auth not in ("trust", "cleartext", "md5"):
            raise ValueError(f"auth must be trust, cleartext or md5, not {auth!r}")
        self.responder = responder
        self.auth = auth
        self.password = password
        self.host = host
        self.port = 0
        self.strict = strict
        self.parameters = {
            "server_version": "15.18",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "IntervalStyle": "postgres",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "on",
            "default_transaction_read_only": "off",
            "in_hot_standby": "off",
            **(parameters or {}),
        }
        self.cancels: list[tuple[int, int]] = []
        self.errors: list[BaseException] = []  # responder exceptions and server bugs
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._count = 0

    # lifecycle
    def start(self) -> FakePG:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        thread = threading.Thread(target=self._accept_loop, name="fakepg-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FakePG:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop()
        if self.strict and self.errors and exc_type is None:
            raise AssertionError(f"fakepg: the responder or server failed: {self.errors[0]!r}")

    # addresses
    def url(
        self, dbname: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> str:
        cred = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{cred}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def conninfo(self, dbname: str = "postgres", user: str = "postgres", **extra: str) -> str:
        def q(value: str) -> str:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        parts = {"host": self.host, "port": str(self.port), "dbname": dbname, "user": user}
        parts.update(extra)
        return " ".join(f"{k}={q(v)}" for k, v in parts.items())

    # the log
    @property
    def sessions(self) -> list[Session]:
        """Every connection that sent a StartupMessage, in order."""
        with self._lock:
            return list(self._sessions)

    def wait_closed(self, timeout: float = 10) -> list[Session]:
        """Wait until every connection so far has ended (a client's Terminate is handled by the
        server's thread, after the client returned); the sessions."""
        deadline = time.monotonic() + timeout
        for session in self.sessions:
            if not session.closed.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"fakepg: connection {session.number} is still open")
        return self.sessions

    def queries(self) -> list[str]:
        return [q.text for s in self.sessions for q in s.queries]

    def passwords(self) -> list[str]:
        """Every PasswordMessage any client sent, in order."""
        return [p for s in self.sessions for p in s.passwords]

    # internals
    def _register(self, session: Session) -> None:
        with self._lock:
            self._sessions.append(session)

    def _cancel(self, pid: int, key: int) -> None:
        with self._lock:
            self.cancels.append((pid, key))
            for s in self._sessions:
                if s.pid == pid and s.key == key:
                    s.cancelled.set()

    def _respond(self, query: Query, cancelled: Callable[[], bool]) -> Result:
        try:
            result = self.responder(query) if self.responder else None
        except Exception as exc:  # noqa: BLE001 - reported to the client and at __exit__
            self.errors.append(exc)
            return Error(f"fakepg responder failed: {exc!r}", "XX000")
        if result is None:
            result = default_response(query)
        while isinstance(result, Sleep):
            deadline = time.monotonic() + result.seconds
            while time.monotonic() < deadline and not cancelled():
                if self._stop.wait(0.02):
                    raise _Closed
            if cancelled():
                if query.session:
                    query.session.cancelled.clear()
                return Error("canceling statement due to user request", "57014")
            result = result.then if result.then is not None else default_response(query)
        return result

    def _accept_loop(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if not sel.select(0.05):
                    continue
                try:
                    sock, peer = self._listener.accept()
                except OSError:
                    continue
                with self._lock:
                    self._count += 1
                    number = self._count
                    self._socks.add(sock)
                session = Session(number, peer, 4000 + number, secrets.randbits(31))
                thread = threading.Thread(
                    target=self._serve, args=(sock, session), name=f"fakepg-{number}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        finally:
            sel.close()

    def _serve(self, sock: socket.socket, session: Session) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(self, sock, session)
        try:
            conn.serve()
            conn.flush()
        except (_Closed, OSError):
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: fail the test at __exit__
            self.errors.append(exc)
            with contextlib.suppress(Exception):
                conn.send_error(Error(f"fakepg internal error: {exc!r}", "XX000", "FATAL"))
        finally:
            with contextlib.suppress(OSError):
                conn.rfile.close()
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._socks.discard(sock)
            session.closed.set()


def rows_of(columns: Sequence[str], *rows: Sequence[Any]) -> Rows:
    """Shorthand: ``rows_of(["a", "b"], (1, "x"), (2, "y"))``."""
    return Rows(list(columns), [list(r) for r in rows])
