-- For the rest of inspect's own transaction: memory enough for the catalog queries' sorts and
-- hashes not to spill to disk (ten thousand indexes sort ~5 MB, over the default 4 MB), never
-- less than the session already has.
SELECT set_config('work_mem', '32MB', true)
 WHERE (SELECT setting::bigint FROM pg_settings WHERE name = 'work_mem') < 32 * 1024
