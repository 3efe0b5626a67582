"""Row 7 of ``bench.run``: one record to CDCS, eLabFTW and LabArchives, NexusLIMS 2.8.0 vs ours.

Both sides talk to fresh fake services (``tests.fakes``, every create call
taking ``CREATE_LATENCY`` seconds) and export two records of one instrument: the
first one creates the LabArchives folders, the second finds them.

- NexusLIMS: its three destination classes called one after another in one
  process, in its priority order, results passed on with ``add_result``
  (``bench.nexuslims_baseline``, run in a subprocess with NexusLIMS's settings;
  it times itself).
- Ours: a worker configured through ``NX_*`` like ``tests/test_destinations_worker.py``,
  with its built-in destinations and LabArchives' default 1 call/s limit;
  ``enqueue_export(..., destinations=[...]).wait()`` timed in this process.

Before each record both sides pause ``PAUSE`` seconds (untimed), so a record
does not wait out the previous LabArchives call: the first one's, on our side,
is the worker's start-up check, which finds or creates ``NexusLIMS Records``
(a worker runs for long; NexusLIMS's exporters check nothing beforehand).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import PROJECT_ROOT, RedisServer, WorkerProcess, worker_env
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives

CREATE_LATENCY = 0.3
PAUSE = 1.1
MIN_GAP = 1.0
# Ours / NexusLIMS: first record of an instrument, then a later one.
TARGETS = (0.65, 0.50)
INSTRUMENT = "FEI-Titan-TEM-635816"
DESTINATIONS = ["cdcs", "elabftw", "labarchives"]
MODULES = (
    "nexusLIMS.exporters.destinations.cdcs",
    "nexusLIMS.exporters.destinations.elabftw",
    "nexusLIMS.exporters.destinations.labarchives",
)
Fakes = tuple[FakeCDCS, FakeELabFTW, FakeLabArchives]


class NexusLIMSBenchError(RuntimeError):
    """An export failed, or a side did not leave the fakes as expected."""


@dataclass
class Side:
    """One side's measurements over the repetitions."""

    first: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)
    la_calls: list[tuple[int, int]] = field(default_factory=list)  # per run: first, second
    min_gaps: list[float] = field(default_factory=list)  # per run: over all LabArchives requests


@contextmanager
def fresh_fakes() -> Iterator[Fakes]:
    with ExitStack() as stack:
        cdcs = stack.enter_context(FakeCDCS())
        elab = stack.enter_context(FakeELabFTW())
        la = stack.enter_context(FakeLabArchives())
        for fake in (cdcs, elab, la):
            fake.create_latency = CREATE_LATENCY
        yield cdcs, elab, la


def min_gap(la: FakeLabArchives) -> float:
    times = sorted(r.time for r in la.requests)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else float("inf")


def calls_between(la: FakeLabArchives, start: float, end: float) -> int:
    return sum(1 for r in la.requests if start <= r.time <= end)


def check_fakes(side: str, fakes: Fakes) -> None:
    """Two records in each service; two folders (made once) and two pages in LabArchives."""
    cdcs, elab, la = fakes
    folders = [n for n in la.nodes.values() if n["is_folder"]]
    pages = [n for n in la.nodes.values() if not n["is_folder"]]
    found = (len(cdcs.records), len(elab.experiments), len(folders), len(pages))
    if found != (2, 2, 2, 2):
        raise NexusLIMSBenchError(
            f"{side}: expected 2 CDCS records, 2 experiments, 2 folders, 2 pages; got {found}"
        )
    for fake in fakes:
        if fake.double_slash_paths:
            raise NexusLIMSBenchError(f"{side}: '//' in {fake.double_slash_paths}")


class NexusLIMSRow:
    def __init__(
        self,
        app: Any,
        redis: RedisServer,
        root: Path,
        record_xml: str,
        repeats: int,
        pool: str,
        concurrency: int,
    ) -> None:
        self.app = app
        self.redis = redis
        self.root = root / "nexuslims"
        self.root.mkdir(parents=True, exist_ok=True)
        self.record_xml = record_xml
        self.repeats = repeats
        self.pool = pool
        self.concurrency = concurrency

    # -- shared ----------------------------------------------------------------------------------

    def record(self, number: int) -> dict[str, Any]:
        session = f"2026-03-04_titan_{number}_{uuid.uuid4().hex[:8]}"
        path = self.root / f"{session}.xml"
        path.write_text(self.record_xml, encoding="utf-8")
        return {
            "file": str(path),
            "session": session,
            "instrument": INSTRUMENT,
            "start": "2026-03-04T09:00:00-05:00",
            "end": "2026-03-04T13:30:00-05:00",
            "user": "ada",
        }

    def nexuslims_env(self, fakes: Fakes | None) -> dict[str, str]:
        from tests.nexuslims_support import nexuslims_settings
        from worker.sandbox.settings import fake_service_settings

        settings = nexuslims_settings(self.root / f"nx-{uuid.uuid4().hex[:8]}")
        if fakes is not None:
            settings.update(fake_service_settings(*fakes))
        return worker_env(self.redis.url, None, **settings)

    def import_problem(self) -> str | None:
        """Why NexusLIMS's three destination modules do not import here, or None."""
        done = subprocess.run(
            [sys.executable, "-c", f"import {', '.join(MODULES)}"],
            capture_output=True, text=True, env=self.nexuslims_env(None),
            cwd=PROJECT_ROOT, timeout=120,
        )  # fmt: skip
        if done.returncode == 0:
            return None
        lines = done.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"

    # -- NexusLIMS -------------------------------------------------------------------------------

    def nexuslims_run(self, side: Side) -> None:
        with fresh_fakes() as fakes:
            records = [self.record(1), self.record(2)]
            spec = json.dumps({"records": records, "pause": PAUSE})
            done = subprocess.run(
                [sys.executable, "-m", "bench.nexuslims_baseline", spec],
                capture_output=True, text=True, env=self.nexuslims_env(fakes),
                cwd=PROJECT_ROOT, timeout=180,
            )  # fmt: skip
            if done.returncode != 0:
                raise NexusLIMSBenchError(f"NexusLIMS baseline: {done.stderr.strip()[-400:]}")
            out = json.loads(done.stdout.strip().splitlines()[-1])["records"]
            for record in out:
                failed = [r for r in record["results"] if not r["success"]]
                if failed:
                    raise NexusLIMSBenchError(f"NexusLIMS baseline failed: {failed}"[:400])
                if record["order"] != ["cdcs", "labarchives", "elabftw"]:
                    raise NexusLIMSBenchError(f"NexusLIMS order {record['order']}")
            check_fakes("NexusLIMS", fakes)
            la = fakes[2]
            side.first.append(out[0]["seconds"])
            side.second.append(out[1]["seconds"])
            side.la_calls.append(
                (calls_between(la, *out[0]["window"]), calls_between(la, *out[1]["window"]))
            )
            side.min_gaps.append(min_gap(la))

    # -- ours ------------------------------------------------------------------------------------

    def ours_run(self, side: Side) -> None:
        from tasks.jobs import enqueue_export
        from worker.sandbox.settings import fake_service_settings

        with fresh_fakes() as fakes:
            self.redis.client().flushall()
            archive = self.root / "archive"
            env = worker_env(
                self.redis.url, None, **fake_service_settings(*fakes),
                NX_EXPORT_LOCAL_PATH=str(archive), NX_RECORDS_PATH=str(self.root),
            )  # fmt: skip
            name = f"nexuslims-{time.monotonic_ns()}"
            worker = WorkerProcess(
                env,
                self.root / f"{name}.log",
                name=name,
                pool=self.pool,
                concurrency=self.concurrency,
            )
            try:
                worker.start(ready_timeout=60)
                # Warm the job machinery without touching the services.
                warm = enqueue_export(
                    self.context(self.record(0)), destinations=["local"], app=self.app
                ).wait(timeout=60)
                if not warm.satisfied:
                    raise NexusLIMSBenchError(f"warm-up job not satisfied: {warm.destinations}")
                seconds, windows = [], []
                for number in (1, 2):
                    time.sleep(PAUSE)
                    context = self.context(self.record(number))
                    wall, started = time.time(), time.perf_counter()
                    job = enqueue_export(context, destinations=DESTINATIONS, app=self.app).wait(
                        timeout=120
                    )
                    seconds.append(time.perf_counter() - started)
                    windows.append((wall, time.time()))
                    if not job.satisfied:
                        errors = {
                            n: s.error for n, s in job.destinations.items() if not s.succeeded
                        }
                        raise NexusLIMSBenchError(f"ours: job {job.id} not satisfied: {errors}")
            finally:
                worker.stop(timeout=30)
            check_fakes("ours", fakes)
            la = fakes[2]
            side.first.append(seconds[0])
            side.second.append(seconds[1])
            side.la_calls.append((calls_between(la, *windows[0]), calls_between(la, *windows[1])))
            side.min_gaps.append(min_gap(la))

    @staticmethod
    def context(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "xml_file_path": record["file"],
            "session_identifier": record["session"],
            "instrument_pid": record["instrument"],
            "dt_from": record["start"],
            "dt_to": record["end"],
            "user": record["user"],
        }

    # -- the row ---------------------------------------------------------------------------------

    def measure(self) -> tuple[Side, Side]:
        nexuslims, ours = Side(), Side()
        for _ in range(self.repeats):
            self.nexuslims_run(nexuslims)
            self.ours_run(ours)
        return nexuslims, ours
