"""PostgreSQL connection parameters: parsing, the restore-target policy, and what children get.

A ``PgConn`` is a set of libpq keywords without the password, plus the password. It reaches
psycopg as keyword arguments and the client tools as a quoted conninfo string on argv; the
password reaches a child only through a private passfile (``PGPASSFILE``), never argv or the
environment.

Sources are the operator's (``DATABASE_URL``): any libpq keyword passes. Restore targets go
through ``parse_target``: one server, and only keywords that cannot redirect the connection,
the database or the credentials.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from ...errors import ConfigError, redact_secrets

# Keywords a restore target may carry. Everything else (hostaddr, service, passfile, options,
# target_session_attrs, dbname in the query, ...) can point the connection, the database or
# the credentials somewhere the URL does not show, and is refused.
TARGET_PARAMS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "sslrootcert",
        "connect_timeout",
        "application_name",
        "channel_binding",
    }
)
# libpq environment variables read as defaults for in-process connections, so that they follow
# ``Settings.env`` exactly as the client tools do.
ENV_DEFAULTS = {
    "PGHOST": "host",
    "PGPORT": "port",
    "PGUSER": "user",
    "PGDATABASE": "dbname",
    "PGSSLMODE": "sslmode",
    "PGSSLROOTCERT": "sslrootcert",
    "PGPASSFILE": "passfile",
    "PGAPPNAME": "application_name",
    "PGCONNECT_TIMEOUT": "connect_timeout",
}
CHILD_ENV_KEEP = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
# libpq variables that send a connection to another server than the one a URL names: a target
# URL is refused while they are set (libpq in this process reads them too).
REDIRECTING_ENV = ("PGHOSTADDR", "PGSERVICE")
# ... and ones a target URL's children never get: they change the session behind its back.
TARGET_STRIPPED_ENV = frozenset(
    {*REDIRECTING_ENV, "PGSERVICEFILE", "PGOPTIONS", "PGTARGETSESSIONATTRS", "PGDATABASE"}
)
URL_SCHEMES = ("postgresql://", "postgres://")


def _conninfo_to_dict(spec: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        parsed = conninfo_to_dict(spec)
    except Exception:  # noqa: BLE001 - psycopg's message repeats the string, password included
        raise ConfigError(
            "invalid PostgreSQL connection URL (check its quoting; a password with '@', '/' "
            "or ':' must be percent-encoded)"
        ) from None
    return {str(k): str(v) for k, v in parsed.items() if v is not None}


def _check_url_authority(url: str) -> None:
    netloc, _, tail = url.split("://", 1)[1].partition("/")
    if "@" not in netloc and "@" in tail.partition("?")[0]:
        # user:pa/ss@host: libpq ends the authority at the first "/", so the password's head
        # would pass as a host name into argv, logs and the manifest. Never echo it.
        raise ConfigError(
            "database URL: the part before '@' contains '/' (a password with '/' "
            "must be percent-encoded as %2F, or kept in ~/.pgpass)"
        )


def login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "postgres"


@dataclass(frozen=True)
class PgConn:
    """libpq keywords (never the password) plus the password, and how to show them."""

    params: tuple[tuple[str, str], ...]
    password: str | None = field(default=None, repr=False)
    display: str = ""
    # A target URL: its children do not get the libpq variables that change the session.
    strict: bool = False

    @classmethod
    def source(cls, spec: str | None, env: Mapping[str, str]) -> PgConn:
        """The operator's ``DATABASE_URL`` (a URL or a conninfo string), or the libpq
        environment when there is none. The password comes from the URL or ``PGPASSWORD``."""
        if spec is None:
            db = env.get("PGDATABASE") or env.get("PGUSER") or login_name()
            return cls(
                (("dbname", db),), env.get("PGPASSWORD") or None, f"(libpq environment) dbname={db}"
            )
        if spec.startswith(URL_SCHEMES):
            _check_url_authority(spec)
        elif "=" not in spec:
            raise ConfigError("database URL must start with postgresql:// (or sqlite:///)")
        if "sslpassword" in _conninfo_to_dict(spec):
            raise ConfigError("database URL: sslpassword is not supported (it would reach argv)")
        return cls._from(spec, env.get("PGPASSWORD") or None, env)

    @classmethod
    def target(cls, url: str, env: Mapping[str, str]) -> PgConn:
        """A restore target typed by an operator or declared in the config: one server, and
        only keywords on ``TARGET_PARAMS``. Its password is its own (or ``~/.pgpass``)."""
        if not url.startswith(URL_SCHEMES):
            raise ConfigError("target must be a postgresql:// URL or a database name")
        _check_url_authority(url)
        split = urlsplit(url)
        keys = [k for k, _ in parse_qsl(split.query, keep_blank_values=True)]
        if "dbname" in keys:
            raise ConfigError("target URL: dbname= is not allowed (the database is the URL's path)")
        if len(keys) != len(set(keys)):
            raise ConfigError("target URL: a parameter is given twice")
        authority = split.netloc.rpartition("@")[2]
        if authority and ({"host", "port"} & set(keys)):
            raise ConfigError(
                "target URL: host= or port= in the query would override the server the URL "
                "names (use one: postgresql://user@host:port/db, or "
                "postgresql://user@/db?host=/socket/dir for a socket)"
            )
        redirecting = sorted(v for v in REDIRECTING_ENV if env.get(v) or os.environ.get(v))
        if redirecting:
            raise ConfigError(
                f"{redirecting[0]} is set in the environment: it would send a target URL's "
                "connection somewhere the URL does not name; unset it for restores to a URL"
            )
        parsed = _conninfo_to_dict(url)
        refused = sorted(set(parsed) - TARGET_PARAMS)
        if refused:
            raise ConfigError(
                f"target URL: parameter {refused[0]!r} is not allowed (a target may set only "
                f"{', '.join(sorted(TARGET_PARAMS - {'password'}))})"
            )
        if "," in parsed.get("host", "") or "," in parsed.get("port", ""):
            raise ConfigError("target URL: name one server (multi-host targets are refused)")
        return replace(cls._from(url, None, env), strict=True)

    @classmethod
    def _from(cls, spec: str, fallback_password: str | None, env: Mapping[str, str]) -> PgConn:
        parsed = _conninfo_to_dict(spec)
        password = parsed.pop("password", None) or fallback_password
        if "dbname" not in parsed or not parsed["dbname"]:
            parsed["dbname"] = parsed.get("user") or env.get("PGDATABASE") or login_name()
        return cls(tuple(sorted(parsed.items())), password, _display(spec))

    # --- views -------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        return dict(self.params).get(key)

    @property
    def dbname(self) -> str:
        return self.get("dbname") or ""

    def with_params(self, **changes: str | None) -> PgConn:
        params = dict(self.params)
        for key, value in changes.items():
            if value is None or value == "":
                params.pop(key, None)
            else:
                params[key] = value
        return replace(self, params=tuple(sorted(params.items())))

    def with_db(self, dbname: str) -> PgConn:
        conn = self.with_params(dbname=dbname)
        return replace(conn, display=_with_display_db(self.display, dbname))

    def connect_kwargs(self, env: Mapping[str, str]) -> dict[str, Any]:
        """For ``psycopg.connect``: the keywords over the environment's defaults. The password
        is always explicit, empty when there is none, so that libpq never falls back to a
        ``PGPASSWORD`` meant for another server (``~/.pgpass`` still applies)."""
        kwargs: dict[str, Any] = {
            kw: env[var] for var, kw in ENV_DEFAULTS.items() if env.get(var, "") != ""
        }
        kwargs.setdefault("application_name", "sbbackup")
        kwargs.setdefault("connect_timeout", "10")
        kwargs.update(dict(self.params))
        kwargs["password"] = self.password or ""
        return kwargs

    def conninfo(self) -> str:
        """The quoted ``key=value`` string for a child's ``-d`` (no password in it)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(**dict(self.params))

    def redacted(self) -> str:
        return self.display


def _display(spec: str) -> str:
    """How a connection may be logged and recorded: the URL without its password."""
    if not spec.startswith(URL_SCHEMES):
        return " ".join(
            f"{k}={v}" for k, v in sorted(_conninfo_to_dict(spec).items()) if k != "password"
        )
    scheme, rest = spec.split("://", 1)
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "password"]
    safe = f"{scheme}://{user + '@' if at and user else ''}{hosts}/{path}"
    if params:
        from urllib.parse import urlencode

        safe += "?" + urlencode(params)
    return redact_secrets(safe)


def _with_display_db(display: str, dbname: str) -> str:
    if not display.startswith(URL_SCHEMES):
        if display.startswith("(libpq environment)"):
            return f"(libpq environment) dbname={dbname}"
        parts = [p for p in display.split(" ") if not p.startswith("dbname=")]
        return " ".join([*parts, f"dbname={dbname}"])
    return url_with_db(display, dbname)


def url_with_db(url: str, dbname: str) -> str:
    """``url`` naming the database ``dbname``: its scheme, user, hosts and parameters kept."""
    head, _, tail = url.partition("://")
    netloc, _, rest = tail.partition("/")
    _, q, query = rest.partition("?")
    return f"{head}://{netloc}/{quote(dbname)}{q}{query}"


def child_env(
    env: Mapping[str, str], passfile: Passfile | None, strict: bool = False
) -> dict[str, str]:
    """What pg_dump, psql and pg_restore get: the locale, PATH, HOME (for ``~/.pgpass`` and
    ``~/.postgresql``) and the libpq ``PG*`` settings, never ``PGPASSWORD``, ``DATABASE_URL``
    or an API token. ``strict`` (a target URL): none of ``TARGET_STRIPPED_ENV`` either."""
    drop = {"PGPASSWORD", *(TARGET_STRIPPED_ENV if strict else ())}
    out = {k: v for k, v in env.items() if k in CHILD_ENV_KEEP or k.startswith("LC_")}
    out.update({k: v for k, v in env.items() if k.startswith("PG") and k not in drop})
    out.setdefault("PGAPPNAME", "sbbackup")
    out.setdefault("PGCONNECT_TIMEOUT", "10")
    if passfile is not None:
        out["PGPASSFILE"] = passfile.path
    return out


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@dataclass(frozen=True)
class Passfile:
    """Where a child finds its password: ``PGPASSFILE`` and the descriptor it must inherit."""

    path: str
    fd: int | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self.fd is None else (self.fd,)


@contextlib.contextmanager
def passfile_for(password: str | None) -> Iterator[Passfile | None]:
    """A private passfile holding ``password`` for the lifetime of one child (a parallel
    pg_restore connects once per worker); None when there is no password. On Linux it is an
    anonymous memory file (``memfd``) the child inherits as ``/dev/fd/N``, mode 0600: the
    password never touches a disk. Elsewhere, a 0600 file in a 0700 directory, removed after.
    The child connects to exactly one pinned server, so the entry matches any."""
    if password is None:
        yield None
        return
    if "\n" in password or "\r" in password:
        raise ConfigError("a database password cannot contain a line break")
    line = f"*:*:*:*:{_pgpass_escape(password)}\n".encode()
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("sbbackup-pgpass", 0)  # no MFD_CLOEXEC: the child inherits it
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line)
            yield Passfile(f"/dev/fd/{fd}", fd)
        finally:
            os.close(fd)
        return
    directory = tempfile.mkdtemp(prefix="sbbackup-pgpass-")  # mode 0700
    path = os.path.join(directory, "pgpass")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(line)
        yield Passfile(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
