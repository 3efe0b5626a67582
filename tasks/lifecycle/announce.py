"""What a finished run tells the world: the webhook, the callback and the NexusLIMS bridge.

``export.finish`` announces its run once its own result is stored, so a client
waiting on the job is not kept waiting by them. The job joined the job store's
``announce`` set in the same write that finished it, and leaves it once
announced: if the worker dies in between, the sweep announces the run instead.
A run may so be announced twice, never not at all; the bridge writes a run
once however often it is told, and the run stays offered to it until it is
written (see ``tasks.nexuslims.delivery``). A run told again (an outcome that
arrived after its deadline, ``tasks.store.run_ending``) is announced again: it
stays in the set if it was retold while an earlier telling was announced.
"""

from __future__ import annotations

from celery import Celery

from tasks.jobs import job_from_record
from tasks.lifecycle.notify import notify_finished
from tasks.nexuslims.delivery import offer_outcome
from tasks.runtime import job_store
from tasks.store.model import JobRecord


def announce(app: Celery, record: JobRecord) -> None:
    """Tell the configured hooks and the NexusLIMS bridge that the job's latest run finished."""
    notify_finished(app, job_from_record(record).to_dict())
    offer_outcome(app, record)
    job_store(app).unschedule_announced(record)
