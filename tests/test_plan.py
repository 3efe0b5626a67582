"""Planning and strategy semantics as pure functions."""

from __future__ import annotations

import pytest

from destinations.plan import ExportRequestError, dependency_tiers, is_satisfied, plan_export
from destinations.registry import DestinationInfo

CATALOG = {
    "cdcs": DestinationInfo("cdcs", 100),
    "labarchives": DestinationInfo("labarchives", 90, ("cdcs",)),
    "elabftw": DestinationInfo("elabftw", 85, ("cdcs",)),
    "local": DestinationInfo("local", 50),
}


def test_independent_destinations_share_the_first_tier_in_priority_order() -> None:
    plan = plan_export("all", CATALOG)
    assert plan.tiers == (("cdcs", "local"), ("labarchives", "elabftw"))


def test_first_success_is_one_destination_per_step_dependencies_first() -> None:
    catalog = {**CATALOG, "urgent": DestinationInfo("urgent", 999, ("local",))}
    plan = plan_export("first_success", catalog)
    assert plan.destinations == ("cdcs", "local", "urgent", "labarchives", "elabftw")
    assert all(len(tier) == 1 for tier in plan.tiers)


def test_dependency_outside_the_job_is_ignored() -> None:
    assert plan_export("all", CATALOG, ["elabftw", "local"]).tiers == (("elabftw", "local"),)


def test_cycle_is_refused() -> None:
    catalog = {"a": DestinationInfo("a", 1, ("b",)), "b": DestinationInfo("b", 1, ("a",))}
    with pytest.raises(ExportRequestError, match="cycle"):
        dependency_tiers(catalog)


@pytest.mark.parametrize(
    ("strategy", "requested", "message"),
    [
        ("sometimes", None, "unknown strategy 'sometimes'"),
        ("all", ["nowhere"], "unknown destination 'nowhere'"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    strategy: str, requested: list[str] | None, message: str
) -> None:
    with pytest.raises(ExportRequestError, match=message):
        plan_export(strategy, CATALOG, requested)


def test_known_but_disabled_destination_is_named_as_disabled() -> None:
    with pytest.raises(ExportRequestError, match="'cdcs' is not enabled"):
        plan_export("all", {}, ["cdcs"], known=["cdcs"])


def test_no_enabled_destination_is_refused() -> None:
    with pytest.raises(ExportRequestError, match="no destination is enabled"):
        plan_export("all", {})


@pytest.mark.parametrize(
    ("strategy", "outcomes", "expected"),
    [
        ("all", {"a": True, "b": True}, True),
        ("all", {"a": True, "b": False}, False),
        ("all", {"a": True}, False),  # b never ran
        ("best_effort", {"a": False, "b": True}, True),
        ("best_effort", {"a": False, "b": False}, False),
        ("first_success", {"a": True}, True),
        ("first_success", {}, False),
        ("all", {}, False),
    ],
)
def test_strategy_satisfaction(strategy: str, outcomes: dict[str, bool], expected: bool) -> None:
    assert is_satisfied(strategy, ["a", "b"], outcomes) is expected


def test_nothing_planned_is_never_satisfied() -> None:
    assert is_satisfied("best_effort", [], {}) is False
