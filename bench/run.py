"""Benchmark the export worker against sequential exports and bare Celery, side by side.

Starts its own redis-server, latency server and worker processes on 127.0.0.1,
prints the machine and a markdown table, and stops everything it started::

    .venv/bin/python -m bench.run            # full run
    .venv/bin/python -m bench.run --smoke    # a handful of jobs per row, for CI
    .venv/bin/python -m bench.run --json results.json
    .venv/bin/python -m bench.run --only nexuslims   # one row (see --help for the names)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Harness
from bench.report import Report, Row, as_json, machine, markdown
from bench.rows_bare import overhead, throughput
from bench.rows_nexuslims import nexuslims
from bench.rows_sequential import dependency, fanout, io_concurrency, start_lag
from bench.services import LatencyServer, install_bench_plugins
from bench.sizes import SMOKE, Sizes
from tests.support import RedisServer

# The names --only accepts, in the order a full run takes them.
ROWS: dict[str, Callable[[Harness], list[Row]]] = {
    "fanout": fanout,
    "dependency": dependency,
    "lag": start_lag,
    "overhead": overhead,
    "throughput": throughput,
    "io": io_concurrency,
    "nexuslims": nexuslims,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a handful of jobs per row")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--pool", default="threads", help="worker pool for rows 1-4, 6")
    parser.add_argument("--concurrency", type=int, default=16, help="for rows 1-4, 6")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated rows to run: {','.join(ROWS)} (default: all)",
    )
    return parser.parse_args(argv)


def run_rows(bench: Harness, report: Report, chosen: list[str]) -> bool:
    """Run the chosen rows into the report; True if any of them failed."""
    failed = False
    for name in chosen:
        started = time.monotonic()
        try:
            report.rows += ROWS[name](bench)
        except Exception as error:  # report the row as failed, go on with the others
            failed = True
            report.rows.append(
                Row(f"{name}", "", note=f"ERROR {type(error).__name__}: {str(error)[:200]}")
            )
        print(f"[{name} done in {time.monotonic() - started:.1f} s]", file=sys.stderr)
    return failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(ROWS)
    with tempfile.TemporaryDirectory(prefix="nx-bench-") as temporary:
        root = Path(temporary)
        redis = RedisServer(root / "redis")
        latency = LatencyServer()
        plugins = install_bench_plugins(root / "site")
        try:
            redis.start()
            latency.start()
            for name in [name for name in os.environ if name.startswith("NX_")]:
                del os.environ[name]
            os.environ["NX_EXPORT_BROKER_URL"] = redis.url
            os.environ["NX_BENCH_HTTP_URL"] = latency.url
            sys.path.insert(0, str(plugins))  # the client discovers the same plugins
            from worker.app import app  # reads the NX_* settings just set

            bench = Harness(app, redis, latency, plugins, root, sizes, args.pool, args.concurrency)
            report = Report(machine(redis.client(), args.pool, args.concurrency))
            failed = run_rows(bench, report, chosen)
            print(markdown(report))
            if args.json:
                args.json.write_text(json.dumps(as_json(report), indent=2))
            return 1 if failed else 0
        finally:
            gc.collect()  # results still subscribed unsubscribe while Redis is up
            latency.stop()
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
