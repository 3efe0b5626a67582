"""Running NexusLIMS's side: its settings, its plugin classes, and a record builder's client.

Each test starts its own Redis and worker (conftest.py's ``start_redis`` and
``start_worker``), so the plan covers only that worker's destinations (other
workers of the session publish test plugins of their own), and the client runs
in a subprocess as NexusLIMS's record builder would.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.samples import record_text
from tests.support import PROJECT_ROOT, running_redis, running_worker, worker_env

INSTRUMENT = "FEI-Titan-TEM-635816"

PLUGINS = ",".join(
    f"nexusLIMS.exporters.destinations.{module}:{cls}"
    for module, cls in (
        ("cdcs", "CDCSDestination"),
        ("elabftw", "ELabFTWDestination"),
        ("labarchives", "LabArchivesDestination"),
    )
)

# Builds duck-typed sessions like NexusLIMS's from a JSON spec, calls
# export_records, and prints the results and the strategy verdict per file.
CLIENT = """
import json, sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace as NS

spec = json.loads(sys.argv[1])
options = json.loads(sys.argv[2])
try:
    from nexusLIMS.db.engine import get_engine
    from sqlmodel import SQLModel, Session, select
    from nexusLIMS.db.models import UploadLog
    SQLModel.metadata.create_all(get_engine())
except ImportError:
    UploadLog = None
from worker.compat import export_records, was_successfully_exported

files = [Path(r["file"]) for r in spec]
sessions = [
    NS(session_identifier=r["session"], instrument=NS(name=r["instrument"]),
       dt_from=datetime.fromisoformat(r["start"]), dt_to=datetime.fromisoformat(r["end"]),
       user=r.get("user"))
    for r in spec
]
activities = [[NS(files=a["files"], previews=a["previews"]) for a in r["activities"]] for r in spec]
events = [NS(**r["event"]) if r.get("event") else None for r in spec]
results = export_records(files, sessions, activities, events, **options)
out = {
    str(f): {
        "satisfied": was_successfully_exported(f, results),
        "results": [{k: getattr(x, k) for k in ("success", "destination_name", "record_id",
                     "record_url", "error_message")} for x in results[f]],
    }
    for f in files
}
if UploadLog is not None:
    with Session(get_engine()) as db:
        out["upload_log"] = [[row.session_identifier, row.destination_name, row.success]
                             for row in db.exec(select(UploadLog))]
print(json.dumps(out))
"""


def nexuslims_settings(root: Path) -> dict[str, str]:
    """NexusLIMS's own settings, in test mode, with throw-away paths."""
    for name in ("data", "instrument-data"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {
        "NX_TEST_MODE": "true",
        "NX_DATA_PATH": str(root / "data"),
        "NX_INSTRUMENT_DATA_PATH": str(root / "instrument-data"),
        "NX_DB_PATH": str(root / "nexuslims.db"),
    }


# What NexusLIMS's destination classes and its upload_log table need.
EXPORTER_MODULES = tuple(sorted({p.split(":")[0] for p in PLUGINS.split(",")}))
UPLOAD_LOG_MODULES = ("nexusLIMS.db.engine", "nexusLIMS.db.models", "sqlmodel")


@cache
def _import_problem(root: str, modules: tuple[str, ...]) -> str | None:
    # In a subprocess: NexusLIMS reads its settings when imported.
    env = worker_env("redis://127.0.0.1:1/0", None, **nexuslims_settings(Path(root)))
    done = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(modules)}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def require_nexuslims(root: Path, modules: tuple[str, ...] = EXPORTER_MODULES) -> None:
    """Skip unless NexusLIMS's ``modules`` (its exporters by default) import."""
    problem = _import_problem(str(root), modules)
    if problem:
        pytest.skip(
            f"nexuslims's {', '.join(modules)} cannot be imported ({problem}); "
            "install nexuslims==2.8.0 and what it imports"
        )


@contextmanager
def private_worker(root: Path, name: str, **settings: str) -> Iterator[dict[str, str]]:
    """A Redis and a worker of their own; yields the environment a client uses."""
    with running_redis(root / "redis") as redis_server:
        env = worker_env(redis_server.url, None, **settings)
        with running_worker(env, root / f"{name}.log", name=name):
            yield env


def run_client(
    env: dict[str, str], spec: list[dict[str, Any]], timeout: float = 120, wait: bool = True
) -> dict[str, Any]:
    """Run ``export_records`` in a client process like NexusLIMS's record builder."""
    options = {"timeout": timeout, "wait": wait}
    return run_script(CLIENT, env, json.dumps(spec), json.dumps(options))


def run_script(script: str, env: dict[str, str], *arguments: str) -> dict[str, Any]:
    """Run ``script`` in a Python process of its own; the JSON of its last output line."""
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def record_spec(tmp_path: Path, session: str, **extra: Any) -> dict[str, Any]:
    """A record file and the session it belongs to, as ``run_client`` takes them."""
    path = tmp_path / f"{session}.xml"
    path.write_text(record_text(), encoding="utf-8")
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


# NexusLIMS's schema, its instrument and a START and END log per session, TO_BE_BUILT.
PREPARE = """
import sys
from datetime import datetime
from sqlmodel import Session, SQLModel
from nexusLIMS.db.engine import get_engine
from nexusLIMS.db.enums import EventType, RecordStatus
from nexusLIMS.db.models import Instrument, SessionLog

instrument, sessions = sys.argv[1], sys.argv[2:]
SQLModel.metadata.create_all(get_engine())
with Session(get_engine()) as db:
    if db.get(Instrument, instrument) is None:
        db.add(Instrument(instrument_pid=instrument, api_url="http://127.0.0.1:1/api/",
                          calendar_url="http://127.0.0.1:1/calendar/", location="Lab 101",
                          display_name="Titan", property_tag="TITAN", filestore_path="titan",
                          harvester="nemo", timezone_str="America/New_York"))
    for session in sessions:
        for event, hour in ((EventType.START, 9), (EventType.END, 13)):
            db.add(SessionLog(session_identifier=session, instrument=instrument,
                              timestamp=datetime(2026, 3, 4, hour), event_type=event, user="ada",
                              record_status=RecordStatus.TO_BE_BUILT))
    db.commit()
"""


def prepare_database(env: dict[str, str], sessions: list[str]) -> Path:
    """Create NexusLIMS's database at ``NX_DB_PATH`` with these sessions, as NexusLIMS would."""
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, INSTRUMENT, *sessions],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(env["NX_DB_PATH"])


def upload_log(database: Path, session: str) -> list[tuple[str, bool, str | None]]:
    """The session's ``upload_log`` rows, oldest first: destination, success, error."""
    with closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "SELECT destination_name, success, error_message FROM upload_log"
            " WHERE session_identifier = ? ORDER BY id",
            (session,),
        ).fetchall()
    return [(name, bool(success), error) for name, success, error in rows]


def record_status(database: Path, session: str) -> set[str]:
    """The ``record_status`` of the session's logs (one value once a run marked them all)."""
    with closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "SELECT record_status FROM session_log WHERE session_identifier = ?", (session,)
        ).fetchall()
    return {status for (status,) in rows}


def nx_export(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """The ``nx-export`` command line, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
