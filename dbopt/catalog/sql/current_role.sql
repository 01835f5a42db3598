-- The role the session acts as (privilege checks are made for it).
SELECT current_user
