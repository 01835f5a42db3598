-- Whether the current role may create temporary tables in this database.
SELECT current_user AS role, current_database() AS database,
       has_database_privilege(current_database(), 'TEMP') AS may_temp
