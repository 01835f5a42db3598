-- What runs something else, as the server recorded it: views' rules, the policies of tables
-- with row-level security, functions (parameter defaults, SQL-standard bodies, their types),
-- domains' constraints, user-defined aggregates' support functions, inheritance children.
WITH dep AS (
    SELECT d.classid, d.objid, d.refobjid::int8 AS ref,
           CASE d.refclassid WHEN 'pg_catalog.pg_proc'::regclass THEN 'f'
                             WHEN 'pg_catalog.pg_operator'::regclass THEN 'o'
                             WHEN 'pg_catalog.pg_class'::regclass THEN 'r'
                             WHEN 'pg_catalog.pg_type'::regclass THEN 't' END AS ref_kind
      FROM pg_catalog.pg_depend d
     WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass,
                            'pg_catalog.pg_class'::regclass, 'pg_catalog.pg_type'::regclass)
)
SELECT 'r' AS kind, r.ev_class::int8 AS oid, 'uses' AS verb, d.ref_kind, d.ref
  FROM pg_catalog.pg_rewrite r
  JOIN dep d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
 WHERE r.ev_class >= %(first)s
UNION ALL
SELECT 'r', p.polrelid::int8, 'has a row-level security policy that uses', d.ref_kind, d.ref
  FROM pg_catalog.pg_policy p
  JOIN pg_catalog.pg_class c ON c.oid = p.polrelid AND c.relrowsecurity
  JOIN dep d ON d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = p.oid
UNION ALL
SELECT 'f', d.objid::int8, 'uses', d.ref_kind, d.ref
  FROM dep d
 WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid >= %(first)s
UNION ALL
SELECT 't', c.contypid::int8, 'has a CHECK constraint that uses', d.ref_kind, d.ref
  FROM pg_catalog.pg_constraint c
  JOIN dep d ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = c.oid
 WHERE c.contypid <> 0
UNION ALL
SELECT 'f', a.aggfnoid::oid::int8, 'runs', 'f', s.fn::int8
  FROM pg_catalog.pg_aggregate a
 CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
                                            a.aggserialfn, a.aggdeserialfn, a.aggmtransfn,
                                            a.aggminvtransfn, a.aggmfinalfn]::oid[]) AS s(fn)
 WHERE a.aggfnoid::oid >= %(first)s AND s.fn <> 0
UNION ALL
SELECT 'r', i.inhparent::int8, 'reads', 'r', i.inhrelid::int8
  FROM pg_catalog.pg_inherits i
 WHERE i.inhparent >= %(first)s
 ORDER BY 1, 2, 4, 5, 3
