"""Turn a plan into a Celery canvas.

``all`` / ``best_effort``: tiers of destinations, each tier a group, tiers one
after another (a chord when there is one tier), then ``export.finish``.
``first_success``: a chain in priority order; the first success cuts the chain
down to ``export.finish``.

Every task id of a run is derived from the job and the run, so a canvas sent
twice (a redelivered ``export.record``, the sweep resending a canvas it could
not know was sent) names the same tasks, which find each other's results.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from destinations.names import FINISH_TASK, JOB_QUEUE, queue_name, task_name
from destinations.plan import ExportPlan
from tasks.messages import describe_context


def finish_task_id(job_id: str, run: int) -> str:
    """The id of run ``run``'s ``export.finish``; its destinations' ids derive from it."""
    return _derived_id(f"{job_id}:{run}:finish")


def _derived_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nexuslims-export:{name}"))


def build_canvas(
    app: Celery, plan: ExportPlan, job_id: str, context: dict[str, Any], finish_id: str
) -> Signature:
    summary = describe_context(context)

    def step(name: str) -> Signature:
        return app.signature(
            task_name(name),
            args=(job_id, context, plan.strategy),
            immutable=True,
            queue=queue_name(name),
            task_id=_derived_id(f"{finish_id}:{name}"),
            # Flower shows this instead of the whole context.
            argsrepr=f"(job={job_id} {summary} strategy={plan.strategy})",
        )

    finish = app.signature(
        FINISH_TASK,
        args=(job_id,),
        immutable=True,
        queue=JOB_QUEUE,
        task_id=finish_id,
        argsrepr=f"(job={job_id} {summary} strategy={plan.strategy})",
    )
    if plan.strategy == "first_success":
        return chain(*(step(name) for name in plan.destinations), finish)
    stages = [group(step(name) for name in tier) for tier in plan.tiers]
    if len(stages) == 1:
        return chord(stages[0], finish)
    return chain(*stages, finish)
