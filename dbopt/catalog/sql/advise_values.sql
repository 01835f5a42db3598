-- dbopt advise: a value to measure a budget with, per column: its most common value (the
-- costliest equality lookup) and the middle bound of its histogram (for a range), as text.
SELECT st.schemaname AS schema, st.tablename AS name, st.attname AS column,
       (st.most_common_vals::text::text[])[1] AS common,
       (st.histogram_bounds::text::text[])[
           greatest(1, pg_catalog.array_length(st.histogram_bounds::text::text[], 1) / 2)] AS middle
  FROM pg_catalog.pg_stats st
 WHERE st.schemaname = ANY(%(schemas)s) AND st.tablename = ANY(%(names)s) AND NOT st.inherited
 ORDER BY 1, 2, 3
