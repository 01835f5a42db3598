"""What dbopt's history records, as values: runs, changes, refreshes, and the objects dbopt
owns (made, or adopted by ``dbopt import --adopt``). Read and written by
:class:`dbopt.history.History` only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dbopt.model import QualifiedName


@dataclass(frozen=True, slots=True)
class OwnedObject:
    """An object dbopt made and has not dropped since, as its history records it."""

    object_type: str  # index or view
    name: QualifiedName
    table: QualifiedName
    oid: int | None  # None: recorded by a dbopt that kept only names
    definition: str | None  # as the server printed it when dbopt made it
    change_id: int
    run_id: int
    #: Not made but swapped out by a replace of dbopt's: dbopt's to drop only while it carries
    #: dbopt's temporary name (the swap happened, the final drop did not).
    replaced: bool = False
    #: Not made: existed before dbopt, and `dbopt import --adopt` made it dbopt's to manage.
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One recorded change: structured facts only (rollback derives its SQL from them)."""

    id: int
    run_id: int
    run_command: str
    object_type: str
    name: QualifiedName
    table: QualifiedName
    action: str
    existed_before: bool
    result: str
    definition: str | None  # the spec's definition (canonical) when planned
    previous_definition: str | None  # the replaced or dropped object, as the server printed it
    object_oid: int | None  # what the change made
    built_definition: str | None  # what it made, as the server printed it
    replaced_oid: int | None  # what the change replaced, repaired or dropped
    previous_state: Mapping[str, Any]
    undone_by: int | None  # the change of a later rollback that undid this one
    undone_by_run: int | None  # and its run
    undoes_change: int | None = None  # for a rollback's change: the change it undid
    started_at: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    #: Did not end ok, but its swap landed: what it made is in place, usable, under the name
    #: it gave it (history_landed.sql); done, for rollback, as if it had ended ok.
    landed: bool = False
    #: A create that did not end ok but left its index INVALID under its name (its build, or
    #: the clean-up after it, was stopped: history_left_invalid.sql); rollback drops it.
    left_invalid: bool = False

    @property
    def done(self) -> bool:
        """Ended ok, or landed."""
        return self.result == "ok" or self.landed


@dataclass(frozen=True, slots=True)
class AdoptedObject:
    """An object that existed before dbopt, handed to it by `dbopt import --adopt`: the facts
    an apply records of what it made (OID, table, the server's definition)."""

    object_type: str  # index or view
    name: QualifiedName
    table: QualifiedName  # an index's table; a view itself
    oid: int
    definition: str  # what apply records as the spec's: canonical index text, or the query
    built_definition: str  # as the server printed it (pg_get_indexdef, pg_get_viewdef)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One recorded run."""

    id: int
    command: str
    environment: str | None
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    undoes_run: int | None
    db_role: str | None = None
    client_host: str | None = None
    dbopt_version: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """One recorded refresh of a materialized view."""

    view: QualifiedName
    started_at: datetime
    duration_ms: float | None
    rows: int | None
    mode: str


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run with how its changes ended (what `dbopt history` lists)."""

    run: RunRecord
    ok: int
    failed: int
    aborted: int
    skipped: int
    undone_by_run: int | None  # a later successful rollback of it (--run ID)
