"""Settings are strict: unknown REPOGATE_* names, secrets from *_FILE, errors naming what
the user typed, and the CLI printing them without a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.cli import main
from server.settings import Settings
from server.settings_sources import SettingsError, describe

pytestmark = pytest.mark.unit

PASSWORD = "pa55-w0rd-in-a-file"
URL = f"postgresql://app:{PASSWORD}@db.internal:5432/app"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REPOGATE_* setting of the caller's; the test suite's own (REPOGATE_TEST_*) stay."""
    for name in list(os.environ):
        if name.upper().startswith("REPOGATE_") and not name.upper().startswith("REPOGATE_TEST_"):
            monkeypatch.delenv(name)


def error_of(**env: str) -> str:
    """The settings error the environment `env` gives, as the CLI prints it."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises((ValidationError, SettingsError)) as err:
            Settings()
        assert isinstance(err.value, ValidationError | SettingsError)
        return describe(err.value, Settings)


# Unknown names


def test_a_misspelt_variable_is_an_error_naming_the_setting_meant() -> None:
    message = error_of(REPOGATE_DATABSE_URL="postgresql://db/app")

    assert message == (
        "REPOGATE_DATABSE_URL is not a Repogate setting; did you mean REPOGATE_DATABASE_URL?"
    )


def test_a_misspelt_file_variable_is_named_too() -> None:
    assert "did you mean REPOGATE_REDIS_URL_FILE?" in error_of(REPOGATE_REDIS_URL_FLIE="/x")


def test_a_name_like_no_setting_is_an_error_without_a_guess() -> None:
    message = error_of(REPOGATE_FROBNICATE="1")

    assert message.startswith("REPOGATE_FROBNICATE is not a Repogate setting")
    assert "did you mean" not in message


def test_lower_case_names_are_settings_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("repogate_db_pool_size", "3")
    assert Settings().db_pool_size == 3
    assert "did you mean REPOGATE_DB_POOL_SIZE?" in error_of(repogate_db_pool_sise="3")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPOGATE_TEST_REQUIRE_POSTGRES", "1"),  # the test suite's
        ("REPOGATE_BENCH_SECONDS", "5"),  # the benchmarks'
        ("REPOGATE_CLIENT_TIMEOUT", "5"),  # clients'
        ("REPOGATE_ADDRESS", "127.0.0.1:50051"),  # the example clients'
        ("REPOGATE_PROTOS", "/protos"),
        # Kubernetes' service links for a Service named repogate (or repogate-peers).
        ("REPOGATE_SERVICE_HOST", "10.96.0.7"),
        ("REPOGATE_SERVICE_PORT", "50051"),
        ("REPOGATE_SERVICE_PORT_GRPC", "50051"),
        ("REPOGATE_PORT", "tcp://10.96.0.7:50051"),
        ("REPOGATE_PORT_50051_TCP", "tcp://10.96.0.7:50051"),
        ("REPOGATE_PORT_50051_TCP_PROTO", "tcp"),
        ("REPOGATE_PORT_50051_TCP_PORT", "50051"),
        ("REPOGATE_PORT_50051_TCP_ADDR", "10.96.0.7"),
        ("REPOGATE_PEERS_SERVICE_HOST", "fd00::7"),
    ],
)
def test_names_reserved_for_others_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    assert Settings().listen == "127.0.0.1:50051"


def test_a_service_link_shaped_name_with_another_value_is_still_an_error() -> None:
    assert "REPOGATE_PORT is not a Repogate setting" in error_of(REPOGATE_PORT="50052x")


# Errors name the variable as it was typed


def test_a_bad_integer_names_the_variable_and_the_form_expected() -> None:
    message = error_of(REPOGATE_DB_POOL_SIZE="ten")

    assert message == "REPOGATE_DB_POOL_SIZE: must be a whole number"
    assert "db_pool_size" not in message
    assert "pydantic" not in message


def test_a_variable_is_named_in_the_case_it_was_typed() -> None:
    message = error_of(repogate_Db_Pool_Size="0")

    assert message == "repogate_Db_Pool_Size: must be greater than or equal to 1"


def test_a_bad_boolean_says_what_is_accepted() -> None:
    message = error_of(REPOGATE_CACHE_ENTITIES="maybe")

    assert message == "REPOGATE_CACHE_ENTITIES: must be true or false (or 1/0, yes/no, on/off)"


def test_every_error_is_listed_one_line_each() -> None:
    message = error_of(REPOGATE_DB_POOL_SIZE="x", REPOGATE_LOG_LEVEL="loud")

    lines = message.splitlines()
    assert lines[0] == "REPOGATE_DB_POOL_SIZE: must be a whole number"
    assert lines[1].startswith("REPOGATE_LOG_LEVEL: must be 'DEBUG', 'INFO'")


def test_an_alias_is_named_as_given() -> None:
    # REPOGATE_SCHEMA sets the field schema_path; its error names REPOGATE_SCHEMA.
    with pytest.raises(ValidationError) as err:
        Settings(REPOGATE_SCHEMA=3)

    assert describe(err.value, Settings) == "REPOGATE_SCHEMA: must be a valid string"


def test_a_setting_from_a_file_is_named_by_its_file_variable(tmp_path: Path) -> None:
    (tmp_path / "redis").write_text("http://cache:6379\n")

    message = error_of(REPOGATE_REDIS_URL_FILE=str(tmp_path / "redis"))

    assert message == (
        "REPOGATE_REDIS_URL_FILE: must be a redis://, rediss://, unix://, redis+cluster:// "
        "or redis+sentinel:// URL"
    )


def test_the_cli_prints_the_error_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPOGATE_DATABSE_URL", "postgresql://db/app")
        assert main(["migrate"]) == 2
        mp.delenv("REPOGATE_DATABSE_URL")
        assert main(["serve", "--workers", "100"]) == 2

    err = capsys.readouterr().err
    assert err.splitlines() == [
        "repogate: invalid settings:",
        "REPOGATE_DATABSE_URL is not a Repogate setting; did you mean REPOGATE_DATABASE_URL?",
        "repogate: invalid settings:",
        "--workers: must be less than or equal to 64",
    ]


# Secrets from files


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text(URL + "\n")
    (tmp_path / "jwt").write_text("j" * 40 + "\r\n")
    monkeypatch.setenv("REPOGATE_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("REPOGATE_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    monkeypatch.setenv("REPOGATE_AUTH_MODE", "jwt")

    settings = Settings()

    assert settings.database_url == URL.replace("postgresql://", "postgresql+asyncpg://")
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "j" * 40
    assert settings.secret_file("jwt_secret") == tmp_path / "jwt"
    assert settings.secret_file("redis_url") is None


@pytest.mark.parametrize(
    "field",
    [
        "database_url",
        "database_session_url",
        "database_replica_urls",
        "redis_url",
        "page_token_secret",
        "jwt_secret",
    ],
)
def test_every_secret_has_a_file_variable(field: str) -> None:
    assert f"did you mean REPOGATE_{field.upper()}_FILE?" in error_of(
        **{f"REPOGATE_{field.upper()}_FILES": "/x"}
    )


def test_a_secret_and_its_file_together_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s" * 32)

    message = error_of(
        REPOGATE_PAGE_TOKEN_SECRET="t" * 32,
        REPOGATE_PAGE_TOKEN_SECRET_FILE=str(tmp_path / "secret"),
    )

    assert message == "set REPOGATE_PAGE_TOKEN_SECRET or REPOGATE_PAGE_TOKEN_SECRET_FILE, not both"


def test_a_missing_secret_file_is_an_error_naming_its_variable(tmp_path: Path) -> None:
    message = error_of(REPOGATE_REDIS_URL_FILE=str(tmp_path / "absent"))

    assert message == (
        f"REPOGATE_REDIS_URL_FILE: cannot read {tmp_path / 'absent'}: No such file or directory"
    )


def test_an_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    # A directory: unreadable as a file even to root, who reads any file whatever its mode.
    message = error_of(REPOGATE_DATABASE_URL_FILE=str(tmp_path))

    assert message.startswith(f"REPOGATE_DATABASE_URL_FILE: cannot read {tmp_path}: ")


def test_a_secret_from_a_file_is_never_quoted_in_an_error(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(URL + "?sslmode=sometimes")

    message = error_of(REPOGATE_DATABASE_URL_FILE=str(tmp_path / "url"))

    assert "REPOGATE_DATABASE_URL" in message
    assert PASSWORD not in message


def test_init_values_win_over_a_file_and_forget_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jwt").write_text("j" * 40)
    monkeypatch.setenv("REPOGATE_JWT_SECRET_FILE", str(tmp_path / "jwt"))

    settings = Settings(auth_mode="jwt", jwt_secret="k" * 40)

    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "k" * 40
    assert settings.secret_file("jwt_secret") is None
