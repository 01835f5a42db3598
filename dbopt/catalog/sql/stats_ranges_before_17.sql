-- stats_columns.sql's range columns before PostgreSQL 17: pg_stats has none.
NULL::text AS range_length_histogram, NULL::real AS range_empty_frac,
NULL::text AS range_bounds_histogram
