"""Which indexes doctor may propose to drop: the one place unused and redundant findings ask.

Never the table's replica identity (logical replication identifies updated and deleted rows
by it), never its CLUSTER index (a plain CLUSTER uses it), never the last valid index that
serves a foreign key's referencing columns (the foreign key check would then ask for it
back). The last is counted against what doctor already proposed to drop in the same run, so
two findings cannot together take away the only indexes of a foreign key.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbopt.doctor.facts import ForeignKeyFacts, IndexFacts
from dbopt.doctor.fixes import without_cluster, without_replica_identity
from dbopt.doctor.foreignkeys import serves


class Drops:
    """What a doctor run proposes to drop, and why an index must stay."""

    def __init__(self, indexes: Iterable[IndexFacts], keys: Iterable[ForeignKeyFacts]) -> None:
        self._indexes: dict[int, list[IndexFacts]] = {}
        for i in indexes:
            self._indexes.setdefault(i.table_oid, []).append(i)
        self._keys: dict[int, list[ForeignKeyFacts]] = {}
        for k in keys:
            self._keys.setdefault(k.table_oid, []).append(k)
        self.gone: set[int] = set()

    def sole_server(self, index: IndexFacts) -> ForeignKeyFacts | None:
        """A foreign key ``index`` serves that no other index left standing serves."""
        for fk in self._keys.get(index.table_oid, []):
            if not serves(index, fk):
                continue
            others = (
                o
                for o in self._indexes.get(index.table_oid, [])
                if o.oid != index.oid and o.oid not in self.gone
            )
            if not any(serves(o, fk) for o in others):
                return fk
        return None

    def refusal(self, index: IndexFacts) -> tuple[str, str] | None:
        """Why ``index`` must stay, and what would have to change first; None: it may go."""
        table = index.table
        if index.is_replident:
            return (
                f"it is the replica identity of {table}: logical replication identifies "
                "updated and deleted rows by it",
                "keep it (to drop it, first "
                f"{without_replica_identity(index.table_name)} or USING INDEX another one)",
            )
        if index.is_clustered:
            return (
                f"it is the CLUSTER index of {table}: CLUSTER without an index name orders "
                "the table by it",
                f"keep it (to drop it, first {without_cluster(index.table_name)} or CLUSTER "
                "ON another index)",
            )
        fk = self.sole_server(index)
        if fk is not None:
            return (
                f"it is the only index serving foreign key {fk.name} "
                f"({', '.join(fk.columns)}) -> {fk.referenced}: without it each delete on "
                f"{fk.referenced} (and each update of its key) reads all of {table}",
                "keep it (the foreign key check would ask for it back); if the foreign key "
                "is never exercised, that is fine: it costs only its writes",
            )
        return None

    def drop(self, index: IndexFacts) -> None:
        """Count ``index`` as proposed for dropping."""
        self.gone.add(index.oid)
