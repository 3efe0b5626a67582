"""The three services end to end: enqueue -> worker process -> HTTP fakes on 127.0.0.1.

The worker is configured only through NexusLIMS's ``NX_*`` variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.samples import make_context
from tests.support import StartWorker, WorkerProcess, nx_export, worker_env
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives
from worker.sandbox.settings import fake_service_settings

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes


@pytest.fixture
def services() -> Iterator[tuple[FakeCDCS, FakeELabFTW, FakeLabArchives]]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab, FakeLabArchives() as labarchives:
        yield cdcs, elab, labarchives
    for fake in (cdcs, elab, labarchives):
        assert fake.double_slash_paths == [], "a request path contained '//'"


@pytest.fixture
def service_worker(
    services: tuple[FakeCDCS, FakeELabFTW, FakeLabArchives], start_worker: StartWorker
) -> WorkerProcess:
    return start_worker("services", **fake_service_settings(*services))


def test_a_record_reaches_all_three_services_with_the_cdcs_link(
    app: Any,
    services: tuple[FakeCDCS, FakeELabFTW, FakeLabArchives],
    service_worker: WorkerProcess,
    record: Path,
) -> None:
    from worker import enqueue_export

    cdcs, elab, labarchives = services
    context = make_context(record)
    job = enqueue_export(
        context, strategy="all", destinations=["cdcs", "elabftw", "labarchives"], app=app
    ).wait(timeout=60)
    assert job.satisfied, {n: s.error for n, s in job.destinations.items()}

    (cdcs_record,) = cdcs.records.values()
    # The record does not name its session (no nx:id): the title does.
    assert cdcs_record["title"] == f"{record.stem} ({context['session_identifier']})"
    assert cdcs_record["workspace"] == "ws-public"
    cdcs_url = job.destinations["cdcs"].record_url
    assert cdcs_url and cdcs_record["id"] in cdcs_url

    (experiment,) = elab.experiments.values()
    assert cdcs_url in experiment["body"]
    assert experiment["metadata"]["extra_fields"]["CDCS Record"]["value"] == cdcs_url
    assert [u["comment"] for u in experiment["uploads"]] == ["NexusLIMS XML record"]

    folders = {n["tree_id"]: n for n in labarchives.nodes.values() if n["is_folder"]}
    (page,) = [n for n in labarchives.nodes.values() if not n["is_folder"]]
    assert page["display_text"] == f"2026-03-04 — {context['session_identifier']}"
    instrument_folder = folders[page["parent"]]
    assert instrument_folder["display_text"] == "FEI-Titan-TEM-635816"
    assert folders[instrument_folder["parent"]]["display_text"] == "NexusLIMS Records"
    kinds = sorted(e["part_type"] for e in labarchives.entries if e["pid"] == page["tree_id"])
    assert kinds == ["Attachment", "text entry"]
    (summary,) = [e for e in labarchives.entries if e["part_type"] == "text entry"]
    assert cdcs_url in summary["entry_data"]
    assert labarchives.signature_failures == []


def test_check_names_the_service_whose_credentials_were_refused(
    services: tuple[FakeCDCS, FakeELabFTW, FakeLabArchives], redis_server: Any
) -> None:
    env = worker_env(redis_server.url, None, **fake_service_settings(*services))
    env["NX_ELABFTW_API_KEY"] = "1-wrong"
    done = nx_export("destinations", "--check", "--json", env=env)
    assert done.returncode == 1, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["destinations"]}
    assert rows["cdcs"]["valid"] is True
    assert rows["labarchives"]["valid"] is True
    assert rows["elabftw"]["valid"] is False
    assert "refused" in rows["elabftw"]["problem"].lower()
    assert "1-wrong" not in done.stdout + done.stderr
    assert os.environ.get("NX_ELABFTW_API_KEY") is None


def test_retry_after_fixing_credentials_creates_only_the_missing_page(
    app: Any,
    services: tuple[FakeCDCS, FakeELabFTW, FakeLabArchives],
    start_worker: StartWorker,
    record: Path,
) -> None:
    from tasks.jobs import retry_failed
    from worker import enqueue_export

    cdcs, elab, labarchives = services
    settings = fake_service_settings(*services)
    broken = {**settings, "NX_LABARCHIVES_ACCESS_PASSWORD": "not-the-password"}
    worker = start_worker("broken-la", **broken)
    first = enqueue_export(
        make_context(record), destinations=["cdcs", "elabftw", "labarchives"], app=app
    ).wait(timeout=60)
    worker.stop()
    assert not first.satisfied
    labarchives_status = first.destinations["labarchives"]
    assert labarchives_status.state == "FAILURE" and labarchives_status.attempts == 1
    assert "not-the-password" not in (labarchives_status.error or "")
    # No page yet: at most the folders were created before the credentials were refused.
    assert [n for n in labarchives.nodes.values() if not n["is_folder"]] == []

    start_worker("fixed-la", **settings)
    again = retry_failed(first.id, app=app).wait(timeout=60)
    assert again.satisfied
    assert len(cdcs.records) == 1 and len(elab.experiments) == 1
    (page,) = [n for n in labarchives.nodes.values() if not n["is_folder"]]
    (summary,) = [e for e in labarchives.entries if e["part_type"] == "text entry"]
    assert summary["pid"] == page["tree_id"]
    assert first.destinations["cdcs"].record_url in summary["entry_data"]


def test_labarchives_prepares_its_page_while_cdcs_uploads(
    app: Any,
    services: tuple[FakeCDCS, FakeELabFTW, FakeLabArchives],
    start_worker: StartWorker,
    record: Path,
) -> None:
    from worker import enqueue_export

    cdcs, _, labarchives = services
    settings = fake_service_settings(*services)
    start_worker("prepare", **settings, NX_LABARCHIVES_MIN_CALL_INTERVAL="0.1")
    # A slow upload: the notebook's folders and page are made meanwhile.
    cdcs.create_latency = 3.0
    context = make_context(record)
    job = enqueue_export(context, destinations=["cdcs", "labarchives"], app=app).wait(timeout=60)
    assert job.satisfied, {n: s.error for n, s in job.destinations.items()}
    (upload,) = cdcs.requests_to("POST /rest/data/")
    pages = labarchives.requests_to("tree_tools/insert_node")
    (entry,) = labarchives.requests_to("entries/add_entry")
    # Folders and page before CDCS answered; only the entry, with its link, after.
    assert pages and all(call.time < upload.time + cdcs.create_latency for call in pages)
    assert entry.time >= upload.time + cdcs.create_latency
    (page,) = [n for n in labarchives.nodes.values() if not n["is_folder"]]
    (summary,) = [e for e in labarchives.entries if e["part_type"] == "text entry"]
    assert summary["pid"] == page["tree_id"]
    assert str(job.destinations["cdcs"].record_url) in summary["entry_data"]
