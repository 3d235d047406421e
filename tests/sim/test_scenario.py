"""Scenario files: every shipped config loads; every invalid one fails naming its key."""

from pathlib import Path

import pytest

from sim.build import build
from sim.scenario import ScenarioError, load_scenario, load_scenarios

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "scenarios:" in p.read_text())
INVALID = sorted((ROOT / "tests" / "data" / "invalid_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_has_a_tiny_scenario(path: Path) -> None:
    scenarios = load_scenarios(path)
    assert "tiny" in scenarios, f"{path.name} needs a 'tiny' scenario for the smoke tests"
    for name, scenario in scenarios.items():
        assert scenario.name == name


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_an_invalid_config_fails_naming_the_key(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
    with pytest.raises(ScenarioError) as error:
        load_scenarios(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_extends_merges_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "scenarios:\n"
        "  base:\n    grid: {pandapower: cigre_lv}\n    time: {start: 2026-06-15, days: 3}\n"
        "    dso: {v_max_pu: 1.04}\n"
        "  tiny:\n    extends: base\n    time: {days: 1}\n"
    )
    tiny = load_scenario(path, "tiny")
    assert tiny.time.days == 1
    assert str(tiny.time.start) == "2026-06-15"
    assert tiny.dso.v_max_pu == 1.04
    with pytest.raises(ScenarioError, match="no scenario 'huge'"):
        load_scenario(path, "huge")


def test_an_agent_on_a_missing_bus_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(
        "scenarios:\n  base:\n    grid: {pandapower: cigre_lv}\n"
        "    time: {start: 2026-06-15}\n"
        "    populations: [{preset: school, count: 1, placement: bus, bus: 9999}]\n"
    )
    with pytest.raises(ScenarioError, match=r"populations\.0\.bus: bus 9999"):
        build(load_scenario(path))
