"""Whole runs: smoke runs of every config, reproducibility, the Idrija market's effect, the
report. The Idrija tiny scenario is a summer morning (06:00–10:00) of a simbench 2034 rural
feeder where, without control, PV lifts buses above 1.05 pu.
"""

import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from sim.model import FlexModel
from sim.run import run_scenario
from sim.scenario import load_scenario, load_scenarios

ROOT = Path(__file__).resolve().parents[2]
IDRIJA = ROOT / "configs" / "idrija.yaml"
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "scenarios:" in p.read_text())
TABLES = ("timeseries", "agents", "bus_voltages", "awards")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_tiny_scenario_of_every_config_runs_a_few_rounds(path: Path) -> None:
    scenario = load_scenarios(path)["tiny"]
    model = FlexModel(scenario.model_copy(update={"yardsticks": ("no_control",)}))
    rounds = min(3, model.setup.n_rounds)
    for _ in range(rounds):
        model.step()
    assert len(model.market.records) == rounds and len(model.no_control.records) == rounds
    assert model.done == (rounds == model.setup.n_rounds)
    assert len(model.agents) == model.setup.n_agents + 1  # the sites and the DSO
    for record in model.market.records:
        assert record.vm_pu.shape == (model.setup.network.n_bus,)
        assert (record.vm_pu > 0.8).all() and (record.vm_pu < 1.2).all()


@pytest.fixture(scope="module")
def idrija_tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("idrija_tiny")
    summary = run_scenario(load_scenario(IDRIJA, "tiny"), out, progress=False)
    return out, summary


def test_the_market_removes_most_violations_of_no_control(idrija_tiny) -> None:
    """Without control the morning PV pushes buses above 1.05 pu; with the market at least
    90 % of those bus-minutes are gone."""
    _, summary = idrija_tiny
    nc = summary["cases"]["no_control"]["violation_bus_minutes"]
    market = summary["cases"]["market"]["violation_bus_minutes"]
    assert nc > 0, "the tiny scenario must show violations without control"
    assert market <= 0.1 * nc
    assert summary["cases"]["market"]["awards"] > 0
    assert summary["cases"]["market"]["dso_cost_eur"] > 0


def test_the_optimum_is_never_dearer_than_the_market(idrija_tiny) -> None:
    """Total cost (sites' energy cost plus the violation penalty) of the central optimum
    with full information is at most the market's; so is its cost of resolving."""
    _, summary = idrija_tiny
    comparison = summary["comparison"]
    assert comparison["optimum_total_cost_eur"] <= comparison["market_total_cost_eur"] + 1e-6
    assert comparison["optimum_resolving_cost_eur"] <= comparison["market_resolving_cost_eur"]
    assert summary["cases"]["optimum"]["violation_bus_minutes"] == 0


def test_the_report_and_its_images_exist(idrija_tiny) -> None:
    out, _ = idrija_tiny
    page = (out / "report.html").read_text()
    images = [name for name in page.split('src="')[1:]]
    assert len(images) == 4
    for chunk in images:
        name = chunk.split('"')[0]
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(out / name).shape[0] > 100


def test_the_same_seed_gives_identical_results(idrija_tiny, tmp_path: Path) -> None:
    """A second run of the same scenario and seed writes byte-identical summary.json and
    equal parquet tables (timings, kept apart in wall_time.json/timings.parquet, excepted)."""
    first, _ = idrija_tiny
    second = tmp_path / "again"
    run_scenario(load_scenario(IDRIJA, "tiny"), second, progress=False, report=False)
    assert (first / "summary.json").read_bytes() == (second / "summary.json").read_bytes()
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(first / f"{name}.parquet"), pd.read_parquet(second / f"{name}.parquet")
        )
    summary = json.loads((first / "summary.json").read_text())
    assert summary["seed"] == 42 and len(summary["config_hash"]) == 16
