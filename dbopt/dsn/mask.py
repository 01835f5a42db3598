"""Masking DSNs: where a secret sits in a URI or a key=value string, so the rest of it can be
shown as written; scrubbing secrets out of any text (see :mod:`dbopt.dsn`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

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


class Unparseable(Exception):
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
            raise Unparseable
        i += 1
        while i < n and dsn[i] in _SPACE:
            i += 1
        start = i
        chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise Unparseable  # unterminated quoted string
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
            inner = masked(pair.value)
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
            inner = masked(unquote(raw_value))
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


def unparseable_rendering(dsn: str) -> str:
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


def libpq_params(dsn: str) -> dict[str, str]:
    """The DSN's parameters as libpq reads them; raise Unparseable when libpq rejects it."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise Unparseable from None
    return {k: str(v) for k, v in params.items()}


def masked(dsn: str) -> _Masked:
    """Mask a DSN; raise Unparseable when libpq (or our own splitter) rejects it."""
    params = libpq_params(dsn)
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
        return masked(dsn).text
    except Unparseable:
        return unparseable_rendering(dsn)
    except Exception:  # never let a bug here print the DSN in a traceback
        return UNPARSEABLE


def secrets_of(dsn: str) -> list[str]:
    """Return the secrets of a DSN (raw and decoded forms) for scrubbing other text."""
    try:
        return _unique(masked(dsn).secrets)
    except Exception:  # Unparseable, or a bug: either way, find what can be found
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
