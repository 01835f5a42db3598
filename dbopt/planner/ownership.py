"""What dbopt owns (the history matched with the catalog) and the identities its guard checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dbopt import ddl
from dbopt.catalog import Catalog, CatalogIndex, Relation
from dbopt.deparse import canonical, sorted_storage
from dbopt.guard import Identity
from dbopt.history import OwnedObject
from dbopt.model import QualifiedName
from dbopt.planner.actions import NEW_SUFFIX, OLD_SUFFIX

# --- ownership -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which objects of the catalog dbopt made (by OID), and what its history says of them."""

    oids: frozenset[int] = frozenset()
    origins: Mapping[int, str] = field(default_factory=dict)

    def owns(self, oid: int) -> bool:
        """True when dbopt made the object with this OID."""
        return oid in self.oids

    def origin(self, oid: int) -> str:
        """How dbopt came to own it ("created by run 12")."""
        return self.origins.get(oid, "")


def _names_of(name: str) -> tuple[str, ...]:
    """The names an object dbopt made under ``name`` may carry: its own, and the temporary
    names of a replace (built aside, or swapped out)."""
    return (name, ddl.derived_name(name, NEW_SUFFIX), ddl.derived_name(name, OLD_SUFFIX))


def ownership(owned: Iterable[OwnedObject], catalog: Catalog) -> Ownership:
    """Match the history's facts with the live catalog.

    A made object is dbopt's when the catalog has its OID (an index on the same table); one
    recorded by name only (dbopt 0.1) when the name, table and definition match. An object a
    replace swapped out is dbopt's only while it carries dbopt's temporary name.
    """
    indexes = {i.oid: i for i in catalog.indexes.values()}
    views = {r.oid: r for r in catalog.relations.values() if r.relkind == "m"}
    oids: set[int] = set()
    origins: dict[int, str] = {}
    for fact in owned:
        found: CatalogIndex | Relation | None
        if fact.object_type == "view":
            found = (
                views.get(fact.oid)
                if fact.oid is not None
                else views.get(getattr(catalog.relations.get(fact.name), "oid", -1))
            )
        else:
            found = (
                indexes.get(fact.oid) if fact.oid is not None else catalog.indexes.get(fact.name)
            )
            if found is not None and found.table != fact.table:
                continue
            if found is not None and fact.oid is None:
                # dbopt 0.1 kept names and, for some changes, the spec's canonical definition:
                # without one that matches, the name alone proves nothing.
                recorded = fact.definition
                if recorded is None:
                    continue
                # Canonical texts of then kept storage parameters in the order given.
                recorded = (
                    canonical(recorded)
                    if recorded.startswith("CREATE")
                    else sorted_storage(recorded)
                )
                if canonical(found.definition) != recorded:
                    continue
        if found is None:
            continue
        if fact.replaced and not found.name.name.endswith(OLD_SUFFIX):
            continue
        if not fact.replaced and found.name.name not in _names_of(fact.name.name):
            continue  # renamed by hand since: someone means to keep it; dbopt leaves it be
        oids.add(found.oid)
        what = "swapped out" if fact.replaced else "adopted" if fact.adopted else "made"
        origins[found.oid] = f"{what} by dbopt run {fact.run_id}"
    return Ownership(frozenset(oids), origins)


# --- identities ------------------------------------------------------------------------------


def index_identity(
    index: CatalogIndex, *, invalid: bool | None = None, origin: str = ""
) -> Identity:
    """What the catalog says this index is: OID, table, definition."""
    return Identity(
        "index",
        index.name,
        oid=index.oid,
        table=index.table,
        definition=canonical(index.definition),
        invalid=invalid,
        origin=origin,
    )


def view_identity(relation: Relation, origin: str = "") -> Identity:
    """What the catalog says this materialized view is: OID and query."""
    return Identity(
        "view",
        relation.name,
        oid=relation.oid,
        definition=relation.view_definition,
        origin=origin,
    )


def name_taken(catalog: Catalog, name: QualifiedName, *, by_types: bool = False) -> str | None:
    """What already has ``name`` in its schema ("table", "sequence"...), or None; a
    materialized view (``by_types``) also needs a name no type has."""
    return catalog.name_taken(name, by_types=by_types)
