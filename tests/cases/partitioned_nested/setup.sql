CREATE TABLE events (id int, day date NOT NULL, kind text NOT NULL, payload text) PARTITION BY RANGE (day);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
    PARTITION BY LIST (kind);
CREATE TABLE events_2026_click PARTITION OF events_2026 FOR VALUES IN ('click');
CREATE TABLE events_2026_other PARTITION OF events_2026 DEFAULT;
INSERT INTO events SELECT g, date '2025-01-01' + g % 700, (ARRAY['click','view'])[1 + g % 2], 'p' || g
  FROM generate_series(1, 2000) g;
