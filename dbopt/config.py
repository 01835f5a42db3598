"""dbopt.yaml: named environments (DSN, timeouts, confirmation) and project defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dbopt.docvalidate import schema_problems, suggest
from dbopt.errors import ConfigError
from dbopt.schema import config_schema
from dbopt.yamlload import load_file

DEFAULT_CONFIG = "dbopt.yaml"
DEFAULT_SPEC_DIRS = ("indexes", "views")

_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")


def duration_ms(value: int | str) -> int:
    """A PostgreSQL-style duration ('5s', '500ms', 2000) in milliseconds."""
    if isinstance(value, int):
        return value
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"'{value}' is not a duration: write e.g. 500ms, 5s, 2min, 1h")
    return int(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]


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

    def merged(self, raw: Mapping[str, Any]) -> Settings:
        """These settings overridden by the keys given in a config mapping."""
        changes: dict[str, Any] = {}
        for key in (
            "lock_timeout",
            "statement_timeout",
            "retry_backoff",
            "cleanup_wait",
            "build_wait_timeout",
        ):
            if key in raw:
                changes[f"{key}_ms"] = duration_ms(raw[key])
        for key in ("maintenance_work_mem", "jobs", "retries", "confirm", "verify_timeout_factor"):
            if key in raw:
                changes[key] = raw[key]
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Environment:
    """A named database target from dbopt.yaml; ``dsn`` is kept unexpanded until used."""

    name: str
    dsn: str | None
    settings: Settings


@dataclass(frozen=True, slots=True)
class Config:
    """The whole dbopt.yaml (or the defaults when there is none)."""

    path: str | None = None
    history_schema: str = "dbopt"
    spec_dirs: tuple[str, ...] = DEFAULT_SPEC_DIRS
    defaults: Settings = Settings()
    environments: Mapping[str, Environment] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    """The database a command will talk to, and how."""

    env: str | None
    dsn: str | None  # None: the libpq environment (PGHOST, PGSERVICE, ...) or DATABASE_URL
    settings: Settings


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
        problems.extend(schema_problems(doc, config_schema()))
    if problems:
        raise ConfigError(f"{path}: invalid configuration; nothing was run", problems)
    data: dict[str, Any] = doc.data
    try:
        defaults = Settings().merged(data.get("defaults", {}))
        environments = {
            name: Environment(name, raw.get("dsn"), defaults.merged(raw))
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
    """Pick the database from --env/--dsn; ``${VAR}`` in an environment's DSN is expanded."""
    from dbopt.dsn import expand_env

    environ = os.environ if environ is None else environ
    if env is None:
        return Target(env=None, dsn=dsn or None, settings=config.defaults)
    if env not in config.environments:
        where = config.path or f"no {DEFAULT_CONFIG} found"
        known = sorted(config.environments)
        hint = suggest(env, known) or (
            f"; known: {', '.join(known)}" if known else "; none is defined"
        )
        raise ConfigError(f"unknown environment '{env}' ({where}){hint}")
    chosen = config.environments[env]
    if dsn:
        return Target(env=env, dsn=dsn, settings=chosen.settings)
    if chosen.dsn is None:
        return Target(env=env, dsn=None, settings=chosen.settings)
    try:
        expanded = expand_env(chosen.dsn, environ)
    except ConfigError as exc:
        raise ConfigError(f"environment '{env}' in {config.path}: {exc}") from None
    return Target(env=env, dsn=expanded, settings=chosen.settings)
