"""Request context from gRPC metadata, and the tenant check."""

from __future__ import annotations

import re

import pytest

from repositories.errors import InvalidArgument
from repositories.tables import TENANT_ID_MAX
from server import context
from server.context import (
    ACTOR_KEY,
    REQUEST_ID_KEY,
    TENANT_KEY,
    RequestContext,
    from_metadata,
    validate_tenant,
)
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def test_from_metadata_picks_out_repogate_keys() -> None:
    ctx = from_metadata(
        [
            ("user-agent", "grpc-python"),
            (TENANT_KEY, "acme"),
            (REQUEST_ID_KEY, "req-42"),
            (ACTOR_KEY, "alice"),
            ("x-other", "ignored"),
        ]
    )
    assert ctx == RequestContext(tenant="acme", request_id="req-42", actor="alice")


def test_from_metadata_with_nothing() -> None:
    ctx = from_metadata([])
    assert ctx.tenant is None
    assert ctx.actor is None
    assert GENERATED_ID.fullmatch(ctx.request_id)


def test_from_metadata_first_value_wins_and_binary_values_are_ignored() -> None:
    ctx = from_metadata(
        [
            (TENANT_KEY, b"binary-tenant"),
            (TENANT_KEY, "first"),
            (TENANT_KEY, "second"),
            (ACTOR_KEY, b"bytes"),
        ]
    )
    assert ctx.tenant == "first"
    assert ctx.actor is None


def test_from_metadata_does_not_validate_the_tenant() -> None:
    # Checked on use, so the request id is still there to report the failure with.
    ctx = from_metadata([(TENANT_KEY, "bad tenant!"), (REQUEST_ID_KEY, "r1")])
    assert ctx.tenant == "bad tenant!"
    assert ctx.request_id == "r1"
    with pytest.raises(InvalidArgument) as err:
        ctx.require_tenant()
    assert_invalid(err.value, TENANT_KEY, reason="INVALID_TENANT")


@pytest.mark.parametrize(
    "request_id",
    ["r", "abc-123", "A.b_c:d-e", "0" * 128, "550e8400-e29b-41d4-a716-446655440000"],
)
def test_valid_request_id_is_kept(request_id: str) -> None:
    assert from_metadata([(REQUEST_ID_KEY, request_id)]).request_id == request_id


@pytest.mark.parametrize(
    "request_id",
    ["", "0" * 129, "has space", "semi;colon", "new\nline", "trailing\n", "ünï", "a/b", "<script>"],
)
def test_invalid_request_id_is_replaced(request_id: str) -> None:
    generated = from_metadata([(REQUEST_ID_KEY, request_id)]).request_id
    assert generated != request_id
    assert GENERATED_ID.fullmatch(generated)


def test_generated_request_ids_differ() -> None:
    assert from_metadata([]).request_id != from_metadata([]).request_id


def test_binary_request_id_is_replaced() -> None:
    assert GENERATED_ID.fullmatch(from_metadata([(REQUEST_ID_KEY, b"req-1")]).request_id)


@pytest.mark.parametrize(
    "tenant",
    [
        "a",
        "acme",
        "ACME-corp_2.eu",
        "0",
        "-._",
        "t" * TENANT_ID_MAX,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    ],
)
def test_valid_tenants(tenant: str) -> None:
    assert validate_tenant(tenant) == tenant
    assert RequestContext(tenant=tenant, request_id="r").require_tenant() == tenant


def test_tenant_length_boundary() -> None:
    assert TENANT_ID_MAX == 128
    assert validate_tenant("x" * 128) == "x" * 128
    with pytest.raises(InvalidArgument) as err:
        validate_tenant("x" * 129)
    assert_invalid(err.value, TENANT_KEY, reason="INVALID_TENANT")
    assert "128" in err.value.violations[0].description


@pytest.mark.parametrize("tenant", [None, ""])
def test_missing_tenant(tenant: str | None) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_tenant(tenant)
    assert_invalid(err.value, TENANT_KEY, reason="INVALID_TENANT")
    assert err.value.violations[0].description == "metadata is required"


@pytest.mark.parametrize(
    "tenant",
    [
        " acme",
        "acme ",
        "ac me",
        "acme\n",
        "a/b",
        "a:b",
        "a@b",
        "a%2Fb",
        "ünïcode",
        "٣",  # a digit, but not an ASCII one
        "a\x00b",
        "a*",
    ],
)
def test_tenant_charset(tenant: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_tenant(tenant)
    assert_invalid(err.value, TENANT_KEY, reason="INVALID_TENANT")


def test_bind_and_unbind_the_current_context() -> None:
    outer = RequestContext(tenant="outer", request_id="r-outer")
    inner = RequestContext(tenant="inner", request_id="r-inner")
    outer_token = context.bind(outer)
    try:
        assert context.current() is outer
        assert context.tenant() == "outer"
        inner_token = context.bind(inner)
        assert context.tenant() == "inner"
        context.unbind(inner_token)
        assert context.current() is outer
    finally:
        context.unbind(outer_token)


def test_current_tenant_is_validated() -> None:
    token = context.bind(RequestContext(tenant=None, request_id="r"))
    try:
        with pytest.raises(InvalidArgument) as err:
            context.tenant()
    finally:
        context.unbind(token)
    assert_invalid(err.value, TENANT_KEY, reason="INVALID_TENANT")


@pytest.mark.parametrize("actor", [None, ""])
def test_no_actor_is_none(actor: str | None) -> None:
    assert context.validate_actor(actor) is None


@pytest.mark.parametrize("actor", ["svc-billing", "user:42", "Ann Smith", "é" * 256])
def test_valid_actors_are_kept(actor: str) -> None:
    assert context.validate_actor(actor) == actor


@pytest.mark.parametrize("actor", ["a" * 257, "line\nbreak", "tab\there", "nul\x00"])
def test_invalid_actors_are_refused(actor: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        context.validate_actor(actor)
    assert_invalid(err.value, "x-actor-id", reason="INVALID_ACTOR")
