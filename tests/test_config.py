"""dbopt.yaml: environments, ${VAR} expansion, durations, and located errors."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dbopt.config import (
    Config,
    Settings,
    Target,
    duration_ms,
    load_config,
    resolve_target,
)
from dbopt.errors import ConfigError

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write ./dbopt.yaml (dedented) in a fresh working directory."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str) -> Path:
        path = Path("dbopt.yaml")
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

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
        "(ms, s, min, h, d), e.g. '5s'; 0 disables the timeout"
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
        "is not valid; expected a PostgreSQL memory size, e.g. '1GB' or '512MB'",
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
        "dbopt.yaml:2:1: invalid YAML: expected the node content, but found '<stream end>'\n"
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
        None, "postgresql://x/y", config.defaults
    )
    # Neither --env nor --dsn: libpq's environment decides (dsn None).
    assert resolve_target(config, None, None, {}) == Target(None, None, config.defaults)
    assert resolve_target(config, None, "", {}).dsn is None


def test_env_expands_variables(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    target = resolve_target(config, "staging", None, {"STAGING_PASSWORD": "s3cret"})
    assert target == Target(
        "staging",
        "postgresql://app:s3cret@staging.internal/app",
        config.environments["staging"].settings,
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


def test_dsn_flag_overrides_the_environment_without_expanding(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    config = load_config(None)
    # PROD_URL is unset: --dsn wins, so the environment's DSN is never expanded.
    target = resolve_target(config, "production", "postgresql://replica/app", {})
    assert target == Target(
        "production", "postgresql://replica/app", config.environments["production"].settings
    )


def test_an_environment_without_dsn_leaves_it_to_libpq(write_config: WriteConfig) -> None:
    write_config(PROJECT)
    assert resolve_target(load_config(None), "local", None, {}).dsn is None


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
