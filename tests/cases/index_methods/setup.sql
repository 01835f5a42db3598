CREATE TABLE documents (
    id int PRIMARY KEY,
    title text NOT NULL,
    body tsvector,
    tags int[],
    during tsrange,
    location point,
    created_at timestamp NOT NULL
);
INSERT INTO documents
SELECT g, 'doc ' || g, to_tsvector('simple', 'word' || (g % 50) || ' other' || (g % 7)),
       ARRAY[g % 10, g % 13], tsrange(timestamp '2025-01-01' + g * interval '1 hour',
       timestamp '2025-01-01' + (g + 2) * interval '1 hour'),
       point(g % 100, g / 100), timestamp '2025-01-01' + g * interval '1 minute'
  FROM generate_series(1, 2000) g;
