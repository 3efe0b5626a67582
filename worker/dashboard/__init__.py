"""The operators' dashboard (``nx-export dashboard``): jobs, retries, ``/metrics``."""

from __future__ import annotations

from typing import Any

from worker.dashboard.security import AuthSettingError, credentials

__all__ = ["AuthSettingError", "credentials", "serve"]


def serve(celery: Any, user: str, password: str, address: str, port: int) -> None:
    """Run the dashboard under uvicorn until stopped."""
    import uvicorn

    from tasks.runtime import job_store
    from tasks.store.index import ensure_indexed
    from worker.dashboard.app import create_app

    ensure_indexed(job_store(celery))
    uvicorn.run(create_app(celery, user, password), host=address, port=port, log_level="info")
