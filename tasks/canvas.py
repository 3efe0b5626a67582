"""Turn a plan into a Celery canvas.

``all`` / ``best_effort``: tiers of destinations, each tier a group, tiers one
after another (a chord when there is one tier), then ``export.finish``.
``first_success``: a chain in priority order; the first success cuts the chain
down to ``export.finish``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from destinations.names import FINISH_TASK, JOB_QUEUE, queue_name, task_name
from destinations.plan import ExportPlan
from tasks.messages import describe_context


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
