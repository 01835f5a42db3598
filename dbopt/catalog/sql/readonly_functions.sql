-- Every function that could be unsafe: built-ins are judged by name and volatility, user-defined
-- ones also by body (read only when it is in a language dbopt reads). on_rows: it can be called
-- with one row as t.name (PostgreSQL reads t.name as name(t) when such a function exists): its
-- only required argument takes a row. A built-in that is neither VOLATILE nor denied by name
-- (%(denied)s, or a name starting with one of %(denied_prefixes)s) is left out: it is safe, and
-- nothing it runs is read (built-ins' bodies are trusted), so it could never be part of a
-- refusal; leaving out nine in ten built-ins makes this read several times cheaper (a fleet
-- reads it once per database).
SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name,
       p.provolatile::text AS volatility, l.lanname AS language,
       pg_catalog.oidvectortypes(p.proargtypes) AS args,
       CASE WHEN p.oid >= %(first)s AND l.lanname <> ALL (%(trusted)s) THEN p.prosrc END AS body,
       p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
         AND (t.typtype IN ('c', 'd')
              OR t.typtype = 'p' AND t.typname IN ('record', 'anyelement', 'anynonarray',
                                                    'anycompatible', 'anycompatiblenonarray',
                                                    'any')) AS on_rows
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  LEFT JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
 WHERE p.oid >= %(first)s
    OR p.provolatile = 'v'
    OR pg_catalog.lower(p.proname) = ANY (%(denied)s)
    OR EXISTS (SELECT FROM pg_catalog.unnest(%(denied_prefixes)s::text[]) AS x(prefix)
                WHERE pg_catalog.starts_with(pg_catalog.lower(p.proname), x.prefix))
 ORDER BY p.oid
