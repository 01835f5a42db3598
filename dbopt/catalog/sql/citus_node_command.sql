-- One command on one node of the Citus cluster, run from the coordinator as the current user
-- over a connection of its own and outside any transaction block (so DROP INDEX CONCURRENTLY
-- may run there): master_run_on_worker, the function under run_command_on_placements, sends
-- the command alone on a new connection (ExecuteCommandsAndStoreResults,
-- src/backend/distributed/operations/citus_tools.c). The coordinator's statement_timeout
-- bounds it: cancelling the call cancels the command on the node too (tried on 13.2.2).
SELECT r.success,
       r.result
  FROM pg_catalog.master_run_on_worker(ARRAY[%(host)s]::text[], ARRAY[%(port)s]::int[],
                                       ARRAY[%(command)s]::text[], false) AS r
