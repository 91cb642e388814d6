"""Redis Cluster and Sentinel setups of the test's own, from the machine's redis-server
and redis-cli, on free loopback ports in a temporary directory; stopped by PID after.

- `cluster()`: three primaries with one replica each (`redis-cli --cluster create
  ... --cluster-replicas 1`); yields a Cluster whose `url` is its redis+cluster:// URL.
- `sentinel()`: one master, one replica and three sentinels watching it as
  `SERVICE`; yields a Sentinels whose `url` is its redis+sentinel:// URL.

Without redis-server the tests that need it are skipped, loudly, unless
REPOGATE_TEST_REQUIRE_REDIS=1 (CI sets it), which makes them fail.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cache_support import REQUIRE_REDIS

START_TIMEOUT = 30.0  # a bound on a hung start, not a measurement
SERVICE = "repogate"


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    config: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return _cli("-p", str(self.port), *args)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as when a machine dies."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=START_TIMEOUT)

    def cut_replication(self) -> None:
        """Its replicas stop receiving its writes: they may no longer PSYNC (an ACL on
        the default user, which clients keep using) and their links are dropped. What
        this node takes from here is lost when it dies, as writes in flight are."""
        self.cli("acl", "setuser", "default", "-psync", "-sync")
        self.cli("client", "kill", "type", "replica")

    def replicating(self) -> bool:
        return "master_link_status:up" in self.cli("info", "replication")

    def restart(self) -> None:
        self.kill()
        self.process = _spawn(self.config)
        _wait_ping(self.port)


@dataclass
class Cluster:
    nodes: list[Node]
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = "redis+cluster://" + ",".join(n.address for n in self.nodes[:3])

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if _role(n) == "master"]

    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if _role(n) == "slave"]

    def primary_of(self, tenant: str) -> Node:
        """The primary holding the slot of `tenant`'s hash tag."""
        slot = self.nodes[0].cli("cluster", "keyslot", f"{{{tenant}}}").strip()
        for node in self.primaries():
            if any(
                line.split()[2].startswith("myself") and _owns(line, int(slot))
                for line in node.cli("cluster", "nodes").splitlines()
            ):
                return node
        raise AssertionError(f"no primary serves slot {slot}")

    def replica_of(self, primary: Node) -> Node:
        for node in self.replicas():
            if f"master_port:{primary.port}" in node.cli("info", "replication"):
                return node
        raise AssertionError(f"no replica of {primary.address}")

    def all_see_primary(self, node: Node) -> bool:
        """Every live node lists `node` as a primary (has taken its promotion in)."""
        live = [n for n in self.nodes if n.process.poll() is None]
        return all(
            any(
                line.split()[1].split("@")[0] == node.address and "master" in line.split()[2]
                for line in each.cli("cluster", "nodes").splitlines()
                if len(line.split()) > 2
            )
            for each in live
        )

    def state_ok(self) -> bool:
        """Every live node says the cluster serves every slot."""
        live = [n for n in self.nodes if n.process.poll() is None]
        return all("cluster_state:ok" in n.cli("cluster", "info") for n in live)


@dataclass
class Sentinels:
    master: Node
    replica: Node
    sentinels: list[Node]
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{SERVICE}"

    def master_port(self) -> int:
        """The master's port as the first live sentinel names it."""
        for each in self.sentinels:
            if each.process.poll() is None:
                answer = each.cli("sentinel", "get-master-addr-by-name", SERVICE).split()
                return int(answer[1])
        raise AssertionError("no sentinel is running")

    def masters_named(self) -> set[int]:
        """The master's port as each live sentinel names it."""
        return {
            int(each.cli("sentinel", "get-master-addr-by-name", SERVICE).split()[1])
            for each in self.sentinels
            if each.process.poll() is None
        }


def _owns(line: str, slot: int) -> bool:
    """Whether a CLUSTER NODES line lists `slot` among its ranges."""
    for part in line.split()[8:]:
        low, _, high = part.partition("-")
        if low.isdigit() and int(low) <= slot <= int(high or low):
            return True
    return False


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed (Debian package redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason} (REPOGATE_TEST_REQUIRE_REDIS=1)", pytrace=False)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    # A cluster node also listens on its port + 10000: both must be free.
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 < 65536 and _is_free(port + 10000):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cli(*args: str) -> str:
    done = subprocess.run(
        [_binary("redis-cli"), "-h", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    return done.stdout + done.stderr


def _role(node: Node) -> str:
    if node.process.poll() is not None:
        return "down"
    for line in node.cli("info", "replication").splitlines():
        if line.startswith("role:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    sentinel = ["--sentinel"] if config.name.startswith("sentinel") else []
    log = (config.parent / f"{config.stem}.log").open("ab")
    return subprocess.Popen(
        [_binary("redis-server"), str(config), *sentinel],
        cwd=config.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ping(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "PONG" not in _cli("-p", str(port), "ping"):
        if time.monotonic() > deadline:
            pytest.fail(f"redis-server did not answer on port {port}", pytrace=False)
        time.sleep(0.05)


def _start(directory: Path, name: str, lines: dict[str, str]) -> Node:
    port = _free_port()
    home = directory / name
    home.mkdir()
    settings = {
        "port": str(port),
        "bind": "127.0.0.1",
        "save": '""',
        "appendonly": "no",
        # A replica's first sync at once (the default waits 5 s for others to join it).
        "repl-diskless-sync-delay": "0",
        "dir": str(home),
        **lines,
    }
    config = home / ("sentinel.conf" if name.startswith("sentinel") else "redis.conf")
    config.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
    node = Node(port, _spawn(config), config)
    _wait_ping(port)
    return node


def wait_until(check: object, what: str, within: float = START_TIMEOUT) -> None:
    """Polls `check()` (synchronous) until it is true; fails the test naming `what`."""
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}", pytrace=False)
        time.sleep(0.1)


@contextlib.contextmanager
def _directory(prefix: str) -> Iterator[tuple[Path, list[Node]]]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    started: list[Node] = []
    try:
        yield directory, started
    finally:
        for node in started:
            node.kill()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def cluster(node_timeout_ms: int = 1000) -> Iterator[Cluster]:
    """Three primaries, one replica each; fails over within about 2 x node timeout."""
    with _directory("repogate-redis-cluster-") as (directory, started):
        for i in range(6):
            started.append(
                _start(
                    directory,
                    f"node{i}",
                    {
                        "cluster-enabled": "yes",
                        "cluster-config-file": "nodes.conf",
                        "cluster-node-timeout": str(node_timeout_ms),
                        # A replica takes over however long its primary was gone.
                        "cluster-replica-validity-factor": "0",
                    },
                )
            )
        made = _cli(
            "--cluster",
            "create",
            *(n.address for n in started),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        if "[OK] All 16384 slots covered" not in made:
            pytest.fail(f"redis-cli --cluster create failed:\n{made}", pytrace=False)
        made_cluster = Cluster(started)
        wait_until(made_cluster.state_ok, "the cluster to serve every slot")
        wait_until(
            lambda: sum(n.replicating() for n in made_cluster.replicas()) == 3,
            "every replica to sync",
        )
        yield made_cluster


@contextlib.contextmanager
def sentinel(sentinels: int = 3) -> Iterator[Sentinels]:
    """A master, its replica, and `sentinels` sentinels (quorum: a majority) that fail
    over within about a second of the master's death."""
    with _directory("repogate-redis-sentinel-") as (directory, started):
        master = _start(directory, "master", {})
        started.append(master)
        replica = _start(directory, "replica", {"replicaof": f"127.0.0.1 {master.port}"})
        started.append(replica)
        quorum = sentinels // 2 + 1
        watchers = []
        for i in range(sentinels):
            watcher = _start(
                directory,
                f"sentinel{i}",
                {
                    "sentinel monitor": f"{SERVICE} 127.0.0.1 {master.port} {quorum}",
                    f"sentinel down-after-milliseconds {SERVICE}": "500",
                    f"sentinel failover-timeout {SERVICE}": "5000",
                },
            )
            started.append(watcher)
            watchers.append(watcher)
        setup = Sentinels(master, replica, watchers)
        wait_until(
            lambda: "master_link_status:up" in replica.cli("info", "replication"),
            "the replica to sync",
        )
        wait_until(
            lambda: all(
                f"num-other-sentinels\n{sentinels - 1}"
                in w.cli("sentinel", "master", SERVICE).replace("\r", "")
                for w in watchers
            ),
            "the sentinels to find each other",
        )
        yield setup
