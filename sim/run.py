"""A whole run: build, step the model, compute the yardsticks, metrics, results and report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from grid import powerflow
from sim.build import build
from sim.engine import PHASES, RoundEngine
from sim.metrics import stored_value_eur, violation_stats
from sim.model import FlexModel
from sim.optimum import solve_optimum
from sim.results import (
    agent_table,
    bus_table,
    package_versions,
    timeseries_table,
    write_results,
)
from sim.scenario import Scenario

__all__ = ["run_scenario"]


def _case_metrics(engine: RoundEngine, band: tuple[float, float], minutes: int) -> dict[str, Any]:
    vm = np.array([r.vm_pu for r in engine.records])
    stats = violation_stats(vm, *band, minutes)
    bills = float(sum(r.bill_eur.sum() for r in engine.records))
    stored = stored_value_eur(engine.setup, engine.population)
    loading = np.array([r.loading_percent for r in engine.records])
    n_requests = sum(r.n_requests for r in engine.records)
    n_bids = sum(r.n_bids for r in engine.records)
    n_awards = sum(r.n_awards for r in engine.records)
    return {
        **stats,
        "overloaded_branch_slots": int((loading > engine.setup.scenario.dso.loading_max_percent)
                                       .sum()),
        "losses_mwh": float(sum(r.losses_mw for r in engine.records) * minutes / 60.0),
        "agents_bill_eur": bills,
        "agents_stored_value_eur": stored,
        "agents_cost_eur": bills - stored,
        "agents_revenue_eur": float(sum(r.revenue_eur.sum() for r in engine.records)),
        "dso_cost_eur": float(sum(r.dso_cost_eur for r in engine.records)),
        "requests": n_requests,
        "bids": n_bids,
        "awards": n_awards,
        "messages": n_requests + n_bids + n_awards,
        "unserved_dv_pu": float(sum(r.unserved_dv_pu for r in engine.records)),
        "wall_time_s": {p: float(sum(r.phase_s[p] for r in engine.records)) for p in PHASES},
    }


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Simulate ``scenario`` and write its results into ``out``; return the summary."""
    started = time.perf_counter()
    setup = build(scenario)
    model = FlexModel(scenario, setup)
    band = (scenario.dso.v_min_pu, scenario.dso.v_max_pu)
    minutes = scenario.time.slot_minutes
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{scenario.name}: market rounds", total=setup.n_rounds)
        while not model.done:
            model.step()
            bar.advance(task)

    cases = {"market": _case_metrics(model.market, band, minutes)}
    tables = {
        "timeseries": [timeseries_table("market", model.market, *band)],
        "agents": [agent_table("market", model.market)],
        "bus_voltages": [bus_table("market", np.array([r.vm_pu for r in model.market.records]),
                                   setup.network.bus_ids, setup.timestamps)],
    }
    nc = model.no_control
    if nc is not None:
        cases["no_control"] = _case_metrics(nc, band, minutes)
        tables["timeseries"].append(timeseries_table("no_control", nc, *band))
        tables["agents"].append(agent_table("no_control", nc))
        tables["bus_voltages"].append(bus_table(
            "no_control", np.array([r.vm_pu for r in nc.records]), setup.network.bus_ids,
            setup.timestamps))
    if "optimum" in scenario.yardsticks:
        if nc is None:
            raise ValueError("yardsticks: 'optimum' needs 'no_control' (its linearisation point)")
        t0 = time.perf_counter()
        nc_p = np.array([r.metered_kw for r in nc.records])
        p_bus = np.array([nc._per_bus(k, r.metered_kw, setup.base_kw[:, k] * setup.q_per_p)[0]
                          for k, r in enumerate(nc.records)])
        q_bus = np.array([nc._per_bus(k, r.metered_kw, setup.base_kw[:, k] * setup.q_per_p)[1]
                          for k, r in enumerate(nc.records)])
        flows = powerflow(setup.network, p_bus, q_bus)
        free = solve_optimum(setup, flows, nc_p, enforce_band=False)
        best = solve_optimum(setup, flows, nc_p, enforce_band=True)
        stats = violation_stats(best.vm_pu, *band, minutes)
        cases["optimum"] = {
            **stats,
            "linearised": True,
            "agents_cost_eur": best.cost_eur,
            "agents_cost_unconstrained_eur": free.cost_eur,
            "solve_time_s": best.solve_s + free.solve_s,
            "wall_time_s": time.perf_counter() - t0,
        }
        tables["bus_voltages"].append(bus_table("optimum", best.vm_pu, setup.network.bus_ids,
                                                setup.timestamps))
    comparison = _compare(cases, scenario.violation_penalty_eur_per_pu_h)
    summary = {
        "scenario": scenario.name,
        "config_hash": scenario.config_hash(),
        "seed": scenario.seed,
        "grid": scenario.grid.name,
        "rule": scenario.market.rule,
        "band_pu": list(band),
        "agents": setup.n_agents,
        "buses": setup.network.n_bus,
        "rounds": setup.n_rounds,
        "versions": package_versions(),
        "cases": cases,
        "comparison": comparison,
        "wall_time_s": time.perf_counter() - started,
    }
    frames = {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()}
    frames["awards"] = pd.DataFrame(
        [row for r in model.market.records for row in r.awards],
        columns=["round", "request_id", "agent_id", "asset_id", "bus", "direction", "p_kw",
                 "q_kvar", "price_eur_per_kwh", "price_eur_per_kvarh"],
    )
    write_results(out, {k: v for k, v in summary.items() if k != "wall_time_s"}, frames)
    if report:
        from sim.report import write_report

        write_report(out, summary, frames)
    (out / "wall_time.json").write_text(f'{{"wall_time_s": {summary["wall_time_s"]:.3f}}}\n')
    return summary


def _compare(cases: dict[str, dict], penalty: float) -> dict[str, Any]:
    """Efficiency of the market against the yardsticks, on one cost basis."""
    result: dict[str, Any] = {}
    market = cases["market"]
    for name, case in cases.items():
        result[f"{name}_total_cost_eur"] = case["agents_cost_eur"] + penalty * case[
            "violation_pu_h"]
    nc = cases.get("no_control")
    if nc is not None:
        base = nc["violation_bus_minutes"]
        result["violation_minutes_removed_share"] = (
            1.0 - market["violation_bus_minutes"] / base if base else None
        )
        result["market_resolving_cost_eur"] = market["agents_cost_eur"] - nc["agents_cost_eur"]
        result["agents_surplus_eur"] = market["agents_revenue_eur"] - result[
            "market_resolving_cost_eur"]
    opt = cases.get("optimum")
    if opt is not None and nc is not None:
        optimum_resolving = opt["agents_cost_eur"] - opt["agents_cost_unconstrained_eur"]
        result["optimum_resolving_cost_eur"] = optimum_resolving
        market_total = result["market_total_cost_eur"]
        result["efficiency_total_cost"] = (
            result["optimum_total_cost_eur"] / market_total if market_total > 0 else None
        )
    return result
