"""The NexusLIMS export worker: the Celery app, its settings, CLI and embedded Redis.

For a LIMS::

    from worker import enqueue_export, get_job

The app is built on first use, so importing ``worker.settings`` or the CLI
reads no configuration and discovers no destination.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportJob", "app", "enqueue_export", "get_job"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.app import app

        return app
    if name in ("ExportJob", "enqueue_export", "get_job"):
        import worker.app  # noqa: F401  (configures the app these use)
        from tasks import jobs

        return getattr(jobs, name)
    raise AttributeError(name)
