"""NexusLIMS's exporter API as its tests import it, run by ``worker.compat`` and a real worker.

The vendored tests import from here instead of ``nexusLIMS.exporters`` and
``nexusLIMS.exporters.strategies``. ``export_records`` and
``was_successfully_exported`` are ``worker.compat``'s. What NexusLIMS's tests
replace with stand-ins becomes the destinations of the worker:

- a registry's ``export_to_all`` (patched via ``get_registry``) gives the
  results; each result's destination is offered by the worker and answers
  with it;
- a list of destination objects handed to a strategy is offered by the worker
  with the objects' names and priorities, in list order, and each relay calls
  the object's ``export`` with NexusLIMS's context.

``NX_EXPORT_STRATEGY`` carries a strategy to ``worker.compat``, as it carries
NexusLIMS's setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.upstream.harness import offer
from worker import compat
from worker.compat import was_successfully_exported

__all__ = [
    "_log_to_database",
    "_strategy_all",
    "_strategy_best_effort",
    "_strategy_first_success",
    "execute_strategy",
    "export_records",
    "get_registry",
    "was_successfully_exported",
]


class _NoDestinations:
    def export_to_all(self, context: Any, *, strategy: str = "all") -> list[Any]:
        return []


def get_registry() -> Any:
    """What NexusLIMS's ``export_records`` asks for its destinations; the tests patch it."""
    return _NoDestinations()


def _log_to_database(session_identifier: str, results: list[Any]) -> None:
    """A patch target only: ``worker.compat`` writes NexusLIMS's upload_log itself."""


def export_records(
    xml_files: list[Path],
    sessions: list[Any],
    activities_per_session: list[list[Any]] | None = None,
    reservation_events: list[Any | None] | None = None,
) -> dict[Path, list[Any]]:
    if len(xml_files) == len(sessions):  # worker.compat refuses the rest
        _offer_registry_results(xml_files, sessions)
    return compat.export_records(xml_files, sessions, activities_per_session, reservation_events)


def _offer_registry_results(xml_files: Sequence[Path], sessions: Sequence[Any]) -> None:
    """The registry's results, per session, become what the worker's destinations answer."""
    from nexusLIMS.exporters.base import ExportContext

    registry = get_registry()
    answers: dict[str, dict[str, Any]] = {}
    names: dict[str, None] = {}
    for xml_file, session in zip(xml_files, sessions, strict=True):
        context = ExportContext(
            xml_file_path=xml_file,
            session_identifier=session.session_identifier,
            instrument_pid=session.instrument.name,
            dt_from=session.dt_from,
            dt_to=session.dt_to,
            user=session.user,
        )
        strategy = os.environ.get("NX_EXPORT_STRATEGY") or "all"
        results = registry.export_to_all(context, strategy=strategy)
        answers[session.session_identifier] = {r.destination_name: r for r in results}
        names.update(dict.fromkeys(r.destination_name for r in results))

    def answer(name: str) -> Any:
        return lambda context: answers[context.session_identifier][name]

    # One priority for all: NexusLIMS's results come in the registry's order.
    offer([(name, 0) for name in names], {name: answer(name) for name in names})


def execute_strategy(strategy: str, destinations: list[Any], context: Any) -> list[Any]:
    return _run(strategy, destinations, context)


def _strategy_all(destinations: list[Any], context: Any) -> list[Any]:
    return _run("all", destinations, context)


def _strategy_first_success(destinations: list[Any], context: Any) -> list[Any]:
    return _run("first_success", destinations, context)


def _strategy_best_effort(destinations: list[Any], context: Any) -> list[Any]:
    return _run("best_effort", destinations, context)


def _run(strategy: str, destinations: list[Any], context: Any) -> list[Any]:
    """One record to these destinations under ``strategy``, through the worker.

    NexusLIMS's strategies leave every result in the caller's context; so does this.
    """
    offer([(d.name, d.priority) for d in destinations], {d.name: d.export for d in destinations})
    session = SimpleNamespace(
        session_identifier=context.session_identifier,
        instrument=SimpleNamespace(name=context.instrument_pid),
        dt_from=context.dt_from,
        dt_to=context.dt_to,
        user=context.user,
    )
    with _strategy_setting(strategy):
        results = compat.export_records([context.xml_file_path], [session])
    for result in results[context.xml_file_path]:
        context.add_result(result.destination_name, result)
    return results[context.xml_file_path]


@contextmanager
def _strategy_setting(strategy: str) -> Iterator[None]:
    before = os.environ.get("NX_EXPORT_STRATEGY")
    os.environ["NX_EXPORT_STRATEGY"] = strategy
    try:
        yield
    finally:
        if before is None:
            del os.environ["NX_EXPORT_STRATEGY"]
        else:
            os.environ["NX_EXPORT_STRATEGY"] = before
