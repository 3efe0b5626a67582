"""Workers pointed at one fake service, for the exactly-once tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from destinations.builtin.labarchives.folders import account_hash
from tests.samples import RECORD
from tests.support import WorkerProcess, worker_env
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives

NEXUS_RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>{title}</nx:title>
  <nx:id>{session}</nx:id>
  <nx:summary><nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument></nx:summary>
</nx:Experiment>
"""


def labarchives_env(redis_url: str, fake: FakeLabArchives, **extra: str) -> dict[str, str]:
    settings = {
        "NX_LABARCHIVES_URL": fake.api_url,
        "NX_LABARCHIVES_ACCESS_KEY_ID": fake.akid,
        "NX_LABARCHIVES_ACCESS_PASSWORD": fake.password,
        "NX_LABARCHIVES_USER_ID": fake.uid,
        "NX_LABARCHIVES_NOTEBOOK_ID": "nb-1",
        "NX_LABARCHIVES_MIN_CALL_INTERVAL": "0",
        "NX_EXPORT_BACKOFF_SECONDS": "0.2",
        "NX_HTTP_READ_TIMEOUT": "5",
    }
    settings.update(extra)
    return worker_env(redis_url, None, **{k: v for k, v in settings.items() if v})


def service_env(
    redis_url: str, cdcs: FakeCDCS | None = None, elab: FakeELabFTW | None = None, **extra: str
) -> dict[str, str]:
    settings = {"NX_EXPORT_BACKOFF_SECONDS": "0.2", "NX_HTTP_READ_TIMEOUT": "5"}
    if cdcs:
        settings.update(NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=cdcs.token)
    if elab:
        settings.update(NX_ELABFTW_URL=elab.url, NX_ELABFTW_API_KEY=elab.api_key)
    settings.update(extra)
    return worker_env(redis_url, None, **settings)


def start_worker(env: dict[str, str], tmp_path: Path, name: str, **options: Any) -> WorkerProcess:
    return WorkerProcess(env, tmp_path / f"{name}.log", name=name, **options).start()


def limiter_key(fake: FakeLabArchives) -> str:
    """The Redis key under which workers space their calls to this fake's account."""
    return f"nxexport:labarchives:calls:{account_hash(fake.api_url, fake.akid)}"


def write_record(path: Path, title: str = "Test record", session: str | None = None) -> Path:
    """A record file; with ``session``, it names its session in ``nx:id`` as NexusLIMS does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = NEXUS_RECORD.format(title=title, session=session) if session else RECORD.format(
        title=title
    )
    path.write_text(text, encoding="utf-8")
    return path


def call_names(fake: FakeLabArchives, start: int = 0) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in fake.requests[start:]]


def export_call_names(fake: FakeLabArchives, start: int = 0) -> list[str]:
    """``call_names`` without a starting worker's check (user info, the notebook's root level)."""
    return [
        r.path.rsplit("/", 1)[-1]
        for r in fake.requests[start:]
        if not r.path.endswith("/user_info_via_id")
        and not (r.path.endswith("/get_tree_level") and r.query.get("parent_tree_id") == "0")
    ]
