"""Options every command shares, and the one place where library errors become exit codes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dbopt.cli.completion import complete_env, complete_target
from dbopt.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    DboptError,
    InputError,
)

if TYPE_CHECKING:
    from dbopt.config import Config, Target
    from dbopt.fleet import Fleet
    from dbopt.model import QualifiedName

F = TypeVar("F", bound=Callable[..., Any])

#: PostgreSQL keeps the first 63 bytes of a longer name (NAMEDATALEN - 1); dbopt refuses it.
_MAX_NAME_BYTES = 63

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  a check failed (budget missed, drift found where none is allowed, a build failed)
  2  bad input (spec, config, flags) or an unsafe action refused
  3  could not connect, or a lock was not granted (dbopt's, or one another
     session holds): try again once it is done
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
    #: --target NAME and --targets GLOB: the databases of a fleet environment to work on.
    target_names: tuple[str, ...] = ()
    target_globs: tuple[str, ...] = ()

    def load_config(self) -> Config:
        """dbopt.yaml (or the defaults)."""
        from dbopt.config import load_config

        return load_config(self.config)

    def spec_dirs(self, config: Config) -> list[tuple[Path, bool]]:
        """--specs when given (each must exist), else the config's or default dirs (optional)."""
        if self.specs:
            return [(p, True) for p in self.specs]
        return [(Path(d), False) for d in config.spec_dirs]

    def _fleet_env(self, config: Config) -> bool:
        chosen = config.environments.get(self.env) if self.env is not None else None
        fleet = chosen is not None and chosen.is_fleet
        if not fleet and (self.target_names or self.target_globs):
            raise InputError(
                "--target and --targets choose databases of a fleet environment (one with "
                "targets: or targets_query: in dbopt.yaml)"
                + (f"; '{self.env}' names one database" if chosen is not None else "")
            )
        return fleet

    def fleet(self, config: Config) -> Fleet | None:
        """The selected databases of the --env fleet (see dbopt.fleet), or None when --env
        names one database (or none is given)."""
        if not self._fleet_env(config):
            return None
        from dbopt import fleet

        assert self.env is not None
        if self.dsn is not None:
            raise InputError(f"give --env or --dsn, not both: --env {self.env} is a fleet")
        return fleet.resolve(config, self.env).select(self.target_names, self.target_globs)

    def target(self, config: Config, what: str | None = None) -> Target:
        """The database to talk to, from --env/--dsn and the config (see resolve_target).

        On a fleet environment, the one target --target/--targets select; anything else is
        refused in one sentence (``what``: the command as it will be named there).

        Says on stderr when libpq will take part of an --env target (its host, port,
        database, user...) from PG* variables, since those differ from shell to shell and
        are gone under cron; with -v, always says which database and why.
        """
        from dbopt.config import resolve_target

        chosen = self.fleet(config)
        if chosen is not None:
            if len(chosen.members) != 1:
                command = what or f"dbopt {click.get_current_context().info_name}"
                raise InputError(
                    f"environment '{self.env}' is a fleet of {len(chosen.members)} selected "
                    f"databases and {command} works on one: choose it with --target NAME"
                )
            target = chosen.members[0].target
        else:
            _refuse_fleet_flags()
            target = resolve_target(config, self.env, self.dsn)
        parts = target.environment_parts() if target.env is not None else []
        if parts:
            click.echo(
                f"warning: environment '{target.env}' does not name its "
                f"{', '.join(p.keyword for p in parts)}: libpq takes "
                f"{', '.join(str(p) for p in parts)}; write them into its dsn in "
                f"{config.path} to make the target independent of this shell",
                err=True,
            )
        if self.verbose:
            click.echo(f"target: {target.describe()}", err=True)
        return target


def _refuse_fleet_flags() -> None:
    """--parallel and --continue-on-error on one database: refused (as --canary is), not
    silently ignored."""
    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    given = [
        flag
        for flag, key in (("--parallel", "parallel"), ("--continue-on-error", "continue_on_error"))
        if params.get(key)
    ]
    if given:
        raise InputError(
            f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with a fleet "
            "environment (targets: in dbopt.yaml); this one names one database"
        )


def common_options(fn: F) -> F:
    """Add --env, --dsn, --config, --specs, --format and -v; pass them as ``opts``."""

    @click.option(
        "--env",
        "env",
        metavar="NAME",
        help="Environment from dbopt.yaml.",
        shell_complete=complete_env,
    )
    @click.option(
        "--dsn",
        metavar="DSN",
        help="libpq URI or key=value string (not with --env). Without --env and --dsn: "
        "$DBOPT_DSN, else $DATABASE_URL, else PGHOST/PGDATABASE/PGSERVICE/~/.pgpass; "
        "with --env, none of these is read.",
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
    @click.option(
        "--target",
        "target_names",
        multiple=True,
        metavar="NAME",
        help="With a fleet environment: only this target (repeatable).",
        shell_complete=complete_target,
    )
    @click.option(
        "--targets",
        "target_globs",
        multiple=True,
        metavar="GLOB",
        help="With a fleet environment: only the targets whose name matches (e.g. 'eu-*').",
    )
    @functools.wraps(fn)
    def wrapper(
        env: str | None,
        dsn: str | None,
        config: Path | None,
        specs: tuple[Path, ...],
        fmt: str | None,
        verbose: int,
        target_names: tuple[str, ...],
        target_globs: tuple[str, ...],
        **kwargs: Any,
    ) -> Any:
        if fmt is None:
            fmt = "table" if sys.stdout.isatty() else "plain"
        opts = Options(env, dsn, config, specs, fmt, verbose, target_names, target_globs)
        return fn(opts, **kwargs)

    return wrapper  # type: ignore[return-value]


class OutputFile(click.Path):
    """A file dbopt writes: its folder must exist and be writable when the command starts,
    so a report that cannot be written stops the command before anything runs (exit 2), not
    after a long run whose result would be lost."""

    def __init__(self, *, allow_dash: bool = False) -> None:
        super().__init__(path_type=Path, dir_okay=False, allow_dash=allow_dash)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        if self.allow_dash and str(value) == "-":
            return converted
        path = Path(os.fsdecode(converted))
        if path.exists():  # written in place (/dev/stdout, a file to overwrite)
            if not os.access(path, os.W_OK):
                self.fail(f"{path}: not writable", param, ctx)
            return converted
        _writable_folder(self, path.parent, "no such directory", param, ctx)
        return converted


class OutputDir(click.Path):
    """A folder dbopt writes files into, created when missing: it, or the nearest folder
    above it that exists, must be writable when the command starts (see OutputFile)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        existing = Path(os.fsdecode(converted))
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        _writable_folder(self, existing, "not a directory", param, ctx)
        return converted


def _writable_folder(
    kind: click.Path,
    folder: Path,
    missing: str,
    param: click.Parameter | None,
    ctx: click.Context | None,
) -> None:
    """Fail ``kind``'s conversion unless ``folder`` is a folder this user may write into."""
    if not folder.is_dir():
        kind.fail(f"{folder}: {missing}", param, ctx)
    if not os.access(folder, os.W_OK | os.X_OK):
        kind.fail(f"{folder}: not writable", param, ctx)


def parse_qualified_name(text: str, default_schema: str = "public") -> QualifiedName:
    """``name`` or ``schema.name``, with PostgreSQL's double quotes for unusual names.

    Names are taken as written, case included, as in spec files and in what `dbopt status`
    prints (``MyIndex`` means the index "MyIndex", not "myindex"). Double quotes are needed
    only for a name holding a dot, a double quote, or spaces: ``"My Index"``,
    ``public."a.b"``, ``"a""b"`` (a""b is a"b). Raise ValueError saying what to write for an empty
    name, an empty part (``a.``), more than two parts (``a.b.c``), an unterminated quote or
    a name longer than 63 bytes.
    """
    from dbopt.model import QualifiedName

    text = text.strip()
    if not text:
        raise ValueError("the name is empty: write name or schema.name")
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if text.startswith('"', i):
            chars: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"{text}: a double quote is not closed")
                if text[i] == '"':
                    if text.startswith('""', i):
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            part = "".join(chars)
            if not part:
                raise ValueError(f"{text}: a quoted name cannot be empty")
            if i < n and text[i] != ".":
                raise ValueError(f"{text}: expected a dot or the end after a quoted name")
        else:
            end = text.find(".", i)
            end = n if end < 0 else end
            part = text[i:end]
            if not part:
                raise ValueError(f"{text}: a part of the name is empty: write name or schema.name")
            if '"' in part or any(c.isspace() for c in part):
                raise ValueError(
                    f'{text}: double-quote a name holding spaces or quotes, e.g. "{part}"'
                )
            i = end
        if len(part.encode()) > _MAX_NAME_BYTES:
            raise ValueError(f"{text}: '{part}' is longer than 63 bytes")
        parts.append(part)
        if i >= n:
            break
        i += 1  # the dot
        if i >= n:
            raise ValueError(f"{text}: a part of the name is empty: write name or schema.name")
    if len(parts) > 2:
        raise ValueError(
            f"{text}: {len(parts)} dotted parts; write name or schema.name (double-quote a "
            'name that holds a dot: schema."a.b")'
        )
    if len(parts) == 1:
        return QualifiedName(default_schema, parts[0])
    return QualifiedName(parts[0], parts[1])


if TYPE_CHECKING:  # click >= 8.2 types ParamType by what it converts to; 8.1 is not generic
    _NameParamType = click.ParamType[QualifiedName]
else:
    _NameParamType = click.ParamType


class QualifiedNameType(_NameParamType):
    """A relation name given in a flag (``--index``, ``--view``): ``name`` or ``schema.name``.

    Converts to a :class:`dbopt.spec.QualifiedName` (schema ``public`` when none is given);
    a malformed name is a usage error (exit 2) saying what to write, never a traceback.
    See :func:`parse_qualified_name` for quoting.
    """

    name = "name"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> QualifiedName:
        """Parse ``value`` (or pass a QualifiedName through: click converts defaults too)."""
        from dbopt.model import QualifiedName

        if isinstance(value, QualifiedName):
            return value
        try:
            return parse_qualified_name(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)  # raises click.BadParameter: a usage error, exit 2


#: The click type of every flag that names a relation: ``type=QUALIFIED_NAME``.
QUALIFIED_NAME = QualifiedNameType()


def report_error(err: DboptError, verbose: int = 0) -> None:
    """Print an expected error to stderr: problems first, one per line, then the summary."""
    if isinstance(err, InputError):
        for problem in err.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {err.args[0] if err.args else err}", err=True)
        return
    from dbopt.errors import OptionNeeded

    if isinstance(err, OptionNeeded):
        click.echo(f"error: {err} (run with --{err.option.replace('_', '-')})", err=True)
        return
    click.echo(f"error: {err}", err=True)


#: Commands that only read and end in seconds (see DboptGroup.invoke).
BOUNDED_COMMANDS = frozenset({"plan", "status", "validate", "schema", "history", "doctor"})
#: Commands whose set-up is bounded but whose run may wait on builds for hours.
BUILDING_COMMANDS = frozenset({"apply", "rollback"})


class DboptGroup(click.Group):
    """A click group that turns dbopt's expected errors into messages and exit codes."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        first = args[0] if args else None
        if first in BOUNDED_COMMANDS:
            from dbopt.gcpause import paused_gc

            # Short commands that only read build big graphs they keep to the end (10,000
            # specs, their catalog rows and plan actions): no cyclic collection until the
            # context closes, from the command's import on. Those that may run for hours
            # (refresh-views, verify...) keep the collector.
            ctx.with_resource(paused_gc())
        elif first in BUILDING_COMMANDS:
            from dbopt.gcpause import paused_until_run

            # The same for a command that builds, until its run starts (run_starts).
            ctx.with_resource(paused_until_run())
        return super().resolve_command(ctx, args)

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
