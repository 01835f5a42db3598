"""Shell completion of the names a DBA types: environments, indexes, views.

Click's own mechanism (``_DBOPT_COMPLETE=bash_source dbopt`` and its zsh and fish forms,
see README "Shell completion") calls these while the user presses Tab. They read dbopt.yaml
and the spec files as plain YAML, without validating anything and without a database: a
completion must answer in milliseconds and must never fail, so a file that does not parse
simply offers nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

#: As dbopt.config: the configuration file and the spec folders when none is named.
_DEFAULT_CONFIG = "dbopt.yaml"
_DEFAULT_SPEC_DIRS = ("indexes", "views")


def _read_yaml(path: Path) -> Any:
    """The document of ``path``, or None when it is missing or does not parse."""
    import yaml

    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
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


def _schema_of(qualified: object, fallback: object = None) -> str:
    text = str(qualified or "")
    if "." in text:
        return text.split(".", 1)[0]
    return str(fallback or "public")


def spec_names(ctx: click.Context, *, indexes: bool, views: bool) -> list[tuple[str, str, str]]:
    """``(schema, name, what)`` of the indexes and/or materialized views in the spec files.

    An index file names its table (``table: [schema.]name``) and lists ``indexes:``; a view
    file has ``name:`` and ``query:`` (and ``schema:``) and may list indexes of the view."""
    found: list[tuple[str, str, str]] = []
    for doc in _spec_documents(ctx):
        is_view = "query" in doc and "name" in doc
        owner = doc.get("name") if is_view else doc.get("table")
        schema = _schema_of(owner, doc.get("schema"))
        if views and is_view:
            view = str(owner).split(".", 1)[-1]
            found.append((schema, view, "materialized view"))
        if indexes:
            for entry in doc.get("indexes") or []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    found.append((schema, entry["name"], f"index on {owner}"))
    return found


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


def complete_env(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--env NAME: the environments of dbopt.yaml."""
    return [
        CompletionItem(name, help=about)
        for name, about in environment_names(ctx)
        if name.startswith(incomplete)
    ]


def complete_index(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--index NAME (plan, apply): the indexes and materialized views of the spec files."""
    return _items(spec_names(ctx, indexes=True, views=True), incomplete)


def complete_view(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """--view NAME (refresh-views): the materialized views of the spec files."""
    return _items(spec_names(ctx, indexes=False, views=True), incomplete)


__all__ = ["complete_env", "complete_index", "complete_view", "environment_names", "spec_names"]
