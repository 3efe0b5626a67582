"""The private Redis: one server per state directory, however many commands start at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import PROJECT_ROOT
from worker import embedded_redis

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes


def servers_for(state_dir: Path) -> list[psutil.Process]:
    # redis-server rewrites its command line; it runs in its --dir, though.
    found = []
    for process in psutil.process_iter(["name", "cwd"]):
        if "redis" in (process.info["name"] or "") and process.info["cwd"] == str(state_dir):
            found.append(process)
    return found


def test_commands_started_together_share_one_redis(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_STATE_DIR"] = str(state_dir)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    command = [sys.executable, "-m", "worker.cli", "jobs", "--json"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    commands = [subprocess.Popen(command, env=env, cwd=tmp_path, **pipes) for _ in range(4)]
    try:
        outputs = [command.communicate(timeout=120) for command in commands]
        assert [command.returncode for command in commands] == [0, 0, 0, 0], outputs
        servers = servers_for(state_dir)
        assert len(servers) == 1, [s.cmdline() for s in servers]
        assert embedded_redis.is_running(state_dir / "redis.sock")
    finally:
        embedded_redis.stop(state_dir)
        for leftover in servers_for(state_dir):
            leftover.kill()
    assert servers_for(state_dir) == []


HOLD_THE_LOCK = """
import fcntl, sys, time
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_a_command_killed_holding_the_start_lock_stops_nobody(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(state_dir / "redis.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Alive, the holder makes a starting command give up with a message, not hang.
        with pytest.raises(embedded_redis.EmbeddedRedisError, match="another command holds"):
            embedded_redis.ensure_running(state_dir, timeout=0.5)
        holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock
        holder.wait(timeout=10)
        assert embedded_redis.ensure_running(state_dir) is True
        assert embedded_redis.is_running(state_dir / "redis.sock")
    finally:
        holder.kill()
        embedded_redis.stop(state_dir)
        for leftover in servers_for(state_dir):
            leftover.kill()
    assert servers_for(state_dir) == []


def test_redis_stop_stops_the_private_redis_and_keeps_its_data(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_STATE_DIR"] = str(state_dir)
    env["PYTHONPATH"] = str(PROJECT_ROOT)

    def nx(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker.cli", *arguments]
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    try:
        assert nx("jobs", "--json").returncode == 0  # starts it
        assert len(servers_for(state_dir)) == 1
        assert nx("redis", "status").returncode == 0
        stopped = nx("redis", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stdout
        assert servers_for(state_dir) == []
        assert nx("redis", "status").returncode == 1
        assert (state_dir / "appendonly.aof").exists() or any(state_dir.rglob("*.aof*"))
        assert "already stopped" in nx("redis", "stop").stdout
    finally:
        embedded_redis.stop(state_dir)
        for leftover in servers_for(state_dir):
            leftover.kill()
    # With a broker of its own there is no private Redis to stop: said, not guessed.
    env["NX_EXPORT_BROKER_URL"] = "redis://127.0.0.1:1/0"
    refused = nx("redis", "stop")
    assert refused.returncode == 2 and "no private Redis" in refused.stderr
