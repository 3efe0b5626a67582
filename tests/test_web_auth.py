"""``nx-export flower`` and ``nx-export dashboard`` refuse an empty or blank user or password.

Flower compares the decoded ``Authorization`` header with each configured
``user:password``: ``FLOWER_BASIC_AUTH=":"`` would let in a request with an
empty user and password.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support import PROJECT_ROOT, RedisServer, free_port, worker_env

PASSWORD = "s3cret-pw-for-tests"
EMPTY = [":", "ops:", ":pw", " :pw", "ops: ", "ops:\t", f" \t:{PASSWORD}"]
# Flower takes a comma-separated list; any one entry lets a request in.
FLOWER_ONLY = ["ops", f"ops:{PASSWORD},:", f"ops:{PASSWORD},", f"ops:{PASSWORD},admin:"]


def run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command, which must refuse at once; one that serves instead is killed."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *arguments],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def base_env(redis_server: RedisServer) -> dict[str, str]:
    env = worker_env(redis_server.url, None)
    return {k: v for k, v in env.items() if not k.startswith("FLOWER_")}


def refused(done: subprocess.CompletedProcess[str], *names: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert any(name in done.stderr for name in names), done.stderr
    assert "empty" in done.stderr or "user:password" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_flower_refuses_an_empty_user_or_password(redis_server: RedisServer) -> None:
    for value in EMPTY + FLOWER_ONLY:
        env = {**base_env(redis_server), "FLOWER_BASIC_AUTH": value}
        refused(run(["flower", f"--port={free_port()}"], env), "FLOWER_BASIC_AUTH")


def test_flower_refuses_an_empty_basic_auth_option(redis_server: RedisServer) -> None:
    # The option is checked even when the environment's setting is a good one.
    env = {**base_env(redis_server), "FLOWER_BASIC_AUTH": f"ops:{PASSWORD}"}
    for value in [":", "ops:", ":pw", " :pw", f"ops:{PASSWORD},:"]:
        done = run(["flower", f"--port={free_port()}", f"--basic-auth={value}"], env)
        refused(done, "--basic-auth")


def test_the_dashboard_refuses_an_empty_or_blank_user_or_password(
    redis_server: RedisServer,
) -> None:
    for value in EMPTY:
        env = {**base_env(redis_server), "NX_EXPORT_DASHBOARD_AUTH": value}
        refused(run(["dashboard", "--port", str(free_port())], env), "NX_EXPORT_DASHBOARD_AUTH")
