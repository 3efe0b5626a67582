"""Real services for the tests: Redis servers, worker processes and ``nx-export`` calls.

``running_redis`` and ``running_worker`` stop what they started, whatever the
test did; conftest.py's ``start_redis`` and ``start_worker`` fixtures build on
them for tests that need services of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import psutil
import redis

from tests.samples import make_context
from worker.embedded_redis import redis_server_binary

PLUGIN_DIR = Path(__file__).parent / "plugins"
PROJECT_ROOT = Path(__file__).parent.parent
# The session worker signs its webhooks with this; tests check the signature.
WEBHOOK_SECRET = "webhook-secret-for-tests"
# Where the tests write their records: pytest's temporary folder, set by conftest.py.
# A worker refuses every record without NX_RECORDS_PATH, so each worker started here
# reads below this one unless its settings name a folder or opt out.
RECORDS_ROOT: Path | None = None

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server on 127.0.0.1 with AOF on, in its own directory."""

    def __init__(
        self, directory: Path, port: int | None = None, password: str | None = None,
        fsync: str = "everysec",
    ) -> None:  # fmt: skip
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.fsync = fsync  # "always": a SIGKILL loses no acknowledged write
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", self.fsync,
                   "--maxmemory-policy", "noeviction", "--save", ""]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("test redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class WorkerProcess:
    """``nx-export worker`` in a subprocess, with the test plugins installed by entry point."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str, pool: str = "threads",
                 concurrency: int = 8, extra: list[str] | None = None,
                 cwd: Path = PROJECT_ROOT, records_root: bool = True) -> None:  # fmt: skip
        # records_root False: as the worker is configured, maybe without any root.
        self.env = with_records_root(env) if records_root else env
        self.cwd = cwd
        self.log_path = log_path
        self.name = name
        self.command = [sys.executable, "-m", "worker.cli", "worker", "--pool", pool,
                        "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
                        *(extra or [])]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if "ready." in self.log():
                return self
            time.sleep(0.1)
        # A worker that never got ready must not outlive the test that started it.
        self.stop()
        raise RuntimeError(f"worker not ready within {ready_timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_tree(self, number: int) -> None:
        """Send ``number`` to the worker and its pool processes (SIGSTOP: a VM paused)."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        for process in [*parent.children(recursive=True), parent]:
            process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        self.signal_tree(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def with_records_root(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``NX_RECORDS_PATH`` at ``RECORDS_ROOT`` unless it sets a rule of its own."""
    chosen = {"NX_RECORDS_PATH", "NX_EXPORT_ALLOW_ANY_RECORD_PATH"} & env.keys()
    if RECORDS_ROOT is None or chosen:
        return env
    return {**env, "NX_RECORDS_PATH": str(RECORDS_ROOT)}


def install_test_plugins(target: Path) -> Path:
    """Lay the test plugins out as an installed distribution that entry points find."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN_DIR / "nx_test_destinations.py", target)
    dist_info = target / "nx_test_destinations-1.0.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nx-test-destinations\nVersion: 1.0\n"
    )
    shutil.copy(PLUGIN_DIR / "entry_points.txt", dist_info / "entry_points.txt")
    return target


def worker_env(broker_url: str, plugin_path: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_BROKER_URL"] = broker_url
    paths = [str(PROJECT_ROOT)] + ([str(plugin_path)] if plugin_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


@contextmanager
def running_redis(
    directory: Path, port: int | None = None, password: str | None = None, fsync: str = "everysec"
) -> Iterator[RedisServer]:
    """A Redis server for the ``with`` block, stopped however the block ends."""
    server = RedisServer(directory, port=port, password=password, fsync=fsync)
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def running_worker(
    env: dict[str, str], log_path: Path, name: str, ready_timeout: float = 30, **options: Any
) -> Iterator[WorkerProcess]:
    """A ready worker for the ``with`` block, stopped however the block ends.

    ``options`` go to ``WorkerProcess`` (``pool``, ``concurrency``, ``extra``, ``cwd``,
    ``records_root``).
    """
    worker = WorkerProcess(env, log_path, name, **options)
    try:
        yield worker.start(ready_timeout=ready_timeout)
    finally:
        worker.stop()


class StartRedis(Protocol):
    """conftest.py's ``start_redis`` fixture."""

    def __call__(self, password: str | None = None) -> RedisServer: ...


class StartWorker(Protocol):
    """conftest.py's ``start_worker`` fixture."""

    def __call__(
        self,
        name: str,
        *,
        redis: RedisServer | None = None,
        plugins: bool = False,
        pool: str = "threads",
        concurrency: int = 8,
        ready_timeout: float = 30,
        cwd: Path = PROJECT_ROOT,
        records_root: bool = True,
        **settings: str,
    ) -> WorkerProcess: ...


def nx_export(
    *arguments: str,
    env: dict[str, str] | None = None,
    cwd: Path = PROJECT_ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``nx-export`` as an operator would; by default as a client of the session Redis."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *arguments],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env=env or worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
    )  # fmt: skip


@contextmanager
def nx_export_in_background(
    *arguments: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """``nx-export`` running while the block does something else; killed if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def read_log(log: Path) -> list[dict[str, Any]]:
    """The JSON lines the test destinations append to ``context.metadata["log"]``."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def wait_for(condition: Callable[[], T], timeout: float = 20, interval: float = 0.05) -> T:
    """The first truthy value of ``condition()``; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def every_redis_value(client: Any) -> Iterator[bytes]:
    """Every key and every value in the database, whatever its type."""
    for key in client.scan_iter(count=500):
        yield key
        kind = client.type(key)
        if kind == b"string":
            yield client.get(key) or b""
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                yield field + b"=" + value
        elif kind == b"list":
            yield from client.lrange(key, 0, -1)
        elif kind == b"set":
            yield from client.smembers(key)
        elif kind == b"zset":
            yield from client.zrange(key, 0, -1)


@contextmanager
def serving(
    arguments: list[str], env: dict[str, str], log_path: Path, health_url: str,
    timeout: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``nx-export <arguments>`` serving HTTP for the block: ready once ``health_url`` answers
    200, stopped however the block ends; its output goes to ``log_path``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *arguments],
            env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def healthy() -> bool:
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            command = f"nx-export {arguments[0]}"
            raise AssertionError(f"{command} exited with {process.returncode}:\n{output}")
        try:
            return httpx.get(health_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=timeout, interval=0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def failed_gamma_jobs(app: Any, record: Path, log: Path, flag: Path, count: int = 5) -> list[Any]:
    """``count`` jobs of a fresh instrument: alpha succeeds, gamma fails until ``flag`` exists."""
    from worker import enqueue_export

    instrument = f"TEST-{uuid.uuid4().hex[:8]}"
    jobs = [
        enqueue_export({**make_context(record, log, gamma=f"fail-until:{flag}"),
                        "instrument_pid": instrument}, destinations=["alpha", "gamma"], app=app)
        for _ in range(count)
    ]  # fmt: skip
    jobs = [job.wait(timeout=30) for job in jobs]
    assert all(not job.satisfied and job.destinations["gamma"].state == "FAILURE" for job in jobs)
    assert all(job.destinations["alpha"].succeeded for job in jobs)
    return jobs
