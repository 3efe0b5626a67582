"""NexusLIMS on the worker: its destination classes as plugins, its export_records call.

Against the real ``nexuslims==2.8.0`` package where it is installed (those tests
skip otherwise), a worker process of its own, and the fake services.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from destinations.contract import ExportResult
from destinations.registry import Registry
from tests.fakes import FakeCDCS, FakeELabFTW, FakeLabArchives
from tests.fakes.settings import fake_service_settings
from tests.nexuslims_support import (
    PLUGINS,
    UPLOAD_LOG_MODULES,
    nexuslims_settings,
    require_nexuslims,
    run_client,
)
from tests.samples import INSTRUMENT, PNG_BYTES, write_record
from tests.support import StartRedis, StartWorker
from worker.compat import export_records, session_context, was_successfully_exported

Services = tuple[FakeCDCS, FakeELabFTW, FakeLabArchives]


class _NoDependencies:
    """Like NexusLIMS's classes: no ``depends_on`` at all."""

    name = "needs"
    priority = 50
    enabled = True

    def validate_config(self) -> tuple[bool, str | None]:
        return True, None

    def export(self, context: Any) -> ExportResult:
        return ExportResult(True, self.name)


class _Needs(_NoDependencies):
    depends_on = ("first",)


def test_a_replacement_without_depends_on_keeps_the_replaced_ones() -> None:
    registry = Registry()
    registry.add(_Needs(), "built-in")
    registry.add(_NoDependencies(), "NX_EXPORT_PLUGINS")
    assert registry.enabled()["needs"].depends_on == ("first",)
    assert registry.replaced == [("needs", "built-in", "NX_EXPORT_PLUGINS")]


@pytest.fixture
def services() -> Iterator[Services]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab, FakeLabArchives() as la:
        # A slow CDCS: a notebook that did not wait for it would miss its link.
        cdcs.create_latency = 0.5
        yield cdcs, elab, la
    for fake in (cdcs, elab, la):
        assert fake.double_slash_paths == [], "a request path contained '//'"


def record_spec(tmp_path: Path, session: str, **extra: Any) -> dict[str, Any]:
    path = write_record(tmp_path / f"{session}.xml")
    return {
        "file": str(path),
        "session": session,
        "instrument": INSTRUMENT,
        "start": "2026-03-04T09:00:00-05:00",
        "end": "2026-03-04T13:30:00-05:00",
        "user": "ada",
        "activities": [],
        **extra,
    }


def compat_worker(
    start_redis: StartRedis, start_worker: StartWorker, name: str, **settings: str
) -> dict[str, str]:
    """A worker with a Redis of its own; the environment its clients use."""
    return start_worker(name, redis=start_redis(), **settings).env


@pytest.fixture
def nexuslims_worker(
    tmp_path: Path, services: Services, start_redis: StartRedis, start_worker: StartWorker
) -> dict[str, str]:
    require_nexuslims(tmp_path / "probe")
    settings = {
        **fake_service_settings(*services),
        **nexuslims_settings(tmp_path / "nexuslims"),
        "NX_EXPORT_PLUGINS": PLUGINS,
    }
    return compat_worker(start_redis, start_worker, "nexuslims", **settings)


def test_nexuslims_classes_export_through_the_worker(
    nexuslims_worker: dict[str, str], services: Services, tmp_path: Path
) -> None:
    cdcs, elab, la = services
    spec = record_spec(tmp_path, "2026-03-04_titan_0001")
    out = run_client(nexuslims_worker, [spec])[spec["file"]]
    assert out["satisfied"], out
    by_name = {r["destination_name"]: r for r in out["results"]}
    assert set(by_name) == {"cdcs", "elabftw", "labarchives"}
    # NexusLIMS's own classes did the work: they call through requests, with their layout.
    for fake in services:
        assert all(r.headers["User-Agent"].startswith("python-requests") for r in fake.requests)
    (record,) = cdcs.records.values()
    assert by_name["cdcs"]["record_id"] == record["id"]
    (experiment,) = elab.experiments.values()
    assert experiment["title"] == "NexusLIMS Experiment - 2026-03-04_titan_0001"
    (summary,) = [e for e in la.entries if e["part_type"] == "text entry"]
    assert "NexusLIMS Microscopy Session" in summary["entry_data"]
    assert by_name["labarchives"]["record_id"] == summary["eid"]


def test_nexuslims_notebooks_link_the_cdcs_record(
    nexuslims_worker: dict[str, str], services: Services, tmp_path: Path
) -> None:
    _, elab, la = services
    spec = record_spec(tmp_path, "2026-03-04_titan_0002")
    out = run_client(nexuslims_worker, [spec])[spec["file"]]
    cdcs_url = next(r["record_url"] for r in out["results"] if r["destination_name"] == "cdcs")
    (experiment,) = elab.experiments.values()
    assert cdcs_url in experiment["body"]
    (summary,) = [e for e in la.entries if e["part_type"] == "text entry"]
    assert cdcs_url in summary["entry_data"]


def test_export_records_runs_each_record_as_a_job(
    tmp_path: Path, services: Services, start_redis: StartRedis, start_worker: StartWorker
) -> None:
    cdcs, elab, la = services
    preview = tmp_path / "nx" / "data" / "survey.png"  # previews are read from NX_DATA_PATH
    preview.parent.mkdir(parents=True)
    preview.write_bytes(PNG_BYTES)
    first = record_spec(
        tmp_path,
        "2026-03-04_titan_0001",
        user=None,
        activities=[{"files": ["/data/a.dm4", "/data/b.ser"], "previews": [str(preview), None]}],
        event={"username": "ada", "user_email": "ada@example.org"},
    )
    second = record_spec(tmp_path, "2026-03-05_titan_0002")
    settings = {**fake_service_settings(*services), **nexuslims_settings(tmp_path / "nx")}
    env = compat_worker(start_redis, start_worker, "compat", **settings)
    out = run_client(env, [first, second])
    for spec in (first, second):
        assert out[spec["file"]]["satisfied"], out[spec["file"]]
        names = [r["destination_name"] for r in out[spec["file"]]["results"]]
        assert names == ["cdcs", "labarchives", "elabftw"]  # NexusLIMS's order: by priority
    assert len(cdcs.records) == len(elab.experiments) == 2
    summaries = [e["entry_data"] for e in la.entries if e["part_type"] == "text entry"]
    assert all("View in CDCS" in summary for summary in summaries)
    # The first session's activities and reservation event reached the notebook.
    (with_previews,) = [s for s in summaries if first["session"] in s]
    assert "ada" in with_previews and "data:image/png;base64," in with_previews


def test_export_records_writes_a_nexuslims_upload_log_row_per_result(
    tmp_path: Path, services: Services, start_redis: StartRedis, start_worker: StartWorker
) -> None:
    require_nexuslims(tmp_path / "probe", UPLOAD_LOG_MODULES)
    cdcs, _, _ = services
    cdcs.fail_next(400, on="POST /rest/data/")  # one failed result: its row says so
    spec = record_spec(tmp_path, "2026-03-04_titan_0003")
    settings = {**fake_service_settings(*services), **nexuslims_settings(tmp_path / "nx")}
    env = compat_worker(start_redis, start_worker, "upload-log", **settings)
    out = run_client(env, [spec])
    assert not out[spec["file"]]["satisfied"]
    assert sorted(map(tuple, out["upload_log"])) == [
        ("2026-03-04_titan_0003", "cdcs", False),
        ("2026-03-04_titan_0003", "elabftw", True),
        ("2026-03-04_titan_0003", "labarchives", True),
    ]


def test_export_records_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"xml_files \(2\) and sessions \(1\)"):
        export_records([Path("a.xml"), Path("b.xml")], [object()])


def test_was_successfully_exported_follows_the_strategy() -> None:
    path = Path("r.xml")
    mixed = {path: [ExportResult(True, "cdcs"), ExportResult(False, "elabftw")]}
    assert not was_successfully_exported(path, mixed, strategy="all")
    assert was_successfully_exported(path, mixed, strategy="best_effort")
    assert was_successfully_exported(path, mixed, strategy="first_success")
    assert not was_successfully_exported(path, {path: []}, strategy="best_effort")
    assert not was_successfully_exported(Path("other.xml"), mixed, strategy="all")
    with pytest.raises(ValueError, match="Unknown export strategy"):
        was_successfully_exported(path, mixed, strategy="most")


def test_a_session_maps_to_nexuslims_context_fields(tmp_path: Path) -> None:
    session = SimpleNamespace(
        session_identifier="s-1",
        instrument=SimpleNamespace(name=INSTRUMENT),
        dt_from=datetime(2026, 3, 4, 9),
        dt_to=datetime(2026, 3, 4, 13),
        user="ada",
    )
    activity = SimpleNamespace(files=[Path("/d/a.dm4"), "/d/b.ser"], previews=["/p/a.png", None])
    event = SimpleNamespace(username="ada", user_email="ada@example.org", user_first_name="Ada")
    context = session_context(tmp_path / "r.xml", session, [activity], event)
    assert (context.session_identifier, context.instrument_pid) == ("s-1", INSTRUMENT)
    assert context.activities[0].files == ["/d/a.dm4", "/d/b.ser"]
    assert context.activities[0].previews == ["/p/a.png", ""]
    assert context.reservation_event is not None
    assert context.reservation_event.user_first_name == "Ada"
    assert context.reservation_event.user_last_name is None
