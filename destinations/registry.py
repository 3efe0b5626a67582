"""Discovery: the built-in destinations, entry-point plugins and configured classes.

Later sources win over earlier ones for the same name, so a facility can replace
a built-in: built-ins, then the ``nexuslims_export.destinations`` entry points,
then ``NX_EXPORT_PLUGINS``. A plugin that fails to import or to instantiate is
logged and skipped; it never stops the worker.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast

from destinations.contract import Destination, dependencies_of
from destinations.names import RESERVED_NAMES
from destinations.settings import destination_setting, nx_setting

ENTRY_POINT_GROUP = "nexuslims_export.destinations"

BUILTINS: dict[str, str] = {
    "local": "destinations.builtin.local:LocalArchiveDestination",
    "cdcs": "destinations.builtin.cdcs.destination:CDCSDestination",
    "elabftw": "destinations.builtin.elabftw:ELabFTWDestination",
    "labarchives": "destinations.builtin.labarchives.destination:LabArchivesDestination",
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DestinationInfo:
    """What planning needs to know of a destination, without the destination itself."""

    name: str
    priority: int
    depends_on: tuple[str, ...] = ()
    prepares: bool = False  # has a ``prepare`` step that may run beside its dependencies


@dataclass
class Registry:
    """The destinations found, where each came from, and what was skipped and why."""

    destinations: dict[str, Destination] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    # Destination -> the variable that set its dependencies, for the start-up report.
    dependency_settings: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Destination]:
        """Highest priority first; equal priorities in the order found, as NexusLIMS orders them."""
        return iter(sorted(self.destinations.values(), key=lambda d: -d.priority))

    def get(self, name: str) -> Destination | None:
        return self.destinations.get(name)

    def enabled(self) -> dict[str, DestinationInfo]:
        """Planning information of every enabled destination, by name."""
        return {d.name: describe(d) for d in self if _is_enabled(d)}

    def add(self, destination: object, origin: str) -> None:
        problem = _contract_problem(destination)
        if problem:
            self.skip(origin, problem)
            return
        assert isinstance(destination, Destination)
        previous = self.origins.get(destination.name)
        if previous is not None:
            _keep_dependencies(destination, self.destinations[destination.name])
            self.replaced.append((destination.name, previous, origin))
            logger.info(
                "destination %r from %s replaces the one from %s",
                destination.name,
                origin,
                previous,
            )
        self.destinations[destination.name] = destination
        self.origins[destination.name] = origin

    def skip(self, origin: str, reason: str) -> None:
        self.skipped.append((origin, reason))
        logger.warning("destination plugin %s skipped: %s", origin, reason)


def _keep_dependencies(destination: Destination, replaced: Destination) -> None:
    """Give a replacement that declares no ``depends_on`` the dependencies of the one it replaces.

    NexusLIMS's own classes order themselves by priority alone and read the CDCS
    result; without the built-in's ``("cdcs",)`` they would run beside CDCS and
    miss its link.
    """
    inherited = dependencies_of(replaced)
    if inherited and not hasattr(destination, "depends_on"):
        try:
            cast(Any, destination).depends_on = inherited
        except AttributeError:  # __slots__ or a read-only property: leave it as declared
            logger.warning("destination %r keeps no dependencies", destination.name)


def describe(destination: Destination) -> DestinationInfo:
    return DestinationInfo(
        destination.name,
        int(destination.priority),
        dependencies_of(destination),
        prepares=callable(getattr(destination, "prepare", None)),
    )


def discover(plugins: Iterable[str] = ()) -> Registry:
    """Find every destination: built-ins, entry points, then ``plugins`` ("module:Class")."""
    registry = Registry()
    for target in BUILTINS.values():
        _load(registry, target, origin=f"built-in {target}")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # a broken plugin must not stop the worker
            registry.skip(f"entry point {entry_point.value}", f"import failed: {error!r}")
            continue
        _instantiate(registry, loaded, origin=f"entry point {entry_point.value}")
    for target in plugins:
        if target.strip():
            _load(registry, target.strip(), origin=f"NX_EXPORT_PLUGINS {target.strip()}")
    for destination in registry.destinations.values():
        _apply_dependency_setting(registry, destination)
    return registry


def dependency_variable(name: str) -> str:
    return destination_setting(name, "DEPENDS_ON")


def _apply_dependency_setting(registry: Registry, destination: Destination) -> None:
    """``NX_EXPORT_<NAME>_DEPENDS_ON=cdcs,...`` sets a destination's dependencies.

    NexusLIMS's classes declare none but may read another destination's result:
    the setting makes them wait for it, and makes that result theirs to read.
    """
    variable = dependency_variable(destination.name)
    value = nx_setting(variable)
    if value is None:
        return
    wanted = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    try:
        cast(Any, destination).depends_on = wanted
    except AttributeError:
        logger.warning("destination %r: %s cannot be applied", destination.name, variable)
        return
    registry.dependency_settings[destination.name] = variable


def parse_plugin_list(value: str) -> list[str]:
    """Split ``NX_EXPORT_PLUGINS`` ("module:Class,module:Class")."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _load(registry: Registry, target: str, origin: str) -> None:
    module_name, _, attribute = target.partition(":")
    if not attribute:
        registry.skip(origin, f"{target!r} is not of the form 'module:Class'")
        return
    try:
        loaded = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:
        registry.skip(origin, f"import failed: {error!r}")
        return
    _instantiate(registry, loaded, origin)


def _instantiate(registry: Registry, loaded: object, origin: str) -> None:
    try:
        destination = loaded() if isinstance(loaded, type) else loaded
    except Exception as error:
        registry.skip(origin, f"could not be instantiated: {error!r}")
        return
    registry.add(destination, origin)


def _contract_problem(destination: object) -> str | None:
    if not isinstance(destination, Destination):
        return (
            "does not follow the destination contract (needs name, priority, enabled, "
            "validate_config, export)"
        )
    name = destination.name
    if (
        not isinstance(name, str)
        or not name
        or not name.replace("_", "").replace("-", "").isalnum()
    ):
        return f"name {name!r} must be a non-empty word (letters, digits, '-', '_')"
    if name in RESERVED_NAMES:
        return f"name {name!r} is reserved for the worker's own tasks"
    priority = destination.priority
    if not isinstance(priority, int) or not 0 <= priority <= 1000:
        return f"priority {priority!r} must be an integer from 0 to 1000"
    return None


def _is_enabled(destination: Destination) -> bool:
    try:
        return bool(destination.enabled)
    except Exception as error:
        logger.warning(
            "destination %r: 'enabled' raised %r; treated as disabled", destination.name, error
        )
        return False
