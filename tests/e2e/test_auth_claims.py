"""Credentials through a real server: a JWT's time claims must be NumericDates (RFC 7519),
and `"*"` (every tenant) in a token or an API key is honoured only while
REPOGATE_AUTH_ALLOW_ANY_TENANT is true, its default."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from tests.e2e.support import Dedicated, StartRepogate
from tests.e2e.test_auth import SECRET, list_users, refused, sha256, token
from tests.e2e.test_cli import cli_env, run

pytestmark = pytest.mark.e2e

KEY = "rg_claims_key_for_every_tenant_0123456789"


def later(seconds: int = 86_400) -> int:
    """A time `seconds` from now: a day by default, as `parametrize` takes it when the module
    is collected, up to a whole suite's run before the test."""
    return int(time.time()) + seconds


def every_tenant_keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(f'[keys.every]\nsha256 = "{sha256(KEY)}"\ntenants = "*"\n')
    return path


@pytest.fixture
async def jwt_only(start_repogate: StartRepogate) -> Dedicated:
    return await start_repogate(auth_mode="jwt", jwt_secret=SECRET)


# NumericDate: a JSON number of seconds, never a string or a boolean


@pytest.mark.parametrize(
    ("claims", "claim"),
    [
        ({"exp": str(later())}, "exp"),
        ({"exp": later(), "nbf": str(int(time.time()) - 60)}, "nbf"),
        ({"exp": later(), "iat": str(int(time.time()))}, "iat"),
        ({"exp": later(), "nbf": True}, "nbf"),
        ({"exp": later(), "iat": False}, "iat"),
    ],
    ids=["exp-string", "nbf-string", "iat-string", "nbf-true", "iat-false"],
)
async def test_a_time_claim_that_is_not_a_number_is_refused(
    jwt_only: Dedicated, tenant: str, claims: dict[str, Any], claim: str
) -> None:
    credential = token(tenants=[tenant], **claims)

    error = await refused(jwt_only, tenant, f"Bearer {credential}")

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_INVALID"
    assert f"'{claim}'" in error.message
    assert credential not in error.message


async def test_time_claims_may_be_fractional_numbers(jwt_only: Dedicated, tenant: str) -> None:
    now = time.time()
    credential = token(tenants=[tenant], exp=now + 300.5, nbf=now - 60.25, iat=now - 0.5)

    answer = await list_users(jwt_only, tenant, f"Bearer {credential}")

    assert list(answer.users) == []


# "*": every tenant


async def test_every_tenant_is_honoured_by_default(
    start_repogate: StartRepogate, tmp_path: Path, tenant: str
) -> None:
    app = await start_repogate(
        auth_mode="keys,jwt", api_keys_file=every_tenant_keys(tmp_path), jwt_secret=SECRET
    )

    for credential in (
        f"ApiKey {KEY}",
        f"Bearer {token(tenants='*')}",
        f"Bearer {token(tenants=['*'])}",
    ):
        answer = await list_users(app, tenant, credential)
        assert list(answer.users) == []


@pytest.mark.parametrize("tenants", ["*", ["*"], ["*", "acme"]], ids=["star", "list", "mixed"])
async def test_a_token_for_every_tenant_is_refused_when_turned_off(
    start_repogate: StartRepogate, tenant: str, tenants: Any
) -> None:
    app = await start_repogate(auth_mode="jwt", jwt_secret=SECRET, auth_allow_any_tenant=False)

    error = await refused(app, tenant, f"Bearer {token(tenants=tenants)}")

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_INVALID"
    assert "REPOGATE_AUTH_ALLOW_ANY_TENANT" in error.message


async def test_tokens_naming_their_tenants_still_work_when_turned_off(
    start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(auth_mode="jwt", jwt_secret=SECRET, auth_allow_any_tenant=False)

    answer = await list_users(app, tenant, f"Bearer {token(tenants=[tenant])}")

    assert list(answer.users) == []
    other = await refused(app, tenant + "-other", f"Bearer {token(tenants=[tenant])}")
    assert other.reason == "TENANT_NOT_ALLOWED"


async def test_a_key_for_every_tenant_is_a_settings_error_when_turned_off(
    start_repogate: StartRepogate, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as err:
        await start_repogate(
            auth_mode="keys",
            api_keys_file=every_tenant_keys(tmp_path),
            auth_allow_any_tenant=False,
        )

    assert "keys.every" in str(err.value)
    assert "REPOGATE_AUTH_ALLOW_ANY_TENANT" in str(err.value)


def test_serve_with_a_key_for_every_tenant_exits_2_when_turned_off(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        auth_mode="keys",
        api_keys_file=str(every_tenant_keys(tmp_path)),
        auth_allow_any_tenant="false",
    )

    result = run(["serve"], env, tmp_path)

    assert result.returncode == 2, result.stderr
    assert "REPOGATE_AUTH_ALLOW_ANY_TENANT" in result.stderr
    assert "Traceback" not in result.stderr
    assert KEY not in result.stderr
