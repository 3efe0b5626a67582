"""A Redis primary, two replicas and three Sentinels on 127.0.0.1, from the bundled redis-server.

For the failover tests and ``bench.failover``: the primary can be killed (SIGKILL) or
paused (SIGSTOP, then SIGCONT) and started again on its port and data, where the
Sentinels make it a replica of the new primary. ``url`` is what ``NX_EXPORT_BROKER_URL``
takes, with ``MASTER_NAME`` as ``NX_EXPORT_REDIS_MASTER_NAME``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import redis

from tests.support import free_port
from worker.embedded_redis import redis_server_binary

MASTER_NAME = "nxprimary"
# The ACL user workers log in as (the default user is off) and the Sentinels' own password.
USER, PASSWORD, SENTINEL_PASSWORD = "nxexport", "primary-secret", "sentinel-secret"
# Sentinel's failure detection: a primary silent this long is down (the Sentinels'
# quorum of 2 then elects one of them to promote the replica). Two seconds, not one:
# a server stalled a second by a loaded machine is not a reason to fail over.
DOWN_AFTER_MS = 2000
# A replica silent this long no longer counts for the primary's min-replicas-to-write.
MIN_REPLICAS_MAX_LAG = 2


class RedisNode:
    """One redis-server (AOF on, ``noeviction``) in ``directory``, on a fixed port."""

    def __init__(self, directory: Path, replica_of: int | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None

    auth: ClassVar[dict[str, str]] = {"username": USER, "password": PASSWORD}

    def client(self, **options: Any) -> redis.Redis:
        arguments: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, **self.auth}
        return redis.Redis(**arguments, **options)

    def start(self) -> RedisNode:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.directory), "--appendonly", "yes",
                   "--maxmemory-policy", "noeviction", "--save", "",
                   "--logfile", str(self.directory / "redis.log"),
                   "--user", "default", "off",
                   "--user", USER, "on", f">{PASSWORD}", "~*", "allchannels", "+@all",
                   "--masteruser", USER, "--masterauth", PASSWORD,
                   # As deploy/ha configures it: a primary that lost its replicas (paused
                   # while one was promoted) refuses writes instead of keeping them.
                   "--min-replicas-to-write", "1",
                   "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG)]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: self.client(socket_timeout=1).ping(), f"redis-server on {self.port}")
        return self

    def signal(self, number: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL, as a crashed host would: nothing flushed, every connection reset."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        self.signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class SentinelNode(RedisNode):
    """``redis-server sentinel.conf --sentinel`` watching the primary as ``MASTER_NAME``."""

    auth: ClassVar[dict[str, str]] = {"password": SENTINEL_PASSWORD}

    def __init__(self, directory: Path, primary_port: int) -> None:
        super().__init__(directory)
        self.primary_port = primary_port

    def start(self) -> SentinelNode:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"  # Sentinel rewrites it: one per Sentinel
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"logfile {self.directory / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            f"sentinel auth-user {MASTER_NAME} {USER}\n"
            f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
            f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
        )
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: self.client(socket_timeout=1).ping(), f"sentinel on {self.port}")
        return self


class SentinelCluster:
    """Primary, two replicas and three Sentinels; ``close`` stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes: list[RedisNode] = []
        self.sentinels: list[SentinelNode] = []
        try:
            primary = RedisNode(directory / "primary").start()
            self.nodes.append(primary)
            for name in ("replica-1", "replica-2"):
                replica = RedisNode(directory / name, replica_of=primary.port).start()
                self.nodes.append(replica)
            _wait(lambda: all(_in_sync(primary, r) for r in self.nodes[1:]),
                  "the replicas' first sync")  # fmt: skip
            for number in range(3):
                sentinel = SentinelNode(directory / f"sentinel-{number}", primary.port)
                self.sentinels.append(sentinel.start())
            _wait(self._sentinels_see_the_replicas, "the Sentinels to find the replicas")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The broker and backend URL: every Sentinel, ``;``-separated, with the ACL user."""
        return ";".join(
            f"sentinel://{USER}:{PASSWORD}@127.0.0.1:{node.port}/0" for node in self.sentinels
        )

    def env(self) -> dict[str, str]:
        """The ``NX_*`` settings of a worker or client of this cluster."""
        return {"NX_EXPORT_REDIS_MASTER_NAME": MASTER_NAME,
                "NX_EXPORT_SENTINEL_PASSWORD": SENTINEL_PASSWORD}  # fmt: skip

    def primary_port(self) -> int:
        """The primary's port as the Sentinels report it now."""
        address = self.sentinels[0].client(socket_timeout=2).execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER_NAME
        )
        return int(address[1])

    def node(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def primary(self) -> RedisNode:
        return self.node(self.primary_port())

    def wait_for_new_primary(self, old_port: int, timeout: float = 30) -> float:
        """Seconds until every Sentinel reports a primary other than ``old_port``."""
        started = time.monotonic()

        def moved() -> bool:
            for sentinel in self.sentinels:
                address = sentinel.client(socket_timeout=1).execute_command(
                    "SENTINEL", "get-master-addr-by-name", MASTER_NAME
                )
                if int(address[1]) == old_port:
                    return False
            return True

        _wait(moved, "the Sentinels to promote the replica", timeout)
        return time.monotonic() - started

    def restart_as_replica(self, node: RedisNode) -> None:
        """Start ``node`` again on its port and data, replicating the primary now.

        As its configuration would after Sentinel rewrote it: started as a primary, its
        stale data would be a candidate for the next promotion until Sentinel turns it
        into a replica (about 10 s later).
        """
        node.replica_of = self.primary_port()
        node.start()

    def wait_for_replica(self, node: RedisNode, timeout: float = 30) -> None:
        """Until ``node`` (the old primary, restarted) is back in the replication.

        The primary is asked for on every look: on a loaded machine the Sentinels may
        fail over once more (even back to ``node``), and either way the pair is whole
        again when one node replicates the primary the Sentinels name, in sync.
        """

        def whole() -> bool:
            primary = self.primary()
            return all(_in_sync(primary, other) for other in self.nodes if other is not primary)

        _wait(whole, "the rejoin", timeout)

    def _sentinels_see_the_replicas(self) -> bool:
        return all(_sentinels_see(sentinel, 2) for sentinel in self.sentinels)

    def close(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()


def _in_sync(primary: RedisNode, replica: RedisNode) -> bool:
    info: Any = replica.client(socket_timeout=1).info("replication")
    return bool(
        info.get("role") == "slave"
        and int(info.get("master_port", 0)) == primary.port
        and info.get("master_link_status") == "up"
    )


def _wait(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError as error:
            last = error
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last!r})")


def _sentinels_see(sentinel: SentinelNode, replicas: int) -> bool:
    found = sentinel.client(socket_timeout=1).execute_command(
        "SENTINEL", "replicas", MASTER_NAME
    )
    others = sentinel.client(socket_timeout=1).execute_command(
        "SENTINEL", "sentinels", MASTER_NAME
    )
    return len(found) >= replicas and len(others) >= 2

