"""NexusLIMS's own database, written with its own models: ``upload_log`` rows, ``record_status``.

Used by ``worker.compat`` in the record builder's process and by the NexusLIMS
bridge task on the workers. Both may write the same results (a job that
finished while ``export_records`` waited for it), so a row is written only when
no row of the same session, destination and time exists, and writers of one
session take turns through a Redis lock. NexusLIMS and its database libraries
are imported only when used: a worker without NexusLIMS never needs them.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import redis
from pydantic import Field
from redis.exceptions import LockError

from destinations.contract import ExportResult
from destinations.settings import NxSettings
from tasks.store.keys import nexuslims_lock_key

# NexusLIMS's logger: its logging setup shows what is written to its database.
logger = logging.getLogger("nexusLIMS.exporters")

# A session's writer holds its lock this long unless it renews it (it does, while it runs).
LOCK_SECONDS = 10
# How long a writer waits for another writer of the same session before retrying later.
WAIT_SECONDS = 120
NEXUSLIMS_MODULES = ("sqlmodel", "nexusLIMS.db.engine", "nexusLIMS.db.enums", "nexusLIMS.db.models")


class NexusLIMSDatabaseError(Exception):
    """NexusLIMS's database could not be written (locked, missing, no schema); worth a retry."""


class _DatabaseSetting(NxSettings):
    db_path: str | None = Field(None, validation_alias="NX_DB_PATH")


def importable() -> bool:
    """NexusLIMS's database models and their libraries can be imported here."""
    try:
        for module in NEXUSLIMS_MODULES:
            importlib.import_module(module)
    except Exception:  # not installed, or installed without what it needs
        return False
    return True


@lru_cache(maxsize=1)
def bridge_available() -> bool:
    """This process can reach NexusLIMS's database: ``NX_DB_PATH`` set and NexusLIMS importable."""
    return bool(_DatabaseSetting().db_path) and importable()


@contextmanager
def session_lock(client: redis.Redis, session_identifier: str) -> Iterator[None]:
    """One writer of a session's rows at a time, across processes and hosts.

    The lock lives ``LOCK_SECONDS`` and is renewed every third of that while its
    writer runs, so a writer frozen or killed holds up the others only that long.
    """
    lock = client.lock(
        nexuslims_lock_key(session_identifier),
        timeout=LOCK_SECONDS,
        blocking_timeout=WAIT_SECONDS,
    )
    if not lock.acquire():
        raise NexusLIMSDatabaseError(f"session {session_identifier} is being written elsewhere")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LOCK_SECONDS / 3):
            try:
                lock.reacquire()
            except (redis.RedisError, LockError):  # lost: the newest-run rule still holds
                return

    renewing = threading.Thread(target=renew, name="nexuslims session lock", daemon=True)
    renewing.start()
    try:
        yield
    finally:
        stop.set()
        renewing.join()
        try:
            lock.release()
        except LockError:  # it expired under a writer that stalled: nothing left to release
            logger.warning("session %s: its lock expired while it was written", session_identifier)


def write_results(session_identifier: str, results: Sequence[ExportResult]) -> int:
    """Add one ``upload_log`` row per result not logged yet; return how many were added."""
    if not results:
        return 0
    from nexusLIMS.db.engine import get_engine
    from nexusLIMS.db.models import UploadLog
    from sqlmodel import Session, select

    written = 0
    try:
        with Session(get_engine()) as db:
            for result in results:
                logged = db.exec(
                    select(UploadLog.id).where(
                        UploadLog.session_identifier == session_identifier,
                        UploadLog.destination_name == result.destination_name,
                        UploadLog.timestamp == result.timestamp,
                    )
                ).first()
                if logged is not None:
                    continue
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
                written += 1
            db.commit()
    except Exception as error:
        raise _database_error("upload_log", session_identifier, error) from None
    return written


def mark_session(session_identifier: str, exported: bool) -> int:
    """Set the session's ``record_status`` as NexusLIMS's record builder does; return rows set.

    ``COMPLETED`` when the export satisfied the strategy, ``BUILT_NOT_EXPORTED`` otherwise.
    """
    from nexusLIMS.db.engine import get_engine
    from nexusLIMS.db.enums import RecordStatus
    from nexusLIMS.db.models import SessionLog
    from sqlmodel import Session, select

    status = RecordStatus.COMPLETED if exported else RecordStatus.BUILT_NOT_EXPORTED
    try:
        with Session(get_engine()) as db:
            rows = db.exec(
                select(SessionLog).where(SessionLog.session_identifier == session_identifier)
            ).all()
            for row in rows:
                row.record_status = status
            db.commit()
    except Exception as error:
        raise _database_error("session_log", session_identifier, error) from None
    if rows:
        logger.info('Marking %s as "%s"', session_identifier, status.value)
    else:
        logger.warning("Session %s is not in NexusLIMS's session_log", session_identifier)
    return len(rows)


def _database_error(table: str, session_identifier: str, error: Exception) -> Exception:
    # The first line only: SQLAlchemy appends the statement and its parameters.
    first_line = str(error).splitlines()[0] if str(error) else ""
    return NexusLIMSDatabaseError(
        f"could not write NexusLIMS's {table} for {session_identifier}: "
        f"{type(error).__name__}: {first_line}"
    )
