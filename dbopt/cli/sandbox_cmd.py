"""The ``dbopt sandbox`` command: a throwaway PostgreSQL server with a fresh database."""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from dbopt.cli.common import report_error
from dbopt.db import connect
from dbopt.dsn import mask_dsn
from dbopt.errors import EXIT_CONNECT, DboptError
from dbopt.sandbox import DSN_ENV, Server, start_server

SANDBOX_DB = "dbopt_sandbox"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt, so cleanup runs as for Ctrl-C."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Route SIGTERM and SIGHUP through the same cleanup as Ctrl-C while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        signums.append(signal.SIGHUP)  # the terminal closed
    previous = {signum: signal.signal(signum, _interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(signum, handler)


def _printable(dsn: str) -> str:
    """Return the DSN as it is when it holds no password, else masked (never print one)."""
    try:
        has_password = bool(conninfo_to_dict(dsn).get("password"))
    except psycopg.ProgrammingError:
        has_password = True
    return mask_dsn(dsn) if has_password else dsn


@click.command("sandbox")
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SQL file to load first, e.g. the output of pg_dump --schema-only.",
)
@click.option(
    "--keep-running/--exit-after-ready",
    default=True,
    show_default=True,
    help="Wait for Ctrl-C, or clean up as soon as the database is ready "
    "(which checks that the schema loads).",
)
def sandbox(schema: Path | None, keep_running: bool) -> None:
    """Start a throwaway PostgreSQL server and print the URL of a fresh database.

    The server comes from DBOPT_TEST_DSN (an existing server: only a new database is
    created there), else Docker, else local server binaries (DBOPT_PG_BIN, pg_config or
    /usr/lib/postgresql). Ctrl-C stops it and deletes everything it created.

    \b
    Examples:
      dbopt sandbox
      dbopt sandbox --schema schema.sql
      pg_dump --schema-only "$PROD_URL" > schema.sql && dbopt sandbox --schema schema.sql
      dbopt sandbox --schema schema.sql --exit-after-ready   # does the dump load?
    """
    server: Server | None = None
    try:
        with _terminate_as_interrupt():
            try:
                started = time.monotonic()
                server = start_server()
                elapsed = time.monotonic() - started
                click.echo(f"Server: {server.provider}, ready in {elapsed:.1f} s.", err=True)
                if server.data_dir is not None:
                    click.echo(f"Data directory: {server.data_dir}", err=True)
                # A server dbopt cannot use is no sandbox for it: the check every command makes.
                connect(server.dsn).close()
                dsn = server.create_database(SANDBOX_DB)
                if schema is not None:
                    server.load_sql(SANDBOX_DB, schema)
                    click.echo(f"Loaded {schema}.", err=True)
                shown = _printable(dsn)
                click.echo(shown)
                click.echo(f"export DATABASE_URL={shlex.quote(shown)}")
                if shown != dsn:
                    click.echo(f"(password masked: it is the one in {DSN_ENV})", err=True)
                if keep_running:
                    click.echo(
                        "Press Ctrl-C to stop; all the sandbox created is then deleted.", err=True
                    )
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                click.echo("\nStopping.", err=True)
            finally:
                if server is not None:
                    server.stop()
    except DboptError as err:
        report_error(err)
        click.get_current_context().exit(err.exit_code)
    except psycopg.Error as err:
        # The server went away or refused the sandbox database: no traceback for that.
        message = err.diag.message_primary or str(err).strip()
        click.echo(f"error: {message}", err=True)
        click.get_current_context().exit(EXIT_CONNECT)
    if server is not None and server.data_dir is not None:
        click.echo(f"Stopped; deleted {server.data_dir.parent}.", err=True)
