"""Row counts of a plain-format pg_dump, taken from the dump stream as it passes.

``CopyCounter`` is fed the bytes of ``pg_dump --format=plain`` in chunks of any size and
counts the rows of every ``COPY schema.table (...) FROM stdin;`` block. COPY text format
escapes newlines inside values, so a row is a line; the block ends at a line that is
exactly ``\\.``.

Where a COPY block starts is decided the way psql decides it when it restores the dump:
the SQL between blocks is lexed like ``src/fe_utils/psqlscan.l`` lexes it (quoted strings,
``E''`` strings and their continuation lines, quoted identifiers, dollar quotes, nested
``/* */`` and ``--`` comments, parenthesis depth, the ``CREATE FUNCTION ... BEGIN ATOMIC``
heuristic, psql variables and backslash meta-commands, which run to the end of the line).
A statement ends at a semicolon outside all of those, so a name, string, comment or
function body that merely looks like a COPY never starts one. ``standard_conforming_strings``
is assumed on, as pg_dump sets it.

Contract:

- Memory stays flat: between chunks at most a short unfinished token is carried (bounded by
  ``MAX_TOKEN``), plus the COPY header being read (bounded by ``MAX_HEADER``).
- COPY data costs one ``re`` search and one ``bytes.count`` per chunk, both in C.
- Anything that cannot be followed raises ``CopyStreamError``: a COPY statement that is not
  ``COPY schema.table [(columns)] FROM stdin;`` followed by a newline, an oversized header
  or token, two blocks for one table, or a stream that ends inside a COPY block, a header,
  a quoted string or identifier, a dollar quote or a ``/*`` comment.
- Names are returned unquoted, as the catalog spells them. The dump is decoded with
  ``encoding`` (a Python codec name; pg_dump writes the server encoding by default, and every
  server encoding is ASCII-safe, which this lexer relies on).
- Feed ``bytes`` or ``bytearray`` to avoid a copy; a ``memoryview`` that is not the whole
  of its object is copied once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ...errors import IntegrityError

MAX_HEADER = 4 << 20  # 1600 quoted 63-byte column names are ~200 KiB
MAX_TOKEN = 4 << 20  # an unquoted token split across chunks

Counts = dict[tuple[str, str], int]


class CopyStreamError(IntegrityError):
    """The dump stream cannot be followed, so its row counts cannot be trusted."""


# Lexer states.
_TOP = 0  # SQL outside any quote
_XQ = 1  # '...' (also B'', X'', N'', U&'')
_XE = 2  # E'...' with backslash escapes
_XQS = 3  # just after the closing quote of an E'' string: is a continuation coming?
_XD = 4  # "..." quoted identifier (also U&"")
_DOLQ = 5  # $tag$ ... $tag$
_LINE_COMMENT = 6
_BLOCK_COMMENT = 7
_META = 8  # psql backslash command, to the end of the line
_HEADER = 9  # COPY ... FROM stdin;
_DATA = 10  # COPY data rows

_EOF_INSIDE = {
    _XQ: "a quoted string",
    _XE: "a quoted string",
    _XD: "a quoted identifier",
    _DOLQ: "a dollar-quoted string",
    _BLOCK_COMMENT: "a /* comment",
}

_ID_START = rb"A-Za-z_\x80-\xff"
_ID_CONT = rb"A-Za-z0-9_$\x80-\xff"
_DOLQ_CONT = rb"A-Za-z0-9_\x80-\xff"
# Numbers, including PostgreSQL 15's "trailing junk" forms (1e, 1abc, 1e5x).
_JUNK = rb"[" + _ID_START + rb"]"
_NUM = rb"[0-9]+(?:\.[0-9]*)?(?:[eE](?:[-+]?[0-9]+" + _JUNK + rb"?|[-+])?|" + _JUNK + rb")?"
_SPECIAL = rb" \t\n\r\f\v'\"" + _ID_START + rb"0-9$\-/;()\\:"

# One token of SQL after optional whitespace, in psqlscan.l's order of preference. The
# groups are numbered _XE.._OTHER; a match with no group is whitespace up to the end.
_TOKEN = re.compile(
    rb"[ \t\n\r\f\v]*+(?:"
    rb"([eE]')"
    rb"|((?:[bBxXnN]|[uU]&)?')"
    rb'|((?:[uU]&)?")'
    rb"|([uU]&)"
    rb"|([" + _ID_START + rb"][" + _ID_CONT + rb"]*)"
    rb"|(" + _NUM + rb")"
    rb"|(\$(?:[" + _ID_START + rb"][" + _DOLQ_CONT + rb"]*)?\$)"
    rb"|(--)|(/\*)|(;)|(\()|(\))"
    rb"|(\\[;:]?)"
    rb"|(::|:[" + _DOLQ_CONT + rb"]+)"
    rb"|([^" + _SPECIAL + rb"]+|[\s\S])"
    rb")?"
)
(_T_XE, _T_XQ, _T_XD, _T_UF, _T_ID, _T_NUM, _T_DOLQ, _T_LC, _T_BC, _T_SEMI, _T_LP, _T_RP) = range(
    1, 13
)
_T_BS, _T_VAR, _T_OTHER = 13, 14, 15
_T_QUOTES = {_T_XE: _XE, _T_XQ: _XQ, _T_XD: _XD, _T_DOLQ: _DOLQ}


# A run of tokens that cannot change any state but the parenthesis depth. It stops before
# a token that might continue in the next chunk and before an identifier directly followed
# by a quote (a possible E'' prefix); a psql variable (:name) is one token, as in psqlscan.l.
# _FAST_RUN skips every identifier, once psql's CREATE FUNCTION heuristic can no longer fire
# in the statement; _FUNC_RUN all but BEGIN, CASE and END, once it has fired.
def _run_re(ident: bytes) -> re.Pattern[bytes]:
    return re.compile(
        rb"(?:[ \t\n\r\f\v]+"
        rb"|" + ident + rb"(?>[" + _ID_START + rb"][" + _ID_CONT + rb"]*)(?=[^'])"
        rb"|(?>" + _NUM + rb")(?=[\s\S])"
        rb"|::|:[" + _DOLQ_CONT + rb"]++(?=[\s\S])|:(?=[^:" + _DOLQ_CONT + rb"])"
        rb"|[()]"
        rb"|[^" + _SPECIAL + rb"]+)*+"
    )


_FAST_RUN = _run_re(b"")
_FUNC_RUN = _run_re(rb"(?!(?i:begin|case|end)(?![" + _ID_CONT + rb"]))")
_NOT_PARENS = bytes(c for c in range(256) if c not in b"()")
_DOLQ_PARTIAL = re.compile(rb"\$(?:[" + _ID_START + rb"][" + _DOLQ_CONT + rb"]*)?")
_XE_SPECIAL = re.compile(rb"[\\']")
_NEWLINE = re.compile(rb"[\n\r]")
_WS = re.compile(rb"[ \t\n\r\f\v]*")
_BLOCK = re.compile(rb"/\*|\*/")
_HEADER_SPECIAL = re.compile(rb'[";]')
_HEADER_TAIL = re.compile(rb"[ \t\f\v\r]*")
_DATA_TERM = re.compile(rb"\n\\\.")

_NAME = rb'(?:"(?:[^"]|"")*"|[' + _ID_START + rb"][" + _ID_CONT + rb"]*(?![" + _ID_CONT + rb"]))"
_HEADER_RE = re.compile(
    rb"(?i:copy)\s*(" + _NAME + rb")\s*\.\s*(" + _NAME + rb")\s*"
    rb"(?:\(\s*" + _NAME + rb"(?:\s*,\s*" + _NAME + rb")*\s*\)\s*)?"
    rb"(?i:from)\s+(?i:stdin)\s*;"
)

# psqlscan.l remembers the first letter of these words among a statement's first four
# identifiers, to recognise CREATE [OR REPLACE] {FUNCTION|PROCEDURE}.
_TRACKED = {b"create", b"function", b"procedure", b"or", b"replace"}
_C, _F, _P, _O, _R = (ord(c) for c in "cfpor")
_BACKSLASH, _QUOTE, _DASH, _SEMI, _NL = (ord(c) for c in "\\'-;\n")


def _show(name: str) -> str:
    """A name from the dump, safe to put in a one-line message."""
    return repr(name if len(name) <= 80 else name[:80] + "...")


def _excerpt(raw: bytes | bytearray) -> str:
    return repr(bytes(raw[:120]).decode("utf-8", "backslashreplace"))


class CopyCounter:
    """Counts the rows of every COPY block of a plain pg_dump fed to it chunk by chunk."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self._encoding = encoding
        self._counts: Counts = {}
        self._carry = b""
        self._state = _TOP
        self._finished = False
        self._error: CopyStreamError | None = None  # once raised, raised for good
        self._handlers: list[Callable[[bytes | bytearray, int, int, bool], int]] = [
            self._top,
            self._xq,
            self._xe,
            self._xqs,
            self._xd,
            self._dolq,
            self._line_comment,
            self._block_comment,
            self._meta,
            self._header,
            self._data,
        ]
        # psqlscan.l's statement state
        self._stmt_empty = True  # nothing but whitespace, comments, meta-commands yet
        self._paren = 0
        self._begin = 0
        self._ident_count = 0
        self._idents = [0, 0, 0, 0]
        self._func = False  # the statement starts CREATE [OR REPLACE] FUNCTION|PROCEDURE
        self._fast = False  # ... and it no longer can: identifiers do not matter any more
        # quoted text and comments
        self._xqs_newline = False
        self._xqs_comment = False
        self._comment_depth = 0
        self._delim = b""
        # the COPY block being read
        self._hdr = bytearray()
        self._hdr_quoted = False
        self._hdr_done = False
        self._table: tuple[str, str] = ("", "")
        self._rows = 0
        self._line_start = True

    # --- public -------------------------------------------------------------------------
    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk of the dump; chunk boundaries may fall anywhere. Nothing
        of ``chunk`` is kept by reference, so the caller may reuse its buffer."""
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError("CopyCounter.feed() after finish()")
        try:
            self._feed(_as_bytes(chunk))
        except CopyStreamError as exc:
            self._error = exc
            raise

    def finish(self) -> Counts:
        """The end of the dump: ``{(schema, table): rows}`` for every COPY block seen.
        Raises ``CopyStreamError`` (again, if it already did) when the stream was not whole."""
        if self._error is not None:
            raise self._error
        if not self._finished:
            self._finished = True
            try:
                self._end()
            except CopyStreamError as exc:
                self._error = exc
                raise
        return dict(self._counts)

    def at_statement_start(self) -> bool:
        """Whether what comes next starts a new top-level statement (after a ``;`` or a COPY
        block's end, outside every quote, comment and COPY data). Exact between lines."""
        return self._state == _TOP and self._stmt_empty and not self._carry

    def in_plain_sql(self) -> bool:
        """Whether what was fed ends in SQL outside every quote, comment and parenthesis."""
        return self._state == _TOP and self._paren == 0

    def _feed(self, data: bytes | bytearray) -> None:
        if self._carry:
            data = self._carry + data
        pos = self._run(data, final=False)
        if len(data) - pos > MAX_TOKEN:
            raise CopyStreamError(
                f"the dump has an unquoted token longer than {MAX_TOKEN >> 20} MiB near "
                f"{_excerpt(data[pos:])}"
            )
        self._carry = bytes(data[pos:])

    def _end(self) -> None:
        data, self._carry = self._carry, b""
        self._run(data, final=True)
        if self._state == _DATA:
            raise CopyStreamError(
                f"the dump ends inside the COPY data of {_show(self._table[0])}."
                f"{_show(self._table[1])} after {self._rows} rows"
            )
        if self._state == _HEADER:
            raise CopyStreamError(f"the dump ends inside a COPY header {_excerpt(self._hdr)}")
        if self._state in _EOF_INSIDE:
            raise CopyStreamError(f"the dump ends inside {_EOF_INSIDE[self._state]}")

    # --- driver -------------------------------------------------------------------------
    def _run(self, data: bytes | bytearray, final: bool) -> int:
        """Lex ``data``; return where the unconsumed (carried) rest begins."""
        pos, end = 0, len(data)
        handlers = self._handlers
        while pos < end:
            state = self._state
            new = handlers[state](data, pos, end, final)
            if new == pos and self._state == state:
                break  # needs the next chunk
            pos = new
        return pos

    # --- SQL ----------------------------------------------------------------------------
    def _top(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        while pos < end:
            if self._fast:
                pos = self._skip(_FAST_RUN, data, pos, end)
            elif self._func:
                pos = self._skip(_FUNC_RUN, data, pos, end)
            m = _TOKEN.match(data, pos, end)
            assert m is not None  # matches at least the empty string
            g = m.lastindex
            if g is None:
                return m.end()  # whitespace to the end
            pos, stop = m.start(g), m.end()
            if not final and (stop == end or g == _T_OTHER) and _may_continue(g, data, pos, end):
                return pos
            if g == _T_ID:
                if self._stmt_empty and stop - pos == 4 and data[pos:stop].lower() == b"copy":
                    self._hdr = bytearray(data[pos:stop])
                    self._hdr_quoted = self._hdr_done = False
                    self._state = _HEADER
                    return stop
                self._identifier(data, pos, stop)
            elif g in _T_QUOTES:
                if g == _T_DOLQ:
                    self._delim = bytes(data[pos:stop])
                self._stmt_empty = False
                self._state = _T_QUOTES[g]
                return stop
            elif g == _T_SEMI or g == _T_BS and stop - pos == 2 and data[pos + 1] == _SEMI:
                self._semicolon(backslash=g == _T_BS)
                pos = stop
                continue
            elif g == _T_LC:
                self._state = _LINE_COMMENT
                return stop
            elif g == _T_BC:
                self._comment_depth = 0
                self._state = _BLOCK_COMMENT
                return stop
            elif g == _T_BS and stop - pos == 1:
                self._state = _META  # psql reads a meta-command to the end of the line
                return stop
            elif g == _T_LP:
                self._paren += 1
            elif g == _T_RP and self._paren > 0:
                self._paren -= 1
            self._stmt_empty = False
            pos = stop
        return pos

    def _skip(self, run: re.Pattern[bytes], data: bytes | bytearray, pos: int, end: int) -> int:
        stop = run.match(data, pos, end).end()  # type: ignore[union-attr]
        if stop > pos:
            parens = data[pos:stop].translate(None, _NOT_PARENS)
            if b")" not in parens:
                self._paren += len(parens)
            else:
                depth = self._paren
                for c in parens:
                    depth = depth + 1 if c == 40 else max(depth - 1, 0)
                self._paren = depth
        return stop

    def _semicolon(self, backslash: bool) -> None:
        """``;`` ends the statement outside parentheses and BEGIN ATOMIC bodies. ``\\;`` puts
        a semicolon in psql's buffer without sending it; the server then runs the statements
        together, so a COPY after it still starts a block."""
        ends = self._paren == 0 and self._begin == 0
        if ends or backslash:
            self._ident_count = 0
            self._fast = self._func = False
        self._stmt_empty = ends

    def _identifier(self, data: bytes | bytearray, pos: int, stop: int) -> None:
        """psqlscan.l's CREATE FUNCTION ... BEGIN ATOMIC heuristic, word for word."""
        if self._ident_count == 0:
            self._idents = [0, 0, 0, 0]
        word = bytes(data[pos:stop]).lower() if stop - pos <= 9 else b""
        if self._ident_count < 4 and word in _TRACKED:
            self._idents[self._ident_count] = word[0]
        self._ident_count += 1
        n, i = self._ident_count, self._idents
        self._func = i[0] == _C and (
            i[1] in (_F, _P) or (i[1] == _O and i[2] == _R and i[3] in (_F, _P))
        )
        self._fast = not (
            i[0] == _C
            and (
                n < 2
                or i[1] in (_F, _P)
                or (i[1] == _O and (n < 3 or (i[2] == _R and (n < 4 or i[3] in (_F, _P)))))
            )
        )
        if self._func and self._paren == 0:
            if word == b"begin":
                self._begin += 1
            elif word == b"case":
                if self._begin >= 1:
                    self._begin += 1
            elif word == b"end" and self._begin > 0:
                self._begin -= 1

    def _xq(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        # '' inside the string reads as the string closing and a new one opening: same end.
        i = data.find(b"'", pos, end)
        if i < 0:
            return end
        self._state = _TOP
        return i + 1

    def _xe(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        while True:
            m = _XE_SPECIAL.search(data, pos, end)
            if m is None:
                return end
            i = m.start()
            if i + 1 >= end and not final:
                return i  # a backslash or quote whose meaning depends on the next byte
            if data[i] == _BACKSLASH or i + 1 < end and data[i + 1] == _QUOTE:
                pos = i + 2  # \x escape or '' inside E''
                continue
            self._xqs_newline = self._xqs_comment = False
            self._state = _XQS
            return i + 1

    def _xqs(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        """After E'...': whitespace holding a newline then a quote continues the same
        E'' string (psqlscan.l's {quotecontinue}); anything else goes back to SQL."""
        while pos < end:
            if self._xqs_comment:
                m = _NEWLINE.search(data, pos, end)
                if m is None:
                    return end
                self._xqs_comment = False
                pos = m.start()
            ws = _WS.match(data, pos, end).end()  # type: ignore[union-attr]
            if ws > pos:
                if _NEWLINE.search(data, pos, ws):
                    self._xqs_newline = True
                pos = ws
                continue
            c = data[pos]
            if c == _DASH:
                if pos + 1 >= end and not final:
                    return pos
                if pos + 1 < end and data[pos + 1] == _DASH:
                    self._xqs_comment = True
                    pos += 2
                    continue
            elif c == _QUOTE and self._xqs_newline:
                self._state = _XE
                return pos + 1
            self._state = _TOP  # what was skipped is whitespace and comments in SQL too
            return pos
        return pos

    def _xd(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        i = data.find(b'"', pos, end)
        if i < 0:
            return end
        self._state = _TOP
        return i + 1

    def _dolq(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        # The first occurrence of the delimiter closes the quote, as in psqlscan.l.
        i = data.find(self._delim, pos, end)
        if i >= 0:
            self._state = _TOP
            return i + len(self._delim)
        return end if final else max(pos, end - len(self._delim) + 1)

    def _line_comment(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        m = _NEWLINE.search(data, pos, end)
        if m is None:
            return end
        self._state = _TOP
        return m.start()

    def _block_comment(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        while True:
            m = _BLOCK.search(data, pos, end)
            if m is None:
                if not final and pos < end and data[end - 1] in b"/*":
                    return end - 1
                return end
            pos = m.end()
            if data[m.start()] == ord("/"):
                self._comment_depth += 1
            elif self._comment_depth > 0:
                self._comment_depth -= 1
            else:
                self._state = _TOP
                return pos

    def _meta(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        i = data.find(b"\n", pos, end)
        if i < 0:
            return end
        self._state = _TOP
        return i + 1

    # --- COPY ---------------------------------------------------------------------------
    def _header(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        """Collect ``COPY ... ;`` (the first ``;`` outside double quotes), then insist on
        the end of the line: psql reads the rows from the next line on."""
        start = pos
        if not self._hdr_done:
            while True:
                m = _HEADER_SPECIAL.search(data, pos, end)
                if m is None:
                    pos = end
                    break
                pos = m.end()
                if data[m.start()] == ord('"'):
                    self._hdr_quoted = not self._hdr_quoted
                elif not self._hdr_quoted:
                    self._hdr_done = True
                    break
            self._hdr += data[start:pos]
            self._check_header_size()
            if not self._hdr_done:
                return pos
        tail = _HEADER_TAIL.match(data, pos, end).end()  # type: ignore[union-attr]
        if tail == end:
            return end
        if data[tail] != _NL:
            raise CopyStreamError(
                f"a COPY statement is not followed by the end of the line: "
                f"{_excerpt(self._hdr + data[pos : tail + 1])}"
            )
        self._start_copy()
        return tail + 1

    def _check_header_size(self, extra: int = 0) -> None:
        if len(self._hdr) + extra > MAX_HEADER:
            raise CopyStreamError(
                f"a COPY header is longer than {MAX_HEADER >> 20} MiB: {_excerpt(self._hdr)}"
            )

    def _start_copy(self) -> None:
        m = _HEADER_RE.fullmatch(self._hdr)
        if m is None:
            raise CopyStreamError(
                f"not a COPY schema.table [(columns)] FROM stdin statement: {_excerpt(self._hdr)}"
            )
        table = (self._name(m.group(1)), self._name(m.group(2)))
        if table in self._counts:
            raise CopyStreamError(
                f"the dump has two COPY blocks for {_show(table[0])}.{_show(table[1])}"
            )
        self._hdr = bytearray()
        self._table, self._rows, self._line_start = table, 0, True
        self._state = _DATA

    def _name(self, raw: bytes) -> str:
        """An identifier as the catalog spells it: quotes removed, or ASCII-downcased."""
        # bytes.lower() folds ASCII letters only, as the server's downcase_identifier does
        raw = raw[1:-1].replace(b'""', b'"') if raw[:1] == b'"' else raw.lower()
        try:
            return raw.decode(self._encoding)
        except UnicodeDecodeError:
            raise CopyStreamError(
                f"a COPY header names a table that is not valid {self._encoding}: {_excerpt(raw)}"
            ) from None

    def _data(self, data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
        """Rows are newlines; the block ends at a line ``\\.`` (psql also takes ``\\.`` with
        CR LF, and ``\\.`` as the very last bytes)."""
        while True:
            if self._line_start:
                term = _terminator(data, pos, end, final)
                if term < 0:
                    return pos  # "\", "\." or "\.\r" at the end of the chunk
                if term:
                    self._counts[self._table] = self._rows
                    self._state = _TOP
                    self._stmt_empty = True
                    self._ident_count = 0
                    self._fast = self._func = False
                    return pos + term
                self._line_start = False
            m = _DATA_TERM.search(data, pos, end)
            if m is None:
                break
            self._rows += data.count(b"\n", pos, m.start() + 1)
            pos = m.start() + 1
            self._line_start = True
        self._rows += data.count(b"\n", pos, end)
        if end > pos and data[end - 1] == _NL:
            self._line_start = True
        elif end - pos >= 2 and data[end - 1] == _BACKSLASH and data[end - 2] == _NL:
            self._line_start = True
            return end - 1  # carry the backslash: it may begin "\."
        return end


def _may_continue(g: int, data: bytes | bytearray, pos: int, end: int) -> bool:
    """Whether the token at ``pos`` might read differently once the next chunk is here."""
    c = data[pos]
    if g == _T_OTHER and c == 36:
        m = _DOLQ_PARTIAL.match(data, pos, end)  # "$tag" may still become "$tag$"
        return m is not None and m.end() == end
    if g in (_T_ID, _T_NUM, _T_VAR):
        return True  # the token reaches the end of the chunk and may go on
    return end - pos == 1 and c in b"-/:\\"  # "--", "/*", "::" or ":v", "\\;"


def _terminator(data: bytes | bytearray, pos: int, end: int, final: bool) -> int:
    """Length of the end-of-data line at ``pos`` (0: none, -1: cannot tell yet)."""
    head = bytes(data[pos : min(end, pos + 4)])
    if head.startswith(b"\\.\n"):
        return 3
    if head == b"\\.\r\n":
        return 4
    if len(head) < 4 and (b"\\.\r\n".startswith(head) or b"\\.\n".startswith(head)):
        if final:
            return 2 if head == b"\\." else 0
        return -1
    return 0


def _as_bytes(chunk: bytes | bytearray | memoryview) -> bytes | bytearray:
    if isinstance(chunk, bytes | bytearray):
        return chunk
    obj = chunk.obj
    if (
        isinstance(obj, bytes | bytearray)
        and chunk.contiguous
        and chunk.itemsize == 1
        and chunk.nbytes == len(obj)
    ):
        return obj
    return chunk.tobytes()
