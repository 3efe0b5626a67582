"""Destinations for the tests, installed the way a third-party plugin is: by entry point.

Each one does what the job's ``context.metadata["behaviour"][<name>]`` says:
``succeed`` (default), ``fail``, ``raise``, ``sleep:<seconds>`` or
``transient:<n>`` (ask for a retry n times, then succeed) or ``fail-first:<n>``
(fail the first n attempts, counted over every run of the job).
``NX_TEST_<NAME>_BEHAVIOUR`` in the worker's environment sets the default.
Every export appends a JSON line to ``context.metadata["log"]`` when that is set.
"""

from __future__ import annotations

import json
import os
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
                "record_bytes": len(Path(context.xml_file_path).read_bytes()),
            },
        )

    def _log(self, context: ExportContext, started: float, outcome: str) -> None:
        log = context.metadata.get("log")
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


@shared_task(name="lims.export_finished")
def export_finished(summary: dict[str, Any]) -> None:
    """A LIMS's own callback task, named by NX_EXPORT_CALLBACK_TASK."""
    with open(os.environ["NX_TEST_CALLBACK_LOG"], "a", encoding="utf-8") as stream:
        stream.write(json.dumps(summary) + "\n")
