-- Who a materialized view dbopt creates should belong to. dbopt counts an object as its own
-- only where the history's owner (the keeper) can act on it; a view belongs to its creator,
-- so when the keeper cannot act on the current role's objects, the view is given to the
-- keeper, which the current role must be able to become (%(option)s: SET on PostgreSQL 16+,
-- MEMBER before) and which must be allowed to create in the view's schema.
SELECT current_user AS me,
       pg_get_userbyid(h.relowner) AS keeper,
       pg_has_role(h.relowner, current_user, 'USAGE') AS keeper_acts,
       pg_has_role(current_user, h.relowner, %(option)s) AS can_become,
       ARRAY(SELECT n.nspname::text
               FROM pg_namespace n
              WHERE n.nspname = ANY (%(schemas)s::text[])
                AND NOT has_schema_privilege(h.relowner, n.oid, 'CREATE')
              ORDER BY 1) AS keeper_cannot_create,
       -- A role that may not create the views at all (a reader planning) is refused for
       -- that at apply; nothing to decide here.
       NOT EXISTS (SELECT 1 FROM pg_namespace n
                    WHERE n.nspname = ANY (%(schemas)s::text[])
                      AND has_schema_privilege(n.oid, 'CREATE')) AS me_cannot_create
  FROM pg_class h
  JOIN pg_namespace hn ON hn.oid = h.relnamespace
 WHERE hn.nspname = %(schema)s AND h.relname = 'changes' AND h.relkind = 'r'
