"""Which Redis REPOGATE_REDIS_URL names, and redis-py's client for it.

- `redis://`, `rediss://`, `unix://`: one server (redis-py's URL, as it parses it).
- `redis+cluster://[user:password@]host:port[,host:port...][?query]`: a Redis
  Cluster, through redis.asyncio.cluster.RedisCluster; the nodes listed are where
  it starts discovering the others.
- `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?query]`:
  the master Sentinel names `service`, through redis.asyncio.sentinel.Sentinel's
  `master_for`, which asks the sentinels again whenever the master is lost.

`rediss+cluster://` and `rediss+sentinel://` use TLS (to the sentinels as well),
and the query takes what redis-py's URL takes (ssl_ca_certs=..., say). The user
and password authenticate to the data nodes; sentinels are asked without them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
SCHEMES = PLAIN_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES
# What a refused URL's message names as the fix.
CLUSTER_FORM = "redis+cluster://host:port[,host:port...]"
SENTINEL_FORM = "redis+sentinel://host:port[,host:port...]/service_name"


class Kind(enum.Enum):
    PLAIN = "plain"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class Topology:
    kind: Kind
    url: str = field(repr=False)  # as given (a plain topology's redis-py URL)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    # redis-py's connection arguments from the URL: username, password, ssl, db, ...
    options: dict[str, Any] = field(default_factory=dict, repr=False)  # a password, say


def parse(url: str) -> Topology:
    """The topology `url` names; ValueError saying what is wrong with it."""
    lowered = url.lower()
    if lowered.startswith(PLAIN_SCHEMES):
        parse_url(url)  # redis-py's own check
        return Topology(Kind.PLAIN, url)
    if not lowered.startswith(CLUSTER_SCHEMES + SENTINEL_SCHEMES):
        raise ValueError(
            "must be a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
        )
    scheme, rest = url.split("://", 1)
    tls = scheme.lower().startswith("rediss")
    kind = Kind.CLUSTER if scheme.lower().endswith("+cluster") else Kind.SENTINEL
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    nodes = tuple(_node(each) for each in hosts.split(","))
    parts = [part for part in path.split("/") if part]
    if kind is Kind.CLUSTER:
        if parts:
            raise ValueError(f"a cluster has one database: no path ({CLUSTER_FORM})")
        db = ""
    else:
        if not parts or len(parts) > 2:
            raise ValueError(f"names the service Sentinel monitors: {SENTINEL_FORM}[/db]")
        db = parts[1] if len(parts) == 2 else ""
    # redis-py parses the rest (credentials, TLS, query) as for one node.
    credentials = f"{userinfo}@" if userinfo else ""
    first_host, first_port = nodes[0]
    host = f"[{first_host}]" if ":" in first_host else first_host
    single = f"{'rediss' if tls else 'redis'}://{credentials}{host}:{first_port}/{db}"
    options = dict(parse_url(f"{single}?{query}" if query else single))
    for key in ("host", "port"):
        options.pop(key, None)
    if options.pop("connection_class", None) is not None:
        options["ssl"] = True
    return Topology(kind, url, nodes, parts[0] if parts else "", options)


def _node(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"each node is host:port, not {text!r}")
    return host.strip("[]"), int(port)


def client(
    topology: Topology, *, timeout: float, max_connections: int
) -> aioredis.Redis | RedisCluster:
    """redis-py's client for `topology`: connections opened lazily, every read and
    connect bounded by `timeout`."""
    bounded: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if topology.kind is Kind.PLAIN:
        pool = aioredis.ConnectionPool.from_url(
            topology.url, max_connections=max_connections, retry=Retry(NoBackoff(), 0), **bounded
        )
        return aioredis.Redis.from_pool(pool)
    if topology.kind is Kind.CLUSTER:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            max_connections=max_connections,
            # One more try after a lost node: redis-py refreshes the slot map in
            # between, so a call landing in a failover finds the promoted replica
            # once there is one. MOVED and ASK are followed apart from this.
            retry=Retry(NoBackoff(), 1),
            **bounded,
            **topology.options,
        )
    sentinels = Sentinel(
        list(topology.nodes),
        sentinel_kwargs={**bounded, "ssl": bool(topology.options.get("ssl"))},
        retry=Retry(NoBackoff(), 0),
        **bounded,
        **topology.options,
    )
    master: aioredis.Redis = sentinels.master_for(topology.service, max_connections=max_connections)
    return master
