"""Names of the worker's Celery tasks and queues, spelled in one place.

A destination ``<name>`` runs as task ``export.<name>`` on queue ``export.<name>``;
the job's own tasks run on the job queue. The job's task names are reserved, so
no destination can take them. Plain strings: destinations know nothing of Celery.
"""

from __future__ import annotations

TASK_PREFIX = "export."

JOB_QUEUE = "nx-export"
# Where a plain Celery client's ``send_task`` goes when it names no queue; every
# worker consumes it too, so ``send_task("export.record", kwargs=...)`` just works.
CELERY_DEFAULT_QUEUE = "celery"

RECORD_TASK = f"{TASK_PREFIX}record"
FINISH_TASK = f"{TASK_PREFIX}finish"
WEBHOOK_TASK = f"{TASK_PREFIX}webhook"
NEXUSLIMS_TASK = f"{TASK_PREFIX}nexuslims"  # the outcome, written to NexusLIMS's database
JOB_TASKS = frozenset({RECORD_TASK, FINISH_TASK, WEBHOOK_TASK, NEXUSLIMS_TASK})

# Destination names that would collide with the job's own tasks.
RESERVED_NAMES = frozenset(task.removeprefix(TASK_PREFIX) for task in JOB_TASKS)


def task_name(destination: str) -> str:
    return f"{TASK_PREFIX}{destination}"


def queue_name(destination: str) -> str:
    return f"{TASK_PREFIX}{destination}"


def destination_of(task: str) -> str | None:
    """The destination a task runs, or None for the job's own tasks and any other task."""
    if not task.startswith(TASK_PREFIX) or task in JOB_TASKS:
        return None
    return task.removeprefix(TASK_PREFIX)
