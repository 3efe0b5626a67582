"""NexusLIMS on the worker: its destination classes as plugins, its export_records call.

Against the real ``nexuslims==2.8.0`` package where it is installed (those tests
skip otherwise), a worker process of its own, and the fake services.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from destinations.contract import ExportResult
from destinations.plan import plan_export
from destinations.registry import Registry
from tests.nexuslims_support import (
    INSTRUMENT,
    PLUGINS,
    UPLOAD_LOG_MODULES,
    nexuslims_settings,
    record_spec,
    require_nexuslims,
    run_client,
)
from tests.samples import PNG_BYTES
from tests.support import StartRedis, StartWorker, worker_env
from worker.compat import (
    export_records,
    nexuslims_order,
    record_job_key,
    session_context,
    was_successfully_exported,
)
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives
from worker.sandbox.settings import fake_service_settings

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


class _Plain(_NoDependencies):
    def __init__(self, name: str, priority: int = 50) -> None:
        self.name = name
        self.priority = priority


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
    settings = {
        **fake_service_settings(*services),
        **nexuslims_settings(tmp_path / "nx"),
        "NX_EXPORT_LOCAL_PATH": str(tmp_path / "archive"),
    }
    env = compat_worker(start_redis, start_worker, "compat", **settings)
    out = run_client(env, [first, second])
    for spec in (first, second):
        assert out[spec["file"]]["satisfied"], out[spec["file"]]
        names = [r["destination_name"] for r in out[spec["file"]]["results"]]
        # NexusLIMS's order, by priority: the notebooks ran after the local archive
        # (they wait for CDCS), yet are listed before it.
        assert names == ["cdcs", "labarchives", "elabftw", "local"]
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
    with pytest.raises(ValueError, match="Unknown export strategy: most"):
        was_successfully_exported(path, mixed, strategy="most")


def test_an_empty_strategy_falls_back_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("r.xml")
    mixed = {path: [ExportResult(True, "cdcs"), ExportResult(False, "elabftw")]}
    monkeypatch.setenv("NX_EXPORT_STRATEGY", "best_effort")
    assert was_successfully_exported(path, mixed, strategy="")
    monkeypatch.setenv("NX_EXPORT_STRATEGY", "all")
    assert not was_successfully_exported(path, mixed, strategy="")


def test_an_unknown_strategy_setting_gets_nexuslims_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NX_EXPORT_STRATEGY", "most")
    session = SimpleNamespace(session_identifier="s-1")
    with pytest.raises(ValueError, match=r"^Unknown export strategy: most$"):
        export_records([tmp_path / "r.xml"], [session])


def test_with_no_destination_enabled_nothing_runs_and_nothing_is_logged(
    tmp_path: Path, start_redis: StartRedis
) -> None:
    spec = record_spec(tmp_path, "2026-03-04_titan_0009")
    # No worker has published a destination, and the client enables none itself.
    env = worker_env(start_redis().url, None, **nexuslims_settings(tmp_path / "nx"))
    out = run_client(env, [spec])
    assert out[spec["file"]] == {"satisfied": False, "results": []}
    assert out.get("upload_log", []) == []


def test_equal_priorities_keep_the_order_destinations_were_found() -> None:
    registry = Registry()
    for name in ("zeta", "alpha"):
        registry.add(_Plain(name), "test")
    registry.add(_Plain("first", priority=90), "test")
    assert [d.name for d in registry] == ["first", "zeta", "alpha"]
    offered = registry.enabled()
    assert plan_export("first_success", offered).destinations == ("first", "zeta", "alpha")
    results = [ExportResult(True, name) for name in ("alpha", "first", "zeta")]
    assert [r.destination_name for r in nexuslims_order(results, offered)] == [
        "first",
        "zeta",
        "alpha",
    ]


def test_a_record_is_keyed_by_its_session_and_bytes(tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    record.write_bytes(b"<record/>")
    digest = hashlib.sha256(b"<record/>").hexdigest()
    assert record_job_key("s-1", record) == f"s-1:{digest}"
    assert record_job_key("s-1", tmp_path / "missing.xml") is None


def test_the_job_key_is_passed_only_where_enqueue_export_takes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tasks.jobs
    from worker import compat

    record = tmp_path / "r.xml"
    record.write_bytes(b"<record/>")
    context = SimpleNamespace(session_identifier="s-1", xml_file_path=str(record))
    calls: list[dict[str, Any]] = []

    def without_key(context: Any, strategy: str | None = None) -> None:
        calls.append({"strategy": strategy})

    def with_key(context: Any, strategy: str | None = None, job_key: str | None = None) -> None:
        calls.append({"strategy": strategy, "job_key": job_key})

    monkeypatch.setattr(tasks.jobs, "enqueue_export", without_key)
    compat._enqueue(context, "all")  # type: ignore[arg-type]
    monkeypatch.setattr(tasks.jobs, "enqueue_export", with_key)
    compat._enqueue(context, "all")  # type: ignore[arg-type]
    assert calls == [
        {"strategy": "all"},
        {"strategy": "all", "job_key": record_job_key("s-1", record)},
    ]


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
