"""The processes a benchmark run starts and stops: Redis, workers, the latency server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tests.support import PROJECT_ROOT, WorkerProcess, free_port, worker_env

BENCH_DIR = Path(__file__).parent
PLUGIN_MODULES = ("nx_bench_destinations.py", "nx_bench_bare.py")
BARE_MODULE = "nx_bench_bare"
ENTRY_POINTS = """[nexuslims_export.destinations]
bench_a = nx_bench_destinations:BenchA
bench_b = nx_bench_destinations:BenchB
bench_c = nx_bench_destinations:BenchC
noop_a = nx_bench_destinations:NoopA
noop_b = nx_bench_destinations:NoopB
noop_c = nx_bench_destinations:NoopC
tier_root = nx_bench_destinations:TierRoot
tier_left = nx_bench_destinations:TierLeft
tier_right = nx_bench_destinations:TierRight
lag_root = nx_bench_destinations:LagRoot
lag_slow = nx_bench_destinations:LagSlow
lag_dependent = nx_bench_destinations:LagDependent
"""


def install_bench_plugins(target: Path) -> Path:
    """Lay the bench plugins out as an installed distribution, like ``install_test_plugins``."""
    target.mkdir(parents=True, exist_ok=True)
    for module in PLUGIN_MODULES:
        shutil.copy(BENCH_DIR / module, target)
    dist_info = target / "nx_bench_destinations-1.0.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nx-bench-destinations\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    return target


class LatencyServer:
    """``bench.latency_server`` in its own process, so it never competes for our GIL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> LatencyServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_server", str(self.port)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(
            target=lambda: ready.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not ready or "ready" not in ready[0]:
            self.stop()
            raise RuntimeError("latency server did not start")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_workers(
    broker_url: str,
    plugin_path: Path,
    log_dir: Path,
    http_url: str,
    pool: str,
    concurrency: int,
    count: int = 1,
) -> list[WorkerProcess]:
    env = worker_env(broker_url, plugin_path, NX_BENCH_HTTP_URL=http_url)
    workers: list[WorkerProcess] = []
    try:
        for index in range(count):
            name = f"bench{index}-{pool}{concurrency}-{time.monotonic_ns()}"
            worker = WorkerProcess(
                env,
                log_dir / f"{name}.log",
                name=name,
                pool=pool,
                concurrency=concurrency,
                extra=["--include", BARE_MODULE],
            )
            workers.append(worker)
            worker.start(ready_timeout=60)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.stop(timeout=30)


def tree_rss(pids: list[int]) -> int:
    """Resident memory of these processes and all their children, in bytes."""
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakRss:
    """Samples the RSS of process trees in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, tree_rss(self.pids))
