"""Shell completion of the names a DBA types: environments, indexes, views.

Click's own mechanism (``_DBOPT_COMPLETE=bash_source dbopt`` and its zsh and fish forms,
see README "Shell completion") calls these while the user presses Tab. They read dbopt.yaml
and the spec files as plain YAML, without validating anything and without a database: a
completion must answer in milliseconds and must never fail, so a file that does not parse, or
a half-written one whose values have the wrong shape (``indexes: 5``), offers nothing.
Each completer is wrapped by :func:`_never_fails` as well: whatever goes wrong while the user
presses Tab, the shell is offered nothing rather than a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

#: As dbopt.config: the configuration file and the spec folders when none is named.
_DEFAULT_CONFIG = "dbopt.yaml"
_DEFAULT_SPEC_DIRS = ("indexes", "views")


Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _never_fails(completer: Completer) -> Completer:
    """``completer``, offering nothing instead of raising: a traceback printed into the
    user's command line by Tab is worse than no suggestion."""

    @functools.wraps(completer)
    def safe(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return completer(ctx, param, incomplete)
        except Exception:
            return []

    return safe


def _read_yaml(path: Path) -> Any:
    """The document of ``path``, or None when it is missing or does not parse."""
    import yaml

    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    # ValueError: a scalar YAML resolves but cannot build, such as the date 2024-13-45.
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None


def _config(ctx: click.Context) -> dict[str, Any]:
    """dbopt.yaml as plain YAML: --config when given earlier on the line, else ./dbopt.yaml."""
    given = ctx.params.get("config")
    data = _read_yaml(Path(given) if given else Path(_DEFAULT_CONFIG))
    return data if isinstance(data, dict) else {}


def environment_names(ctx: click.Context) -> list[tuple[str, str | None]]:
    """Each environment of dbopt.yaml with a few words about it (never its DSN)."""
    envs = _config(ctx).get("environments")
    if not isinstance(envs, dict):
        return []
    named: list[tuple[str, str | None]] = []
    for name, body in envs.items():
        body = body if isinstance(body, dict) else {}
        targets = body.get("targets")
        if isinstance(targets, list):
            about: str | None = f"fleet of {len(targets)} targets"
        elif "targets_query" in body:
            about = "fleet (targets_query)"
        else:
            about = "production-style: asks to confirm" if body.get("confirm") else None
        named.append((str(name), about))
    return named


def target_names(ctx: click.Context) -> list[str]:
    """The target names of the fleet environment given with --env earlier on the line, as
    dbopt.fleet names them: ``name:`` when written, else the service, else ``host/database``
    (``host:port/database`` when two would share a name). A ``targets_query`` fleet is read
    from a database: nothing is offered for it; nor for an entry whose ``${VAR}`` is unset."""
    import os

    from dbopt.config import dsn_or_service
    from dbopt.dsn import expand_env, target_name

    env = ctx.params.get("env")
    envs = _config(ctx).get("environments")
    body = envs.get(env) if isinstance(env, str) and isinstance(envs, dict) else None
    entries = body.get("targets") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return []
    named: list[tuple[str, str | None]] = []  # (name, the DSN it was derived from)
    for entry in entries:
        if isinstance(entry, dict) and _text(entry.get("name")) is not None:
            named.append((entry["name"], None))
        elif isinstance(entry, str | dict):
            text = entry.get("dsn") if isinstance(entry, dict) else entry
            if not isinstance(text, str):
                continue
            try:
                dsn, service = dsn_or_service(expand_env(text, os.environ))
            except Exception:  # an unset ${VAR}: this entry cannot be named here
                continue
            named.append((service or target_name(dsn), None if service else dsn))
    derived = [name for name, _ in named]
    return [
        target_name(dsn, port=True) if dsn is not None and derived.count(name) > 1 else name
        for name, dsn in named
    ]


def _spec_dirs(ctx: click.Context) -> list[Path]:
    given = ctx.params.get("specs")
    if given:
        return [Path(p) for p in given]
    configured = _config(ctx).get("specs")
    if isinstance(configured, list) and all(isinstance(d, str) for d in configured):
        return [Path(d) for d in configured]
    return [Path(d) for d in _DEFAULT_SPEC_DIRS]


def _spec_documents(ctx: click.Context) -> Iterator[dict[str, Any]]:
    for folder in _spec_dirs(ctx):
        if not folder.is_dir():
            continue
        for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
            doc = _read_yaml(path)
            if isinstance(doc, dict):
                yield doc


def _schema_of(qualified: str, fallback: str | None) -> str:
    if "." in qualified:
        return qualified.split(".", 1)[0]
    return fallback or "public"


def spec_names(ctx: click.Context, *, indexes: bool, views: bool) -> list[tuple[str, str, str]]:
    """``(schema, name, what)`` of the indexes and/or materialized views in the spec files.

    An index file names its table (``table: [schema.]name``) and lists ``indexes:``; a view
    file has ``name:`` and ``query:`` (and ``schema:``) and may list indexes of the view."""
    found: list[tuple[str, str, str]] = []
    for doc in _spec_documents(ctx):
        # A half-written file: only values of the right type count (``indexes: 5`` is none).
        name, table = _text(doc.get("name")), _text(doc.get("table"))
        is_view = name is not None and "query" in doc
        owner = name if is_view else table
        schema = _schema_of(owner or "", _text(doc.get("schema")))
        if views and is_view and owner is not None:
            found.append((schema, owner.split(".", 1)[-1], "materialized view"))
        entries = doc.get("indexes")
        if indexes and isinstance(entries, list):
            what = f"index on {owner}" if owner else "index"
            for entry in entries:
                if isinstance(entry, dict) and _text(entry.get("name")) is not None:
                    found.append((schema, entry["name"], what))
    return found


def _text(value: object) -> str | None:
    """``value`` when it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def _items(names: list[tuple[str, str, str]], incomplete: str) -> list[CompletionItem]:
    """Bare names (what people type); ``schema.name`` once a dot is typed."""
    qualified = "." in incomplete
    seen: set[str] = set()
    items: list[CompletionItem] = []
    for schema, name, what in names:
        value = f"{schema}.{name}" if qualified else name
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)
            items.append(CompletionItem(value, help=what))
    return items


@_never_fails
def complete_env(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--env NAME: the environments of dbopt.yaml."""
    return [
        CompletionItem(name, help=about)
        for name, about in environment_names(ctx)
        if name.startswith(incomplete)
    ]


@_never_fails
def complete_target(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--target NAME: the targets of the fleet environment named by --env."""
    return [
        CompletionItem(name, help="fleet target")
        for name in dict.fromkeys(target_names(ctx))
        if name.startswith(incomplete)
    ]


@_never_fails
def complete_index(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--index NAME (plan, apply, rollback): the indexes and materialized views of the spec
    files."""
    return _items(spec_names(ctx, indexes=True, views=True), incomplete)


@_never_fails
def complete_view(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--view NAME (refresh-views): the materialized views of the spec files."""
    return _items(spec_names(ctx, indexes=False, views=True), incomplete)


__all__ = [
    "complete_env",
    "complete_index",
    "complete_target",
    "complete_view",
    "environment_names",
    "spec_names",
    "target_names",
]
