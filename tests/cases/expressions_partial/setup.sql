CREATE TABLE users (
    id int PRIMARY KEY,
    email text NOT NULL,
    name text,
    country text,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL,
    score numeric
);
INSERT INTO users
SELECT g, 'User' || g || '@Example.com', 'name ' || g, (ARRAY['fr','de','us',NULL])[1 + g % 4],
       CASE WHEN g % 10 = 0 THEN now() END, timestamptz '2025-01-01' + g * interval '1 hour', g % 97
  FROM generate_series(1, 2000) g;
