"""What every worker does in the background: say it is alive, and sweep.

On every heartbeat (``NX_EXPORT_HEARTBEAT_SECONDS``) the worker publishes its
catalogue entry again, so clients know it serves its destinations, and runs the
sweep (``tasks.lifecycle.sweep``), so no job outlives its deadline while any worker runs.
A worker that reaches NexusLIMS's database also says a bridge exists and is
alive, so that the sweep sends it the finished runs not written yet
(``tasks.nexuslims.delivery``); when it starts, it sends itself every one at once.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from tasks import catalog
from tasks.export.retry_policy import REDIS_AWAY
from tasks.lifecycle.sweep import sweep
from tasks.nexuslims.database import bridge_available
from tasks.nexuslims.delivery import bridge_heartbeat, reoffer_unwritten
from tasks.runtime import local_registry

logger = logging.getLogger(__name__)

# The sweep leaves a run this long to send its canvas or run its finish by itself.
MAX_GRACE_SECONDS = 60.0


class Housekeeping:
    """The heartbeat and sweep thread of one worker."""

    def __init__(self, app: Celery, hostname: str | None = None) -> None:
        self.app = app
        self.hostname = hostname
        self.interval = float(app.conf.get("nx_export_heartbeat_seconds") or 30)
        self.grace = min(MAX_GRACE_SECONDS, 2 * self.interval)
        self._stop = threading.Event()
        self._bridge_started = False

    def start(self) -> None:
        """Publish at once (clients find a worker as soon as it is ready), then keep going."""
        self.beat()
        threading.Thread(target=self._run, name="nx-export housekeeping", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> None:
        try:
            catalog.publish(
                self.app, local_registry(), hostname=self.hostname, heartbeat=self.interval
            )
        except Exception as error:  # Redis away: the next heartbeat tries again
            logger.warning("could not publish this worker's catalogue entry: %r", error)
        if bridge_available():
            try:
                bridge_heartbeat(self.app, self.interval)
                if not self._bridge_started:
                    # A bridge worker that died may have held messages: offer all at once.
                    sent = reoffer_unwritten(self.app, self.grace, everything=True)
                    self._bridge_started = True
                    if sent:
                        logger.info("sent the bridge %d finished runs not written yet", sent)
            except Exception as error:  # the next heartbeat tries again
                logger.warning("could not say that a bridge worker is alive: %r", error)

    def _run(self) -> None:
        while True:
            try:
                sweep(self.app, self.grace)
            except REDIS_AWAY as error:  # a restart or failover: one line, not a traceback
                logger.warning("the sweep for overdue jobs waits for Redis: %r", error)
            except Exception:  # a sweep that failed is tried again on the next heartbeat
                logger.exception("the sweep for overdue jobs failed")
            if self._stop.wait(self.interval):
                return
            self.beat()
