"""NexusLIMS's ``export_records`` and ``was_successfully_exported``, run by the worker.

NexusLIMS's record builder switches by changing one import::

    from worker.compat import export_records, was_successfully_exported

Each record becomes one job (its destinations in parallel, with retries);
``export_records`` waits for all of them and answers as NexusLIMS 2.8 does: one
result per destination that ran, highest priority first, equal priorities in
the order the destinations were found; the same messages on NexusLIMS's logger
``nexusLIMS.exporters``; the results written to NexusLIMS's ``upload_log`` when
NexusLIMS is installed. Kept different on purpose: a record is checked before
it is sent (a bad one gets a failed ``export-worker`` result at once), and a
destination that raises gives a failed result instead of an exception.

With ``wait=False`` it returns at once and the NexusLIMS bridge
(``tasks.nexuslims.bridge``) records each job's outcome when it finishes.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from destinations.contract import Activity, ExportContext, ExportResult, ReservationEvent
from destinations.files.confined import ReadSettings
from destinations.files.record import RecordError, read_record_file
from destinations.plan import STRATEGIES
from destinations.registry import DestinationInfo
from destinations.settings import NxSettings

# NexusLIMS's logger name, so NexusLIMS's logging setup shows these messages as its own.
logger = logging.getLogger("nexusLIMS.exporters")

#: How long ``export_records`` waits for all its jobs, in seconds.
DEFAULT_TIMEOUT = 3600.0
#: The destination named in the result of a record refused before anything ran.
REFUSED = "export-worker"


class _StrategySetting(NxSettings):
    # A plain string, checked below: a bad value gets NexusLIMS's message, not pydantic's.
    strategy: str = Field("all", validation_alias="NX_EXPORT_STRATEGY")


def configured_strategy() -> str:
    """``NX_EXPORT_STRATEGY`` (environment, then ``.env``); ``ValueError`` as NexusLIMS's."""
    strategy = _StrategySetting().strategy or "all"
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown export strategy: {strategy}")
    return strategy


def export_records(
    xml_files: list[Path],
    sessions: list[Any],
    activities_per_session: list[list[Any]] | None = None,
    reservation_events: list[Any | None] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    wait: bool = True,
) -> dict[Path, list[ExportResult]]:
    """Export records to every enabled destination and, by default, wait for the outcome.

    Parameters
    ----------
    xml_files
        The record files; the workers read them where they are.
    sessions
        NexusLIMS sessions, same length and order: ``session_identifier``,
        ``instrument.name``, ``dt_from``, ``dt_to``, ``user``.
    activities_per_session
        Each session's acquisition activities (``files``, ``previews``), or None.
    reservation_events
        Each session's reservation event (``username``, ``user_email``, ...), or None.
    timeout
        Seconds to wait for all jobs; a destination still running then is a
        failure here, and the bridge records its real outcome once it finishes.
    wait
        False: return once the jobs are queued. Each queued record then has an
        empty list (nothing is known yet; ``was_successfully_exported`` says
        False), a refused record its failure; the bridge records the outcomes
        and marks the sessions, so the caller must not mark them itself.

    Returns
    -------
    dict[Path, list[ExportResult]]
        For each file, the result of every destination that ran.
    """
    if len(xml_files) != len(sessions):
        msg = (
            f"xml_files ({len(xml_files)}) and sessions ({len(sessions)}) must have the same length"
        )
        raise ValueError(msg)
    strategy = configured_strategy()  # before the app: a bad setting gets NexusLIMS's message
    from tasks import catalog
    from tasks.runtime import local_registry
    from worker.app import app

    logger.info("Exporting %d record(s) using strategy: %s", len(xml_files), strategy)
    offered = catalog.available(app, local_registry())[0]
    activities = activities_per_session or [[] for _ in xml_files]
    events = reservation_events or [None] * len(xml_files)
    jobs: dict[Path, Any] = {}
    results: dict[Path, list[ExportResult]] = {}
    for xml_file, session, acts, event in zip(xml_files, sessions, activities, events, strict=True):
        results[xml_file] = []
        logger.info("Exporting record: %s", Path(xml_file).name)
        if not offered:
            continue  # as NexusLIMS with no enabled destination: nothing runs, nothing is logged
        try:
            context = session_context(xml_file, session, acts, event)
            jobs[xml_file] = _enqueue(context, strategy)
        except ValueError as error:  # refused before anything ran: the record, or the plan
            logger.error("Export of %s refused: %s", Path(xml_file).name, error)
            results[xml_file] = [ExportResult(False, REFUSED, error_message=str(error))]
    if wait:
        deadline = None if timeout is None else time.monotonic() + timeout
        for xml_file, job in jobs.items():
            results[xml_file] = nexuslims_order(_wait_for_results(job, deadline), offered)
    for xml_file, session in zip(xml_files, sessions, strict=True):
        if xml_file in jobs and not wait:
            logger.info("Queued %s as job %s", Path(xml_file).name, jobs[xml_file].id)
            continue
        _log_summary(Path(xml_file), results[xml_file])
        write_upload_log(session.session_identifier, results[xml_file])
    return {xml_file: results[xml_file] for xml_file in xml_files}


def was_successfully_exported(
    xml_file: Path,
    results: Mapping[Path, list[ExportResult]],
    *,
    strategy: str | None = None,
) -> bool:
    """Whether a file's results satisfy the strategy (unset or empty: ``NX_EXPORT_STRATEGY``)."""
    file_results = results.get(xml_file)
    if not file_results:
        return False
    strategy = strategy or configured_strategy()
    if strategy == "all":
        return all(r.success for r in file_results)
    if strategy in STRATEGIES:
        return any(r.success for r in file_results)
    raise ValueError(f"Unknown export strategy: {strategy}")


def nexuslims_order(
    results: Sequence[ExportResult], offered: Mapping[str, DestinationInfo]
) -> list[ExportResult]:
    """NexusLIMS's order: higher priority first, then the order the destinations were found.

    The job runs dependents after what they depend on; NexusLIMS lists results by
    priority alone.
    """
    found = {name: index for index, name in enumerate(offered)}

    def key(result: ExportResult) -> tuple[int, int]:
        info = offered.get(result.destination_name)
        return (-info.priority if info else 0, found.get(result.destination_name, len(found)))

    return sorted(results, key=key)


def record_job_key(session_identifier: str, xml_file: Path) -> str | None:
    """The job key of a record: its session and the SHA-256 of its bytes.

    Sending the same record of the same session again finds the job it already
    is instead of exporting it twice. None when the file cannot be read: the
    record check then says why.
    """
    try:
        data = read_record_file(Path(xml_file), ReadSettings().max_record_bytes)
    except RecordError:
        return None
    return f"{session_identifier}:{hashlib.sha256(data).hexdigest()}"


def _enqueue(context: ExportContext, strategy: str) -> Any:
    from worker import enqueue_export

    options: dict[str, Any] = {}
    # JOB KEY: ``enqueue_export`` takes ``job_key=`` once job keys are merged; until
    # then the record is sent without one (checked here so both versions work).
    if "job_key" in inspect.signature(enqueue_export).parameters:
        key = record_job_key(context.session_identifier, Path(context.xml_file_path))
        if key is not None:
            options["job_key"] = key
    return enqueue_export(context, strategy=strategy, **options)


def session_context(
    xml_file: Path, session: Any, activities: Sequence[Any], event: Any | None
) -> ExportContext:
    """The export context NexusLIMS builds for a session, from duck-typed objects."""
    return ExportContext(
        xml_file_path=Path(xml_file),
        session_identifier=session.session_identifier,
        instrument_pid=session.instrument.name,
        dt_from=session.dt_from,
        dt_to=session.dt_to,
        user=session.user,
        activities=[
            Activity(
                files=[str(f) for f in activity.files],
                # Kept aligned with files (NexusLIMS pairs them); no preview is "".
                previews=["" if p is None else str(p) for p in activity.previews],
            )
            for activity in activities
        ],
        reservation_event=None
        if event is None
        else ReservationEvent(
            username=getattr(event, "username", None),
            user_email=getattr(event, "user_email", None),
            user_first_name=getattr(event, "user_first_name", None),
            user_last_name=getattr(event, "user_last_name", None),
        ),
    )


def _wait_for_results(job: Any, deadline: float | None) -> list[ExportResult]:
    """The results of the destinations that ran; unfinished ones as failures."""
    from tasks.nexuslims.bridge import job_results
    from tasks.store.model import DestinationState

    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        job = job.wait(timeout=remaining)
    except TimeoutError:
        logger.error(
            "Export job %s did not finish in time; reporting it as failed until the NexusLIMS "
            "bridge records its outcome",
            job.id,
        )
        job = job.refresh()
    stored = job_results(job.app, job.id)[1]
    results = []
    for name, status in job.destinations.items():
        if name in stored:
            results.append(stored[name])
        elif (
            status.state not in (DestinationState.PENDING, DestinationState.SKIPPED)
            or not job.finished
        ):
            results.append(
                ExportResult(
                    False, name, error_message=f"still running in job {job.id} ({status.state})"
                )
            )
    return results


def _log_summary(xml_file: Path, results: list[ExportResult]) -> None:
    succeeded = sum(1 for r in results if r.success)
    if succeeded:
        logger.info(
            "Exported %s: %d/%d destination(s) succeeded", xml_file.name, succeeded, len(results)
        )
    else:
        logger.error(
            "Export failed for %s: all %d destination(s) failed", xml_file.name, len(results)
        )


def write_upload_log(session_identifier: str, results: list[ExportResult]) -> None:
    """NexusLIMS's ``upload_log`` rows for these results, when NexusLIMS is installed.

    Rows the bridge already wrote for the same results are not written again. A
    database problem is logged, not raised: the exports happened, and the record
    builder needs the results to mark its sessions.
    """
    from tasks.nexuslims import database as nexuslims_db

    if not results or not nexuslims_db.importable():
        return
    from worker.app import app

    try:
        with nexuslims_db.session_lock(app.backend.client, session_identifier):
            nexuslims_db.write_results(session_identifier, results)
    except Exception as error:
        logger.warning(
            "Could not write NexusLIMS's upload_log for %s: %s", session_identifier, error
        )
