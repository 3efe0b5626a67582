"""``nx-export``: run workers, enqueue records, follow jobs, try the embedded demo.

Exit status: 0 when a job's strategy is satisfied, 1 when not, 2 for bad input.
One module per group of commands: ``run`` (the long-running processes),
``jobs`` (enqueue, follow, retry, list, backfill, forget), ``retry`` (``retry --failed``),
``operate`` (pause, resume, destinations, redis, resend-lost); ``options`` holds what they
share.
"""

from __future__ import annotations

import click

from worker.cli import jobs, operate, run


@click.group()
@click.version_option(package_name="nexuslims-export-worker")
def main() -> None:
    """Export NexusLIMS records to every configured destination, in parallel."""


for command in (
    run.worker, jobs.enqueue, jobs.status, run.flower, run.dashboard, operate.pause,
    operate.resume, jobs.retry, jobs.jobs, operate.destinations, jobs.backfill, jobs.forget,
    run.demo, operate.redis, operate.resend_lost,
):  # fmt: skip
    main.add_command(command)
