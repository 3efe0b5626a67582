"""A caller cannot make a worker read files outside its data or send a credential elsewhere.

One worker, configured like a facility's (``NX_RECORDS_PATH``, ``NX_DATA_PATH``,
the three services at their fakes and a few more secrets in its environment),
is sent hostile contexts by this test process, a client without those settings.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from tests.file_opens import FileOpens
from tests.samples import RECORD, make_context
from tests.support import RedisServer, WorkerProcess, every_redis_value, worker_env
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives
from worker.sandbox.settings import fake_service_settings

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

# A 1x1 PNG.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)

SERVICES = ["cdcs", "elabftw", "labarchives"]
EXTRA_TOKEN = "extra-service-token-9d1e7b"


class GatedCDCS(FakeCDCS):
    """A fake CDCS whose record uploads wait while ``gate`` is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.upload_waiting = threading.Event()

    def route(self, request: Request) -> Response:
        if (request.method, request.path) == ("POST", "/rest/data/") and not self.gate.is_set():
            self.upload_waiting.set()
            self.gate.wait(30)
        return super().route(request)


@dataclass
class Site:
    cdcs: GatedCDCS
    elab: FakeELabFTW
    labarchives: FakeLabArchives
    worker: WorkerProcess
    records: Path
    data: Path
    outside: Path
    secrets: list[str]
    secrets_file: Path


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("facility")
    records, data, outside = base / "records", base / "data", base / "outside"
    for folder in (records, data, outside):
        folder.mkdir()
    with GatedCDCS() as cdcs, FakeELabFTW() as elab, FakeLabArchives() as labarchives:
        settings = fake_service_settings(cdcs, elab, labarchives)
        secrets = [cdcs.token, elab.api_key, labarchives.password, EXTRA_TOKEN]
        # What a worker's .env holds, somewhere it can read but no caller may.
        secrets_file = outside / "worker.env"
        secrets_file.write_text(
            "".join(f"{name}={value}\n" for name, value in settings.items())
            + f"NX_EXTRA_SERVICE_TOKEN={EXTRA_TOKEN}\n"
        )
        env = worker_env(
            redis_server.url, None, **settings,
            NX_RECORDS_PATH=str(records), NX_DATA_PATH=str(data),
            NX_LABARCHIVES_MIN_CALL_INTERVAL="0", NX_EXPORT_BACKOFF_SECONDS="0.1",
            NX_EXPORT_ELABFTW_BACKOFF_MAX_SECONDS="0.5", NX_EXTRA_SERVICE_TOKEN=EXTRA_TOKEN,
        )  # fmt: skip
        worker = WorkerProcess(env, base / "worker.log", name="confined").start()
        try:
            yield Site(cdcs, elab, labarchives, worker, records, data, outside, secrets,
                       secrets_file)  # fmt: skip
        finally:
            cdcs.gate.set()
            worker.stop()


@pytest.fixture
def client(site: Site) -> Any:
    from worker.app import app

    return app


def export(client: Any, record: Path, destinations: list[str], **fields: Any) -> Any:
    from worker import enqueue_export

    context = {**make_context(record), **fields}
    return enqueue_export(context, destinations=destinations, strategy="best_effort", app=client)


def write_record(folder: Path, title: str) -> Path:
    path = folder / f"{title}.xml"
    path.write_text(RECORD.format(title=title), encoding="utf-8")
    return path


def summary_entry(site: Site, session: str) -> str:
    (html,) = [
        entry["entry_data"] for entry in site.labarchives.entries
        if entry["part_type"] == "text entry" and session in entry["entry_data"]
    ]  # fmt: skip
    return str(html)


def embedded_images(html: str) -> list[bytes]:
    return [
        base64.b64decode(data)
        for data in re.findall(r'src="data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def everything_the_services_hold(site: Site) -> bytes:
    """Every record, experiment, upload and notebook entry, embedded images decoded."""
    entries = repr(site.labarchives.entries) + repr(site.labarchives.nodes)
    images = b"".join(
        image for entry in site.labarchives.entries
        for image in embedded_images(str(entry.get("entry_data", "")))
    )  # fmt: skip
    held = [entries, repr(site.cdcs.records), repr(site.elab.experiments), repr(site.elab.uploads)]
    return "\n".join(held).encode() + images


def test_previews_are_read_only_as_images_inside_nx_data_path(client: Any, site: Site) -> None:
    good = site.data / "survey.png"
    good.write_bytes(PNG_BYTES + b"good")
    (site.outside / "outside.png").write_bytes(PNG_BYTES + b"OUTSIDE-IMAGE-MARK")
    link = site.data / "link.png"
    link.symlink_to(site.outside / "outside.png")
    notes = site.data / "notes.png"
    notes.write_bytes(b"NOT-AN-IMAGE-MARK " + site.secrets_file.read_bytes())
    climbing = f"{site.data}/../outside/outside.png"
    previews = [str(good), "/proc/self/environ", str(site.secrets_file), str(link), str(notes),
                climbing, ""]  # fmt: skip
    job = export(client, write_record(site.records, f"previews-{uuid.uuid4().hex[:8]}"),
                 ["labarchives"], activities=[{"files": [], "previews": previews}])  # fmt: skip
    job = job.wait(timeout=60)
    assert job.destinations["labarchives"].state == "SUCCESS", job.destinations
    html = summary_entry(site, job.session_identifier)
    assert embedded_images(html) == [good.read_bytes()]
    for secret in [*site.secrets, "OUTSIDE-IMAGE-MARK", "NOT-AN-IMAGE-MARK", "NX_CDCS_URL"]:
        assert secret not in html
    for reason in (
        f"preview /proc/self/environ is outside NX_DATA_PATH ({site.data})",
        f"preview {site.secrets_file} is outside NX_DATA_PATH",
        f"preview {link} leaves NX_DATA_PATH ({site.data}) through a symlink",
        f"preview {notes} is not a PNG, JPEG, GIF or WebP image",
        f"preview {climbing} is outside NX_DATA_PATH",
    ):
        assert reason in html


def test_only_the_first_twelve_previews_are_read(client: Any, site: Site) -> None:
    many = site.data / "many"
    many.mkdir()
    paths = []
    for index in range(200):
        path = many / f"preview-{index:03}.png"
        path.write_bytes(PNG_BYTES + f"#{index}".encode())
        paths.append(path)
    record = write_record(site.records, f"many-{uuid.uuid4().hex[:8]}")
    with FileOpens(many) as opens:
        job = export(client, record, ["labarchives"],
                     activities=[{"files": [], "previews": [str(p) for p in paths]}])  # fmt: skip
        job = job.wait(timeout=60)
        opened = opens.names()
    assert job.destinations["labarchives"].state == "SUCCESS", job.destinations
    assert opened == {path.name for path in paths[:12]}
    html = summary_entry(site, job.session_identifier)
    assert embedded_images(html) == [path.read_bytes() for path in paths[:12]]
    assert "not included: 188 more previews (at most 12 are shown)" in html


def test_a_record_outside_the_workers_records_path_is_refused_there(
    client: Any, site: Site, tmp_path: Path
) -> None:
    # This client has no NX_RECORDS_PATH: it plans the job; the worker refuses the record.
    title = f"OUTSIDE-RECORD-{uuid.uuid4().hex[:8]}"
    record = write_record(tmp_path, title)
    job = export(client, record, SERVICES).wait(timeout=60)
    for name in SERVICES:
        status = job.destinations[name]
        assert status.state == "FAILURE"
        assert f"record {record} is outside NX_RECORDS_PATH ({site.records})" in str(status.error)
    assert title.encode() not in everything_the_services_hold(site)


def test_a_record_swapped_for_a_symlink_after_enqueue_is_not_followed(
    client: Any, site: Site
) -> None:
    inside = write_record(site.records, f"swapped-{uuid.uuid4().hex[:8]}")
    target = write_record(site.outside, f"SWAPPED-IN-{uuid.uuid4().hex[:8]}")
    site.cdcs.upload_waiting.clear()
    site.cdcs.gate.clear()
    try:
        job = export(client, inside, SERVICES)
        # CDCS read the record and is uploading it; the notebooks wait for CDCS.
        assert site.cdcs.upload_waiting.wait(30)
        inside.unlink()
        inside.symlink_to(target)
    finally:
        site.cdcs.gate.set()
    job = job.wait(timeout=60)
    assert job.destinations["cdcs"].state == "SUCCESS"
    for name in ("elabftw", "labarchives"):
        status = job.destinations[name]
        assert status.state == "FAILURE"
        assert f"record {inside} leaves NX_RECORDS_PATH ({site.records}) through a symlink" in str(
            status.error
        )
    assert target.stem.encode() not in everything_the_services_hold(site)


def test_the_cdcs_token_never_follows_a_next_link_to_another_origin(
    client: Any, site: Site
) -> None:
    with FakeCDCS() as elsewhere:
        site.cdcs.clear_failures()
        # The first upload fails; the retry looks the record up and is sent a foreign next page.
        site.cdcs.fail_next(503, on="POST /rest/data/")
        site.cdcs.fail_next(
            200, on="POST /rest/data/query/", content_type="application/json",
            body=json.dumps({"count": 1, "previous": None, "results": [],
                             "next": f"{elsewhere.url}/rest/data/query/?page=2"}),
        )  # fmt: skip
        record = write_record(site.records, f"paged-{uuid.uuid4().hex[:8]}")
        job = export(client, record, ["cdcs"]).wait(timeout=60)
        received = list(elsewhere.requests)
    status = job.destinations["cdcs"]
    assert status.state == "FAILURE"
    assert "cdcs: find record by title: link to another host (http://127.0.0.1:" in str(
        status.error
    )
    assert received == []


def test_a_retry_after_longer_than_the_backoff_cap_is_honoured(client: Any, site: Site) -> None:
    # This worker caps eLabFTW's backoff at 0.5 s; the service asks for 3 s.
    site.elab.fail_next(429, on="POST /api/v2/experiments", retry_after="3")
    record = write_record(site.records, f"busy-{uuid.uuid4().hex[:8]}")
    job = export(client, record, ["elabftw"]).wait(timeout=60)
    status = job.destinations["elabftw"]
    assert status.state == "SUCCESS"
    first = status.history[0]
    assert (first["outcome"], first["retry_in"]) == ("retry", 3.0)


def test_the_start_up_report_says_where_records_and_previews_are_read(
    site: Site, session_worker: WorkerProcess
) -> None:
    assert f"records: read only below NX_RECORDS_PATH ({site.records})" in site.worker.log()
    assert "NX_RECORDS_PATH is not set" not in site.worker.log()
    assert "NX_DATA_PATH is not set: preview images are not read" in session_worker.log()
    assert "NX_DATA_PATH is not set" not in site.worker.log()


def test_no_configured_secret_leaves_the_worker_after_hostile_contexts(
    client: Any, site: Site, tmp_path: Path
) -> None:
    # A "record" holding the worker's secrets, valid XML so the client accepts it.
    leak = tmp_path / "leak.xml"
    leak.write_text(RECORD.format(title=" ".join(site.secrets)))
    linked = site.records / f"linked-{uuid.uuid4().hex[:8]}.xml"
    linked.symlink_to(leak)
    environ = site.data / f"environ-{uuid.uuid4().hex[:8]}.png"
    environ.symlink_to("/proc/self/environ")
    hostile_previews = ["/proc/self/environ", "/proc/1/environ", str(site.secrets_file),
                        str(environ), f"{site.data}/../outside/worker.env"]  # fmt: skip
    inside = write_record(site.records, f"hostile-{uuid.uuid4().hex[:8]}")
    jobs = [
        export(client, leak, SERVICES),
        export(client, linked, SERVICES),
        export(client, inside, SERVICES,
               activities=[{"files": [], "previews": hostile_previews}]),
        export(client, inside, ["labarchives"],
               activities=[{"files": [], "previews": [str(site.secrets_file)] * 30}]),
    ]  # fmt: skip
    finished = [job.wait(timeout=90) for job in jobs]
    places = {
        "the services": everything_the_services_hold(site),
        "redis": b"\n".join(every_redis_value(client.backend.client)),
        "the worker log": site.worker.log().encode(),
    }
    for place, haystack in places.items():
        for secret in site.secrets:
            assert secret.encode() not in haystack, f"a configured secret is in {place}"
    # The records outside NX_RECORDS_PATH were refused; the previews were left out.
    assert [job.destinations["labarchives"].state for job in finished] == [
        "FAILURE", "FAILURE", "SUCCESS", "SUCCESS",
    ]
