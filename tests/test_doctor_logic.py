"""doctor's pure logic without a database: redundancy over index parts, ranking, the bloat
estimate, foreign key coverage, SARIF shaping."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dbopt.doctor.bloat import Bloat, estimate, find_bloat
from dbopt.doctor.facts import BtreeWidth, ForeignKeyFacts, IndexFacts
from dbopt.doctor.findings import Check, DoctorReport, Finding, Severity, ranked
from dbopt.doctor.foreignkeys import find_unindexed
from dbopt.doctor.redundancy import Managed, covered_by, find_redundant, identical
from dbopt.model import Location
from dbopt.sarif import sarif

TEXT_OPS, PATTERN_OPS, DEFAULT_COLL = 3126, 10215, 100


def index(name: str, oid: int, attnums: tuple[int, ...], **kw: object) -> IndexFacts:
    n = len(attnums) - int(kw.pop("ninclude", 0))  # type: ignore[call-overload]
    base = IndexFacts(
        oid=oid,
        schema="public",
        name=name,
        table_oid=1,
        table="public.t",
        method="btree",
        relkind="i",
        nkey=n,
        attnums=attnums,
        columns=tuple(f"c{a}" for a in attnums),
        opclasses=(TEXT_OPS,) * n,
        collations=(DEFAULT_COLL,) * n,
        options=(0,) * n,
        exprs=None,
        pred=None,
        is_unique=False,
        is_primary=False,
        is_valid=True,
        nulls_not_distinct=False,
        is_partition=False,
        size_bytes=8192 * oid,
        scans=0,
        last_scan=None,
        table_writes=0,
        constraint_name=None,
        backs_foreign_key=False,
        building=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_redundancy_respects_every_part_of_the_definition() -> None:
    a, ab = index("a", 1, (1,)), index("ab", 2, (1, 2))
    assert covered_by(a, ab) and not covered_by(ab, a)
    assert not covered_by(replace(a, is_unique=True), ab)  # unique enforces: not redundant
    assert not covered_by(replace(a, opclasses=(PATTERN_OPS,)), ab)
    assert not covered_by(replace(a, collations=(950,)), ab)
    assert not covered_by(replace(a, options=(3,)), ab)  # DESC NULLS FIRST
    assert not covered_by(replace(a, pred="{OPEXPR}"), ab)
    assert covered_by(replace(a, pred="{OPEXPR}"), replace(ab, pred="{OPEXPR}"))
    assert not covered_by(replace(a, method="hash"), replace(ab, method="hash"))
    assert not covered_by(a, replace(ab, is_valid=False))
    assert not covered_by(replace(a, constraint_name="t_a_key"), ab)
    # INCLUDE: the wider index must hold the narrower one's included columns.
    a_inc3 = index("a_inc3", 3, (1, 3), ninclude=1)
    assert not covered_by(a_inc3, ab)
    assert covered_by(a_inc3, index("ab3", 4, (1, 2, 3)))
    assert identical(a, replace(a, oid=9, name="copy"))
    assert not identical(a, replace(a, oid=9, is_unique=True))
    assert not identical(a, replace(a, oid=9, nulls_not_distinct=True))


def test_find_redundant_names_each_index_once_and_keeps_the_right_one() -> None:
    a = index("a", 1, (1,))
    copy = index("a_copy", 5, (1,))
    ab, abc = index("ab", 2, (1, 2)), index("abc", 3, (1, 2, 3))
    spec = {"public.a_copy": Managed(Location("indexes/t.yaml", 4, 5), None)}
    found = {f.object: f for f in find_redundant([a, copy, ab, abc], spec)}
    # a duplicates a_copy, which is spec'd: a goes (it is not managed: unmanaged-duplicate).
    assert found["public.a"].check is Check.UNMANAGED_DUPLICATE
    assert dict(found["public.a"].numbers)["keep"] == "public.a_copy"
    # a_copy is covered by ab and abc: named once, keeping the smaller (ab); spec'd, so the fix
    # is the spec line.
    assert found["public.a_copy"].check is Check.REDUNDANT
    assert dict(found["public.a_copy"].numbers)["keep"] == "public.ab"
    assert "indexes/t.yaml:4" in found["public.a_copy"].fix
    assert found["public.ab"].check is Check.REDUNDANT
    assert set(found) == {"public.a", "public.a_copy", "public.ab"}
    # An index that backs a constraint is kept over its twin, whatever its OID.
    pkey = index("t_pkey", 7, (1,), constraint_name="t_pkey", is_unique=True)
    twin = index("t_id_unique", 6, (1,), is_unique=True)
    [dup] = find_redundant([pkey, twin], {})
    assert dup.object == "public.t_id_unique" and dup.check is Check.DUPLICATE
    assert dup.fix == 'DROP INDEX CONCURRENTLY "public"."t_id_unique";'


def test_ranking_and_fail_on() -> None:
    def f(sev: Severity, weight: float, obj: str) -> Finding:
        return Finding(Check.UNUSED, sev, obj, "public.t", "m", "w", "x", weight=weight)

    order = ranked(
        [
            f(Severity.INFO, 9, "i"),
            f(Severity.WARNING, 1, "w1"),
            f(Severity.ERROR, 0, "e"),
            f(Severity.WARNING, 5, "w5"),
        ]
    )
    assert [x.object for x in order] == ["e", "w5", "w1", "i"]
    report = DoctorReport(order[1:], "16", "app", None, None)
    assert report.fails(Severity.WARNING) and not report.fails(Severity.ERROR)
    assert not report.fails(None)


def test_bloat_estimate_and_thresholds() -> None:
    # 100,000 int4 entries at fillfactor 90: 20 bytes each, 366 per page: 274 leaf pages
    # and the metapage.
    width = BtreeWidth(1, 275, 100_000, 90, 8192, 4.0, False, 0)
    fresh = estimate(width)
    assert fresh is not None and fresh.wasted_bytes == 0
    bloated = estimate(replace(width, pages=2750))
    assert bloated is not None and round(bloated.ratio, 2) == 0.9
    assert estimate(replace(width, unknown_columns=1)) is None
    big = {1: index("big", 1, (1,))}
    over = Bloat(1, 100 << 20, 40 << 20, "estimate")
    assert [b.object for b in find_bloat([over], big, {})] == ["public.big"]
    assert find_bloat([replace(over, wasted_bytes=5 << 20)], big, {}) == []  # < 10 MB
    assert find_bloat([Bloat(1, 200 << 20, 40 << 20, "estimate")], big, {}) == []  # 20 % < 30 %


def test_foreign_key_coverage() -> None:
    fk = ForeignKeyFacts("t_ab_fkey", 1, "public.t", (2, 1), ("b", "a"), "public.r", 7, 8192, 5)
    assert find_unindexed([fk], [index("ab", 1, (1, 2))], {}) == []  # any order of the keys
    assert find_unindexed([fk], [index("abc", 1, (1, 2, 3))], {}) == []
    [missing] = find_unindexed([fk], [index("cab", 1, (3, 1, 2))], {})
    assert 'CREATE INDEX CONCURRENTLY ON "public"."t" ("b", "a");' in missing.fix
    [partial] = find_unindexed([fk], [index("ab_p", 1, (1, 2), pred="{X}")], {})
    assert "public.ab_p leads with them but is partial" in partial.why


def test_sarif_points_at_the_spec_or_the_object(tmp_path: Path) -> None:
    spec_file = tmp_path / "indexes" / "t.yaml"
    at_spec = Finding(
        Check.SPEC_UNUSED,
        Severity.INFO,
        "public.a",
        "public.t",
        "m",
        "w",
        "fix",
        location=Location(str(spec_file), 3, 5),
    )
    no_spec = Finding(Check.INVALID, Severity.ERROR, "public.b", "public.t", "m", "w", "fix")
    log = sarif(DoctorReport((no_spec, at_spec), "16", "app", None, None), base=tmp_path)
    run = log["runs"][0]
    assert log["version"] == "2.1.0" and run["tool"]["driver"]["name"] == "dbopt doctor"
    first, second = run["results"]
    assert first["ruleId"] == "dbopt/invalid-index" and first["level"] == "error"
    assert first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "public.b"
    physical = second["locations"][0]["physicalLocation"]
    assert second["level"] == "note"
    assert physical == {
        "artifactLocation": {"uri": "indexes/t.yaml"},
        "region": {"startLine": 3, "startColumn": 5},
    }
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {f"dbopt/{c.value}" for c in Check}
