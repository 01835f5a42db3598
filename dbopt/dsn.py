"""Connection strings (DSNs): mask, label and scrub them so no password ever reaches output.

Two DSN syntaxes exist, both parsed by libpq: URIs (``postgresql://user:pw@host/db?k=v``)
and key=value strings (``host=h password='se cret'``). libpq decides what a DSN means, so
parsing goes through ``psycopg.conninfo``; the text-level work here only finds *where* a
secret sits, so that the rest of the DSN can be shown as the user wrote it.

When in doubt, hide more: a DSN libpq rejects is rendered as ``<unparseable DSN>`` rather
than echoed, and a URI password holding an unencoded ``@`` or ``/`` (which libpq misreads
into the host or dbname) is still hidden whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbopt.errors import ConfigError

MASK = "***"
UNPARSEABLE = "<unparseable DSN>"

_URI_PREFIXES = ("postgresql://", "postgres://")
# libpq's isspace() in the C locale; str.isspace() would also accept Unicode spaces.
_SPACE = " \t\n\v\f\r"
# Keywords whose values are secrets. libpq flags most of them with dispchar "*" (added below
# at import time, so keywords of newer libpq versions are covered too); the SCRAM keys are
# only flagged "D" (debug) but are as good as a password.
_SECRET_KEYWORDS_STATIC = frozenset(
    {
        "password",
        "sslpassword",
        "oauth_client_secret",
        "scram_client_key",
        "scram_server_key",
    }
)


def _libpq_secret_keywords() -> frozenset[str]:
    """Keywords the linked libpq marks as passwords (dispchar ``*``)."""
    try:
        defaults = psycopg.pq.Conninfo.get_defaults()
    except psycopg.Error:
        return frozenset()
    return frozenset(o.keyword.decode() for o in defaults if o.dispchar == b"*")


SECRET_KEYWORDS: frozenset[str] = _SECRET_KEYWORDS_STATIC | _libpq_secret_keywords()


class _Unparseable(Exception):
    """The DSN text does not follow the libpq syntax."""


@dataclass(frozen=True, slots=True)
class _Masked:
    """A DSN with its secrets hidden, and the hidden texts (raw and decoded)."""

    text: str
    secrets: tuple[str, ...]


def _uri_prefix(dsn: str, *, loose: bool = False) -> str | None:
    """The URI scheme prefix libpq would see (case-sensitive, as in libpq), or None.

    ``loose`` also accepts other letter cases: libpq rejects them, but a DSN it rejects may
    still hold a password to find.
    """
    for prefix in _URI_PREFIXES:
        head = dsn[: len(prefix)]
        if head == prefix or (loose and head.lower() == prefix):
            return head
    return None


def _looks_like_conninfo(value: str) -> bool:
    """Whether a dbname value is itself a whole connection string."""
    # libpq expands a dbname holding a whole connection string in some entry points
    # (PQconnectdbParams with expand_dbname); treat such a value as a nested DSN.
    return value.startswith(_URI_PREFIXES) or "=" in value


# ---------------------------------------------------------------------------------------------
# key=value strings


@dataclass(frozen=True, slots=True)
class _Pair:
    """One ``key=value`` of a key=value DSN; ``start``/``end`` span the raw value text."""

    key: str
    value: str
    start: int
    end: int


def _parse_pairs(dsn: str) -> list[_Pair]:
    """Split a key=value DSN exactly as libpq's conninfo_parse does, keeping value spans."""
    pairs: list[_Pair] = []
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n:
            break
        key_start = i
        while i < n and dsn[i] != "=" and dsn[i] not in _SPACE:
            i += 1
        key = dsn[key_start:i]
        while i < n and dsn[i] in _SPACE:
            i += 1
        if i >= n or dsn[i] != "=" or not key:
            raise _Unparseable
        i += 1
        while i < n and dsn[i] in _SPACE:
            i += 1
        start = i
        chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _Unparseable  # unterminated quoted string
                c = dsn[i]
                if c == "\\":
                    i += 1
                    if i < n:
                        chars.append(dsn[i])
                        i += 1
                elif c == "'":
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
        else:
            while i < n and dsn[i] not in _SPACE:
                if dsn[i] == "\\":
                    i += 1
                    if i < n:
                        chars.append(dsn[i])
                        i += 1
                else:
                    chars.append(dsn[i])
                    i += 1
        pairs.append(_Pair(key, "".join(chars), start, i))
    return pairs


def _quote_value(value: str) -> str:
    """Render a value for a key=value DSN, quoted when it needs to be."""
    if value and not any(c in _SPACE or c in "'\\" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _mask_pairs(dsn: str) -> _Masked:
    """Mask a key=value DSN, keeping every other pair as written."""
    pieces: list[str] = []
    secrets: list[str] = []
    last = 0
    for pair in _parse_pairs(dsn):
        replacement: str | None = None
        if pair.key in SECRET_KEYWORDS:
            replacement = MASK
            if pair.end < len(dsn) and dsn[pair.end] not in _SPACE:
                replacement += " "  # password='x'user=y: keep the pairs apart
            secrets += [pair.value, dsn[pair.start : pair.end]]
            if dsn[pair.start : pair.end].startswith("'"):
                secrets.append(dsn[pair.start + 1 : pair.end - 1])
        elif pair.key == "dbname" and _looks_like_conninfo(pair.value):
            inner = _mask(pair.value)
            if inner.secrets:
                replacement = _quote_value(inner.text)
                secrets += inner.secrets
        if replacement is not None:
            pieces += [dsn[last : pair.start], replacement]
            last = pair.end
    pieces.append(dsn[last:])
    return _Masked("".join(pieces), tuple(secrets))


# ---------------------------------------------------------------------------------------------
# URIs


def _odd_authority(authority: str) -> bool:
    """Whether a ``host:port,...`` list cannot be one: a port that is no number, say.

    That is how libpq reads ``user:pa/ss@host`` (host ``user``, port ``pa``).
    """
    for entry in authority.split(","):
        if entry.startswith("["):
            continue
        host, colon, port = entry.rpartition(":")
        if colon and (not port.isdigit() or ":" in host):
            return True
    return False


def _userinfo_end(body: str) -> int:
    """Index of the ``@`` ending the user-info in a URI body (after ``scheme://``), or -1.

    libpq ends the user-info at the first ``@`` met before any ``/``. A password holding an
    unencoded ``@`` or ``/`` (invalid in a URI) then spills into libpq's host, port or
    dbname, so the user-info is stretched to a later ``@`` (before the query string) where
    the text makes no sense read libpq's way: a host holding an ``@``, a dbname holding an
    ``@`` and then a ``/``, or a host list with a port that is no number. Hiding too much is
    the safe side; a valid URI (say with a dbname ``db@prod``) is read as libpq reads it.
    """
    first = -1
    for idx, c in enumerate(body):
        if c == "@":
            first = idx
            break
        if c == "/":
            break
    start = first + 1
    query = body.find("?", start)
    end = query if query >= 0 else len(body)
    slash = body.find("/", start, end)
    # A host holds no '@' (only reachable when libpq found user-info: else no '@' precedes
    # the first '/').
    at = max(first, body.rfind("@", start, slash if slash >= 0 else end))
    if slash < 0:
        return at
    last_slash = body.rfind("/", slash + 1, end)
    if last_slash > slash:
        at = max(at, body.rfind("@", slash, last_slash))
    if first < 0 and _odd_authority(body[:slash]):
        at = max(at, body.rfind("@", slash, end))
    return at


def _mask_hostlist(hostlist: str) -> tuple[str, list[str]]:
    """Hide non-numeric ports of ``host:port,...``: a password typed without its ``@``."""
    out: list[str] = []
    secrets: list[str] = []
    for entry in hostlist.split(","):
        if entry.startswith("[") and "]" in entry:
            close = entry.index("]") + 1
            host, sep, port = entry[:close], entry[close : close + 1], entry[close + 1 :]
        else:
            host, sep, port = entry.rpartition(":")
            if not sep:
                host, port = entry, ""
        if port and not port.isdigit():
            secrets.append(port)
            port = MASK
        out.append(f"{host}{sep}{port}")
    return ",".join(out), secrets


def _mask_query(query: str) -> tuple[str, list[str]]:
    """Hide secret parameters of a URI query string (``password=...``)."""
    out: list[str] = []
    secrets: list[str] = []
    for param in query.split("&"):
        raw_key, eq, raw_value = param.partition("=")
        key = unquote(raw_key)
        if eq and key in SECRET_KEYWORDS:
            secrets += [raw_value, unquote(raw_value)]
            out.append(f"{raw_key}={MASK}")
            continue
        if eq and key == "dbname" and _looks_like_conninfo(unquote(raw_value)):
            inner = _mask(unquote(raw_value))
            if inner.secrets:
                secrets += inner.secrets
                out.append(f"{raw_key}={quote(inner.text, safe='')}")
                continue
        out.append(param)
    return "&".join(out), secrets


def _mask_uri(dsn: str, prefix: str) -> _Masked:
    """Mask a URI DSN: the user-info password, odd ports and secret query parameters."""
    body = dsn[len(prefix) :]
    secrets: list[str] = []
    at = _userinfo_end(body)
    userinfo = ""
    if at >= 0:
        user, colon, password = body[:at].partition(":")
        if colon:
            secrets += [password, unquote(password)]
            userinfo = f"{user}:{MASK}@"
        else:
            userinfo = f"{user}@"
    rest = body[at + 1 :]
    rest, qmark, query = rest.partition("?")
    slash = rest.find("/")
    hostlist, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    hostlist, hidden = _mask_hostlist(hostlist)
    secrets += hidden
    query, hidden = _mask_query(query)
    secrets += hidden
    return _Masked(f"{prefix}{userinfo}{hostlist}{path}{qmark}{query}", tuple(secrets))


def _unparseable_rendering(dsn: str) -> str:
    """A safe label for a DSN libpq rejects: the scheme and host of a URI, if clear."""
    prefix = _uri_prefix(dsn, loose=True)
    if prefix is None:
        return UNPARSEABLE
    body = dsn[len(prefix) :]
    authority = body.split("?", 1)[0]
    # Only text after an '@' is surely no password: everything before it may be user-info.
    if "@" in authority:
        host = authority.rsplit("@", 1)[1].split("/", 1)[0]
        if host and re.fullmatch(r"[A-Za-z0-9._\-\[\]:,%]+", host):
            return f"<unparseable DSN: {prefix}{host}>"
    return f"<unparseable DSN: {prefix}>"


def _libpq_params(dsn: str) -> dict[str, str]:
    """The DSN's parameters as libpq reads them; raise _Unparseable when libpq rejects it."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise _Unparseable from None
    return {k: str(v) for k, v in params.items()}


def _mask(dsn: str) -> _Masked:
    """Mask a DSN; raise _Unparseable when libpq (or our own splitter) rejects it."""
    params = _libpq_params(dsn)
    prefix = _uri_prefix(dsn)
    masked = _mask_uri(dsn, prefix) if prefix is not None else _mask_pairs(dsn)
    # libpq's decoded values too: it is what the server (and its error messages) may see.
    libpq_values = [v for k, v in params.items() if k in SECRET_KEYWORDS]
    # Where libpq misreads a URI (a password with an unencoded '@' or '/'), pieces of the
    # password land in the host or dbname that libpq error messages quote: hide those pieces
    # too. Single characters are left alone, or every 'h' of a message would go.
    pieces = [
        piece
        for secret in masked.secrets
        if secret not in libpq_values and unquote(secret) not in libpq_values
        for piece in re.split(r"[@/]", secret)
        if len(piece) >= 2
    ]
    return _Masked(masked.text, (*masked.secrets, *libpq_values, *pieces))


def _lenient_secrets(dsn: str) -> list[str]:
    """Best-effort secrets of a DSN libpq rejects (unterminated quote, stray words...)."""
    secrets: list[str] = []
    prefix = _uri_prefix(dsn, loose=True)
    if prefix is not None:
        body = dsn[len(prefix) :]
        at = _userinfo_end(body)
        if at >= 0 and ":" in body[:at]:
            password = body[:at].partition(":")[2]
            secrets += [password, unquote(password)]
    # key=value pairs, in a key=value DSN or a URI query: a secret value runs up to the next
    # "key=" (an unquoted password with spaces or '&' is the usual reason for the rejection).
    keys = "|".join(sorted(SECRET_KEYWORDS))
    pattern = rf"(?:^|[\s?&])(?:{keys})\s*=\s*(.*?)(?=[\s&]+[A-Za-z_%0-9]+\s*=|\s*$)"
    for match in re.finditer(pattern, dsn, flags=re.DOTALL):
        value = match.group(1)
        secrets += [value, value.strip("'"), unquote(value)]
        secrets += value.split()
    return secrets


def _unique(items: Iterable[str]) -> list[str]:
    """The non-empty items, first occurrence first."""
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------
# public API


def mask_dsn(dsn: str) -> str:
    """Return the DSN with every password replaced by ``***``; never raises.

    A DSN libpq cannot parse is rendered as ``<unparseable DSN>`` (with the scheme and host of
    a URI when they are unambiguous), never as the original text.
    """
    try:
        return _mask(dsn).text
    except _Unparseable:
        return _unparseable_rendering(dsn)
    except Exception:  # never let a bug here print the DSN in a traceback
        return UNPARSEABLE


def secrets_of(dsn: str) -> list[str]:
    """Return the secrets of a DSN (raw and decoded forms) for scrubbing other text."""
    try:
        return _unique(_mask(dsn).secrets)
    except Exception:  # _Unparseable, or a bug: either way, find what can be found
        return _unique(_lenient_secrets(dsn))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-empty) secret in ``text`` by ``***``.

    Occurrences may overlap or nest (a raw and a decoded form); every character covered by any
    of them is hidden, so no fragment of a secret survives.
    """
    spans: list[tuple[int, int]] = []
    for secret in set(secrets):
        if not secret:
            continue
        start = text.find(secret)
        while start >= 0:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    spans.sort()
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    last = 0
    for start, end in merged:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


def _libpq_defaults() -> dict[str, str]:
    """libpq's defaults for missing parameters: PGHOST, PGUSER..., then compiled-in ones."""
    try:
        defaults = psycopg.pq.Conninfo.get_defaults()
    except psycopg.Error:
        return {}
    return {o.keyword.decode(): o.val.decode() for o in defaults if o.val is not None}


def _render_hosts(host: str, port: str) -> str:
    """Render libpq's comma-separated hosts and ports as ``host:port,host:port``."""
    hosts = host.split(",")
    ports = port.split(",")
    if len(ports) == 1:
        # libpq applies a single port to every host.
        ports = ports * len(hosts)
    rendered: list[str] = []
    for idx, name in enumerate(hosts):
        shown = name or "[local]"
        if ":" in shown:
            shown = f"[{shown}]"
        port_of = ports[idx] if idx < len(ports) else ""
        rendered.append(f"{shown}:{port_of or '5432'}")
    return ",".join(rendered)


def describe_target(dsn: str) -> str:
    """Return a short label for the DSN's target, like ``user@host:port/dbname``; no password.

    Missing parts come from the libpq environment (PGHOST, PGUSER, ...) as libpq would take
    them; a host-less target is a Unix socket, shown as ``[local]``. A service DSN is shown
    as ``service=name``.
    """
    try:
        # Read the *masked* DSN: where libpq misreads a malformed URI, pieces of a password
        # would otherwise end up in the host or dbname of the label.
        params = _libpq_params(_mask(dsn).text)
    except _Unparseable:
        return _unparseable_rendering(dsn)
    except Exception:  # a label must never fail, nor show the DSN in a traceback
        return UNPARSEABLE
    defaults = _libpq_defaults()

    def get(key: str) -> str:
        return params.get(key) or defaults.get(key) or ""

    service = params.get("service") or ("" if params.get("host") else get("service"))
    if service:
        return f"service={service}"
    user = get("user")
    where = _render_hosts(get("host") or get("hostaddr"), get("port"))
    # libpq's default database is the user name.
    dbname = get("dbname") or user
    return f"{user}@{where}/{dbname}" if user else f"{where}/{dbname}"


def target_name(dsn: str, *, port: bool = False) -> str:
    """What a fleet calls a target written without a name: ``host/dbname`` (``host:port/dbname``
    with ``port``), or the service's name; read from the masked DSN, never from a password.

    A Unix-socket (or absent) host is ``local``; parts the DSN leaves out come from libpq's
    defaults, as for :func:`describe_target`.
    """
    try:
        params = _libpq_params(_mask(dsn).text)
    except Exception:
        return UNPARSEABLE
    defaults = _libpq_defaults()

    def get(key: str) -> str:
        return params.get(key) or defaults.get(key) or ""

    service = params.get("service") or ("" if params.get("host") else get("service"))
    if service:
        return service
    host = (get("host") or get("hostaddr")).split(",")[0]
    host = "local" if not host or host.startswith("/") else host
    if port:
        host = f"{host}:{get('port').split(',')[0] or '5432'}"
    return f"{host}/{get('dbname') or get('user')}"


#: The parts of a DSN that decide which server, database and role it means (and the
#: startup options, which could set a role): the ones worth naming when the environment
#: supplies them.
IDENTITY_KEYWORDS = ("host", "hostaddr", "port", "dbname", "user", "service", "options")


def _libpq_envvars() -> dict[str, str]:
    """Each libpq keyword and the environment variable libpq reads for it (PGHOST...)."""
    try:
        defaults = psycopg.pq.Conninfo.get_defaults()
    except psycopg.Error:
        return {}
    return {o.keyword.decode(): o.envvar.decode() for o in defaults if o.envvar}


@dataclass(frozen=True, slots=True)
class EnvironmentPart:
    """A part of a target that libpq takes from an environment variable, not from the DSN."""

    keyword: str
    variable: str
    value: str  # "" for a secret: never shown

    def __str__(self) -> str:
        return f"{self.keyword} from {self.variable}" + (f" ({self.value})" if self.value else "")


def environment_parts(
    dsn: str, environ: Mapping[str, str], keywords: Iterable[str] = IDENTITY_KEYWORDS
) -> list[EnvironmentPart]:
    """The ``keywords`` libpq will take from ``environ`` because ``dsn`` leaves them out.

    That is libpq's documented behaviour (a DSN without host uses PGHOST), and the reason
    ``--env production`` with a host-less DSN may reach the database PGHOST names. A DSN that
    names a service gets its parts from the service file first: nothing is reported then.
    An unparseable DSN reports nothing (connecting says what is wrong with it).
    """
    try:
        params = _libpq_params(dsn)
    except Exception:
        return []
    if params.get("service"):
        return []
    envvars = _libpq_envvars()
    parts = []
    for keyword in keywords:
        variable = envvars.get(keyword)
        if variable and not params.get(keyword) and environ.get(variable):
            shown = "" if keyword in SECRET_KEYWORDS else environ[variable]
            parts.append(EnvironmentPart(keyword, variable, shown))
    return parts


@dataclass(frozen=True, slots=True)
class PortableDsn:
    """A DSN that means the same target under another environment (cron), without password."""

    dsn: str
    password_removed: bool  # the DSN (or PGPASSWORD) held a password that was left out


def portable_dsn(dsn: str, environ: Mapping[str, str]) -> PortableDsn:
    """``dsn`` with what libpq would take from ``environ`` written in, and every secret out.

    For text that runs elsewhere, as a crontab line does: cron sets no PGHOST, so a part the
    environment supplied here is spelled out; a password is never written (a pass file, a
    service file or the environment of the job must supply it). The result is a key=value
    string. Raise ConfigError when libpq cannot parse ``dsn`` (never quoting it).
    """
    try:
        params = _libpq_params(dsn)
    except Exception:
        raise ConfigError(f"cannot read the connection string {mask_dsn(dsn)}") from None
    removed = any(params.get(k) for k in SECRET_KEYWORDS)
    kept = {k: v for k, v in params.items() if k not in SECRET_KEYWORDS and v}
    envvars = _libpq_envvars()
    for keyword, variable in envvars.items():
        if keyword in SECRET_KEYWORDS:
            removed = removed or bool(environ.get(variable))
            continue
        if keyword not in kept and environ.get(variable) and not kept.get("service"):
            kept[keyword] = environ[variable]
    return PortableDsn(make_conninfo("", **kept), removed)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(
    value: str, pos: int, environ: Mapping[str, str], *, nested: bool, live: bool
) -> tuple[str, int]:
    """Expand from ``pos`` up to the end (or a closing brace when ``nested``).

    ``live`` is false inside a default that will not be used: missing variables there are
    not errors, as in the shell.
    """
    out: list[str] = []
    n = len(value)
    while pos < n:
        c = value[pos]
        if nested and c == "}":
            return "".join(out), pos
        if c != "$":
            out.append(c)
            pos += 1
            continue
        nxt = value[pos + 1 : pos + 2]
        if nxt == "$":
            out.append("$")
            pos += 2
            continue
        if nxt != "{":
            out.append("$")  # a lone '$' is literal; only ${...} expands
            pos += 1
            continue
        match = _NAME.match(value, pos + 2)
        if match is None:
            raise ConfigError(
                f"invalid ${{...}} reference at character {pos + 1}: expected a variable name "
                "(letters, digits, _); write $$ for a literal $"
            )
        name = match.group()
        pos = match.end()
        found = environ.get(name)
        if value.startswith(":-", pos):
            default, pos = _expand(value, pos + 2, environ, nested=True, live=live and not found)
            expanded = found if found else default
        elif value.startswith("}", pos):
            if found is None and live:
                raise ConfigError(
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} to give a default)"
                )
            expanded = found or ""
        else:
            raise ConfigError(
                f"invalid reference to {name} at character {pos + 1}: "
                f"expected '}}' or ':-default}}'"
            )
        out.append(expanded)
        pos += 1  # past the closing brace, where both branches above stop
    if nested:
        raise ConfigError("unterminated ${...:-default}: missing '}'")
    return "".join(out), pos


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``; ``$$`` is a literal ``$``.

    A default is used when the variable is unset or empty, and may itself hold references.
    A lone ``$`` not followed by ``{`` or ``$`` is kept as is. Raise ConfigError naming a
    missing variable (never a value: the expansion may be a password).
    """
    return _expand(value, 0, environ, nested=False, live=True)[0]
