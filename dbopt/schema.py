"""The JSON Schema of dbopt's spec and config files: one source for editors and the validator.

`dbopt schema` prints it; `dbopt.validate` checks every document against it with the
jsonschema library, then adds the checks a schema cannot express (SQL parsing, cron, names
across files).
"""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "https://dbopt.dev/schema/v1"

#: PostgreSQL truncates identifiers to NAMEDATALEN-1 = 63 bytes; dbopt rejects longer ones.
MAX_IDENTIFIER_BYTES = 63

#: PostgreSQL's largest timeout (lock_timeout, statement_timeout...): INT_MAX milliseconds.
MAX_TIMEOUT_MS = 2_147_483_647
#: PostgreSQL's largest memory setting on 64-bit servers (MAX_KILOBYTES: INT_MAX kB).
MAX_KILOBYTES = 2_147_483_647
#: PostgreSQL's smallest maintenance_work_mem (1MB).
MIN_MAINTENANCE_WORK_MEM_KB = 1024
#: The units of PostgreSQL memory sizes, in bytes (case matters: 'mb' is refused).
MEMORY_UNITS_KB = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
#: The duration keys of dbopt.yaml (each also a Settings field with an ``_ms`` suffix).
DURATION_KEYS = (
    "lock_timeout",
    "statement_timeout",
    "retry_backoff",
    "cleanup_wait",
    "build_wait_timeout",
    "max_replica_lag",
    "max_replica_wait",
)

INDEX_METHODS = ("btree", "hash", "gist", "spgist", "gin", "brin")
REFRESH_MODES = ("concurrent", "blocking", "auto")

_NAME = {
    "type": "string",
    "minLength": 1,
    "description": "A PostgreSQL identifier (at most 63 bytes); case is kept as written.",
}
_QUALIFIED = {
    "type": "string",
    "minLength": 1,
    "description": "A relation name, optionally schema-qualified (schema.name); default schema "
    "is public.",
}
_DURATION = {
    "description": "A PostgreSQL duration: an integer (milliseconds) or a string with a unit "
    "(ms, s, min, h, d), e.g. '5s', at most 2147483647ms (about 24.8 days); 0 disables the "
    "timeout (not for lock_timeout).",
    "anyOf": [
        # No "maximum": dbopt.config says which limit (PostgreSQL's) a value passes, and why.
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+\s*(ms|s|min|h|d)?\s*$"},
    ],
}
_MEMORY = {
    "description": "A PostgreSQL memory size with its unit (B, kB, MB, GB or TB; case "
    "matters), e.g. '1GB' or '512MB'; from 1MB to 2147483647kB.",
    "type": "string",
    "pattern": r"^\s*\d+\s*(B|kB|MB|GB|TB)\s*$",
}
_SCHEMA_NAME = {
    "type": "string",
    "minLength": 1,
    "description": "A schema name (at most 63 bytes); case is kept as written.",
}


#: A database named in dbopt.yaml (a replica, a fleet's target): a DSN, a service name, or
#: {name, dsn}.
_DSN_ITEM: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["dsn"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "dsn": {"type": "string", "minLength": 1},
            },
        },
    ]
}

_COLUMN_OBJECT = {
    "type": "object",
    "description": "One key column: a column name or an expression, with its options.",
    "additionalProperties": False,
    "properties": {
        "name": {**_NAME, "description": "A column of the table."},
        "expr": {
            "type": "string",
            "minLength": 1,
            "description": "An SQL expression, e.g. date(appointment_date) or lower(email).",
        },
        "order": {"enum": ["asc", "desc"]},
        "nulls": {"enum": ["first", "last"]},
        "opclass": {
            "type": "string",
            "minLength": 1,
            "description": "Operator class, e.g. text_pattern_ops or gin_trgm_ops.",
        },
        "collation": {"type": "string", "minLength": 1},
    },
}

_INDEX = {
    "type": "object",
    "description": "One index dbopt keeps in place.",
    "additionalProperties": False,
    "required": ["name", "columns"],
    "properties": {
        "name": _NAME,
        "columns": {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [{"type": "string", "minLength": 1}, _COLUMN_OBJECT]},
            "description": "Key columns, in order: plain names or {name|expr, order, nulls, "
            "opclass, collation}.",
        },
        "method": {"enum": list(INDEX_METHODS), "default": "btree"},
        "unique": {"type": "boolean", "default": False},
        "nulls_not_distinct": {
            "type": "boolean",
            "description": "UNIQUE NULLS NOT DISTINCT (PostgreSQL 15+).",
        },
        "include": {"type": "array", "items": _NAME, "description": "INCLUDE columns."},
        "where": {
            "type": "string",
            "minLength": 1,
            "description": "The predicate of a partial index: one SQL expression.",
        },
        "with": {
            "type": "object",
            "description": "Storage parameters, e.g. {fillfactor: 90}.",
            "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
        },
        "reason": {"type": "string", "description": "Why this index exists."},
        "comment": {"type": "string", "description": "Same as reason."},
    },
}

_QUERY = {
    "type": "object",
    "description": "A query that matters, with its budgets: budget_ms (p95 latency) and/or "
    "the deterministic max_buffers, max_rows_examined, max_cost (at least one).",
    "additionalProperties": False,
    "required": ["name", "sql"],
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "pattern": r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
            "description": "A name of letters, digits, '_', '.' and '-', starting with a letter "
            "or '_' (it names the query in reports and JUnit).",
        },
        "sql": {
            "type": "string",
            "minLength": 1,
            "description": "One read-only statement; parameters as %(name)s.",
        },
        "params": {
            "type": "object",
            "description": "Values bound to %(name)s placeholders (never pasted into SQL).",
        },
        "budget_ms": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "p95 execution time target, in milliseconds.",
        },
        "warn_ms": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "p95 above this warns; must be below budget_ms.",
        },
        # Deterministic budgets: the same for given data and statistics on any machine.
        # Their descriptions are for editors only: docvalidate words "expected ..." from a
        # description for pattern and anyOf/oneOf errors, and these have neither.
        "max_buffers": {
            "type": "integer",
            "minimum": 0,
            "description": "At most this many shared buffers (hit + read) in the execution.",
        },
        "max_rows_examined": {
            "type": "integer",
            "minimum": 0,
            "description": "At most this many rows read by scan nodes, those removed by "
            "filters included.",
        },
        "max_cost": {
            "type": "number",
            "minimum": 0,
            "description": "At most this planner total cost (the top plan node's).",
        },
        "runs": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 20},
        "warmup": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 3},
        "timeout_ms": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "statement_timeout for each run; default derived from budget_ms "
            "(10 s without one).",
        },
        "description": {"type": "string"},
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "uses_index": {"type": "array", "items": _NAME, "minItems": 1},
                "no_seq_scan_on": {"type": "array", "items": _QUALIFIED, "minItems": 1},
                "plan_margin": {
                    "type": "number",
                    "minimum": 1,
                    "description": "with uses_index: warn when the best plan without an "
                    "expected index costs less than this many times the chosen plan.",
                },
            },
        },
    },
}

_VIEW_INDEX = {
    **_INDEX,
    "description": "An index on the materialized view.",
}

INDEX_FILE: dict[str, Any] = {
    "type": "object",
    "title": "dbopt index file (indexes/<table>.yaml)",
    "additionalProperties": False,
    "required": ["table"],
    "properties": {
        "table": _QUALIFIED,
        "indexes": {"type": "array", "items": _INDEX},
        "queries": {"type": "array", "items": _QUERY},
    },
}

VIEW_FILE: dict[str, Any] = {
    "type": "object",
    "title": "dbopt materialized view file (views/<name>.yaml)",
    "additionalProperties": False,
    "required": ["name", "query"],
    "properties": {
        "name": _NAME,
        "schema": {**_NAME, "default": "public"},
        "query": {
            "type": "string",
            "minLength": 1,
            "description": "The view's defining query: one read-only statement.",
        },
        "indexes": {"type": "array", "items": _VIEW_INDEX},
        "refresh": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "schedule": {
                    "type": "string",
                    "description": "A cron expression (5 fields, e.g. '0 * * * *') or @hourly, "
                    "@daily, @weekly, @monthly, @yearly.",
                },
                "mode": {"enum": list(REFRESH_MODES), "default": "auto"},
            },
        },
        "depends_on": {
            "type": "array",
            "items": _QUALIFIED,
            "description": "Other materialized views (from the specs) refreshed before this one.",
        },
        "queries": {"type": "array", "items": _QUERY},
        "reason": {"type": "string"},
        "comment": {"type": "string"},
    },
}

_ENVIRONMENT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dsn": {
            "type": "string",
            "description": "libpq URI or key=value string (service=name works); ${VAR} is "
            "expanded from the environment.",
        },
        # No "default" keys in here: an environment inherits what `defaults:` gives, and a
        # schema default written into each environment (as fastjsonschema does) would hide it.
        "confirm": {
            "type": "boolean",
            "description": "apply/rollback ask for the environment's name to be typed "
            "(default: false, or what defaults: says).",
        },
        "lock_timeout": _DURATION,
        "statement_timeout": _DURATION,
        "maintenance_work_mem": _MEMORY,
        "jobs": {"type": "integer", "minimum": 1, "maximum": 64},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "retry_backoff": _DURATION,
        "cleanup_wait": _DURATION,
        "build_wait_timeout": _DURATION,
        # What these mean is in the README; their schema is a duration's (so is the message).
        "max_replica_lag": _DURATION,
        "max_replica_wait": _DURATION,
        "replicas": {
            "type": "array",
            "description": "The environment's standbys (status shows each one's index "
            "scans; apply reads their lag): a DSN, a service name, or {name, dsn}. ${VAR} is "
            "expanded.",
            "items": _DSN_ITEM,
        },
        "targets": {
            "type": "array",
            "minItems": 1,
            "description": "A fleet: the databases this environment names instead of one dsn; "
            "each a DSN, a service name, or {name, dsn}. ${VAR} is expanded; an unnamed target "
            "is called after its host/database (or its service).",
            "items": _DSN_ITEM,
        },
        "targets_query": {
            "type": "object",
            "description": "A fleet read from a registry: sql (one read-only SELECT) runs on "
            "dsn and returns name and DSN, or name and a database name on dsn's server (or "
            "one column: database names).",
            "additionalProperties": False,
            "required": ["dsn", "sql"],
            "properties": {
                "dsn": {"type": "string", "minLength": 1},
                "sql": {"type": "string", "minLength": 1},
            },
        },
        "parallel": {
            "type": "integer",
            "minimum": 1,
            "maximum": 64,
            "description": "Targets of a fleet worked on at a time (default 4).",
        },
        "verify_timeout_factor": {"type": "number", "minimum": 1, "maximum": 1000},
        "search_path": {
            "description": "The schemas unqualified names in view queries, index expressions "
            "and budget queries resolve to, pinned on every connection instead of the "
            "role's; a list, or a string of comma-separated names. Default: public. "
            "pg_catalog is always searched first and pg_temp last.",
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": _SCHEMA_NAME, "minItems": 1},
            ],
        },
        "timezone": {
            "type": "string",
            "minLength": 1,
            "description": "The TimeZone pinned on every connection (default UTC; e.g. "
            "Europe/Paris): "
            "timestamptz literals in specs and date arithmetic in views mean the same whatever "
            "the role or database is set to.",
        },
    },
}

CONFIG_FILE: dict[str, Any] = {
    "type": "object",
    "title": "dbopt configuration (dbopt.yaml)",
    "additionalProperties": False,
    "properties": {
        "history_schema": {**_NAME, "default": "dbopt"},
        "specs": {"type": "array", "items": {"type": "string"}},
        # An environment's standbys and targets are its own: `defaults:` cannot list any.
        "defaults": {
            **_ENVIRONMENT,
            "properties": {
                k: v
                for k, v in _ENVIRONMENT["properties"].items()
                if k not in ("replicas", "targets", "targets_query")
            },
        },
        "environments": {"type": "object", "additionalProperties": _ENVIRONMENT},
    },
}


def spec_schema() -> dict[str, Any]:
    """The published schema: an index file or a view file (told apart by `table` / `query`)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dbopt spec file",
        "oneOf": [INDEX_FILE, VIEW_FILE],
    }


def config_schema() -> dict[str, Any]:
    """The schema of dbopt.yaml."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID + "/config",
        **CONFIG_FILE,
    }
