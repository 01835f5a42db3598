"""Throwaway PostgreSQL servers for the test suite and for ``dbopt sandbox``.

One of three providers is used, the first that works:

1. ``DBOPT_TEST_DSN``: an existing server whose role may CREATE DATABASE. Only databases with
   unique ``dbopt_test_`` names are created there, and ``Server.stop`` drops exactly those.
2. Docker, through testcontainers, when an engine answers a ping within seconds.
3. Local server binaries (``DBOPT_PG_BIN``, ``pg_config --bindir``, the newest
   ``/usr/lib/postgresql/*/bin``, or ``initdb`` on PATH): a new cluster in a temporary
   directory, listening on a free loopback port, deleted when the server stops.

When none works, `SandboxError` says what each option needs and why it was not used.

The providers live in :mod:`~dbopt.sandbox.local` and :mod:`~dbopt.sandbox.docker`; the
server's handle and what they share in :mod:`~dbopt.sandbox.server`.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
from collections.abc import Sequence

import psycopg

from dbopt.dsn import describe_target, scrub, secrets_of
from dbopt.errors import SandboxError
from dbopt.sandbox.docker import probe_docker
from dbopt.sandbox.local import PG_BIN_ENV, probe_local
from dbopt.sandbox.server import (
    DEFAULT_OPTIONAL_PRELOAD,
    DSN_ENV,
    SHARED_DB_PREFIX,
    Backend,
    Probe,
    Provider,
    Server,
    ServerOptions,
    connect,
    short,
    version_label,
)

__all__ = [
    "DSN_ENV",
    "PG_BIN_ENV",
    "PROBES",
    "SHARED_DB_PREFIX",
    "Probe",
    "Provider",
    "Server",
    "ServerOptions",
    "probe_local",
    "start_server",
]

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LIBRARY_NAME = re.compile(r"[A-Za-z0-9_./$-]+")


def _probe_dsn() -> Provider | str:
    """Use DBOPT_TEST_DSN when it is set, reachable, and its role may create databases."""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        return f"{DSN_ENV} not set"
    # Only user, host, port and database: the label goes to logs and test headers.
    shown = describe_target(dsn)
    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            version = version_label(conn)
    except psycopg.Error as err:
        # libpq may quote connection parameters back in its messages.
        return f"{DSN_ENV} ({shown}): cannot connect: {scrub(short(err), secrets_of(dsn))}"
    if not row or not row[0]:
        return f"{DSN_ENV} ({shown}): its role may not CREATE DATABASE"
    label = f"{DSN_ENV} ({shown}, {version})"

    def start(options: ServerOptions) -> Server:
        return Server(dsn=dsn, provider=label, _backend=_SharedBackend())

    return Provider(label, start)


class _SharedBackend(Backend):
    """A server someone else runs: nothing to stop, only our databases to drop."""

    shared = True


# --- public entry points ---------------------------------------------------------------------

#: Where `start_server` looks for a server, in order: the first that works is used.
PROBES: tuple[Probe, ...] = (_probe_dsn, probe_docker, probe_local)


def _check_options(
    settings: dict[str, str] | None, preload: list[str] | None, optional: list[str] | None
) -> ServerOptions:
    """Validate the caller's settings before they reach a configuration file."""
    settings = dict(settings or {})
    for name in settings:
        if not _SETTING_NAME.fullmatch(name):
            raise SandboxError(f"invalid server setting name {name!r}")
    libraries = tuple(preload or ())
    optional_libraries = tuple(dict.fromkeys((*DEFAULT_OPTIONAL_PRELOAD, *(optional or ()))))
    for lib in (*libraries, *optional_libraries):
        if not _LIBRARY_NAME.fullmatch(lib):
            raise SandboxError(f"invalid preload library name {lib!r}")
    return ServerOptions(settings, libraries, optional_libraries)


def _no_server_message(reasons: list[str]) -> str:
    """Explain the three ways to get a server, and why each was not used here."""
    dsn_reason, docker_reason, local_reason = reasons
    return (
        "No PostgreSQL server is available for the dbopt sandbox. Any one of these works:\n"
        f"  1. Use an existing server: set {DSN_ENV}=postgresql://user@host/db "
        "(its role must be allowed to CREATE DATABASE).\n"
        f"     Not used: {dsn_reason}.\n"
        "  2. Start Docker, so that a postgres container can run (testcontainers).\n"
        f"     Not used: {docker_reason}.\n"
        "  3. Install the PostgreSQL server binaries, e.g. `apt-get install postgresql`, "
        f"or set {PG_BIN_ENV} to the directory holding initdb and pg_ctl.\n"
        f"     Not used: {local_reason}."
    )


def _fallback_note(reasons: list[str]) -> str:
    """Say why DBOPT_TEST_DSN was passed over when the user did set it."""
    if reasons and os.environ.get(DSN_ENV, "").strip():
        return f"; {reasons[0]}"
    return ""


def start_server(
    settings: dict[str, str] | None = None,
    preload: list[str] | None = None,
    optional_preload: list[str] | None = None,
    *,
    probes: Sequence[Probe] = PROBES,
) -> Server:
    """Start (or borrow) a server from the first provider that works.

    ``settings``, ``preload`` (extra shared_preload_libraries: the server fails to start
    without them) and ``optional_preload`` (preloaded when the server has them, as
    pg_stat_statements always is) apply to servers this module starts; a ``DBOPT_TEST_DSN``
    server keeps its own configuration. ``probes`` says where to look (`PROBES`: a
    ``DBOPT_TEST_DSN`` server, Docker, local binaries). The server is stopped at interpreter
    exit if the caller has not stopped it.
    """
    options = _check_options(settings, preload, optional_preload)
    reasons: list[str] = []
    for probe in probes:
        found = probe()
        if isinstance(found, str):
            reasons.append(found)
            continue
        try:
            server = found.start(options)
        except SandboxError as err:
            reasons.append(str(err))
            continue
        note = _fallback_note(reasons)
        if note:
            server = dataclasses.replace(server, provider=server.provider + note)
        atexit.register(server.stop)
        return server
    if tuple(probes) == PROBES:
        raise SandboxError(_no_server_message(reasons))
    raise SandboxError("No PostgreSQL server could be started: " + "; ".join(reasons))
