"""Developer tools that are not part of dbopt: `make demo` and `make bench`."""
