"""doctor's pure logic without a database: redundancy over index parts, ranking, the bloat
estimate, foreign key coverage, SARIF shaping."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from dbopt.doctor.bloat import Bloat, data_width, estimate, find_bloat
from dbopt.doctor.facts import BtreeWidth, ColumnWidth, ForeignKeyFacts, IndexFacts
from dbopt.doctor.findings import Check, DoctorReport, Finding, Severity, ranked
from dbopt.doctor.fixes import drop_concurrently, index_name, spec_entry
from dbopt.doctor.foreignkeys import find_unindexed
from dbopt.doctor.keep import Drops
from dbopt.doctor.redundancy import Managed, covered_by, find_redundant, identical
from dbopt.doctor.usage import find_invalid, find_unused
from dbopt.model import Location, QualifiedName
from dbopt.sarif import sarif

T = QualifiedName("public", "t")

TEXT_OPS, PATTERN_OPS, DEFAULT_COLL = 3126, 10215, 100


def index(name: str, oid: int, attnums: tuple[int, ...], **kw: object) -> IndexFacts:
    n = len(attnums) - int(kw.pop("ninclude", 0))  # type: ignore[call-overload]
    base = IndexFacts(
        oid=oid,
        schema="public",
        name=name,
        table_oid=1,
        table_name=T,
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
    spec = {QualifiedName("public", "a_copy"): Managed(Location("indexes/t.yaml", 4, 5), None)}
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
    width = BtreeWidth(1, 275, 100_000, 90, 8192, (ColumnWidth(4, 0, 4, "i"),), False, 0)
    fresh = estimate(width)
    assert fresh is not None and fresh.wasted_bytes == 0
    bloated = estimate(replace(width, pages=2750))
    assert bloated is not None and round(bloated.ratio, 2) == 0.9
    assert estimate(replace(width, unknown_columns=1, columns=())) is None
    big = {1: index("big", 1, (1,))}
    over = Bloat(1, 100 << 20, 40 << 20, "estimate")
    assert [b.object for b in find_bloat([over], big, {})] == ["public.big"]
    assert find_bloat([replace(over, wasted_bytes=5 << 20)], big, {}) == []  # < 10 MB
    assert find_bloat([Bloat(1, 200 << 20, 40 << 20, "estimate")], big, {}) == []  # 20 % < 30 %


def test_foreign_key_coverage() -> None:
    fk = ForeignKeyFacts(
        "t_ab_fkey", 1, T, (2, 1), ("b", "a"), QualifiedName("public", "r"), 7, 8192, 5
    )
    assert find_unindexed([fk], [index("ab", 1, (1, 2))], {}) == []  # any order of the keys
    assert find_unindexed([fk], [index("abc", 1, (1, 2, 3))], {}) == []
    [missing] = find_unindexed([fk], [index("cab", 1, (3, 1, 2))], {})
    assert 'CREATE INDEX CONCURRENTLY "t_b_a_idx" ON "public"."t" ("b", "a");' in missing.fix
    [partial] = find_unindexed([fk], [index("ab_p", 1, (1, 2), pred="{X}")], {})
    assert "public.ab_p leads with them but is partial" in partial.why


def test_sarif_points_every_result_at_a_file(tmp_path: Path) -> None:
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
    at_table = replace(no_spec, object="public.c", anchor=Location(str(spec_file), 1, 1))
    report = DoctorReport((no_spec, at_spec, at_table), "16", "app", None, None)
    log = sarif(report, base=tmp_path, fallback=str(tmp_path / "dbopt.yaml"))
    run = log["runs"][0]
    assert log["version"] == "2.1.0" and run["tool"]["driver"]["name"] == "dbopt doctor"
    first, second, third = run["results"]
    assert first["ruleId"] == "dbopt/invalid-index" and first["level"] == "error"
    # No spec of its own, no table spec: the fallback file, line 1; the object logically.
    assert first["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "dbopt.yaml"},
        "region": {"startLine": 1},
    }
    assert first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "public.b"
    physical = second["locations"][0]["physicalLocation"]
    assert second["level"] == "note"
    assert physical == {
        "artifactLocation": {"uri": "indexes/t.yaml"},
        "region": {"startLine": 3, "startColumn": 5},
    }
    assert third["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "indexes/t.yaml"
    )
    for result in run["results"]:  # what GitHub code scanning requires of each result
        where = result["locations"][0]["physicalLocation"]
        assert where["artifactLocation"]["uri"] and where["region"]["startLine"] >= 1
        assert not where["artifactLocation"]["uri"].startswith(("/", "file:"))
        assert result["partialFingerprints"]["dbopt/finding/v1"]
    prints = {r["partialFingerprints"]["dbopt/finding/v1"] for r in run["results"]}
    assert len(prints) == 3
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {f"dbopt/{c.value}" for c in Check}


def fk_on(attnums: tuple[int, ...], name: str = "t_fkey") -> ForeignKeyFacts:
    cols = tuple(f"c{a}" for a in attnums)
    return ForeignKeyFacts(name, 1, T, attnums, cols, QualifiedName("public", "r"), 0, 8192, 5)


def unused(indexes: list[IndexFacts], drops: Drops, **kw: object) -> dict[str, Finding]:
    found = find_unused(
        indexes,
        {},
        stats_age_s=kw.pop("stats_age_s", 365 * 86400.0),  # type: ignore[arg-type]
        scans={},
        partial_nodes=False,
        drops=drops,
        **kw,  # type: ignore[arg-type]
    )
    return {f.object: f for f in found}


BIG = 10 << 20


def test_never_drops_what_a_foreign_key_replication_or_cluster_needs() -> None:
    # The only index serving a foreign key: unused, but only info, and no DROP.
    fk_idx = index("t_c1", 1, (1,), size_bytes=BIG)
    other = index("t_c2", 2, (2,), size_bytes=BIG)
    found = unused([fk_idx, other], Drops([fk_idx, other], [fk_on((1,))]))
    assert found["public.t_c1"].severity is Severity.INFO
    assert "DROP" not in found["public.t_c1"].fix
    assert "only index serving foreign key t_fkey" in found["public.t_c1"].why
    assert found["public.t_c2"].severity is Severity.WARNING
    assert found["public.t_c2"].fix == 'DROP INDEX CONCURRENTLY "public"."t_c2";'
    # Redundancy drops the prefix (the wider one serves the key too); then the wider one is
    # the last that serves it: unused must not drop it as well.
    wide = index("t_c1_c2", 3, (1, 2), size_bytes=BIG)
    all_ = [fk_idx, wide]
    drops = Drops(all_, [fk_on((1,))])
    [prefix] = find_redundant(all_, {}, drops)
    assert prefix.object == "public.t_c1" and "DROP INDEX" in prefix.fix
    found = unused(all_, drops, skip=frozenset({1}))
    assert "DROP" not in found["public.t_c1_c2"].fix
    assert found["public.t_c1_c2"].severity is Severity.INFO
    # Without the foreign key both go.
    assert "DROP" in unused(all_, Drops(all_, []))["public.t_c1_c2"].fix
    # The CLUSTER index: neither unused nor redundant may drop it; they say why.
    clustered = replace(other, is_clustered=True)
    found = unused([clustered], Drops([clustered], []))
    assert "CLUSTER index" in found["public.t_c2"].why and "DROP" not in found["public.t_c2"].fix
    assert 'ALTER TABLE "public"."t" SET WITHOUT CLUSTER;' in found["public.t_c2"].fix
    prefix_clustered = replace(fk_idx, is_clustered=True)
    [kept] = find_redundant([prefix_clustered, wide], {})
    assert kept.severity is Severity.INFO and "DROP" not in kept.fix
    assert 'ALTER TABLE "public"."t" CLUSTER ON "t_c1_c2";' in kept.fix
    # The replica identity: of two identical unique indexes, the other one goes.
    a = index("t_u1", 4, (1,), is_unique=True)
    b = index("t_u2", 5, (1,), is_unique=True, is_replident=True)
    [dup] = find_redundant([a, b], {})
    assert dup.object == "public.t_u1" and dict(dup.numbers)["keep"] == "public.t_u2"
    b_plain, a_ident = replace(b, is_replident=False), replace(a, is_replident=True)
    [dup] = find_redundant([a_ident, b_plain], {})
    assert dup.object == "public.t_u2"


def test_unused_window_is_the_index_age_when_shorter() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    idx = index("fresh", 1, (1,), size_bytes=BIG)
    year = 365 * 86400.0
    # Built yesterday by dbopt, statistics a year old: the window is one day, so info.
    [young] = find_unused(
        [idx],
        {},
        stats_age_s=year,
        scans={},
        partial_nodes=False,
        built={1: now - timedelta(days=1)},
        now=now,
    )
    assert young.severity is Severity.INFO
    assert "1.0 days since it was built" in young.message
    assert dict(young.numbers)["window_s"] == 86400
    # Built long ago: the statistics' age decides.
    [old] = find_unused(
        [idx],
        {},
        stats_age_s=year,
        scans={},
        partial_nodes=False,
        built={1: now - timedelta(days=800)},
        now=now,
    )
    assert old.severity is Severity.WARNING and "since the statistics were reset" in old.message
    # Statistics never reset: the window is unknown, info at most (index age known or not).
    for built in ({}, {1: now - timedelta(days=800)}):
        [unknown] = find_unused(
            [idx], {}, stats_age_s=None, scans={}, partial_nodes=False, built=built, now=now
        )
        assert unknown.severity is Severity.INFO and "unknown" in unknown.why


def test_invalid_duplicate_is_reported_once_and_partitioned_fixes() -> None:
    valid = index("a", 1, (1,))
    broken = index("a_bad", 2, (1,), is_valid=False)
    assert find_redundant([valid, broken], {}) == []  # the invalid check's, not a duplicate
    [invalid] = find_invalid([valid, broken], {}, {})
    assert invalid.object == "public.a_bad" and invalid.severity is Severity.ERROR
    assert "a duplicate of public.a" in invalid.fix
    assert invalid.fix.endswith('DROP INDEX CONCURRENTLY "public"."a_bad";')
    assert "REINDEX" not in invalid.fix
    # Another role's build may be this one: a warning, not an error.
    [maybe] = find_invalid([replace(broken, unseen_build=True)], {}, {})
    assert maybe.severity is Severity.WARNING
    assert "may be a build in progress by another role" in maybe.message
    # A partitioned index made INVALID by CREATE INDEX ON ONLY: attach, or a plain DROP.
    parent = index(
        "p_c1",
        3,
        (1,),
        relkind="I",
        is_valid=False,
        unattached=(QualifiedName("public", "p_2024"),),
    )
    [part] = find_invalid([parent], {}, {})
    assert 'DROP INDEX CONCURRENTLY "' not in part.fix and "REINDEX INDEX" not in part.fix
    assert 'CREATE INDEX CONCURRENTLY "p_2024_c1_idx" ON "public"."p_2024" ("c1");' in part.fix
    assert 'ALTER INDEX "public"."p_c1" ATTACH PARTITION "public"."p_2024_c1_idx";' in part.fix
    assert 'DROP INDEX "public"."p_c1";' in part.fix and "ACCESS EXCLUSIVE" in part.fix
    # Identical partitioned indexes: a plain DROP INDEX, with its lock said.
    p1 = index("p_a", 4, (1,), relkind="I")
    p2 = index("p_a_copy", 5, (1,), relkind="I")
    [pdup] = find_redundant([p1, p2], {})
    assert pdup.object == "public.p_a_copy" and pdup.check is Check.DUPLICATE
    assert pdup.fix.startswith('DROP INDEX "public"."p_a_copy";') and "ACCESS EXCLUSIVE" in pdup.fix
    [punused] = find_unused([p1], {}, stats_age_s=None, scans={}, partial_nodes=False)
    assert punused.fix.startswith('DROP INDEX "public"."p_a";')


def test_bloat_estimate_places_each_column_at_its_alignment() -> None:
    int4, int8 = ColumnWidth(4, 0, 4, "i"), ColumnWidth(8, 0, 8, "d")
    boolean = ColumnWidth(1, 0, 1, "c")
    assert data_width((int4, int8, int4, int8)) == 32  # 4, pad 4, 8, 4, pad 4, 8
    assert data_width((boolean, int8, boolean, int8)) == 32
    assert data_width((int8, int4, int4)) == 16
    assert data_width((ColumnWidth(10, 0, -1, "i"), int4)) == 16  # short text: unaligned
    # A fresh (int4, int8, int4, int8) index: 44-byte entries, 166 a page at fillfactor 90.
    fresh = BtreeWidth(1, 123, 20_000, 90, 8192, (int4, int8, int4, int8), False, 0)
    b = estimate(fresh)
    assert b is not None and b.ratio < 0.05


def test_fix_text_keeps_names_apart_and_spec_entries_are_yaml() -> None:
    dotted = QualifiedName("a.b", 'c."d')
    assert drop_concurrently(dotted) == 'DROP INDEX CONCURRENTLY "a.b"."c.""d";'
    nasty = ["back\\slash", "both 'quotes' \"here\"", "colon: # hash", "new\nline", "été"]
    for text in nasty:
        entry = spec_entry(text, [text, "plain"], text)
        assert "\n" not in entry
        assert yaml.safe_load(entry) == [{"name": text, "columns": [text, "plain"], "reason": text}]
    # Names: at most 63 bytes, cut on a character, apart from each other and from taken ones.
    long_a, long_b = "é" * 40 + "_a", "é" * 40 + "_b"
    na, nb = index_name(long_a), index_name(long_b)
    assert len(na.encode()) <= 63 and len(nb.encode()) <= 63 and na != nb
    assert index_name("t_c_idx", {"t_c_idx", "t_c_idx_1"}) == "t_c_idx_2"
    taken = {na}
    again = index_name(long_a, taken)
    assert again != na and len(again.encode()) <= 63
    # A foreign key on a dotted table: the fix quotes each part, the entry parses.
    fk = ForeignKeyFacts(
        "f", 1, QualifiedName("s.x", "t.y"), (1,), ("c.z",), QualifiedName("s", "r"), 0, 1, 1
    )
    [missing] = find_unindexed([fk], [], {})
    assert 'ON "s.x"."t.y" ("c.z");' in missing.fix
    entry = missing.fix.split("add to the spec file of s.x.t.y: ")[1].split(", then")[0]
    assert yaml.safe_load(entry)[0]["columns"] == ["c.z"]


def test_unbudgeted_matches_uses_index_in_the_budgets_schema() -> None:
    from dbopt.doctor.specs import find_unbudgeted
    from dbopt.model import Expectation, IndexColumn, IndexSpec, QueryBudget, SpecSet

    def spec(schema: str, name: str, file: str) -> IndexSpec:
        table = QualifiedName(schema, "orders")
        return IndexSpec(name, table, (IndexColumn("c"),), Location(file, 4, 5))

    app, archive = spec("app", "orders_c", "app.yaml"), spec("archive", "orders_c", "arc.yaml")
    dotted = spec("x.y", "i.j", "dotted.yaml")
    budget = QueryBudget(
        "q",
        "SELECT 1",
        5.0,
        Location("app.yaml", 9, 5),
        "app.orders",
        expect=Expectation(uses_index=("orders_c",)),
    )
    on_dotted = replace(
        budget,
        location=Location("dotted.yaml", 9, 5),
        relation="x.y.orders",
        expect=Expectation(uses_index=("j",)),  # not "i.j": a name is never split
    )
    specs = SpecSet(indexes=(app, archive, dotted), index_queries=(budget, on_dotted))
    unbudgeted = {f.object for f in find_unbudgeted(specs)}
    # app's budget names orders_c: app's, not archive's (another schema's namesake).
    assert unbudgeted == {"archive.orders_c", "x.y.i.j"}
    named = replace(on_dotted, expect=Expectation(uses_index=("i.j",)))
    specs = SpecSet(indexes=(app, archive, dotted), index_queries=(budget, named))
    assert {f.object for f in find_unbudgeted(specs)} == {"archive.orders_c"}
