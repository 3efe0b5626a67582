"""``nx-export flower`` never serves without basic auth, and listens on 127.0.0.1 by default.

Flower without auth serves every page but its API (tasks with their arguments
and results, the broker, metrics) to anyone who reaches the port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import PROJECT_ROOT, RedisServer, free_port, serving, worker_env

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

AUTH = ("operator", "flower-auth-test")


def flower_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    # The developer's own FLOWER_* settings must not count.
    env = {
        k: v for k, v in worker_env(redis_server.url, None).items() if not k.startswith("FLOWER_")
    }
    return {**env, **extra}


def nx_export_flower(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", "flower", *arguments]


def listening_addresses(pid: int, port: int) -> set[str]:
    return {
        connection.laddr.ip
        for connection in psutil.Process(pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


@pytest.fixture
def flower_with_auth(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    port = free_port()
    log_path = tmp_path / "flower.log"
    env = flower_env(redis_server, FLOWER_BASIC_AUTH=":".join(AUTH))
    health = f"http://127.0.0.1:{port}/healthcheck"
    with serving(["flower", f"--port={port}"], env, log_path, health) as process:
        yield process.pid, port, log_path


@pytest.mark.parametrize("empty", [None, ""])
def test_flower_refuses_to_start_without_basic_auth(
    redis_server: RedisServer, empty: str | None
) -> None:
    env = flower_env(redis_server)
    if empty is not None:
        env["FLOWER_BASIC_AUTH"] = empty
    done = subprocess.run(
        nx_export_flower(f"--port={free_port()}"),
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "FLOWER_BASIC_AUTH" in done.stderr and "--basic-auth" in done.stderr, done.stderr


def test_flower_with_auth_listens_on_localhost_only(
    flower_with_auth: tuple[int, int, Path],
) -> None:
    pid, port, _ = flower_with_auth
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert listening_addresses(pid, port) == {"127.0.0.1"}


def test_flower_pages_need_credentials(flower_with_auth: tuple[int, int, Path]) -> None:
    _, port, _ = flower_with_auth
    url = f"http://127.0.0.1:{port}"
    for page in ("/", "/tasks", "/broker", "/api/tasks"):
        assert httpx.get(url + page, timeout=10).status_code == 401, page
    assert httpx.get(url + "/", auth=("operator", "wrong"), timeout=10).status_code == 401
    assert httpx.get(url + "/tasks", auth=AUTH, timeout=10).status_code == 200


def test_flower_options_are_read_as_tornado_parses_them() -> None:
    from worker.cli.run import flower_option

    arguments = ["--port=5555", "--basic_auth=a:b", "-address=0.0.0.0", "address=x", "--debug"]
    assert flower_option(arguments, "basic-auth") == "a:b"
    assert flower_option(arguments, "address") == "0.0.0.0"
    assert flower_option(arguments, "debug") is None
    assert flower_option(["--basic-auth="], "basic-auth") == ""
