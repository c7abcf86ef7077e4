"""The properties of a database that live outside its dump: encoding, locale, settings,
comment and ACL (what ``pg_dump --create`` would write, and a plain pg_dump loses).

``read`` records them (in the manifest as ``database.properties``, and from a restored
database for the comparison); ``create_sql`` makes a target with the same encoding and locale;
``apply`` re-applies the settings, the comment and the ACL after a load.

The shape, as JSON::

    {"encoding": "UTF8", "collate": "C.UTF-8", "ctype": "C.UTF-8",
     "localeProvider": "libc",          # "icu" or "builtin" (PG17) otherwise
     "locale": null,                    # the ICU (or builtin) locale, when there is one
     "icuRules": null,                  # PG16+, ICU only
     "settings": [{"role": null, "name": "work_mem", "value": "7MB"}, ...],
     "comment": null,
     "acl": [{"grantee": null, "privilege": "CONNECT", "grantable": false}, ...]}

``settings`` are ``pg_db_role_setting`` rows for this database (``role`` null: database-wide,
``ALTER DATABASE d SET``; else ``ALTER ROLE r IN DATABASE d SET``), ``value`` as the server
stores it after the ``=``. ``acl`` is the effective ACL (a NULL ``datacl`` is expanded to the
defaults) without the owner's own entries, one row per privilege, ``grantee`` null for PUBLIC;
it is read with ``aclexplode``, so no ``aclitem`` text is parsed. Everything read back from a
manifest is checked for its shape first; every statement is composed with ``psycopg.sql``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ...errors import DatabaseError
from .client import control_free

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}
DATABASE_PRIVILEGES = frozenset({"CREATE", "TEMPORARY", "CONNECT"})


def default_acl() -> list[dict[str, Any]]:
    """The ACL of a database nobody granted anything on: PUBLIC may connect and create
    temporary tables (the owner's own entries are left out, as ``read`` leaves them out)."""
    return [{"grantee": None, "privilege": p, "grantable": False} for p in ("CONNECT", "TEMPORARY")]


# pg_dump's variable_is_guc_list_quote(): the settings flatten_set_variable_args() stores as
# a list of double-quoted elements, which a SET must get back as one literal per element.
GUC_LIST_QUOTE = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
# What CREATE DATABASE answers when the server cannot make a database with that encoding or
# locale: invalid_parameter_value ("invalid LC_COLLATE locale name", "encoding ... does not
# match locale"), wrong_object_type ("invalid locale name", PG15+), feature_not_supported
# (a provider the server was built without), syntax_error (an option an older server lacks).
LOCALE_SQLSTATES = frozenset({"22023", "42809", "0A000", "42601"})
# The drill has no such flag: the hint says it is a restore's.
NO_PROPS_HINT = "or skip them with `restore --no-database-properties`"


def _locale_columns(version: int) -> str:
    if version >= 170000:
        return "d.datlocprovider::text, d.datlocale, d.daticurules"
    if version >= 160000:
        return "d.datlocprovider::text, d.daticulocale, d.daticurules"
    if version >= 150000:
        return "d.datlocprovider::text, d.daticulocale, NULL::text"
    return "'c'::text, NULL::text, NULL::text"


SETTINGS_SQL = """SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE r.rolname::text END,
  s.setrole = 0 OR r.oid IS NOT NULL, s.setconfig
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE d.datname = current_database()"""
ACL_SQL = """SELECT a.grantee = 0, r.rolname::text, a.privilege_type, a.is_grantable
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database() AND a.grantee <> d.datdba"""


def read(session: psycopg.Connection[Any]) -> dict[str, Any]:
    """The current database's properties (the shape in the module docstring)."""
    version = int(session.info.server_version)
    row = session.execute(
        "SELECT pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text, "
        f"{_locale_columns(version)}, shobj_description(d.oid, 'pg_database') "
        "FROM pg_database d WHERE d.datname = current_database()"
    ).fetchone()
    if row is None or len(row) != 7 or not all(isinstance(v, str) for v in row[:4]):
        raise DatabaseError("the server answered the database properties with unexpected data")
    encoding, collate, ctype, provider, locale, rules, comment = row
    return {
        "encoding": encoding,
        "collate": collate,
        "ctype": ctype,
        "localeProvider": PROVIDERS.get(provider, provider),
        "locale": locale,
        "icuRules": rules,
        "settings": _read_settings(session),
        "comment": comment,
        "acl": _read_acl(session),
    }


def _read_settings(session: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for role, known, config in session.execute(SETTINGS_SQL).fetchall():
        if not known or not isinstance(config, list):
            continue  # a setting of a role dropped meanwhile applies to nobody
        for item in config:
            name, eq, value = str(item).partition("=")
            if eq:  # pg_dump silently skips an item without "=": so do we
                out.append({"role": role, "name": name, "value": value})
    return sorted(out, key=_sort_key)


def _read_acl(session: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    seen: set[tuple[str | None, str, bool]] = set()
    for public, role, privilege, grantable in session.execute(ACL_SQL).fetchall():
        if not public and role is None:
            continue  # a grantee that no longer exists
        seen.add((None if public else str(role), str(privilege), bool(grantable)))
    entries = [{"grantee": g, "privilege": p, "grantable": o} for g, p, o in seen]
    return sorted(entries, key=_sort_key)


def _sort_key(entry: Any) -> str:
    return json.dumps(entry, sort_keys=True)


def canonical(value: Any) -> Any:
    """A property's value as compared: lists in a fixed order."""
    if isinstance(value, list):
        return sorted(value, key=_sort_key)
    return value


# --- the target's shape --------------------------------------------------------------------


def _text(props: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = props.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise DatabaseError(f"the backup's database properties have an invalid {key!r}")
    return value


def create_sql(name: str, props: dict[str, Any] | None, owner: str | None = None) -> sql.Composed:
    """``CREATE DATABASE name [OWNER owner]`` with the encoding and locale of ``props`` (from
    template0, as only it may be copied with another encoding or locale); a plain ``CREATE
    DATABASE`` when the backup recorded none (an older manifest)."""
    from psycopg import sql

    owned = sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL("")
    if not props:
        return sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), owned)
    parts = [
        sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
        ).format(
            sql.Identifier(name),
            sql.Literal(_text(props, "encoding")),
            sql.Literal(_text(props, "collate")),
            sql.Literal(_text(props, "ctype")),
        )
    ]
    provider = _text(props, "localeProvider", required=False) or "libc"
    locale = _text(props, "locale", required=False)
    rules = _text(props, "icuRules", required=False)
    if provider not in PROVIDERS.values():
        raise DatabaseError(f"the backup's database has an unknown locale provider {provider!r}")
    if provider != "libc":  # left out for libc, so an older server takes it too
        parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.Literal(provider)))
    if provider == "icu" and locale:
        parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(locale)))
    if provider == "builtin" and locale:
        parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(locale)))
    if provider == "icu" and rules:
        parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(rules)))
    return sql.SQL(" ").join(parts) + owned


def describe_locale(props: dict[str, Any]) -> str:
    """``encoding UTF8, LC_COLLATE 'C.UTF-8', ...`` for a message."""
    words = [
        f"encoding {props.get('encoding')}",
        f"LC_COLLATE {props.get('collate')!r}",
        f"LC_CTYPE {props.get('ctype')!r}",
    ]
    provider = props.get("localeProvider") or "libc"
    if provider != "libc":
        words.append(f"{provider} locale {props.get('locale')!r}")
    return control_free(", ".join(words))


def create(
    session: psycopg.Connection[Any],
    name: str,
    props: dict[str, Any] | None,
    owner: str | None = None,
) -> None:
    """Run ``create_sql``. A server that cannot make such a database (a locale its host does
    not have, an encoding the locale does not fit) gives one DatabaseError naming the locale;
    any other error (the name is taken, for one) goes up unchanged."""
    import psycopg

    try:
        session.execute(create_sql(name, props, owner))
    except psycopg.Error as exc:
        if not props or getattr(exc, "sqlstate", None) not in LOCALE_SQLSTATES:
            raise
        said = control_free(str(getattr(exc.diag, "message_primary", None) or exc))
        raise DatabaseError(
            f"the target server cannot create a database with the backup's "
            f"{describe_locale(props)}: {said}; install that locale on the target "
            "server's host (locale-gen), or restore on a server that has it"
        ) from None


# --- re-applying settings, comment and ACL -------------------------------------------------


def _checked(
    props: dict[str, Any],
) -> tuple[list[dict[str, Any]], str | None, list[dict[str, Any]]]:
    """The settings, comment and ACL of ``props``, each checked for its shape."""
    bad = DatabaseError("the backup's database properties are malformed (settings, comment or acl)")
    settings, comment, acl = props.get("settings") or [], props.get("comment"), props.get("acl")
    if not isinstance(settings, list) or (comment is not None and not isinstance(comment, str)):
        raise bad
    for s in settings:
        if not (
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and s["name"]
            and isinstance(s.get("value"), str)
            and (s.get("role") is None or isinstance(s.get("role"), str))
        ):
            raise bad
    if acl is None:
        acl = default_acl()
    if not isinstance(acl, list):
        raise bad
    for a in acl:
        if not (
            isinstance(a, dict)
            and a.get("privilege") in DATABASE_PRIVILEGES
            and isinstance(a.get("grantable"), bool)
            and (a.get("grantee") is None or isinstance(a.get("grantee"), str))
        ):
            raise bad
    return settings, comment, acl


def roles_needed(props: dict[str, Any] | None) -> list[str]:
    """The roles ``apply`` names: grantees and the roles of per-role settings."""
    if not props:
        return []
    settings, _, acl = _checked(props)
    names = {s["role"] for s in settings if s.get("role")} | {
        a["grantee"] for a in acl if a.get("grantee")
    }
    return sorted(names)


def check_roles(session: psycopg.Connection[Any], props: dict[str, Any] | None) -> None:
    """DatabaseError naming every role ``apply`` needs that the target server lacks."""
    needed = roles_needed(props)
    if not needed:
        return
    rows = session.execute(
        "SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s)", (needed,)
    ).fetchall()
    missing = sorted(set(needed) - {str(r[0]) for r in rows})
    if missing:
        names = ", ".join(control_free(n) for n in missing)
        raise DatabaseError(
            f"the backup's database settings or privileges name roles the target server does "
            f"not have: {names}; create them first, {NO_PROPS_HINT}"
        )


def split_guc_list(value: str) -> list[str] | None:
    """pg_dump's SplitGUCList: comma-separated elements, each bare (up to a comma or white
    space, case kept) or double-quoted (``""`` inside is one ``"``); None when malformed."""
    space = " \t\n\r\f\v"
    out: list[str] = []
    i, n = 0, len(value)
    while i < n and value[i] in space:
        i += 1
    if i == n:
        return out
    while True:
        if value[i] == '"':
            buf, i = [], i + 1
            while True:
                j = value.find('"', i)
                if j < 0:
                    return None
                buf.append(value[i:j])
                if j + 1 < n and value[j + 1] == '"':
                    buf.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            out.append("".join(buf))
        else:
            start = i
            while i < n and value[i] != "," and value[i] not in space:
                i += 1
            if i == start:
                return None
            out.append(value[start:i])
        while i < n and value[i] in space:
            i += 1
        if i == n:
            return out
        if value[i] != ",":
            return None
        i += 1
        while i < n and value[i] in space:
            i += 1


def setting_value(name: str, value: str) -> sql.Composable:
    """What follows ``SET name TO``, quoted the way pg_dump's makeAlterConfigCommand does."""
    from psycopg import sql

    if name.lower() in GUC_LIST_QUOTE:
        items = split_guc_list(value)
        if items:
            return sql.SQL(", ").join(sql.Literal(v) for v in items)
    return sql.Literal(value)


def apply_sql(name: str, props: dict[str, Any]) -> list[sql.Composed]:
    """The statements that give database ``name`` the settings, comment and ACL of ``props``."""
    from psycopg import sql

    settings, comment, acl = _checked(props)
    db = sql.Identifier(name)
    out: list[sql.Composed] = []
    for s in settings:
        target = (
            sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(s["role"]), db)
            if s.get("role")
            else sql.SQL("ALTER DATABASE {}").format(db)
        )
        out.append(
            sql.SQL("{} SET {} TO {}").format(
                target, sql.Identifier(s["name"]), setting_value(s["name"], s["value"])
            )
        )
    if comment is not None:
        out.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(comment)))
    if canonical(acl) != canonical(default_acl()):
        # The new database has the defaults: take PUBLIC's away, then grant what the source
        # granted (PUBLIC's share again where it kept it).
        out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        for a in canonical(acl):
            grantee = sql.Identifier(a["grantee"]) if a.get("grantee") else sql.SQL("PUBLIC")
            out.append(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(a["privilege"]),  # one of DATABASE_PRIVILEGES (checked)
                    db,
                    grantee,
                    sql.SQL(" WITH GRANT OPTION" if a["grantable"] else ""),
                )
            )
    return out


def apply(session: psycopg.Connection[Any], name: str, props: dict[str, Any] | None) -> None:
    """Re-apply the settings, comment and ACL of ``props`` to database ``name``, in one
    transaction. A role the target server lacks: DatabaseError naming it, before any change."""
    if not props:
        return
    from psycopg import errors as pgerrors

    check_roles(session, props)
    statements = apply_sql(name, props)
    if not statements:
        return
    try:
        with session.transaction():
            for statement in statements:
                session.execute(statement)
    except pgerrors.InsufficientPrivilege as exc:
        said = control_free(str(exc.diag.message_primary or exc))
        raise DatabaseError(
            "the restoring role may not re-apply the backup's database settings, comment or "
            f"privileges ({said}): restore as a superuser (per-role settings need one), "
            f"{NO_PROPS_HINT}"
        ) from None
