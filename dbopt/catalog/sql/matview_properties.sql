-- What a materialized view carries besides its query, for the views a plan replaces or drops:
-- owner, grants, comments, storage, statistics settings, and every object that depends on it
-- (or on its row type) other than its own indexes and the views that read it.
SELECT c.oid::bigint                                           AS oid,
       pg_get_userbyid(c.relowner)::text                       AS owner,
       current_user::text                                      AS current_role,
       obj_description(c.oid, 'pg_class')                      AS comment,
       ts.spcname::text                                        AS tablespace,
       COALESCE(c.reloptions, '{}')                            AS reloptions,
       c.relispopulated                                        AS populated,
       COALESCE((SELECT json_agg(json_build_object(
                          'column', NULL,
                          'grantor', pg_get_userbyid(x.grantor),
                          'grantee', CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                          ELSE pg_get_userbyid(x.grantee) END,
                          'privilege', x.privilege_type,
                          'grantable', x.is_grantable) ORDER BY x.grantee, x.privilege_type)
                   FROM aclexplode(c.relacl) x), '[]')       AS grants,
       COALESCE((SELECT json_agg(json_build_object(
                          'column', a.attname,
                          'grantor', pg_get_userbyid(x.grantor),
                          'grantee', CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                          ELSE pg_get_userbyid(x.grantee) END,
                          'privilege', x.privilege_type,
                          'grantable', x.is_grantable) ORDER BY a.attnum, x.grantee)
                   FROM pg_attribute a, aclexplode(a.attacl) x
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                '[]')                                          AS column_grants,
       COALESCE((SELECT json_agg(json_build_array(a.attname, col_description(c.oid, a.attnum))
                                 ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND col_description(c.oid, a.attnum) IS NOT NULL), '[]') AS column_comments,
       COALESCE((SELECT json_agg(json_build_array(a.attname, a.attstattarget::int)
                                 ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND coalesce(a.attstattarget::int, -1) >= 0), '[]') AS stat_targets,
       COALESCE((SELECT json_agg(json_build_array(a.attname, a.attstorage::text)
                                 ORDER BY a.attnum)
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND a.attstorage <> t.typstorage), '[]')  AS storage,
       -- Roles that default privileges will grant the new view to (it is created by this
       -- role): revoked before the old view's grants are given again.
       COALESCE((SELECT array_agg(DISTINCT CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                                 ELSE pg_get_userbyid(x.grantee) END)
                   FROM pg_default_acl d, aclexplode(d.defaclacl) x
                  WHERE d.defaclobjtype = 'r'
                    AND d.defaclrole = (SELECT r.oid FROM pg_roles r
                                         WHERE r.rolname = current_user)
                    AND d.defaclnamespace IN (0, c.relnamespace)
                    AND x.grantee <> d.defaclrole), '{}') AS default_grantees,
       (SELECT ic.relname::text
          FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
         WHERE x.indrelid = c.oid AND x.indisclustered)        AS clustered_index,
       COALESCE((SELECT array_agg(s.stxname::text ORDER BY s.stxname)
                   FROM pg_statistic_ext s WHERE s.stxrelid = c.oid), '{}') AS statistics,
       (SELECT e.extname::text
          FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                                                               AS extension,
       (SELECT count(*) FROM pg_seclabel l
         WHERE l.classoid = 'pg_class'::regclass AND l.objoid = c.oid)::int AS security_labels,
       COALESCE((SELECT array_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid))
                   FROM pg_depend d
                  WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
                         OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype))
                    AND d.deptype IN ('n', 'a')
                    -- its own indexes (rebuilt with it)
                    AND NOT (d.classid = 'pg_class'::regclass
                             AND EXISTS (SELECT 1 FROM pg_index x
                                          WHERE x.indexrelid = d.objid AND x.indrelid = c.oid))
                    -- views and materialized views that read it (re-bound or rebuilt)
                    AND NOT (d.classid = 'pg_rewrite'::regclass
                             AND EXISTS (SELECT 1 FROM pg_rewrite r
                                           JOIN pg_class rc ON rc.oid = r.ev_class
                                          WHERE r.oid = d.objid AND rc.relkind IN ('v', 'm')))
                    -- extended statistics (reported apart)
                    AND d.classid <> 'pg_statistic_ext'::regclass),
                '{}')                                          AS dependents
  FROM pg_class c
  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE c.oid = ANY (%(oids)s::bigint[]::oid[])
 ORDER BY c.oid
