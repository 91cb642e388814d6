"""Synchronous gRPC calls the benchmark makes around its runs: checking that a request
is answered as expected, Repogate's own call counts, and walking pages for a token."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import redis

from repogate.v1 import admin_pb2, user_pb2
from server.cache import keys
from server.read_through import schema_version

USERS = "repogate.v1.UserService/"
GET_STATS = "/repogate.v1.AdminService/GetStats"
# A tombstone no fill can ever replace (read_through._GONE with the tombstone kind):
# the same GetUser then misses the cache on every call.
PINNED_MISS = b"%020d" % (10**20 - 1) + b"T"


def call(address: str, path: str, payload: bytes, tenant: str, timeout: float = 10.0) -> bytes:
    """One unary call with raw bytes; raises grpc.RpcError on a non-OK status."""
    with grpc.insecure_channel(address) as channel:
        reply: bytes = channel.unary_unary(path)(
            payload, metadata=(("x-tenant-id", tenant),), timeout=timeout
        )
    return reply


@dataclass(frozen=True)
class Calls:
    count: int
    server_errors: int
    cache_hits: int
    cache_misses: int


class StatsUnavailable(Exception):
    """AdminService.GetStats did not answer."""


def calls(address: str, method: str) -> Calls:
    """Repogate's own count of calls to `method` so far: a built-in one without its package
    (UserService/GetUser), or any by its full name (benchmark.v1.MemberService/GetMember)."""
    try:
        reply = admin_pb2.ServerStats.FromString(
            call(address, GET_STATS, admin_pb2.GetStatsRequest().SerializeToString(), "")
        )
    except grpc.RpcError as exc:
        raise StatsUnavailable(f"{exc.code().name}: {exc.details()}") from exc
    count = errors = 0
    for stats in reply.methods:
        if stats.method in (method, f"repogate.v1.{method}"):
            count, errors = stats.count, stats.server_errors
    return Calls(count, errors, reply.cache.hits, reply.cache.misses)


def get_user(address: str, tenant: str, id_: str) -> user_pb2.User:
    payload = user_pb2.GetUserRequest(id=id_).SerializeToString()
    return user_pb2.User.FromString(call(address, "/" + USERS + "GetUser", payload, tenant))


def list_users(
    address: str, tenant: str, request: user_pb2.ListUsersRequest
) -> user_pb2.ListUsersResponse:
    reply = call(address, "/" + USERS + "ListUsers", request.SerializeToString(), tenant)
    return user_pb2.ListUsersResponse.FromString(reply)


def page_token(address: str, tenant: str, request: user_pb2.ListUsersRequest, pages: int) -> str:
    """The token of the page after `pages` pages of `request`."""
    walk = user_pb2.ListUsersRequest()
    walk.CopyFrom(request)
    with grpc.insecure_channel(address) as channel:
        list_call = channel.unary_unary("/" + USERS + "ListUsers")
        for page in range(pages):
            reply = user_pb2.ListUsersResponse.FromString(
                list_call(walk.SerializeToString(), metadata=(("x-tenant-id", tenant),), timeout=30)
            )
            if not reply.next_page_token:
                raise RuntimeError(f"the list ended after {page + 1} pages; seed more users")
            walk.page_token = reply.next_page_token
    return walk.page_token


def user_cache_key(tenant: str, id_: str) -> str:
    return keys.entity_key("users", schema_version(user_pb2.User), tenant, id_)


def pin_miss(url: str, tenant: str, id_: str, ttl: int = 3600) -> str:
    """Makes every read-through of this user miss; returns the key."""
    key = user_cache_key(tenant, id_)
    client = redis.Redis.from_url(url)
    try:
        client.set(key, PINNED_MISS, ex=ttl)
    finally:
        client.close()
    return key


def cached(url: str, key: str) -> bytes | None:
    client = redis.Redis.from_url(url)
    try:
        value: bytes | None = client.get(key)
    finally:
        client.close()
    return value
