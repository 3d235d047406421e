"""Agent types and presets: which assets each type may own, and overrides keep the type."""

import numpy as np
import pytest
from agent_fixtures import base_load, day_horizon, pv_per_kwp
from pydantic import ValidationError

from agents import (
    AGENT_KINDS,
    PRESETS,
    BatterySpec,
    BuildingAgent,
    EVSpec,
    FlexPopulation,
    HeatingPlantAgent,
    HeatPumpSpec,
    PVSpec,
    SiteSpec,
    StorageAgent,
    TankSpec,
)

TYPE_OF_PRESET = {
    "home": BuildingAgent,
    "home_pv": BuildingAgent,
    "home_pv_battery": BuildingAgent,
    "home_heat_pump": BuildingAgent,
    "home_ev": BuildingAgent,
    "home_all": BuildingAgent,
    "school": BuildingAgent,
    "sports_centre": BuildingAgent,
    "heating_plant": HeatingPlantAgent,
    "community_battery": StorageAgent,
    "pv_plant": SiteSpec,
}


def test_every_preset_is_an_instance_of_its_agent_type() -> None:
    assert set(TYPE_OF_PRESET) == set(PRESETS)
    for name, spec in PRESETS.items():
        assert type(spec) is TYPE_OF_PRESET[name], name
        assert spec.kind in AGENT_KINDS


def _error_locations_and_messages(error: ValidationError) -> str:
    return " | ".join(f"{e['loc']} {e['msg']}" for e in error.errors())


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: StorageAgent(battery=BatterySpec(), heat_pump=HeatPumpSpec()), "heat_pump"),
        (lambda: StorageAgent(battery=BatterySpec(), pv=PVSpec()), "pv"),
        (lambda: StorageAgent(), "battery"),
        (lambda: HeatingPlantAgent(), "tank"),
        (lambda: HeatingPlantAgent(tank=TankSpec(), ev=EVSpec()), "ev"),
        (lambda: BuildingAgent(tank=TankSpec()), "tank"),
        (lambda: SiteSpec(kind="pv_plant", annual_load_kwh=0.0), "pv"),
        (lambda: SiteSpec(kind="pv_plant", pv=PVSpec(), battery=BatterySpec()), "battery"),
    ],
)
def test_an_agent_type_refuses_what_it_cannot_own_naming_the_asset(make, field) -> None:
    with pytest.raises(ValidationError) as caught:
        make()
    assert f"{field}:" in _error_locations_and_messages(caught.value)


def test_an_unknown_agent_type_is_refused_naming_kind() -> None:
    with pytest.raises(ValidationError) as caught:
        SiteSpec(kind="factory")
    assert ("kind",) in [e["loc"] for e in caught.value.errors()]


def test_overrides_keep_the_agent_type_and_its_checks() -> None:
    bigger = PRESETS["community_battery"].with_overrides({"battery": {"capacity_kwh": 400.0}})
    assert type(bigger) is StorageAgent
    assert bigger.battery is not None and bigger.battery.capacity_kwh == 400.0
    assert bigger.battery.p_max_kw == PRESETS["community_battery"].battery.p_max_kw
    with pytest.raises(ValidationError, match="heat_pump"):
        PRESETS["community_battery"].with_overrides({"heat_pump": {}})
    with pytest.raises(ValidationError) as caught:
        PRESETS["school"].with_overrides({"kind": "storage"})
    assert ("kind",) in [e["loc"] for e in caught.value.errors()]


def test_the_three_types_plan_side_by_side_in_one_population() -> None:
    """A building, a battery and a heating plant in one population: each reports its type,
    and each plans only with the assets its type holds (the battery-only site's planned
    consumption is its battery's power, since it has no base load and no PV)."""
    specs = [
        BuildingAgent(annual_load_kwh=4000.0, pv=PVSpec(), battery=BatterySpec()),
        StorageAgent(battery=BatterySpec(capacity_kwh=200.0, p_max_kw=100.0)),
        HeatingPlantAgent(annual_load_kwh=20_000.0, tank=TankSpec()),
    ]
    pop = FlexPopulation.from_specs(["b", "s", "h"], [1, 2, 3], specs, seed=1)
    assert pop.kind.tolist() == ["building", "storage", "heating_plant"]
    assert sorted(pop.groups) == ["battery", "tank"]
    assert pop.groups["battery"].site.tolist() == [0, 1]
    assert pop.groups["tank"].site.tolist() == [2]
    horizon = day_horizon("2026-01-13")
    baseline = pop.plan(horizon, base_load(pop), pv_per_kwp())
    battery = baseline.store_plans["battery"]
    storage_row = int(np.flatnonzero(pop.groups["battery"].site == 1)[0])
    np.testing.assert_allclose(baseline.site_p_kw[1], battery.p_kw[storage_row], rtol=0, atol=1e-9)
