"""Which destinations a job runs, in what order, and when its strategy is satisfied.

Pure functions over names and results: no Celery, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from destinations.registry import DestinationInfo

STRATEGIES = ("all", "first_success", "best_effort")


class ExportRequestError(ValueError):
    """A job that cannot be planned; nothing is enqueued."""


@dataclass(frozen=True)
class ExportPlan:
    """The destinations of one job and what each waits for.

    ``tiers`` lists the destinations in dependency order (priority order inside
    a tier); for ``first_success`` every tier holds one destination, the order
    in which they are tried. ``dependencies`` names, for each destination, the
    destinations of this job it waits for: it starts as soon as they finished,
    whatever their outcome, and never waits for anything else. ``prepared``
    destinations run their ``prepare`` step beside their dependencies.
    """

    strategy: str
    tiers: tuple[tuple[str, ...], ...]
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prepared: tuple[str, ...] = ()

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(name for tier in self.tiers for name in tier)

    def waits_for(self, name: str) -> tuple[str, ...]:
        return tuple(self.dependencies.get(name, ()))

    def roots(self) -> tuple[str, ...]:
        """The destinations that start at once: the first one tried, or every independent one."""
        if self.strategy == "first_success":
            return self.destinations[:1]
        return tuple(name for name in self.destinations if not self.waits_for(name))

    def dependents_of(self, name: str) -> tuple[str, ...]:
        return tuple(d for d in self.destinations if name in self.waits_for(d))

    def after(self, name: str) -> str | None:
        """Under ``first_success``, the destination tried when ``name`` failed."""
        order = self.destinations
        index = order.index(name) if name in order else len(order)
        return order[index + 1] if index + 1 < len(order) else None

    def to_message(self) -> dict[str, Any]:
        """JSON for the destination tasks, which start what follows them."""
        return {
            "strategy": self.strategy,
            "order": list(self.destinations),
            "dependencies": {name: list(deps) for name, deps in self.dependencies.items() if deps},
            "prepared": list(self.prepared),
        }

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> ExportPlan:
        order = [str(name) for name in data.get("order", [])]
        return cls(
            strategy=str(data.get("strategy", "all")),
            tiers=tuple((name,) for name in order),
            dependencies={
                str(name): tuple(str(dep) for dep in deps)
                for name, deps in dict(data.get("dependencies", {})).items()
            },
            prepared=tuple(str(name) for name in data.get("prepared", [])),
        )


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
        # One at a time, in order: nothing runs beside anything else, nothing to prepare.
        return ExportPlan(strategy, tuple((name,) for tier in tiers for name in tier))
    dependencies = {
        name: tuple(dep for dep in info.depends_on if dep in chosen and dep != name)
        for name, info in chosen.items()
    }
    prepared = tuple(
        name for tier in tiers for name in tier if chosen[name].prepares and dependencies[name]
    )
    return ExportPlan(strategy, tiers, dependencies, prepared)


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
