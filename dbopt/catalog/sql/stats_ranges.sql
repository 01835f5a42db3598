-- stats_columns.sql's range columns from PostgreSQL 17 on, where pg_stats has them.
s.range_length_histogram::text AS range_length_histogram, s.range_empty_frac,
s.range_bounds_histogram::text AS range_bounds_histogram
