"""Simulation benchmark: one day of the 9,104-bus scale scenario, and the Idrija scenario.

Prints the wall time per phase of the market loop (plan, grid need, bids, clearing,
dispatch, power flow, settlement) on ``configs/scale_mvlv.yaml`` (simbench
``1-MVLV-semiurb-all-2-sw``, every load/sgen of the net an agent, yardsticks off), and the
wall time of an Idrija scenario with both yardsticks. Not part of the test suite.

    .venv/bin/python benchmarks/simulation.py                 # full day, 96 rounds
    .venv/bin/python benchmarks/simulation.py --rounds 8      # first 8 rounds only
    .venv/bin/python benchmarks/simulation.py --idrija summer # + the Idrija summer week
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sim.build import build
from sim.engine import PHASES, RoundEngine
from sim.run import run_scenario
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def scale(rounds: int | None) -> None:
    scenario = load_scenario(ROOT / "configs" / "scale_mvlv.yaml", "base")
    t0 = time.perf_counter()
    setup = build(scenario)
    built = time.perf_counter() - t0
    engine = RoundEngine(setup, market=True)
    n = setup.n_rounds if rounds is None else min(rounds, setup.n_rounds)
    t0 = time.perf_counter()
    for _ in range(n):
        engine.step()
    loop = time.perf_counter() - t0
    phases = {p: sum(r.phase_s[p] for r in engine.records) for p in PHASES}
    print(f"scale_mvlv: {setup.n_agents} agents, {setup.network.n_bus} buses, {n} rounds"
          f" (of {setup.n_rounds}); load average {os.getloadavg()[0]:.1f}")
    print(f"  build (network, profiles, agents): {built:8.1f} s")
    print(f"  market loop:                      {loop:8.1f} s  ({loop / n:.2f} s per round)")
    for name, seconds in phases.items():
        print(f"    {name:<11} {seconds:8.2f} s  {100 * seconds / loop:5.1f} %")
    band = scenario.dso
    outside = sum(
        int(((r.vm_pu > band.v_max_pu) | (r.vm_pu < band.v_min_pu)).sum()) for r in engine.records
    )
    print(f"  outcome: {outside * scenario.time.slot_minutes} violation bus-minutes after "
          f"delivery, DSO cost {sum(r.dso_cost_eur for r in engine.records):.2f} EUR, "
          f"{sum(r.n_requests for r in engine.records)} requests, "
          f"{sum(r.n_awards for r in engine.records)} awards (rule {scenario.market.rule}, "
          f"re-planning every {scenario.time.replan_every_slots} slots)")
    if n < setup.n_rounds:
        print(f"  one day extrapolated: {loop / n * setup.n_rounds:8.1f} s (target <= 60 s)")
    else:
        print(f"  one day: {loop:8.1f} s (target <= 60 s)")


def idrija(name: str) -> None:
    scenario = load_scenario(ROOT / "configs" / "idrija.yaml", name)
    with tempfile.TemporaryDirectory() as out:
        summary = run_scenario(scenario, Path(out), progress=False)
    print(f"idrija {name}: {summary['rounds']} rounds, {summary['agents']} agents, "
          f"wall time {summary['wall_time_s']:.1f} s with yardsticks {scenario.yardsticks}")
    for key, value in summary["timings"].items():
        print(f"  {key}: {value}")
    for case, values in summary["cases"].items():
        print(f"  {case}: {values.get('violation_bus_minutes')} violation bus-minutes, "
              f"DSO cost {values.get('dso_cost_eur', 0.0):.2f} EUR")
    print(f"  efficiency vs optimum: {summary['comparison'].get('efficiency_vs_optimum')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds")
    parser.add_argument("--idrija", default=None, help="also time this Idrija scenario")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    if not args.skip_scale:
        scale(args.rounds)
    if args.idrija:
        idrija(args.idrija)


if __name__ == "__main__":
    main()
