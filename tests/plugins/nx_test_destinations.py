"""Destinations for the tests, installed the way a third-party plugin is: by entry point.

Each one does what the job's ``context.metadata["behaviour"][<name>]`` says:
``succeed`` (default), ``fail``, ``raise``, ``sleep:<seconds>`` or
``transient:<n>`` (ask for a retry n times, then succeed), ``fail-first:<n>``
(fail the first n attempts, counted over every run of the job), ``fail-until:<path>``
(fail while no file is at path: an outage that ends when the test says so) or
``barrier:<n>:<folder>`` (wait until n exports of the job reached the same
folder, so they finish at the same moment, then succeed).
``NX_TEST_<NAME>_BEHAVIOUR`` in the worker's environment sets the default.
Every export appends a JSON line to ``context.metadata["log"]`` when that is set,
else to ``NX_TEST_EXPORT_LOG`` (for jobs enqueued with ``nx-export enqueue``).

``NX_TEST_KILL_ON_ADD_TO_CHORD`` makes the worker SIGKILL itself the first time
a task adds a dependent to its job's chord, as a crash would, at one point around
Celery's ``Task.add_to_chord``: ``claimed`` (the dependent is ours to add;
nothing counted or sent), ``counted`` (the chord counts it; not sent) or
``added`` (counted and sent, the adding task done but neither counted by the
chord nor acknowledged). ``NX_TEST_KILL_REDIS_ON_ADD_TO_CHORD=<pid>`` SIGKILLs
that Redis server instead, once, at ``counted``: the dependent's publish fails.
``NX_TEST_KILL_IN_RESTORE`` makes the worker SIGKILL itself while it holds kombu's
mutex over the unacknowledged messages, once it holds a task unacknowledged.
Only the tests' crash workers set them; they patch Celery (or kombu) in that
worker process alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from celery import shared_task

from destinations.contract import ExportContext, ExportResult
from destinations.errors import TransientExportError


class _TestDestination:
    name = "base"
    priority = 100
    depends_on: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return True

    def validate_config(self) -> tuple[bool, str | None]:
        return True, None

    def export(self, context: ExportContext) -> ExportResult:
        started = time.time()
        default = os.environ.get(f"NX_TEST_{self.name.upper()}_BEHAVIOUR", "succeed")
        behaviour = str(context.metadata.get("behaviour", {}).get(self.name, default))
        attempt = int(context.metadata.get("export_attempt", 1))
        if behaviour.startswith("sleep:"):
            time.sleep(float(behaviour.split(":", 1)[1]))
        if behaviour.startswith("barrier:"):
            _, parties, folder = behaviour.split(":", 2)
            _meet(Path(folder), self.name, int(parties))
        if behaviour.startswith("transient:") and attempt <= int(behaviour.split(":", 1)[1]):
            self._log(context, started, "transient")
            raise TransientExportError(
                f"{self.name}: service busy (attempt {attempt})", retry_after=0.1
            )
        if behaviour == "raise":
            self._log(context, started, "raise")
            raise RuntimeError(f"{self.name} broke its contract")
        failing_attempts = (
            int(behaviour.split(":", 1)[1]) if behaviour.startswith("fail-first:") else 0
        )
        success = behaviour != "fail" and attempt > failing_attempts
        if behaviour.startswith("fail-until:"):
            success = Path(behaviour.split(":", 1)[1]).exists()
        self._log(context, started, "success" if success else "failure")
        return ExportResult(
            success=success,
            destination_name=self.name,
            record_id=f"{self.name}-{context.session_identifier}" if success else None,
            record_url=f"https://{self.name}.example.org/{context.session_identifier}"
            if success
            else None,
            error_message=None if success else f"{self.name} refused the record",
            metadata={
                "saw": {k: v.success for k, v in context.previous_results.items()},
                "saw_errors": {k: v.error_message for k, v in context.previous_results.items()},
                "record_bytes": len(Path(context.xml_file_path).read_bytes()),
            },
        )

    def _log(self, context: ExportContext, started: float, outcome: str) -> None:
        log = context.metadata.get("log") or os.environ.get("NX_TEST_EXPORT_LOG")
        if not log:
            return
        line = {
            "name": self.name,
            "session": context.session_identifier,
            "outcome": outcome,
            "start": started,
            "end": time.time(),
            "pid": os.getpid(),
            "saw": sorted(context.previous_results),
        }
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")


def _meet(folder: Path, name: str, parties: int) -> None:
    """Arrive at ``folder`` and leave once ``parties`` exports have arrived (at most 60 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.005)


class Alpha(_TestDestination):
    name, priority = "alpha", 300


class Beta(_TestDestination):
    name, priority = "beta", 200


class Gamma(_TestDestination):
    name, priority = "gamma", 100


class Failing(_TestDestination):
    """Refuses every record unless told otherwise."""

    name, priority = "failing", 20

    def export(self, context: ExportContext) -> ExportResult:
        context.metadata.setdefault("behaviour", {}).setdefault(self.name, "fail")
        return super().export(context)


class Linked(_TestDestination):
    """Reads alpha's result, like a notebook linking to the CDCS record."""

    name, priority = "linked", 250
    depends_on = ("alpha",)


class Joined(_TestDestination):
    """Waits for two destinations, as a notebook could for CDCS and the archive."""

    name, priority = "joined", 150
    depends_on = ("alpha", "beta")


class Prepared(_TestDestination):
    """Depends on alpha and prepares beside it, as LabArchives makes its page while CDCS uploads."""

    name, priority = "prepared", 240
    depends_on = ("alpha",)

    def prepare(self, context: ExportContext) -> dict[str, Any]:
        started = time.time()
        behaviour = str(context.metadata.get("behaviour", {}).get("prepared:prepare", ""))
        if behaviour.startswith("sleep:"):
            time.sleep(float(behaviour.split(":", 1)[1]))
        if behaviour == "raise":
            raise RuntimeError("prepare broke")
        log = context.metadata.get("log")
        if log:
            line = {"name": "prepared:prepare", "session": context.session_identifier,
                    "outcome": "success", "start": started, "end": time.time(),
                    "pid": os.getpid(), "saw": sorted(context.previous_results)}  # fmt: skip
            with open(log, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(line) + "\n")
        return {"page": f"page-{context.session_identifier}"}

    def export(self, context: ExportContext) -> ExportResult:
        result = super().export(context)
        result.metadata["prepared"] = dict(context.prepared)
        return result


class CycleA(_TestDestination):
    name, priority = "cycle_a", 10
    depends_on = ("cycle_b",)


class CycleB(_TestDestination):
    name, priority = "cycle_b", 10
    depends_on = ("cycle_a",)


class Disabled(_TestDestination):
    name = "disabled"

    @property
    def enabled(self) -> bool:
        return False


class Broken(_TestDestination):
    name = "broken"

    def __init__(self) -> None:
        raise RuntimeError("this plugin cannot start")


class NotADestination:
    name = "not_a_destination"


def _install_kill_switch(point: str, victim: int | None = None) -> None:
    """SIGKILL this worker (or ``victim``) at ``point`` of the first ``add_to_chord``."""
    from celery.app.task import Task
    from celery.backends.redis import RedisBackend

    added: list[str] = []
    fired: list[bool] = []

    def die() -> None:
        if not fired:
            fired.append(True)
            os.kill(victim or os.getpid(), signal.SIGKILL)

    add_to_chord, count, part_return = (
        Task.add_to_chord, RedisBackend.add_to_chord, RedisBackend.on_chord_part_return
    )  # fmt: skip

    def adding(self: Any, sig: Any, lazy: bool = False) -> Any:
        if point == "claimed":
            die()
        added.append(str(self.request.id))
        return add_to_chord(self, sig, lazy)

    def counting(self: Any, group_id: str, result: Any) -> None:
        count(self, group_id, result)
        if point == "counted":
            die()

    def returning(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        # The task that added a dependent is done and about to be counted, not acknowledged.
        if point == "added" and str(request.id) in added:
            die()
        return part_return(self, request, *args, **kwargs)

    Task.add_to_chord = adding  # type: ignore[method-assign]
    RedisBackend.add_to_chord = counting  # type: ignore[method-assign]
    RedisBackend.on_chord_part_return = returning  # type: ignore[method-assign]


def _install_restore_kill_switch() -> None:
    """SIGKILL this worker inside kombu's scan for unacknowledged messages, holding its
    mutex, once it holds a task unacknowledged: a crash at the worst moment."""
    from kombu.transport import redis as kombu_redis

    restore_visible = kombu_redis.QoS.restore_visible

    def dying(self: Any, start: int = 0, num: int = 10, interval: int = 10) -> Any:
        with self.channel.conn_or_acquire() as client:
            if client.zcard(self.unacked_index_key):
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    os.kill(os.getpid(), signal.SIGKILL)
        return restore_visible(self, start, num, interval)

    kombu_redis.QoS.restore_visible = dying  # type: ignore[method-assign]


if os.environ.get("NX_TEST_KILL_IN_RESTORE"):
    _install_restore_kill_switch()

if os.environ.get("NX_TEST_KILL_ON_ADD_TO_CHORD"):
    _install_kill_switch(os.environ["NX_TEST_KILL_ON_ADD_TO_CHORD"])
elif os.environ.get("NX_TEST_KILL_REDIS_ON_ADD_TO_CHORD"):
    _install_kill_switch("counted", int(os.environ["NX_TEST_KILL_REDIS_ON_ADD_TO_CHORD"]))


@shared_task(name="lims.export_finished")
def export_finished(summary: dict[str, Any]) -> None:
    """A LIMS's own callback task, named by NX_EXPORT_CALLBACK_TASK."""
    with open(os.environ["NX_TEST_CALLBACK_LOG"], "a", encoding="utf-8") as stream:
        stream.write(json.dumps(summary) + "\n")
