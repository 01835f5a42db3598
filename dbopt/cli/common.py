"""Options every command shares, and the one place where library errors become exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from dbopt.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    DboptError,
    InputError,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  a check failed (budget missed, drift found where none is allowed, a build failed)
  2  bad input (spec, config, flags) or an unsafe action refused
  3  could not connect, or could not take dbopt's lock
  130 interrupted (Ctrl-C)"""


@dataclass(frozen=True, slots=True)
class Options:
    """The common options, as given on the command line."""

    env: str | None
    dsn: str | None
    config: Path | None
    specs: tuple[Path, ...]
    fmt: str
    verbose: int

    def load_config(self) -> Any:
        """dbopt.yaml (or the defaults)."""
        from dbopt.config import load_config

        return load_config(self.config)

    def spec_dirs(self, config: Any) -> list[tuple[Path, bool]]:
        """--specs when given (each must exist), else the config's or default dirs (optional)."""
        if self.specs:
            return [(p, True) for p in self.specs]
        return [(Path(d), False) for d in config.spec_dirs]

    def target(self, config: Any) -> Any:
        """The database to talk to, from --env/--dsn and the config."""
        from dbopt.config import resolve_target

        return resolve_target(config, self.env, self.dsn)


def common_options(fn: F) -> F:
    """Add --env, --dsn, --config, --specs, --format and -v; pass them as ``opts``."""

    @click.option("--env", "env", metavar="NAME", help="Environment from dbopt.yaml.")
    @click.option(
        "--dsn",
        metavar="DSN",
        envvar="DBOPT_DSN",
        help="libpq URI or key=value string (overrides the environment's DSN). Without "
        "--env/--dsn: PGHOST/PGDATABASE/PGSERVICE/~/.pgpass, or DATABASE_URL.",
    )
    @click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Configuration file (default: ./dbopt.yaml if present).",
    )
    @click.option(
        "--specs",
        "specs",
        multiple=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="Spec directory; repeatable (default: indexes/ and views/).",
    )
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "plain", "json", "markdown"]),
        default=None,
        help="Output format (default: table on a terminal, plain when piped).",
    )
    @click.option("-v", "--verbose", count=True, help="More detail; repeat for more.")
    @functools.wraps(fn)
    def wrapper(
        env: str | None,
        dsn: str | None,
        config: Path | None,
        specs: tuple[Path, ...],
        fmt: str | None,
        verbose: int,
        **kwargs: Any,
    ) -> Any:
        if fmt is None:
            fmt = "table" if sys.stdout.isatty() else "plain"
        opts = Options(env, dsn, config, specs, fmt, verbose)
        return fn(opts, **kwargs)

    return wrapper  # type: ignore[return-value]


def report_error(err: DboptError, verbose: int = 0) -> None:
    """Print an expected error to stderr: problems first, one per line, then the summary."""
    if isinstance(err, InputError):
        for problem in err.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {err.args[0] if err.args else err}", err=True)
        return
    click.echo(f"error: {err}", err=True)


class DboptGroup(click.Group):
    """A click group that turns dbopt's expected errors into messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DboptError as err:
            report_error(err)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except click.Abort:
            # A confirmation prompt with no answer (no terminal, EOF, Ctrl-C): not confirmed.
            click.echo("error: not confirmed (no answer to the prompt); nothing was run", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            from dbopt.db import format_db_error

            # A lock dbopt would not wait for is like a busy run lock: exit 3; any other
            # database error is a failed step: exit 1. Never a traceback.
            locked = isinstance(exc, psycopg.errors.LockNotAvailable)
            what = "gave up waiting for a lock (lock_timeout)" if locked else "database error"
            click.echo(f"error: {what}: {format_db_error(exc)}", err=True)
            ctx.exit(EXIT_CONNECT if locked else EXIT_CHECK_FAILED)
