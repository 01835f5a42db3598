-- Remove a column's statistics (both the table's own and the inheritance tree's), so that what
-- is restored next is all that is left of them (PostgreSQL 18+; needs MAINTAIN).
SELECT pg_catalog.pg_clear_attribute_stats(%(schema)s::text, %(name)s::text,
                                           %(column)s::text, inherited)
  FROM (VALUES (false), (true)) AS i(inherited)
