"""The central optimum's cost is consistent with the valuation it is reported in.

The case: the Idrija summer feeder for the first hour after midnight (four slots), where no
bus leaves the band under no control (the highest is 1.044 pu), so adding the band's rows
can only make the optimum dearer, and here costs nothing.
The reported cost values the energy left in the stores as the agents do from the window's end
(:func:`sim.metrics.stored_value_eur`); an LP that valued it at the window's own mean price
minimised another cost, and its "unconstrained" optimum came out 0.70 EUR dearer than the
constrained one.
"""

from pathlib import Path

import numpy as np
import pytest

from grid import powerflow
from sim.build import build
from sim.engine import RoundEngine
from sim.optimum import solve_optimum
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4


@pytest.fixture(scope="module")
def after_midnight():
    scenario = load_scenario(ROOT / "configs" / "idrija.yaml", "tiny")
    window = scenario.time.model_copy(update={"start_hour": 0, "rounds": ROUNDS})
    setup = build(scenario.model_copy(update={"time": window}))
    nc = RoundEngine(setup, market=False)
    for _ in range(ROUNDS):
        nc.step()
    nc_p = np.array([r.metered_kw for r in nc.records])
    per_bus = [nc._per_bus(k, nc_p[k], setup.base_kw[:, k] * setup.q_per_p) for k in range(ROUNDS)]
    flows = powerflow(
        setup.network, np.array([p for p, _ in per_bus]), np.array([q for _, q in per_bus])
    )
    return setup, flows, nc_p


def test_without_violations_the_band_costs_nothing(after_midnight) -> None:
    setup, flows, nc_p = after_midnight
    s = setup.scenario.dso
    assert ((flows.vm_pu > s.v_min_pu) & (flows.vm_pu < s.v_max_pu)).all()
    free = solve_optimum(setup, flows, nc_p, enforce_band=False)
    best = solve_optimum(setup, flows, nc_p, enforce_band=True)
    assert best.cost_eur == pytest.approx(free.cost_eur, abs=1e-6)
    assert best.violation_pu_h == 0.0
