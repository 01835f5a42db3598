-- Set one column's statistics as pg_stats showed them where they were dumped (PostgreSQL
-- 18+; needs MAINTAIN). The value lists are given as text, read with the column's type; a
-- NULL value is left out. A value that does not fit is a WARNING and the function returns
-- false: the caller then rolls back.
SELECT pg_catalog.pg_restore_attribute_stats(
           'schemaname', %(schema)s::text,
           'relname', %(name)s::text,
           'attname', %(column)s::text,
           'inherited', %(inherited)s::boolean,
           'version', %(version)s::integer,
           'null_frac', %(null_frac)s::real,
           'avg_width', %(avg_width)s::integer,
           'n_distinct', %(n_distinct)s::real,
           'most_common_vals', %(most_common_vals)s::text,
           'most_common_freqs', %(most_common_freqs)s::real[],
           'histogram_bounds', %(histogram_bounds)s::text,
           'correlation', %(correlation)s::real,
           'most_common_elems', %(most_common_elems)s::text,
           'most_common_elem_freqs', %(most_common_elem_freqs)s::real[],
           'elem_count_histogram', %(elem_count_histogram)s::real[],
           'range_length_histogram', %(range_length_histogram)s::text,
           'range_empty_frac', %(range_empty_frac)s::real,
           'range_bounds_histogram', %(range_bounds_histogram)s::text)
