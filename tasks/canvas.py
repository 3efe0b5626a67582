"""Turn a plan into a Celery canvas: one chord whose header grows as destinations finish.

The chord's header starts with the destinations that wait for nothing (under
``first_success``, the first one to try) and the ``prepare`` steps of those
that wait. When a destination finishes, successful or not, its task adds what
waited for it to the same chord with Celery's ``add_to_chord`` — its
dependents whose dependencies have all finished, or under ``first_success``
the next destination after a failure — so each starts as soon as what it
needs is done, and the chord counts it before the job can finish.

A destination that fails ends in FAILURE. Then the Redis backend does not run
the chord's body, but calls the body's errbacks once every part is done: the
job's ``export.finish`` is both, so it runs exactly once either way.

Every task id of a run is derived from the job, the run and the destination,
and so is the chord's group id: a canvas sent twice (a redelivered
``export.record``, the sweep resending a canvas it could not know was sent)
names the same tasks in the same chord, which counts each once; and the sweep
can send one lost task again into the chord it belongs to (``chord_options``).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, chord, group
from celery.canvas import Signature

from destinations.names import FINISH_TASK, JOB_QUEUE, queue_name, task_name
from destinations.plan import ExportPlan
from tasks.messages import describe_context

EXPORT = "export"
PREPARE = "prepare"


def destination_step(
    app: Celery,
    name: str,
    job_id: str,
    context: dict[str, Any],
    plan: ExportPlan,
    run: int,
    phase: str = EXPORT,
) -> Signature:
    """The task of one destination (or its ``prepare`` step) in one run of a job."""
    label = "" if phase == EXPORT else f"{phase} "
    return app.signature(
        task_name(name),
        args=(job_id, context, plan.strategy),
        kwargs={"plan": plan.to_message(), "run": run, "phase": phase},
        immutable=True,
        queue=queue_name(name),
        task_id=step_task_id(job_id, run, name, phase),
        # Flower shows this instead of the whole context.
        # Session first: Flower's narrow args column shows the start of it.
        argsrepr=f"({label}{describe_context(context)} job={job_id} strategy={plan.strategy})",
        kwargsrepr="{}",
    )


def step_task_id(job_id: str, run: int, name: str, phase: str = EXPORT) -> str:
    """The id of ``name``'s task (or its ``prepare`` step) in run ``run``."""
    return _derived_id(f"{job_id}:{run}:{name}:{phase}")


def finish_task_id(job_id: str, run: int) -> str:
    """The id of run ``run``'s ``export.finish``; its destinations' ids derive from it."""
    return _derived_id(f"{job_id}:{run}:finish")


def chord_group_id(job_id: str, run: int) -> str:
    """The group id of run ``run``'s chord: where its parts are counted."""
    return _derived_id(f"{job_id}:{run}:group")


def _finish(app: Celery, job_id: str, finish_id: str | None, argsrepr: str) -> Signature:
    return app.signature(FINISH_TASK, args=(job_id,), immutable=True, queue=JOB_QUEUE,
                         task_id=finish_id, argsrepr=argsrepr)  # fmt: skip


def finish_step(app: Celery, job_id: str, finish_id: str, summary: str, strategy: str) -> Signature:
    """Run ``run``'s ``export.finish``: the chord's body and, for a failed part, its errback."""
    shown = f"({summary} job={job_id} strategy={strategy})"
    # The same finish as the errback: the backend calls it when a part failed.
    return _finish(app, job_id, finish_id, shown).set(
        link_error=[_finish(app, job_id, finish_id, shown)]
    )


def send_finish(app: Celery, job_id: str, finish_id: str | None, summary: str, why: str) -> None:
    """Send the run's ``export.finish`` outside its chord (it runs once per run however sent)."""
    _finish(app, job_id, finish_id, f"(job={job_id} {summary} {why})").apply_async()


def chord_options(
    app: Celery, job_id: str, run: int, finish_id: str, summary: str, strategy: str
) -> dict[str, Any]:
    """What makes a task sent on its own a part of run ``run``'s chord, as ``add_to_chord`` does."""
    body = finish_step(app, job_id, finish_id, summary, strategy)
    body.freeze(finish_id, group_id=chord_group_id(job_id, run))
    return {"group_id": chord_group_id(job_id, run), "chord": body}


def _derived_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nexuslims-export:{name}"))


def build_canvas(
    app: Celery,
    plan: ExportPlan,
    job_id: str,
    context: dict[str, Any],
    finish_id: str,
    run: int = 1,
) -> Signature:
    summary = describe_context(context)
    header = [destination_step(app, name, job_id, context, plan, run) for name in plan.roots()]
    header += [
        destination_step(app, name, job_id, context, plan, run, PREPARE) for name in plan.prepared
    ]
    body = finish_step(app, job_id, finish_id, summary, plan.strategy)
    canvas = chord(header, body)
    # The constructor keeps the header as a plain list (its group id would be random);
    # a group set afterwards keeps its id when the chord is applied (not when cloned).
    canvas.tasks = group(header, task_id=chord_group_id(job_id, run))
    return canvas
