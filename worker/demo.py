"""``nx-export demo``: the whole flow on one machine with nothing installed but this package.

Starts (or reuses) the private Redis and a worker, exports the bundled sample
records to a local archive, prints the results, and stops what it started. With
``services``, local stand-ins of CDCS, eLabFTW and LabArchives (``worker.sandbox``)
run too and the samples go to all four with the real destination code: no account
needed, and no test of the real services either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from importlib.resources import files
from pathlib import Path

from rich.console import Console

SAMPLES = [
    ("titan-tem-session.xml", "demo-titan-2026-11-02", "FEI-Titan-TEM-635816",
     "2026-11-02T09:00:00-05:00", "2026-11-02T12:30:00-05:00", "demo"),
    ("quanta-sem-session.xml", "demo-quanta-2026-11-03", "FEI-Quanta200-ESEM-633137",
     "2026-11-03T13:00:00+01:00", "2026-11-03T15:00:00+01:00", "zoë"),
    ("minimal-session.xml", "demo-jeol-2026-11-04", "JEOL-JEM3010-TEM-565989",
     "2026-11-04T08:00:00+00:00", "2026-11-04T09:00:00+00:00", None),
]  # fmt: skip


def run_demo(as_json: bool = False, services: bool = False, stay: bool = False) -> int:
    """Export the samples; with ``stay``, serve until Ctrl-C so the printed addresses open."""
    with ExitStack() as stack:
        destinations = ["local"]
        if services:
            from worker.sandbox.settings import running_stand_ins

            # Before the app is imported: the client plans over what its environment enables.
            os.environ.update(stack.enter_context(running_stand_ins()))
            destinations += ["cdcs", "elabftw", "labarchives"]
        return _run(destinations, as_json, stay)


def _run(destinations: list[str], as_json: bool, stay: bool) -> int:
    from worker import embedded_redis
    from worker.settings import load_settings

    settings = load_settings()
    archive = Path(os.environ.get("NX_EXPORT_LOCAL_PATH") or settings.state_dir / "demo-archive")
    # The client plans over the destinations its own environment enables, so
    # the local archive must be enabled here too, before the app is imported.
    os.environ["NX_EXPORT_LOCAL_PATH"] = str(archive)
    # The worker reads records only below NX_RECORDS_PATH: the folder of the samples.
    os.environ["NX_RECORDS_PATH"] = str(_samples_folder())
    console = Console(stderr=True)
    started_redis = False
    if settings.uses_embedded_redis:
        started_redis = embedded_redis.ensure_running(settings.state_dir)
        console.print(f"Redis: private server on {settings.embedded_socket}")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / "demo-worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--pool", "threads", "-c", "4",
             "--loglevel", "WARNING", "--hostname", f"demo-{os.getpid()}@%h"],
            env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    console.print(f"worker: started, log in {log_path}")
    try:
        _wait_for_the_worker(worker, destinations)
        code = _export_samples(archive, destinations, as_json, console)
        _where_to_look(console, stay, stand_ins=len(destinations) > 1)
        if stay:
            _serve_until_interrupted(worker)
        return code
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if started_redis:
            embedded_redis.stop(settings.state_dir)


def _where_to_look(console: Console, stay: bool, stand_ins: bool) -> None:
    console.print(
        "look at the jobs:\n"
        "  nx-export jobs        the jobs in a table\n"
        "  nx-export dashboard   http://127.0.0.1:5556 (NX_EXPORT_DASHBOARD_AUTH=user:password)\n"
        "  nx-export flower      http://127.0.0.1:5555 (FLOWER_BASIC_AUTH=user:password)",
        highlight=False, soft_wrap=True,
    )
    if stand_ins and not stay:
        console.print("the stand-ins stopped with the demo: run it with --stay to open the "
                      "records' addresses in a browser", soft_wrap=True)  # fmt: skip


def _serve_until_interrupted(worker: subprocess.Popen[bytes]) -> None:
    """Keep the stand-ins and the worker up until Ctrl-C (or the worker ends)."""
    Console(stderr=True).print("serving until Ctrl-C…")
    try:
        while worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _samples_folder() -> Path:
    """The folder of the bundled sample records (a real folder: the package is installed)."""
    return Path(str(files("worker") / "samples"))


def _wait_for_the_worker(
    worker: subprocess.Popen[bytes], destinations: list[str], timeout: float = 60
) -> None:
    """Until the worker publishes the destinations, so the jobs do not wait for one."""
    from tasks import catalog
    from worker.app import app

    deadline = time.monotonic() + timeout
    while catalog.unserved(app, destinations) and worker.poll() is None:
        if time.monotonic() > deadline:
            return  # the jobs wait in their queue; the report says how they ended
        time.sleep(0.1)


def _export_samples(
    archive: Path, destinations: list[str], as_json: bool, console: Console
) -> int:
    from worker import enqueue_export
    from worker.display import results_table

    jobs = []
    samples = _samples_folder()
    for file_name, session, instrument, start, end, user in SAMPLES:
        jobs.append(
            enqueue_export(
                {
                    "xml_file_path": str(samples / file_name),
                    "session_identifier": session,
                    "instrument_pid": instrument,
                    "dt_from": start,
                    "dt_to": end,
                    "user": user,
                },
                strategy="all",
                destinations=destinations,
            )
        )
    console.print(f"enqueued {len(jobs)} jobs; waiting for the worker…")
    finished = [job.wait(timeout=120) for job in jobs]
    if as_json:
        print(
            json.dumps(
                {"archive": str(archive), "jobs": [job.to_dict() for job in finished]}, indent=2
            ),
            flush=True,  # before --stay serves: a caller reads it while the demo runs
        )
    else:
        results_table(finished)
        print(f"archive: {archive}")
    return 0 if all(job.satisfied for job in finished) else 1
