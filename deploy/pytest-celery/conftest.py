"""pytest-celery against the project's own worker image, run by ``deploy/check.sh``.

Not part of ``python3 dev.py test`` (its test paths are ``tests/`` only): these
tests need a Docker API (Docker, or podman's ``podman system service``) and the
images the deployment check built, named by two variables:

- ``NX_PYTEST_CELERY_WORKER_IMAGE``: the worker image compose built;
- ``NX_PYTEST_CELERY_REDIS_IMAGE``: an image with ``redis-server`` on its PATH.

One Redis and one worker container serve the whole session: the worker
process's app reads its broker from the environment once, at import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from pytest_celery import (
    CeleryBrokerCluster,
    CeleryTestWorker,
    CeleryWorkerCluster,
    CeleryWorkerContainer,
    RedisContainer,
    RedisTestBroker,
)
from pytest_docker_tools import container, fxtr, network

# The record the export test sends, written at start-up to the records path inside
# the worker container (it reaches the container through its environment).
RECORDS_PATH = "/tmp/records"
SAMPLE = "minimal-session.xml"
SAMPLE_RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:summary>
    <nx:instrument pid="JEOL-JEM3010-TEM-565989">JEOL JEM-3010</nx:instrument>
  </nx:summary>
</nx:Experiment>
"""


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (deploy/check.sh --pytest-celery sets it)")
    return value


class NamedRedisContainer(RedisContainer):
    """Reached by its container name from the worker (podman's DNS knows names, not
    hostnames) and by its published port from here: pytest-docker-tools takes a
    machine with /.dockerenv or /run/.containerenv for a container and then reports
    the container's own port, which pytest-celery pairs with "localhost"."""

    @property
    def url(self) -> str:
        return f"{self.prefix()}{self.name}:6379/{self.vhost}"

    @property
    def host_url(self) -> str:
        self.ready()
        published = self.ports["6379/tcp"][0]
        return f"{self.prefix()}127.0.0.1:{published}/{self.vhost}"


class ExportWorkerContainer(CeleryWorkerContainer):
    """The project's image, running ``nx-export worker`` as the Dockerfile does."""

    @property
    def ready_prompt(self) -> str:
        return "ready."

    @classmethod
    def worker_name(cls) -> str:
        return "celery"  # nx-export worker's node name: celery@<container hostname>

    @classmethod
    def command(cls, *args: str, **kwargs: Any) -> list[str]:
        write_sample = (
            f'mkdir -p {RECORDS_PATH} && printf %s "$NX_SAMPLE_RECORD" > {RECORDS_PATH}/{SAMPLE}'
        )
        worker = "exec nx-export worker --pool threads --concurrency 4 --loglevel INFO"
        return ["sh", "-c", f"{write_sample} && {worker}"]


export_network = network(scope="session")


@pytest.fixture(scope="session")
def export_redis_image() -> str:
    return _required("NX_PYTEST_CELERY_REDIS_IMAGE")


@pytest.fixture(scope="session")
def export_worker_image() -> str:
    return _required("NX_PYTEST_CELERY_WORKER_IMAGE")


export_redis = container(
    image="{export_redis_image}",
    scope="session",
    command=NamedRedisContainer.command(),
    ports={"6379/tcp": None},
    network="{export_network.name}",
    wrapper_class=NamedRedisContainer,
    timeout=60,
)


@pytest.fixture(scope="session")
def export_worker_env(export_redis: NamedRedisContainer) -> dict[str, str]:
    return {
        "NX_EXPORT_BROKER_URL": export_redis.url,
        "NX_EXPORT_LOCAL_PATH": "/archive",
        "NX_RECORDS_PATH": RECORDS_PATH,
        "NX_EXPORT_STRATEGY": "all",
        "NX_SAMPLE_RECORD": SAMPLE_RECORD,
        "PYTHONUNBUFFERED": "1",
    }


export_worker = container(
    image="{export_worker_image}",
    scope="session",
    command=ExportWorkerContainer.command(),
    environment=fxtr("export_worker_env"),
    network="{export_network.name}",
    wrapper_class=ExportWorkerContainer,
    timeout=120,
)


@pytest.fixture(scope="session")
def export_app(export_redis: NamedRedisContainer) -> Celery:
    """The project's app in this process, its broker the Redis container's published port."""
    os.environ["NX_EXPORT_BROKER_URL"] = export_redis.host_url
    os.environ["NX_EXPORT_LOCAL_PATH"] = "/archive"  # plans over the local archive too
    os.environ.pop("NX_EXPORT_RESULT_BACKEND", None)
    from worker.app import app

    return app


# pytest-celery's entry point, ``celery_setup``, made of the session's containers:
# one Redis broker (results in the same Redis, as the project configures it) and
# the project's worker; no other broker or backend is parametrized in.
@pytest.fixture
def celery_broker_cluster(export_redis: NamedRedisContainer) -> Iterator[CeleryBrokerCluster]:
    cluster = CeleryBrokerCluster(RedisTestBroker(export_redis))
    yield cluster
    cluster.teardown()


@pytest.fixture
def celery_backend_cluster() -> None:
    return None


@pytest.fixture
def celery_worker_cluster(
    export_worker: ExportWorkerContainer, export_app: Celery
) -> Iterator[CeleryWorkerCluster]:
    cluster = CeleryWorkerCluster(CeleryTestWorker(export_worker, app=export_app))
    yield cluster
    cluster.teardown()


@pytest.fixture
def celery_setup_app(export_app: Celery) -> Celery:
    return export_app
