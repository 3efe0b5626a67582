"""Which destinations a job runs, in what order, and when its strategy is satisfied.

Pure functions over names and results: no Celery, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from destinations.registry import DestinationInfo

STRATEGIES = ("all", "first_success", "best_effort")


class ExportRequestError(ValueError):
    """A job that cannot be planned; nothing is enqueued."""


@dataclass(frozen=True)
class ExportPlan:
    """The destinations of one job.

    ``tiers`` run one after another; the destinations inside a tier run in
    parallel. For ``first_success`` every tier holds one destination.
    """

    strategy: str
    tiers: tuple[tuple[str, ...], ...]

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(name for tier in self.tiers for name in tier)


def plan_export(
    strategy: str,
    available: Mapping[str, DestinationInfo],
    requested: Sequence[str] | None = None,
    known: Sequence[str] = (),
) -> ExportPlan:
    """Plan a job over the ``available`` (enabled) destinations.

    ``requested`` narrows the job to some destinations; ``known`` are names that
    exist but are disabled, for a clearer message.
    """
    if strategy not in STRATEGIES:
        raise ExportRequestError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if requested:
        for name in requested:
            if name not in available:
                if name in known:
                    raise ExportRequestError(
                        f"destination {name!r} is not enabled (its settings are missing)"
                    )
                choices = ", ".join(sorted(available)) or "none"
                raise ExportRequestError(
                    f"unknown destination {name!r}; enabled destinations: {choices}"
                )
        chosen = {name: info for name, info in available.items() if name in requested}
    else:
        chosen = dict(available)
    if not chosen:
        raise ExportRequestError(
            "no destination is enabled: configure at least one (for example NX_EXPORT_LOCAL_PATH)"
        )
    tiers = dependency_tiers(chosen)
    if strategy == "first_success":
        tiers = tuple((name,) for tier in tiers for name in tier)
    return ExportPlan(strategy, tiers)


def dependency_tiers(chosen: Mapping[str, DestinationInfo]) -> tuple[tuple[str, ...], ...]:
    """Group destinations so each runs after every destination it depends on.

    Dependencies on destinations outside the job are ignored. Inside a tier,
    higher priority comes first, then the order of ``chosen`` (the order the
    destinations were found, as NexusLIMS runs them). A cycle is an
    ``ExportRequestError``.
    """
    remaining = {
        name: {dep for dep in info.depends_on if dep in chosen and dep != name}
        for name, info in chosen.items()
    }
    tiers: list[tuple[str, ...]] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            cycle = " -> ".join(sorted(remaining))
            raise ExportRequestError(f"destinations depend on each other in a cycle: {cycle}")
        ready.sort(key=lambda name: -chosen[name].priority)
        tiers.append(tuple(ready))
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return tuple(tiers)


def is_satisfied(strategy: str, planned: Sequence[str], outcomes: Mapping[str, bool]) -> bool:
    """NexusLIMS's ``was_successfully_exported`` over one job.

    ``outcomes`` maps each destination that ran to whether it succeeded. ``all``
    needs every planned destination to have succeeded; the other strategies need
    at least one success. A job where nothing ran is never satisfied.
    """
    if not planned or not outcomes:
        return False
    if strategy == "all":
        return all(outcomes.get(name) is True for name in planned)
    return any(outcomes.get(name) is True for name in planned)
