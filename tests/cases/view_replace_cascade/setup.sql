CREATE TABLE sales (id int PRIMARY KEY, day date NOT NULL, amount int NOT NULL);
INSERT INTO sales SELECT g, date '2026-01-01' + g % 60, g % 97 FROM generate_series(1, 3000) g;
-- The view as someone made it, before the spec changed its query; a plain view reads it.
CREATE MATERIALIZED VIEW mv_revenue AS SELECT day, sum(amount) AS revenue FROM sales GROUP BY day;
CREATE UNIQUE INDEX mv_revenue_day ON mv_revenue (day);
CREATE INDEX mv_revenue_handmade ON mv_revenue (revenue);
CREATE VIEW v_good_days AS SELECT day, revenue FROM mv_revenue WHERE revenue > 2000;
