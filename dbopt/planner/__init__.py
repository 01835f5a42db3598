"""plan(specs, catalog) -> Plan: a pure diff with no I/O.

Every action carries the SQL that applies it and, for display, the SQL that would undo it; apply
executes exactly what plan showed. Every destructive step names the :class:`Identity` of the
object it acts on (OID, table, definition), which the executor's guard checks immediately before
the statement runs. Only objects dbopt made (their OIDs are in its history) are ever dropped.

The builders (``create_index_action``, ``replace_index_action``, ``drop_index_action`` and their
view counterparts) are also what :mod:`dbopt.rollback` uses to derive undo actions from the
facts the history recorded.
"""

from __future__ import annotations

from dbopt.planner.actions import (
    NEW_SUFFIX,
    OLD_SUFFIX,
    Action,
    ActionKind,
    Plan,
    Step,
    StepMode,
    base_name,
    is_temporary,
    temporary_names,
)
from dbopt.planner.diff import plan, wanted_properties
from dbopt.planner.indexes import create_index_action, drop_index_action, replace_index_action
from dbopt.planner.ownership import (
    Ownership,
    index_identity,
    name_taken,
    ownership,
    view_identity,
)
from dbopt.planner.views import (
    NewViewOwner,
    create_view_action,
    drop_view_action,
    own_new_views,
    replace_view_action,
)

__all__ = [
    "NEW_SUFFIX",
    "OLD_SUFFIX",
    "Action",
    "ActionKind",
    "NewViewOwner",
    "Ownership",
    "Plan",
    "Step",
    "StepMode",
    "base_name",
    "create_index_action",
    "create_view_action",
    "drop_index_action",
    "drop_view_action",
    "index_identity",
    "is_temporary",
    "name_taken",
    "own_new_views",
    "ownership",
    "plan",
    "replace_index_action",
    "replace_view_action",
    "temporary_names",
    "view_identity",
    "wanted_properties",
]
