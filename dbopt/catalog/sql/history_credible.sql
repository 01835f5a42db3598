-- Who may write dbopt's history decides what dbopt owns; so a fact counts only for an object
-- the history's owner could act on itself (a member of the owner of its table): a forged row
-- never makes a dbopt run drop what its writer could not. t is the object's table (or view).
pg_has_role((SELECT h.relowner FROM pg_class h JOIN pg_namespace hn ON hn.oid = h.relnamespace
              WHERE hn.nspname = {schema_name} AND h.relname = 'changes'),
            t.relowner, 'USAGE')
