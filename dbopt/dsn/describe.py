"""Labels of DSNs (``user@host:port/db``, a fleet target's name) and what libpq takes from
the environment for them; every one read from the masked DSN, never showing a password."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from dbopt.dsn.mask import (
    SECRET_KEYWORDS,
    UNPARSEABLE,
    Unparseable,
    libpq_params,
    mask_dsn,
    masked,
    unparseable_rendering,
)
from dbopt.errors import ConfigError


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
        params = libpq_params(masked(dsn).text)
    except Unparseable:
        return unparseable_rendering(dsn)
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
        params = libpq_params(masked(dsn).text)
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
        params = libpq_params(dsn)
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
        params = libpq_params(dsn)
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
