"""dbopt.yaml: named environments (DSN, timeouts, confirmation) and project defaults.

Every value is checked here, before any connection: a value the server would refuse (a
timeout beyond its limit, a malformed memory size) is an input error naming the file, the
line and the key, never a failure halfway through a run.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbopt.docvalidate import dotted, schema_problems
from dbopt.errors import ConfigError, Problem
from dbopt.schema import (
    DURATION_KEYS,
    config_schema,
)
from dbopt.settingvalues import (
    DURATION_TEXT,
    MEMORY_TEXT,
    duration_ms,
    duration_problem,
    memory_problem,
    parse_search_path,
    timezone_problem,
)
from dbopt.words import suggest
from dbopt.yamlload import Document, Path_, load_file

if TYPE_CHECKING:  # dbopt.dsn imports psycopg: only commands that connect need it
    from dbopt.dsn import EnvironmentPart

DEFAULT_CONFIG = "dbopt.yaml"
DEFAULT_SPEC_DIRS = ("indexes", "views")
DEFAULT_SEARCH_PATH = ("public",)
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class Settings:
    """How dbopt behaves against one database; every field has a safe default."""

    #: Longest wait for a lock before giving up (and retrying); keeps the application unblocked.
    lock_timeout_ms: int = 5_000
    #: Longest any one statement may run; 0 = no limit (index builds can take hours).
    statement_timeout_ms: int = 0
    maintenance_work_mem: str | None = None
    jobs: int = 1
    retries: int = 5
    retry_backoff_ms: int = 2_000
    #: How long a failed build's INVALID index may wait to be dropped (its blockers finish).
    cleanup_wait_ms: int = 300_000
    #: How long a concurrent build or drop may wait for other transactions (its waits never
    #: block the application's reads and writes); 0 = as long as it takes.
    build_wait_timeout_ms: int = 0
    confirm: bool = False
    #: verify's statement_timeout for a query is budget_ms times this factor (at least 1 s).
    verify_timeout_factor: float = 20.0
    #: The schemas unqualified names in view queries, index expressions and budget queries
    #: resolve to, pinned on every connection instead of the role's search_path.
    search_path: tuple[str, ...] = DEFAULT_SEARCH_PATH
    #: The TimeZone pinned on every connection: timestamptz literals in specs and date
    #: arithmetic in views mean the same whatever the role or database is set to.
    timezone: str = DEFAULT_TIMEZONE
    #: apply and rollback pause before each build while a standby replays more than this
    #: behind the primary; 0 = do not wait for standbys.
    max_replica_lag_ms: int = 0
    #: The longest they pause for lagging standbys in all before stopping the run (exit 1,
    #: recorded as stopped); 0 = as long as it takes.
    max_replica_wait_ms: int = 1_800_000

    def __post_init__(self) -> None:
        problems = [
            f"{name}_ms: {problem}"
            for name in DURATION_KEYS
            for value in [getattr(self, f"{name}_ms")]
            if (problem := _ms_problem(name, value)) is not None
        ]
        if self.maintenance_work_mem is not None:
            problem = memory_problem(self.maintenance_work_mem)
            if problem:
                problems.append(f"maintenance_work_mem: {problem}")
        for name, low, high in (("jobs", 1, 64), ("retries", 0, 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{name}: expected an integer from {low} to {high}, got {value!r}")
        if not 1 <= self.verify_timeout_factor <= 1000:
            problems.append(
                f"verify_timeout_factor: expected a number from 1 to 1000, "
                f"got {self.verify_timeout_factor!r}"
            )
        parse_search_path(self.search_path)
        zone = timezone_problem(self.timezone)
        if zone:
            problems.append(f"timezone: {zone}")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))

    def merged(self, raw: Mapping[str, Any]) -> Settings:
        """These settings overridden by the keys given in a config mapping."""
        changes: dict[str, Any] = {}
        for key in DURATION_KEYS:
            if key in raw:
                changes[f"{key}_ms"] = duration_ms(raw[key])
        for key in (
            "maintenance_work_mem",
            "jobs",
            "retries",
            "confirm",
            "verify_timeout_factor",
            "timezone",
        ):
            if key in raw:
                changes[key] = raw[key]
        if "search_path" in raw:
            changes["search_path"] = parse_search_path(raw["search_path"])
        return replace(self, **changes)


def _ms_problem(key: str, ms: int) -> str | None:
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        return f"expected a whole number of milliseconds, got {ms!r}"
    return duration_problem(key, ms)


@dataclass(frozen=True, slots=True)
class Replica:
    """A standby of an environment: ``dsn`` a connection string, ``name`` what messages call
    it. As read from dbopt.yaml, ``dsn`` is unexpanded and ``name`` may be empty; see
    :meth:`resolved`."""

    name: str
    dsn: str

    @classmethod
    def from_config(cls, raw: str | Mapping[str, str]) -> Replica:
        if isinstance(raw, str):
            return cls("", raw)
        return cls(raw.get("name", ""), raw["dsn"])

    def resolved(self, position: int, environ: Mapping[str, str]) -> Replica:
        """``${VAR}`` expanded, then a bare service name made ``service=<name>``; unnamed, a
        service is called by its name, a DSN ``replica-<position>`` (never its text: it may
        hold a password)."""
        from dbopt.dsn import expand_env

        dsn, service = dsn_or_service(expand_env(self.dsn, environ))
        return Replica(self.name or service or f"replica-{position}", dsn)


def dsn_or_service(text: str) -> tuple[str, str | None]:
    """A connection string as written in dbopt.yaml (expanded): a bare word is a service name
    of pg_service.conf, made ``service=<name>`` (and returned as the second item, a name to
    call it by); anything else is a DSN, as is."""
    text = text.strip()
    if "=" not in text and "://" not in text:
        return f"service={text}", text
    return text, None


#: Names status and apply use for nodes that are not listed replicas.
RESERVED_NODE_NAMES = ("primary", "this standby")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a fleet's entry was written in dbopt.yaml (as dbopt.model.Location, which this
    module does not import: it would import psycopg)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def problem(self, message: str) -> Problem:
        """A problem found at this location."""
        return Problem(self.file, self.line, self.column, message)


@dataclass(frozen=True, slots=True)
class TargetEntry:
    """One database of a fleet as written under ``targets:`` (``dsn`` unexpanded, ``name``
    empty when the file gives none), with where it was written."""

    name: str
    dsn: str
    at: Location


@dataclass(frozen=True, slots=True)
class TargetsQuery:
    """``targets_query:``: the SQL that lists a fleet's databases, run on a control database
    (``dsn`` unexpanded); ``at`` is where the SQL was written."""

    dsn: str
    sql: str
    at: Location


#: Targets of a fleet worked on at a time when neither the environment nor --parallel says.
DEFAULT_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class Environment:
    """A named database target from dbopt.yaml; ``dsn`` is kept unexpanded until used.

    A fleet environment names many databases instead (``targets`` or ``targets_query``);
    :mod:`dbopt.fleet` resolves them."""

    name: str
    dsn: str | None
    settings: Settings
    replicas: tuple[Replica, ...] = ()
    targets: tuple[TargetEntry, ...] = ()
    targets_query: TargetsQuery | None = None
    parallel: int = DEFAULT_PARALLEL

    @property
    def is_fleet(self) -> bool:
        """Whether this environment names many databases (targets or targets_query)."""
        return bool(self.targets) or self.targets_query is not None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole dbopt.yaml (or the defaults when there is none)."""

    path: str | None = None
    history_schema: str = "dbopt"
    spec_dirs: tuple[str, ...] = DEFAULT_SPEC_DIRS
    defaults: Settings = Settings()
    environments: Mapping[str, Environment] = field(default_factory=dict)


#: The DSN of a run without --env and --dsn (before DATABASE_URL and the libpq environment).
DBOPT_DSN = "DBOPT_DSN"
DATABASE_URL = "DATABASE_URL"
LIBPQ_ENVIRONMENT = "the libpq environment (PGHOST, PGSERVICE, ~/.pgpass...)"


@dataclass(frozen=True, slots=True)
class Target:
    """The database a command will talk to, how, and where that choice came from.

    ``dsn`` is final: ``""`` means the libpq environment only (PGHOST, PGSERVICE, ...;
    :func:`dbopt.db.connect` then reads no DATABASE_URL). ``source`` says who chose it
    ("--dsn", "environment 'production' in dbopt.yaml", "DBOPT_DSN", "DATABASE_URL" or the
    libpq environment); :meth:`describe` says it to the person running the command.
    """

    env: str | None
    dsn: str | None
    settings: Settings
    source: str = ""
    #: The environment's standbys, their DSNs expanded.
    replicas: tuple[Replica, ...] = ()

    def environment_parts(self, environ: Mapping[str, str] | None = None) -> list[EnvironmentPart]:
        """Parts of the target (host, port, dbname, user...) libpq takes from PG* variables."""
        from dbopt.dsn import environment_parts

        return environment_parts(self.dsn or "", os.environ if environ is None else environ)

    def describe(self, environ: Mapping[str, str] | None = None) -> str:
        """``user@host:port/db (source; host from PGHOST (db2))``: never a password."""
        from dbopt.dsn import describe_target

        notes = [self.source] if self.source else []
        notes += [str(p) for p in self.environment_parts(environ)]
        label = describe_target(self.dsn or "")
        return f"{label} ({'; '.join(notes)})" if notes else label


def _value_problems(doc: Document, path: Path_, raw: Mapping[str, Any]) -> list[Problem]:
    """What the schema cannot say about one settings mapping: ranges and meanings.

    Values of the wrong shape are left to the schema's messages (one problem per mistake).
    """
    problems: list[Problem] = []

    def add(key: str, message: str) -> None:
        problems.append(doc.problem((*path, key), f"{dotted((*path, key))}: {message}"))

    for key in DURATION_KEYS:
        value = raw.get(key)
        if isinstance(value, bool):
            continue  # the schema says what is wrong with it
        if (isinstance(value, int) and value >= 0) or (
            isinstance(value, str) and DURATION_TEXT.match(value)
        ):
            problem = duration_problem(key, value)
            if problem:
                add(key, problem)
    memory = raw.get("maintenance_work_mem")
    if isinstance(memory, str) and MEMORY_TEXT.match(memory):
        problem = memory_problem(memory)
        if problem:
            add("maintenance_work_mem", problem)
    for key in ("jobs", "retries"):
        value = raw.get(key)
        if isinstance(value, float):
            add(key, f"expected a whole number, got {value!r}")
    if "search_path" in raw:
        try:
            parse_search_path(raw["search_path"])
        except ConfigError as exc:
            add("search_path", str(exc))
    zone = raw.get("timezone")
    if isinstance(zone, str) and zone:
        problem = timezone_problem(zone)
        if problem:
            add("timezone", problem)
    return problems


def _settings_problems(doc: Document) -> list[Problem]:
    data = doc.data
    problems: list[Problem] = []
    if isinstance(data.get("defaults"), dict):
        problems += _value_problems(doc, ("defaults",), data["defaults"])
    environments = data.get("environments")
    if isinstance(environments, dict):
        for name, raw in environments.items():
            if isinstance(raw, dict):
                problems += _value_problems(doc, ("environments", name), raw)
    return problems


def _fleet_problems(doc: Document) -> list[Problem]:
    """What makes a fleet environment ambiguous: dsn and targets both, targets and
    targets_query both, standbys (they belong to one database), a target name twice, a
    targets_query that is not one read-only SELECT."""
    problems: list[Problem] = []
    environments = doc.data.get("environments")
    if not isinstance(environments, dict):
        return problems
    for env, raw in environments.items():
        if not isinstance(raw, dict):
            continue
        here = ("environments", env)
        kinds = [k for k in ("targets", "targets_query") if k in raw]
        if len(kinds) == 2:
            problems.append(
                doc.problem(
                    (*here, "targets_query"),
                    f"environment '{env}': give targets or targets_query, not both",
                    key=True,
                )
            )
        if kinds and "dsn" in raw:
            problems.append(
                doc.problem(
                    (*here, "dsn"),
                    f"environment '{env}': give dsn (one database) or {kinds[0]} (a fleet), "
                    "not both",
                    key=True,
                )
            )
        if kinds and "replicas" in raw:
            problems.append(
                doc.problem(
                    (*here, "replicas"),
                    f"environment '{env}': replicas are the standbys of one database; a fleet "
                    "environment cannot list them",
                    key=True,
                )
            )
        targets = raw.get("targets")
        if isinstance(targets, list):
            first: dict[str, int] = {}
            for i, item in enumerate(targets):
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str):
                    continue
                if name in first:
                    line = doc.where((*here, "targets", first[name], "name"))[0]
                    problems.append(
                        doc.problem(
                            (*here, "targets", i, "name"),
                            f"environment '{env}': target name '{name}' is used twice "
                            f"(first at line {line})",
                        )
                    )
                else:
                    first[name] = i
        query = raw.get("targets_query")
        if isinstance(query, dict) and isinstance(query.get("sql"), str) and query["sql"].strip():
            from dbopt.readonly.references import static_refusals
            from dbopt.sqltext import SqlTextError, check_query

            try:
                check_query(query["sql"], with_placeholders=False)
                # Functions refused by name (pg_cancel_backend, set_config...): at load; what
                # else it reaches is asked of the control database's catalog before it runs.
                refused = static_refusals(query["sql"], with_placeholders=False)
            except SqlTextError as exc:
                problems.append(
                    doc.problem((*here, "targets_query", "sql"), f"targets_query.sql: {exc}")
                )
            else:
                problems += [
                    doc.problem(
                        (*here, "targets_query", "sql"),
                        f"targets_query.sql: {r.message}: the registry's query must change nothing",
                    )
                    for r in refused
                ]
    return problems


def _location(doc: Document, path: Path_) -> Location:
    line, column = doc.where(path)
    return Location(doc.file, line, column)


def _environment(
    doc: Document, name: str, raw: Mapping[str, Any], defaults: Settings, parallel: int
) -> Environment:
    here: Path_ = ("environments", name)
    targets = tuple(
        TargetEntry("", item, _location(doc, (*here, "targets", i)))
        if isinstance(item, str)
        else TargetEntry(item.get("name", ""), item["dsn"], _location(doc, (*here, "targets", i)))
        for i, item in enumerate(raw.get("targets", []))
    )
    query = raw.get("targets_query")
    return Environment(
        name,
        raw.get("dsn"),
        defaults.merged(raw),
        tuple(Replica.from_config(r) for r in raw.get("replicas", [])),
        targets,
        None
        if query is None
        else TargetsQuery(
            query["dsn"], query["sql"], _location(doc, (*here, "targets_query", "sql"))
        ),
        raw.get("parallel", parallel),
    )


def load_config(path: Path | None) -> Config:
    """Read ``path`` (or ./dbopt.yaml when present); defaults when there is no file."""
    if path is None:
        default = Path(DEFAULT_CONFIG)
        if not default.is_file():
            return Config()
        path = default
    elif not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    doc, problems = load_file(path)
    if doc is None:
        raise ConfigError(f"{path}: cannot read the configuration", problems)
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "the configuration must be a mapping"))
    else:
        # Checked on a copy: the validator may write schema defaults into what it checks,
        # and an environment must inherit `defaults:`, not the schema's.
        problems.extend(schema_problems(copy.deepcopy(doc), config_schema()))
        problems.extend(_settings_problems(doc))
        problems.extend(_fleet_problems(doc))
        problems.sort(key=lambda p: (p.line, p.column, p.message))
    if problems:
        raise ConfigError(f"{path}: invalid configuration; nothing was run", problems)
    data: dict[str, Any] = doc.data
    try:
        defaults = Settings().merged(data.get("defaults", {}))
        parallel = data.get("defaults", {}).get("parallel", DEFAULT_PARALLEL)
        environments = {
            name: _environment(doc, name, raw, defaults, parallel)
            for name, raw in sorted(data.get("environments", {}).items())
        }
    except ConfigError as exc:  # pragma: no cover - the schema's patterns catch these first
        raise ConfigError(f"{path}: {exc}") from None
    return Config(
        path=str(path),
        history_schema=data.get("history_schema", "dbopt"),
        spec_dirs=tuple(data.get("specs", DEFAULT_SPEC_DIRS)),
        defaults=defaults,
        environments=environments,
    )


def resolve_target(
    config: Config,
    env: str | None,
    dsn: str | None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """Pick the database: --env, else --dsn, else DBOPT_DSN, DATABASE_URL, the libpq environment.

    ``env`` and ``dsn`` are the flags as given on the command line (no environment variable
    behind them). The rule a careful DBA can predict:

    - ``--env`` names a database in dbopt.yaml (its ``${VAR}`` expanded) and nothing else
      may replace it: giving ``--dsn`` too is an error (which one did you mean?), and
      DBOPT_DSN and DATABASE_URL are not read. An environment without ``dsn`` means the
      libpq environment (PGHOST, PGSERVICE...). libpq still fills what a DSN leaves out from
      PG* variables: :meth:`Target.environment_parts` names those parts.
    - ``--dsn`` is used as given, with the config's defaults; an empty one is an error (an
      unset shell variable must not silently mean "whatever PGHOST says").
    - Neither: DBOPT_DSN, else DATABASE_URL, else the libpq environment.
    """
    from dbopt.dsn import expand_env

    environ = os.environ if environ is None else environ
    if env is not None and dsn is not None:
        raise ConfigError(
            f"give --env or --dsn, not both: --env {env} names a database in "
            f"{config.path or DEFAULT_CONFIG}, --dsn another; to use {env}'s settings "
            "with another DSN, add an environment for it"
        )
    if dsn is not None:
        if not dsn.strip():
            raise ConfigError(
                "--dsn is empty (an unset variable?): give a connection string, or leave "
                "--dsn out to use DBOPT_DSN, DATABASE_URL or the libpq environment"
            )
        return Target(env=None, dsn=dsn, settings=config.defaults, source="--dsn")
    if env is None:
        for variable in (DBOPT_DSN, DATABASE_URL):
            if environ.get(variable, "").strip():
                return Target(None, environ[variable], config.defaults, source=variable)
        return Target(None, "", config.defaults, source=LIBPQ_ENVIRONMENT)
    if env not in config.environments:
        where = config.path or f"no {DEFAULT_CONFIG} found"
        known = sorted(config.environments)
        hint = suggest(env, known) or (
            f"; known: {', '.join(known)}" if known else "; none is defined"
        )
        raise ConfigError(f"unknown environment '{env}' ({where}){hint}")
    chosen = config.environments[env]
    if chosen.is_fleet:  # never the libpq environment in its place: dbopt.fleet resolves it
        raise ConfigError(
            f"environment '{env}' in {config.path} is a fleet of databases: choose one with "
            "--target NAME"
        )
    source = f"environment '{env}' in {config.path}"
    try:
        replicas = tuple(r.resolved(i, environ) for i, r in enumerate(chosen.replicas, 1))
        expanded = None if chosen.dsn is None else expand_env(chosen.dsn, environ)
    except ConfigError as exc:
        raise ConfigError(f"environment '{env}' in {config.path}: {exc}") from None
    names = [r.name for r in replicas]
    clash = sorted({n for n in names if names.count(n) > 1 or n in RESERVED_NODE_NAMES})
    if clash:
        raise ConfigError(
            f"environment '{env}' in {config.path}: replicas need names of their own "
            f"(not {', '.join(RESERVED_NODE_NAMES)}, not twice): {', '.join(clash)}"
        )
    if expanded is None:
        return Target(
            env,
            "",
            chosen.settings,
            source=f"{source}, which leaves it to libpq",
            replicas=replicas,
        )
    return Target(env=env, dsn=expanded, settings=chosen.settings, source=source, replicas=replicas)
