"""Worker side of the harness: destinations whose ``export`` runs in the test process.

NexusLIMS's tests hand ``Mock`` destinations to its strategies; a worker in
another process cannot call them. Each destination here is a real plugin of the
worker (``NX_EXPORT_PLUGINS=tests.upstream.relay:<name>,...``): its task runs on
the worker as any other, and ``export`` posts the context (with the results of
the destinations that ran before it) to the harness, which calls the test's own
object and sends its result back. An exception raised there is raised here.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from destinations.contract import ExportContext, ExportResult
from tasks.messages import context_to_message, result_from_json, result_to_json

RELAY_URL = "NEXUSLIMS_RELAY_URL"


class RelayDestination:
    """A destination named as the test's; priority and order come from the harness's catalogue."""

    priority = 50
    enabled = True

    def __init__(self, name: str) -> None:
        self.name = name

    def validate_config(self) -> tuple[bool, str | None]:
        return True, None

    def export(self, context: ExportContext) -> ExportResult:
        message = context_to_message(context)
        message["previous_results"] = {
            name: result_to_json(result, name) for name, result in context.previous_results.items()
        }
        answer = httpx.post(
            os.environ[RELAY_URL], json={"name": self.name, "context": message}, timeout=60
        ).json()
        if "raised" in answer:
            raise RuntimeError(answer["raised"])
        return result_from_json(answer["result"])


def __getattr__(name: str) -> Any:
    """``tests.upstream.relay:<name>`` is a relay destination called ``<name>``."""
    if name.startswith("__"):
        raise AttributeError(name)
    return RelayDestination(name)
