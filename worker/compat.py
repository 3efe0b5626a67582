"""NexusLIMS's ``export_records`` and ``was_successfully_exported``, run by the worker.

NexusLIMS's record builder switches by changing one import::

    from worker.compat import export_records, was_successfully_exported

Each record becomes one job (its destinations in parallel, with retries);
``export_records`` waits for all of them and answers as NexusLIMS 2.8 does: one
result per destination that ran, in the order they ran. When NexusLIMS is
installed the results are also written to its ``upload_log`` table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from destinations.contract import Activity, ExportContext, ExportResult, ReservationEvent
from destinations.plan import STRATEGIES

logger = logging.getLogger(__name__)

#: How long ``export_records`` waits for all its jobs, in seconds.
DEFAULT_TIMEOUT = 3600.0


def export_records(
    xml_files: list[Path],
    sessions: list[Any],
    activities_per_session: list[list[Any]] | None = None,
    reservation_events: list[Any | None] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> dict[Path, list[ExportResult]]:
    """Export records to every enabled destination and wait for the outcome.

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
        Seconds to wait for all jobs; a destination still running then is a failure.

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
    from worker import enqueue_export

    activities = activities_per_session or [[] for _ in xml_files]
    events = reservation_events or [None] * len(xml_files)
    jobs: dict[Path, Any] = {}
    results: dict[Path, list[ExportResult]] = {}
    for xml_file, session, acts, event in zip(xml_files, sessions, activities, events, strict=True):
        try:
            jobs[xml_file] = enqueue_export(session_context(xml_file, session, acts, event))
        except ValueError as error:  # refused before anything ran: the record, or no destination
            logger.error("Export of %s refused: %s", Path(xml_file).name, error)
            results[xml_file] = [ExportResult(False, "export-worker", error_message=str(error))]
    deadline = None if timeout is None else time.monotonic() + timeout
    for xml_file, job in jobs.items():
        results[xml_file] = _wait_for_results(job, deadline)
    for xml_file, session in zip(xml_files, sessions, strict=True):
        _log_summary(Path(xml_file), results[xml_file])
        write_upload_log(session.session_identifier, results[xml_file])
    return {xml_file: results[xml_file] for xml_file in xml_files}


def was_successfully_exported(
    xml_file: Path,
    results: dict[Path, list[ExportResult]],
    *,
    strategy: str | None = None,
) -> bool:
    """Whether a file's results satisfy the strategy (default ``NX_EXPORT_STRATEGY``)."""
    file_results = results.get(xml_file)
    if not file_results:
        return False
    if strategy is None:
        from worker.settings import load_settings

        strategy = load_settings().strategy
    if strategy == "all":
        return all(r.success for r in file_results)
    if strategy in STRATEGIES:
        return any(r.success for r in file_results)
    raise ValueError(f"Unknown export strategy: {strategy}")


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
    """The results of the destinations that ran, in plan order; unfinished ones as failures."""
    from tasks.job_model import DestinationState
    from tasks.messages import result_from_json
    from tasks.runtime import job_store

    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        job = job.wait(timeout=remaining)
    except TimeoutError:
        logger.error("Export job %s did not finish in time; reporting it as failed", job.id)
        job = job.refresh()
    record = job_store(job.app).load(job.id)
    entries = record.destinations if record else {}
    results = []
    for name, status in job.destinations.items():
        entry = entries.get(name)
        if entry and entry.result:
            results.append(result_from_json(entry.result))
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
    """One NexusLIMS ``upload_log`` row per result, when NexusLIMS is installed.

    A database problem is logged, not raised: the exports happened, and the
    record builder needs the results to mark its sessions.
    """
    try:
        import json

        from nexusLIMS.db.engine import get_engine
        from nexusLIMS.db.models import UploadLog
        from sqlmodel import Session
    except ImportError:
        return
    try:
        with Session(get_engine()) as db:
            for result in results:
                db.add(
                    UploadLog(
                        session_identifier=session_identifier,
                        destination_name=result.destination_name,
                        success=result.success,
                        record_id=result.record_id,
                        record_url=result.record_url,
                        error_message=result.error_message,
                        timestamp=result.timestamp,
                        metadata_json=json.dumps(result.metadata) if result.metadata else None,
                    )
                )
            db.commit()
    except Exception as error:
        logger.warning(
            "Could not write NexusLIMS's upload_log for %s: %s",
            session_identifier,
            type(error).__name__,
        )
