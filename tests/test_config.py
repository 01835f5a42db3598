"""dbopt.yaml: environments, ${VAR} expansion, durations, and located errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import write_file

from dbopt.config import (
    LIBPQ_ENVIRONMENT,
    Config,
    Replica,
    Settings,
    Target,
    duration_ms,
    load_config,
    parse_search_path,
    resolve_target,
)
from dbopt.errors import ConfigError

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write ./dbopt.yaml (dedented) in a fresh working directory."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str) -> Path:
        write_file(tmp_path, "dbopt.yaml", text)
        return Path("dbopt.yaml")

    return _write


def config_problems(path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


PROJECT = """\
    history_schema: dbopt_history
    specs: [db/indexes, db/views]
    defaults:
      lock_timeout: 2s
      statement_timeout: 1h
      retries: 3
    environments:
      staging:
        dsn: postgresql://app:${STAGING_PASSWORD}@staging.internal/app
        lock_timeout: 500ms
      production:
        dsn: ${PROD_URL}
        confirm: true
        jobs: 4
        maintenance_work_mem: 1GB
        retry_backoff: 5s
        verify_timeout_factor: 2.5
      local: {}
"""


def test_a_full_config_loads(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    assert config.path == "dbopt.yaml"
    assert config.history_schema == "dbopt_history"
    assert config.spec_dirs == ("db/indexes", "db/views")
    assert config.defaults == Settings(
        lock_timeout_ms=2_000, statement_timeout_ms=3_600_000, retries=3
    )
    assert sorted(config.environments) == ["local", "production", "staging"]
    staging = config.environments["staging"]
    # The DSN is kept unexpanded until a command needs it.
    assert staging.dsn == "postgresql://app:${STAGING_PASSWORD}@staging.internal/app"
    # Environments inherit the defaults and override what they give.
    assert staging.settings == Settings(
        lock_timeout_ms=500, statement_timeout_ms=3_600_000, retries=3
    )
    production = config.environments["production"].settings
    assert production == Settings(
        lock_timeout_ms=2_000,
        statement_timeout_ms=3_600_000,
        retries=3,
        confirm=True,
        jobs=4,
        maintenance_work_mem="1GB",
        retry_backoff_ms=5_000,
        verify_timeout_factor=2.5,
    )
    assert config.environments["local"].dsn is None


def test_no_config_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None) == Config()
    assert Config().spec_dirs == ("indexes", "views")


def test_an_explicit_config_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("ci/dbopt.yaml"))
    assert str(caught.value) == "ci/dbopt.yaml: no such config file"


def test_unknown_keys_bad_values_and_bad_durations_are_located(write_config: WriteConfig) -> None:
    write_config(
        """\
        histroy_schema: x
        defaults:
          lock_timeout: 5x
        environments:
          staging:
            dsn: postgresql://staging/app
            statment_timeout: 1s
            lock_timeout: 5 seconds
            retry_backoff: -1
            jobs: 0
            maintenance_work_mem: 1 gigabyte
            confirm: "yes"
        """
    )
    duration = (
        "expected a PostgreSQL duration: an integer (milliseconds) or a string with a unit "
        "(ms, s, min, h, d), e.g. '5s', at most 2147483647ms (about 24.8 days); 0 disables the "
        "timeout (not for lock_timeout)"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(None)
    assert [str(p) for p in caught.value.problems] == [
        "dbopt.yaml:1:1: (top level): unknown key 'histroy_schema'; did you mean 'history_schema'?",
        f"dbopt.yaml:3:17: defaults.lock_timeout: the string '5x' is not valid; {duration}",
        "dbopt.yaml:7:5: environments.staging: unknown key 'statment_timeout'; "
        "did you mean 'statement_timeout'?",
        "dbopt.yaml:8:19: environments.staging.lock_timeout: the string '5 seconds' is not "
        f"valid; {duration}",
        f"dbopt.yaml:9:20: environments.staging.retry_backoff: the number -1 is not valid; "
        f"{duration}",
        "dbopt.yaml:10:11: environments.staging.jobs: must be at least 1, got 0",
        "dbopt.yaml:11:27: environments.staging.maintenance_work_mem: the string '1 gigabyte' "
        "is not valid; expected a PostgreSQL memory size with its unit (B, kB, MB, GB or TB; "
        "case matters), e.g. '1GB' or '512MB'; from 1MB to 2147483647kB",
        "dbopt.yaml:12:14: environments.staging.confirm: expected true or false, "
        "got the string 'yes'",
    ]
    assert caught.value.args[0] == "dbopt.yaml: invalid configuration; nothing was run"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- staging\n", "dbopt.yaml:1:1: the configuration must be a mapping"),
        ("environments: []\n", "dbopt.yaml:1:15: environments: expected a mapping, got a list"),
        (
            "environments:\n  staging:\n",
            "dbopt.yaml:2:11: environments.staging: expected a mapping, got nothing",
        ),
        (
            "environments:\n  staging: {dsn: a}\n  staging: {dsn: b}\n",
            "dbopt.yaml:3:3: duplicate key 'staging' (first given at line 2); remove one of them",
        ),
        (
            # A registry's query that would interrupt another session: refused at load.
            "environments:\n  t:\n    targets_query:\n      dsn: a\n"
            "      sql: SELECT name, db FROM tenants WHERE pg_cancel_backend(1)\n",
            "dbopt.yaml:5:12: targets_query.sql: pg_cancel_backend() interrupts or ends another "
            "session: the registry's query must change nothing",
        ),
    ],
)
def test_shape_errors(write_config: WriteConfig, text: str, problem: str) -> None:
    write_config(text)
    assert config_problems() == [problem]


def test_unreadable_yaml(write_config: WriteConfig) -> None:
    write_config("environments: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(None)
    assert str(caught.value) == (
        "dbopt.yaml:2:1: invalid YAML: the file ends where a value was expected: complete the "
        "value, or close the '[' or '{' that is still open\n"
        "dbopt.yaml: cannot read the configuration"
    )


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (250, 250),
        ("250", 250),
        ("500ms", 500),
        ("5s", 5_000),
        (" 2 min ", 120_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
    ],
)
def test_durations(value: int | str, ms: int) -> None:
    assert duration_ms(value) == ms


@pytest.mark.parametrize("value", ["5x", "5 seconds", "-1s", "1.5s", "", "s"])
def test_bad_durations(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        duration_ms(value)
    assert str(caught.value) == f"'{value}' is not a duration: write e.g. 500ms, 5s, 2min, 1h"


# --- choosing the target ---------------------------------------------------------------


def test_no_env_uses_the_dsn_flag_and_the_defaults(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    assert resolve_target(config, None, "postgresql://x/y", {}) == Target(
        None, "postgresql://x/y", config.defaults, source="--dsn"
    )
    # Neither --env nor --dsn, nor a variable: the libpq environment alone ("", not None:
    # connect() then reads no DATABASE_URL either).
    target = resolve_target(config, None, None, {})
    assert target == Target(None, "", config.defaults, source=LIBPQ_ENVIRONMENT)


def test_without_flags_dbopt_dsn_then_database_url(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    both = {"DBOPT_DSN": "host=from-dbopt-dsn", "DATABASE_URL": "postgresql://from-url/db"}
    assert resolve_target(config, None, None, both) == Target(
        None, "host=from-dbopt-dsn", config.defaults, source="DBOPT_DSN"
    )
    url_only = {"DBOPT_DSN": " ", "DATABASE_URL": "postgresql://from-url/db"}
    assert resolve_target(config, None, None, url_only) == Target(
        None, "postgresql://from-url/db", config.defaults, source="DATABASE_URL"
    )
    # An explicit --dsn wins over both.
    assert resolve_target(config, None, "host=flag", both).dsn == "host=flag"


def test_an_explicit_env_ignores_dbopt_dsn_and_database_url(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    environ = {
        "DBOPT_DSN": "host=elsewhere",
        "DATABASE_URL": "postgresql://elsewhere/db",
        "PROD_URL": "postgresql://prod.internal/app",
    }
    target = resolve_target(config, "production", None, environ)
    assert target.dsn == "postgresql://prod.internal/app"
    assert target.source == "environment 'production' in dbopt.yaml"
    # An environment without dsn leaves it to libpq: still not to DBOPT_DSN or DATABASE_URL.
    local = resolve_target(config, "local", None, environ)
    assert local.dsn == ""
    assert local.source == "environment 'local' in dbopt.yaml, which leaves it to libpq"


def test_env_expands_variables(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    target = resolve_target(config, "staging", None, {"STAGING_PASSWORD": "s3cret"})
    assert target == Target(
        "staging",
        "postgresql://app:s3cret@staging.internal/app",
        config.environments["staging"].settings,
        source="environment 'staging' in dbopt.yaml",
    )


def test_env_reads_the_process_environment_by_default(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(PROJECT)
    monkeypatch.setenv("PROD_URL", "postgresql://prod.internal/app")
    target = resolve_target(load_config(None), "production", None)
    assert target.dsn == "postgresql://prod.internal/app"
    assert target.settings.confirm is True


def test_a_missing_variable_is_named_never_its_value(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    with pytest.raises(ConfigError) as caught:
        resolve_target(load_config(None), "production", None, {"OTHER": "x"})
    assert str(caught.value) == (
        "environment 'production' in dbopt.yaml: environment variable PROD_URL is not set "
        "(write ${PROD_URL:-default} to give a default)"
    )


def test_defaults_and_dollar_escapes_in_a_dsn(write_config: WriteConfig) -> None:
    write_config(
        """\
        environments:
          ci:
            dsn: postgresql://ci:$${PGPASS:-pw}@${CI_HOST:-localhost}/app
        """
    )
    target = resolve_target(load_config(None), "ci", None, {})
    assert target.dsn == "postgresql://ci:${PGPASS:-pw}@localhost/app"


def test_env_and_dsn_together_are_refused(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    # Which database did you mean? The history would record "production" for a run on
    # the other one, and confirm: true would ask for "production" before touching it.
    with pytest.raises(ConfigError) as caught:
        resolve_target(config, "production", "postgresql://replica/app", {})
    assert str(caught.value) == (
        "give --env or --dsn, not both: --env production names a database in dbopt.yaml, "
        "--dsn another; to use production's settings with another DSN, add an environment "
        "for it"
    )


@pytest.mark.parametrize("dsn", ["", "  "])
def test_an_empty_dsn_flag_is_refused(write_config: WriteConfig, dsn: str) -> None:
    # `--dsn "$PROD_DSN"` with the variable unset must not mean "whatever PGHOST says".
    write_config(PROJECT)
    with pytest.raises(ConfigError) as caught:
        resolve_target(load_config(None), None, dsn, {"PGHOST": "somewhere"})
    assert str(caught.value).startswith("--dsn is empty (an unset variable?)")


def test_libpq_variables_filling_an_env_dsn_are_named(write_config: WriteConfig) -> None:
    write_config(
        """\
        environments:
          production: {dsn: "dbname=app user=deploy"}
          pinned: {dsn: "host=db1 port=5432 dbname=app user=deploy"}
          by_service: {dsn: "service=prod"}
        """
    )
    config = load_config(None)
    environ = {"PGHOST": "db-staging", "PGPORT": "5433", "PGPASSWORD": "Hunter2"}
    production = resolve_target(config, "production", None, environ)
    assert [str(p) for p in production.environment_parts(environ)] == [
        "host from PGHOST (db-staging)",
        "port from PGPORT (5433)",
    ]
    described = production.describe(environ)
    assert described.endswith(
        "(environment 'production' in dbopt.yaml; host from PGHOST (db-staging); "
        "port from PGPORT (5433))"
    )
    assert "Hunter2" not in described
    assert resolve_target(config, "pinned", None, environ).environment_parts(environ) == []
    # A service file supplies its parts before the environment does: nothing to say.
    assert resolve_target(config, "by_service", None, environ).environment_parts(environ) == []


def test_an_environment_without_dsn_leaves_it_to_libpq(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    assert resolve_target(load_config(None), "local", None, {}).dsn == ""


def test_unknown_environment_says_did_you_mean(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    with pytest.raises(ConfigError) as caught:
        resolve_target(config, "prod", None, {})
    assert (
        str(caught.value) == "unknown environment 'prod' (dbopt.yaml); did you mean 'production'?"
    )
    with pytest.raises(ConfigError) as caught:
        resolve_target(config, "stagign", None, {})
    assert str(caught.value) == (
        "unknown environment 'stagign' (dbopt.yaml); did you mean 'staging'?"
    )


def test_unknown_environment_without_a_close_match_lists_them(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    with pytest.raises(ConfigError) as caught:
        resolve_target(load_config(None), "qa", None, {})
    assert str(caught.value) == (
        "unknown environment 'qa' (dbopt.yaml); known: local, production, staging"
    )


def test_unknown_environment_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        resolve_target(load_config(None), "staging", None, {})
    assert str(caught.value) == (
        "unknown environment 'staging' (no dbopt.yaml found); none is defined"
    )


# --- values the server (or dbopt) would refuse: exit 2 before connecting -----------------


def test_values_the_server_would_refuse_are_located(write_config: WriteConfig) -> None:
    write_config(
        """\
        defaults:
          statement_timeout: 30d
          lock_timeout: 0
        environments:
          production:
            lock_timeout: 2147483648
            cleanup_wait: 25d
            retry_backoff: 24d
            maintenance_work_mem: 512kB
            jobs: 2.0
            verify_timeout_factor: 0.5
            search_path: "app, $user"
            timezone: Europe Paris
          big:
            maintenance_work_mem: 3TB
            statement_timeout: "2147483647"
            search_path: [app, pg_catalog]
        """
    )
    limit = "at most 2147483647ms, about 24.8 days"
    assert config_problems() == [
        "dbopt.yaml:2:22: defaults.statement_timeout: '30d' is longer than PostgreSQL allows "
        f"for a timeout ({limit})",
        "dbopt.yaml:3:17: defaults.lock_timeout: 0 would let dbopt wait for a lock forever, "
        "with the application's queries queued behind it; give a limit such as 5s",
        "dbopt.yaml:6:19: environments.production.lock_timeout: 2147483648 is longer than "
        f"PostgreSQL allows for a timeout ({limit})",
        "dbopt.yaml:7:19: environments.production.cleanup_wait: '25d' is longer than "
        f"PostgreSQL allows for a timeout ({limit})",
        "dbopt.yaml:9:27: environments.production.maintenance_work_mem: '512kB' is below "
        "PostgreSQL's minimum for maintenance_work_mem (1MB)",
        "dbopt.yaml:10:11: environments.production.jobs: expected a whole number, got 2.0",
        "dbopt.yaml:11:28: environments.production.verify_timeout_factor: must be at least 1, "
        "got 0.5",
        "dbopt.yaml:12:18: environments.production.search_path: search_path cannot name "
        "$user: dbopt always searches pg_catalog first and pg_temp last, and never the role's "
        "own schema ($user)",
        "dbopt.yaml:13:15: environments.production.timezone: 'Europe Paris' is not a time zone "
        "name: write e.g. UTC or Europe/Paris",
        "dbopt.yaml:15:27: environments.big.maintenance_work_mem: '3TB' is above PostgreSQL's "
        "maximum for maintenance_work_mem (2147483647kB)",
        "dbopt.yaml:17:18: environments.big.search_path: search_path cannot name pg_catalog: "
        "dbopt always searches pg_catalog first and pg_temp last, and never the role's own "
        "schema ($user)",
    ]


def test_the_largest_values_postgresql_accepts_load(write_config: WriteConfig) -> None:
    write_config(
        """\
        defaults:
          statement_timeout: 2147483647
          lock_timeout: 24d
          cleanup_wait: 0
          maintenance_work_mem: 1MB
          verify_timeout_factor: 1
        environments:
          big: {maintenance_work_mem: 2047GB, statement_timeout: 0}
        """
    )
    config = load_config(None)
    assert config.defaults.statement_timeout_ms == 2_147_483_647
    assert config.defaults.lock_timeout_ms == 24 * 86_400_000
    assert config.environments["big"].settings.maintenance_work_mem == "2047GB"


def test_settings_refuse_out_of_range_values_from_code_too() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(statement_timeout_ms=2**31, jobs=0, maintenance_work_mem="1kB")
    assert str(caught.value) == (
        "invalid settings: statement_timeout_ms: 2147483648 is longer than PostgreSQL allows "
        "for a timeout (at most 2147483647ms, about 24.8 days); maintenance_work_mem: '1kB' "
        "is below PostgreSQL's minimum for maintenance_work_mem (1MB); jobs: expected an "
        "integer from 1 to 64, got 0"
    )
    with pytest.raises(ConfigError):
        Settings(search_path=("pg_temp",))
    with pytest.raises(ConfigError):
        Settings(lock_timeout_ms=0)


# --- search_path and timezone -----------------------------------------------------------


def test_search_path_and_timezone_default_and_merge(write_config: WriteConfig) -> None:
    write_config(
        """\
        defaults:
          search_path: "app, public"
        environments:
          listed: {search_path: ["My Schema", public], timezone: Europe/Paris}
          quoted: {search_path: '"My Schema", "a,b"'}
          plain: {}
        """
    )
    config = load_config(None)
    assert Settings().search_path == ("public",)
    assert Settings().timezone == "UTC"
    assert config.defaults.search_path == ("app", "public")
    listed = config.environments["listed"].settings
    assert listed.search_path == ("My Schema", "public")
    assert listed.timezone == "Europe/Paris"
    assert config.environments["quoted"].settings.search_path == ("My Schema", "a,b")
    assert config.environments["plain"].settings.search_path == ("app", "public")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "search_path holds an empty schema name"),
        ("app,,public", "search_path holds an empty schema name"),
        ([], "search_path must name at least one schema, e.g. public"),
        ("public, public", "search_path names a schema twice"),
        ("pg_temp_3", "search_path cannot name pg_temp_3"),
        ("x" * 64, f"schema name '{'x' * 64}' is longer than 63 bytes"),
    ],
)
def test_bad_search_paths(value: str | list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_search_path(value)
    assert str(caught.value).startswith(message)


def test_environments_inherit_every_default(write_config: WriteConfig) -> None:
    # confirm: true in defaults must reach production (the schema once wrote its own
    # default, false, into every environment while validating).
    write_config(
        """\
        defaults: {confirm: true, search_path: app, timezone: Europe/Paris}
        environments:
          production: {dsn: "host=db1"}
        """
    )
    production = load_config(None).environments["production"].settings
    assert production.confirm is True
    assert production.search_path == ("app",)
    assert production.timezone == "Europe/Paris"


def test_replicas_and_lag_settings(write_config: WriteConfig) -> None:
    write_config(
        """\
        defaults:
          max_replica_lag: 30s
        environments:
          production:
            dsn: service=app
            max_replica_wait: 10min
            replicas:
              - app_replica
              - postgresql://ro@replica-2.internal/app
              - {name: replica-eu, dsn: "host=${EU_HOST} dbname=app"}
        """
    )
    target = resolve_target(load_config(None), "production", None, {"EU_HOST": "eu.internal"})
    assert target.settings.max_replica_lag_ms == 30_000
    assert target.settings.max_replica_wait_ms == 600_000
    assert target.replicas == (
        Replica("app_replica", "service=app_replica"),
        Replica("replica-2", "postgresql://ro@replica-2.internal/app"),
        Replica("replica-eu", "host=eu.internal dbname=app"),
    )


def test_a_replica_given_as_a_variable_is_expanded_before_it_is_read(
    write_config: WriteConfig,
) -> None:
    """`- ${URL}` is a DSN once expanded, not a service called "${URL}"; its name never
    shows the DSN (which may hold a password)."""
    write_config(
        """\
        environments:
          production:
            replicas: ["${REPLICA_URL}", "${REPLICA_SERVICE}", {name: eu, dsn: eu_service}]
        """
    )
    url = "postgresql://reader:s3cret@replica.internal/app"
    target = resolve_target(
        load_config(None),
        "production",
        None,
        {"REPLICA_URL": url, "REPLICA_SERVICE": "app_ro"},
    )
    assert target.replicas == (
        Replica("replica-1", url),
        Replica("app_ro", "service=app_ro"),
        Replica("eu", "service=eu_service"),
    )


@pytest.mark.parametrize("names", [["a", "a"], ["primary"], ["this standby"]])
def test_replica_names_must_be_their_own(write_config: WriteConfig, names: list[str]) -> None:
    listed = ", ".join(f"{{name: '{n}', dsn: 'host=h{i}'}}" for i, n in enumerate(names))
    write_config(f"environments:\n  production:\n    replicas: [{listed}]\n")
    with pytest.raises(ConfigError, match="replicas need names of their own"):
        resolve_target(load_config(None), "production", None, {})
    assert Settings().max_replica_lag_ms == 0  # no waiting for standbys unless asked
    assert Settings().max_replica_wait_ms == 1_800_000


def test_replicas_are_an_environments_own(write_config: WriteConfig) -> None:
    write_config(
        """\
        defaults:
          replicas: [app_replica]
        environments:
          production:
            replicas: [{name: r1}]
            max_replica_lag: soon
        """
    )
    problems = config_problems()
    assert problems[0].startswith("dbopt.yaml:2:3: defaults: unknown key 'replicas'")
    assert problems[1] == (
        "dbopt.yaml:5:16: environments.production.replicas[0]: missing required key 'dsn'"
    )
    assert problems[2].startswith(
        "dbopt.yaml:6:22: environments.production.max_replica_lag: the string 'soon' is not valid; "
        "expected a PostgreSQL duration"
    )


def test_a_missing_variable_in_a_replica_is_named(write_config: WriteConfig) -> None:
    write_config(
        """\
        environments:
          production:
            replicas: ["host=${REPLICA_HOST}"]
        """
    )
    with pytest.raises(ConfigError, match="REPLICA_HOST"):
        resolve_target(load_config(None), "production", None, {})
