"""Running NexusLIMS's side: its settings, its plugin classes, and a record builder's client.

Each test starts its own Redis and worker (conftest.py's ``start_redis`` and
``start_worker``), so the plan covers only that worker's destinations (other
workers of the session publish test plugins of their own), and the client runs
in a subprocess as NexusLIMS's record builder would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support import PROJECT_ROOT, worker_env

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
results = export_records(files, sessions, activities, events, timeout=120)
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


def run_client(env: dict[str, str], spec: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``export_records`` in a client process like NexusLIMS's record builder."""
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
