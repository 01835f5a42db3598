-- What a step that made a relation left under its name (relation_built's read, by
-- %(schema)s and %(name)s), recorded as its change's object (%(change)s) in the same
-- statement: one round trip after each build, not two. With %(finish)s (the change's last
-- statement made it) the change's result is ok too, unless the object is an INVALID index
-- (what the build's failure records). Returns the read, whether or not the change's row was
-- found to record it in (recorded); no row when nothing is under the name (then nothing is
-- recorded). Its locks are the read's (see relation_built).
WITH built AS (
{built}
), rec AS (
  UPDATE {schema}.changes AS h
     SET object_oid = b.oid,
         built_definition = b.definition,
         result = CASE WHEN %(finish)s AND b.valid IS NOT FALSE THEN 'ok' ELSE h.result END,
         error = CASE WHEN %(finish)s AND b.valid IS NOT FALSE THEN NULL ELSE h.error END,
         duration_ms = CASE WHEN %(finish)s AND b.valid IS NOT FALSE THEN {duration_ms}
                            ELSE h.duration_ms END
    FROM built AS b
   WHERE h.id = %(change)s
  RETURNING h.id
)
SELECT b.oid, b.relkind, b.valid, b.definition, b.size_bytes,
       EXISTS (SELECT FROM rec) AS recorded
  FROM built AS b
