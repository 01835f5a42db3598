"""The static lists: functions refused by name, VOLATILE built-ins known to be harmless, and
the languages and operators the call graph treats specially. No database needed."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: OIDs below this were assigned by initdb: built-in objects (FirstNormalObjectId).
FIRST_USER_OID = 16384

_STATISTICS = "resets the server's statistics"
_SESSIONS = "interrupts or ends another session"
_LOCKS = (
    "takes or releases an advisory lock (a session lock outlives the rolled-back transaction, "
    "and any lock can block the application)"
)
_SETTINGS = "changes a setting or the server's configuration"
_WAL = "writes to the WAL or starts/stops a backup, which no rollback undoes"
_REPLICATION = "creates, drops, advances or consumes a replication slot or origin"
_STANDBY = "promotes a standby or pauses/resumes its replay"
_SEQUENCES = "advances a sequence, which no rollback undoes"
_XID = "assigns a transaction ID"
_FILES = "writes large objects or server files"
_SQL_TEXT = "runs SQL given as text, which dbopt cannot check"
_ELSEWHERE = "runs SQL in another session, outside verify's read-only transaction"
_HYPOPG = "changes HypoPG's hypothetical indexes"
_CACHE = "changes the buffer cache or starts a background worker"
_LOG = "makes a backend write to the server log"
_INTERNALS = "changes the server's internal state"
_PLANNER = "writes planner statistics"
_PAGES = "changes data pages or their visibility map directly"


def _words(text: str) -> list[str]:
    """The names in a space-separated list (long lists of names read better as text)."""
    return text.split()


#: Functions refused by name, in any schema, with why: what no READ ONLY transaction or
#: rollback stops. Built-ins of PostgreSQL 13-18 and widespread extensions.
DENIED: Mapping[str, str] = MappingProxyType(
    {
        name: reason
        for reason, names in (
            (
                _STATISTICS,
                "pg_stat_reset pg_stat_reset_shared pg_stat_reset_single_table_counters "
                "pg_stat_reset_single_function_counters pg_stat_reset_slru "
                "pg_stat_reset_replication_slot pg_stat_reset_subscription_stats "
                "pg_stat_reset_backend_stats pg_stat_statements_reset pg_stat_kcache_reset "
                "pg_qualstats_reset pg_stat_monitor_reset pg_wait_sampling_reset_profile",
            ),
            (_SESSIONS, "pg_terminate_backend pg_cancel_backend"),
            (
                _LOCKS,
                "pg_advisory_lock pg_advisory_lock_shared pg_try_advisory_lock "
                "pg_try_advisory_lock_shared pg_advisory_xact_lock pg_advisory_xact_lock_shared "
                "pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared pg_advisory_unlock "
                "pg_advisory_unlock_shared pg_advisory_unlock_all",
            ),
            (_SETTINGS, "set_config pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old"),
            (
                _WAL,
                "pg_switch_wal pg_switch_xlog pg_create_restore_point pg_logical_emit_message "
                "pg_backup_start pg_backup_stop pg_start_backup pg_stop_backup",
            ),
            (
                _REPLICATION,
                "pg_create_physical_replication_slot pg_create_logical_replication_slot "
                "pg_copy_physical_replication_slot pg_copy_logical_replication_slot "
                "pg_drop_replication_slot pg_replication_slot_advance "
                "pg_logical_slot_get_changes pg_logical_slot_get_binary_changes "
                "pg_sync_replication_slots pg_replication_origin_create "
                "pg_replication_origin_drop pg_replication_origin_advance "
                "pg_replication_origin_session_setup pg_replication_origin_session_reset "
                "pg_replication_origin_xact_setup pg_replication_origin_xact_reset",
            ),
            (
                _STANDBY,
                "pg_promote pg_wal_replay_pause pg_wal_replay_resume pg_xlog_replay_pause "
                "pg_xlog_replay_resume",
            ),
            (_SEQUENCES, "nextval setval"),
            (_XID, "txid_current pg_current_xact_id"),
            (
                _FILES,
                "lo_import lo_export lo_create lo_creat lo_unlink lo_from_bytea lo_put "
                "lo_truncate lo_truncate64 lowrite pg_file_write pg_file_rename pg_file_unlink "
                "pg_file_sync",
            ),
            (
                _SQL_TEXT,
                "query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml "
                "cursor_to_xmlschema table_to_xml table_to_xmlschema table_to_xml_and_xmlschema "
                "schema_to_xml schema_to_xmlschema schema_to_xml_and_xmlschema database_to_xml "
                "database_to_xmlschema database_to_xml_and_xmlschema ts_stat ts_rewrite",
            ),
            (_ELSEWHERE, "pg_background_launch pg_background_result pg_background_detach"),
            (
                _HYPOPG,
                "hypopg_create_index hypopg_drop_index hypopg_reset hypopg_reset_index "
                "hypopg_hide_index hypopg_unhide_index hypopg_unhide_all_indexes",
            ),
            (
                _CACHE,
                "pg_prewarm autoprewarm_start_worker autoprewarm_dump_now pg_buffercache_evict "
                "pg_buffercache_evict_all pg_buffercache_evict_relation",
            ),
            (_LOG, "pg_log_backend_memory_contexts"),
            (_INTERNALS, "pg_import_system_collations pg_nextoid pg_stop_making_pinned_objects"),
            (
                _PLANNER,
                "pg_restore_relation_stats pg_restore_attribute_stats pg_clear_relation_stats "
                "pg_clear_attribute_stats",
            ),
            (_PAGES, "heap_force_kill heap_force_freeze pg_truncate_visibility_map"),
        )
        for name in _words(names)
    }
)

#: Name prefixes refused the same way: whole families of functions.
DENIED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("binary_upgrade_", _INTERNALS),
    ("dblink", _ELSEWHERE),
)

#: VOLATILE built-ins that change nothing: volatile because their result changes from call to
#: call, not because they write. pg_sleep ties up only verify's own backend, for at most the
#: statement_timeout every run has. timezone(text, timetz) is VOLATILE before PostgreSQL 15
#: (it reads the current date): a query's AT TIME ZONE names every overload of timezone.
#: Only built-ins (OID below FIRST_USER_OID) qualify: a user-defined ``random()`` is judged
#: like any user-defined function.
HARMLESS_VOLATILE: frozenset[str] = frozenset(
    _words(
        "random random_normal clock_timestamp timeofday gen_random_uuid uuidv4 uuidv7 "
        "pg_sleep pg_sleep_for pg_sleep_until currval lastval "
        "pg_relation_size pg_table_size pg_indexes_size pg_total_relation_size "
        "pg_database_size pg_tablespace_size pg_partition_tree pg_partition_ancestors "
        "pg_is_in_recovery pg_current_wal_lsn pg_current_wal_insert_lsn "
        "pg_current_wal_flush_lsn pg_last_wal_receive_lsn pg_last_wal_replay_lsn "
        "pg_last_xact_replay_timestamp pg_blocking_pids pg_lock_status txid_status "
        "pg_xact_status pg_jit_available timezone"
    )
)

#: Languages whose function bodies dbopt reads (as text) to see what they call.
READABLE_LANGUAGES = frozenset({"sql", "plpgsql"})
#: Languages only superusers can create functions in; their declared volatility is trusted.
TRUSTED_LANGUAGES = frozenset({"c", "internal"})

#: Operators a query may use without naming them: ORDER BY, GROUP BY, DISTINCT, joins with
#: USING, IN, BETWEEN, CASE x WHEN, set operations.
IMPLICIT_OPERATORS = ("=", "<>", "<", ">", "<=", ">=")


def denied(name: str) -> str | None:
    """Why a function of this name (last part, any case) is refused, or None."""
    key = name.lower()
    if key in DENIED:
        return DENIED[key]
    return next((why for prefix, why in DENIED_PREFIXES if key.startswith(prefix)), None)
