"""A whole run: build, step the model, compute the yardsticks, metrics, results and report."""

from __future__ import annotations

import json
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
from sim.model import FlexModel, PopulationFactory
from sim.optimum import solve_optimum
from sim.report import write_report
from sim.results import (
    agent_table,
    bus_table,
    package_versions,
    timeseries_table,
    timing_table,
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
        "overloaded_branch_slots": int(
            (loading > engine.setup.scenario.dso.loading_max_percent).sum()
        ),
        "losses_mwh": float(sum(r.losses_mw for r in engine.records) * minutes / 60.0),
        "agents_bill_eur": bills,
        "agents_stored_value_eur": stored,
        "agents_cost_eur": bills - stored,
        "agents_revenue_eur": float(sum(r.revenue_eur.sum() for r in engine.records)),
        "agents_flex_cost_eur": float(sum(r.flex_cost_eur.sum() for r in engine.records)),
        "dso_cost_eur": float(sum(r.dso_cost_eur for r in engine.records)),
        "requests": n_requests,
        "bids": n_bids,
        "awards": n_awards,
        "messages": n_requests + n_bids + n_awards,
        "unserved_dv_pu": float(sum(r.unserved_dv_pu for r in engine.records)),
    }


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    progress: bool = True,
    report: bool = True,
    population_factory: PopulationFactory | None = None,
) -> dict[str, Any]:
    """Simulate ``scenario`` and write its results into ``out``; return the summary.

    ``population_factory`` chooses where the sites' work runs (default: in this process;
    :func:`sim.ray_backend.sharded_factory` shards it over Ray actors).
    """
    started = time.perf_counter()
    timings: dict[str, Any] = {}
    setup = build(scenario)
    model = FlexModel(scenario, setup, population_factory)
    band = (scenario.dso.v_min_pu, scenario.dso.v_max_pu)
    minutes = scenario.time.slot_minutes
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{scenario.name}: market rounds", total=setup.n_rounds)
        while not model.done:
            model.step()
            bar.advance(task)

    cases = {"market": _case_metrics(model.market, band, minutes)}
    tables = {
        "timeseries": [timeseries_table("market", model.market, *band)],
        "timings": [timing_table("market", model.market)],
        "agents": [agent_table("market", model.market)],
        "bus_voltages": [
            bus_table(
                "market",
                np.array([r.vm_pu for r in model.market.records]),
                setup.network.bus_ids,
                setup.timestamps,
            )
        ],
    }
    nc = model.no_control
    if nc is not None:
        cases["no_control"] = _case_metrics(nc, band, minutes)
        tables["timeseries"].append(timeseries_table("no_control", nc, *band))
        tables["agents"].append(agent_table("no_control", nc))
        tables["timings"].append(timing_table("no_control", nc))
        tables["bus_voltages"].append(
            bus_table(
                "no_control",
                np.array([r.vm_pu for r in nc.records]),
                setup.network.bus_ids,
                setup.timestamps,
            )
        )
    if "optimum" in scenario.yardsticks:
        if nc is None:
            raise ValueError("yardsticks: 'optimum' needs 'no_control' (its linearisation point)")
        t0 = time.perf_counter()
        nc_p = np.array([r.metered_kw for r in nc.records])
        per_bus = [
            nc._per_bus(k, r.metered_kw, setup.base_kw[:, k] * setup.q_per_p)
            for k, r in enumerate(nc.records)
        ]
        p_bus = np.array([p for p, _ in per_bus])
        q_bus = np.array([q for _, q in per_bus])
        flows = powerflow(setup.network, p_bus, q_bus)
        free = solve_optimum(setup, flows, nc_p, enforce_band=False)
        best = solve_optimum(setup, flows, nc_p, enforce_band=True)
        stats = violation_stats(best.vm_pu, *band, minutes)
        cases["optimum"] = {
            **stats,
            "linearised": True,
            "agents_cost_eur": best.cost_eur,
            "agents_cost_unconstrained_eur": free.cost_eur,
        }
        timings["optimum_s"] = time.perf_counter() - t0
        tables["bus_voltages"].append(
            bus_table("optimum", best.vm_pu, setup.network.bus_ids, setup.timestamps)
        )
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
    }
    frames = {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()}
    frames["awards"] = pd.DataFrame(
        [row for r in model.market.records for row in r.awards],
        columns=[
            "round",
            "request_id",
            "agent_id",
            "asset_id",
            "bus",
            "direction",
            "p_kw",
            "q_kvar",
            "price_eur_per_kwh",
            "price_eur_per_kvarh",
        ],
    )
    write_results(out, summary, frames)
    if report:
        write_report(out, summary, frames)
    for engine in (model.market, model.no_control):
        if engine is not None:
            timings[f"{'market' if engine.market else 'no_control'}_phases_s"] = {
                p: float(sum(r.phase_s[p] for r in engine.records)) for p in PHASES
            }
    timings["total_s"] = time.perf_counter() - started
    (out / "wall_time.json").write_text(json.dumps(timings, indent=2) + "\n")
    return {**summary, "wall_time_s": timings["total_s"], "timings": timings}


def _compare(cases: dict[str, dict], penalty: float) -> dict[str, Any]:
    """The market against the yardsticks.

    * total cost of each case: the sites' energy cost (bills, wear, minus the value left in
      their stores) plus ``penalty`` per pu·h of band violation;
    * cost of resolving the violations: for the market, what the delivered flexibility cost
      the sellers by their own valuation (their truthful cost curves); for the optimum, its
      cost with the band minus its cost without; efficiency = optimum's / market's (1 is as
      cheap as the central optimum with full information);
    * the DSO's procurement cost and the sellers' surplus (revenue minus their cost).
    """
    result: dict[str, Any] = {}
    market = cases["market"]
    for name, case in cases.items():
        result[f"{name}_total_cost_eur"] = (
            case["agents_cost_eur"] + penalty * case["violation_pu_h"]
        )
    result["market_resolving_cost_eur"] = market["agents_flex_cost_eur"]
    result["dso_procurement_cost_eur"] = market["dso_cost_eur"]
    result["sellers_surplus_eur"] = market["agents_revenue_eur"] - market["agents_flex_cost_eur"]
    nc = cases.get("no_control")
    if nc is not None:
        base = nc["violation_bus_minutes"]
        result["violation_bus_minutes_removed_share"] = (
            1.0 - market["violation_bus_minutes"] / base if base else None
        )
        result["agents_cost_change_vs_no_control_eur"] = (
            market["agents_cost_eur"] - nc["agents_cost_eur"]
        )
    opt = cases.get("optimum")
    if opt is not None:
        optimum_resolving = opt["agents_cost_eur"] - opt["agents_cost_unconstrained_eur"]
        result["optimum_resolving_cost_eur"] = optimum_resolving
        spent = result["market_resolving_cost_eur"]
        result["efficiency_vs_optimum"] = optimum_resolving / spent if spent > 1e-9 else None
    return result
