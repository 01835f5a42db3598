-- doctor: when each of dbopt's changes (by id) ended: the build time of the index it made,
-- the start of the index's own observation window. {schema} is dbopt's history schema.
SELECT c.id,
       c.started_at + coalesce(c.duration_ms, 0) * interval '1 millisecond' AS built_at
  FROM {schema}.changes c
 WHERE c.id = ANY (%(ids)s::bigint[])
 ORDER BY c.id
