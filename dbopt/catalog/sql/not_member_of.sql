-- Which of the roles in %(of)s the role %(role)s is not a member of (with their privileges).
SELECT o
  FROM unnest(%(of)s::text[]) AS o
 WHERE NOT pg_has_role(%(role)s, o, 'USAGE')
 ORDER BY o
