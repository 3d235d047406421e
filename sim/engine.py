"""One market round after another: the loop of DESIGN.md on simulated meters.

:class:`RoundEngine` owns one population of sites and the DSO and advances one slot per
:meth:`RoundEngine.step`: plan → DSO need → bids → clearing → dispatch with the real load
and PV → power flow → settlement → records. With ``market=False`` it is the *no control*
yardstick: the same agents self-optimise, the DSO only watches. All heavy work is numpy over
the population; the engine keeps plain lists of per-round records that
:mod:`sim.results` turns into tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from agents import DSOAgent, FlexPopulation, Horizon
from market import clear, settle_arrays
from sim.build import Setup

__all__ = ["PHASES", "PopulationBackend", "RoundEngine", "RoundRecord"]

PHASES = ("plan", "grid_need", "bids", "clearing", "dispatch", "powerflow", "settlement")


class PopulationBackend(Protocol):
    """What the engine needs of the sites: :class:`~agents.FlexPopulation`'s round methods.

    ``groups`` holds the assets' state after the last delivered round (for the terminal
    valuation of the stores).
    """

    groups: dict

    def __len__(self) -> int: ...

    def plan(
        self, horizon: Horizon, base_kw_true: np.ndarray, pv_kw_per_kwp_true: np.ndarray
    ) -> Any: ...

    def bids(
        self, baseline: Any, requests: list, t_start: datetime, t_end: datetime, round_id: int
    ) -> Any: ...

    def deliver(
        self,
        baseline: Any,
        bids: Any,
        awarded_kw: np.ndarray | None,
        base_kw_true: np.ndarray,
        pv_kw_per_kwp_true: np.ndarray,
    ) -> Any: ...


@dataclass
class RoundRecord:
    """Everything one round produced (per-agent arrays follow the population's rows)."""

    round: int
    vm_pu: np.ndarray
    loading_percent: np.ndarray
    losses_mw: float
    baseline_kw: np.ndarray
    metered_kw: np.ndarray
    bill_eur: np.ndarray
    flex_cost_eur: np.ndarray
    revenue_eur: np.ndarray
    awarded_kw: np.ndarray
    n_requests: int
    requested_dv_pu: float
    n_bids: int
    n_awards: int
    dso_cost_eur: float
    unserved_dv_pu: float
    clearing_rounds: int
    awards: list[dict] = field(default_factory=list)
    phase_s: dict[str, float] = field(default_factory=dict)


class RoundEngine:
    """Runs the rounds of one case (the market, or no control) of a :class:`Setup`."""

    def __init__(
        self, setup: Setup, *, market: bool, population: PopulationBackend | None = None
    ) -> None:
        """Build the case's own population (same specs and seed in every case).

        Args:
            setup: the scenario made concrete.
            market: run the market (``False``: the no-control yardstick).
            population: where the sites plan, bid and deliver; default a local
                :class:`~agents.FlexPopulation` of the setup's sites. Another backend (such
                as :class:`sim.ray_backend.ShardedPopulation`) must decide exactly as it.
        """
        self.setup = setup
        self.market = market
        scenario = setup.scenario
        self.population = population or FlexPopulation.from_specs(
            setup.agent_ids,
            setup.bus,
            setup.specs,
            seed=scenario.seed,
            replan_every=scenario.time.replan_every_slots,
        )
        self.dso = DSOAgent(setup.network, scenario.dso)
        self.site_pos = setup.network.bus_position(setup.bus)
        self.round = 0
        self.records: list[RoundRecord] = []
        self.dt_h = scenario.time.slot_minutes / 60.0

    @property
    def done(self) -> bool:
        """Whether every round of the window has run."""
        return self.round >= self.setup.n_rounds

    def _horizon(self, k: int) -> Horizon:
        s = self.setup
        h = s.scenario.time.horizon_slots
        return Horizon.from_timestamps(
            s.timestamps[k : k + h], s.t_out_c[k : k + h], s.scenario.tariff, first_slot=k
        )

    def _per_bus(self, k: int, site_p_kw: np.ndarray, site_q_kvar: np.ndarray):
        s = self.setup
        p = s.other_p_mw[k].copy()
        q = s.other_q_mvar[k].copy()
        np.add.at(p, self.site_pos, site_p_kw / 1000.0)
        np.add.at(q, self.site_pos, site_q_kvar / 1000.0)
        return p, q

    def step(self) -> RoundRecord:
        """Run one round (one slot) and return its record."""
        s, k, pop = self.setup, self.round, self.population
        h = s.scenario.time.horizon_slots
        t_start = s.timestamps[k].to_pydatetime()
        t_end = t_start + timedelta(minutes=s.scenario.time.slot_minutes)
        phase: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        clock = time.perf_counter

        t0 = clock()
        horizon = self._horizon(k)
        baseline = pop.plan(horizon, s.base_kw[:, k : k + h], s.pv_kw_per_kwp[:, k : k + h])
        announced = baseline.site_p_kw[:, 0]
        phase["plan"] = clock() - t0

        requests, bids, result, awarded = [], None, None, None
        if self.market:
            t0 = clock()
            base_q = baseline.base_kw[:, 0] * s.q_per_p
            assessment = self.dso.assess(*self._per_bus(k, announced, base_q))
            requests = self.dso.requests(assessment, t_start, t_end, k)
            phase["grid_need"] = clock() - t0
            if requests:
                t0 = clock()
                bids = pop.bids(baseline, requests, t_start, t_end, k)
                phase["bids"] = clock() - t0
                t0 = clock()
                if len(bids):
                    market = s.scenario.market
                    result = clear(market.rule, requests, bids.book, market.params)
                    columns = result.award_arrays()
                    awarded = np.zeros(len(bids))
                    np.add.at(awarded, columns["book_row"], columns["p_kw"] + columns["q_kvar"])
                phase["clearing"] = clock() - t0

        t0 = clock()
        real_base = s.base_kw[:, k]
        delivery = pop.deliver(baseline, bids, awarded, real_base, s.pv_kw_per_kwp[:, k])
        phase["dispatch"] = clock() - t0

        t0 = clock()
        q_site = real_base * s.q_per_p + delivery.q_kvar
        # The DSO checks the real voltages after delivery (its own power flow on the meters).
        try:
            flow = self.dso.assess(*self._per_bus(k, delivery.p_kw, q_site)).result
        except RuntimeError as error:
            total = 0.0 if awarded is None else float(awarded.sum())
            raise RuntimeError(
                f"round {k} ({t_start:%Y-%m-%d %H:%M} UTC): the grid has no power-flow "
                f"solution after delivery of {total:.0f} kW/kvar of awards under rule "
                f"{s.scenario.market.rule!r}: {error}"
            ) from error
        phase["powerflow"] = clock() - t0

        t0 = clock()
        revenue = np.zeros(len(pop))
        awarded_site = np.zeros(len(pop))
        dso_cost = 0.0
        award_rows: list[dict] = []
        if result is not None and result.awards:
            revenue, awarded_site, dso_cost = self._settle(
                bids, result, announced, delivery.p_kw, awarded
            )
            award_rows = [
                {
                    "round": k,
                    "request_id": a.request_id,
                    "agent_id": a.seller_id,
                    "asset_id": a.asset_id,
                    "bus": a.bus,
                    "direction": a.direction.value,
                    "p_kw": a.p_kw,
                    "q_kvar": a.q_kvar,
                    "price_eur_per_kwh": a.price_eur_per_kwh,
                    "price_eur_per_kvarh": a.price_eur_per_kvarh,
                }
                for a in result.awards
            ]
        phase["settlement"] = clock() - t0

        record = RoundRecord(
            round=k,
            vm_pu=flow.vm_pu,
            loading_percent=flow.loading_percent,
            losses_mw=float(flow.losses_mw),
            baseline_kw=announced,
            metered_kw=delivery.p_kw,
            bill_eur=delivery.bill_eur,
            flex_cost_eur=delivery.flex_cost_eur,
            revenue_eur=revenue,
            awarded_kw=awarded_site,
            n_requests=len(requests),
            requested_dv_pu=float(sum(r.dv_required_pu for r in requests)),
            n_bids=0 if bids is None else len(bids),
            n_awards=0 if result is None else len(result.awards),
            dso_cost_eur=dso_cost,
            unserved_dv_pu=0.0 if result is None else float(sum(result.unserved_dv_pu.values())),
            clearing_rounds=0 if result is None else result.rounds,
            awards=award_rows,
            phase_s=phase,
        )
        self.records.append(record)
        self.round += 1
        return record

    def _settle(self, bids, result, announced, metered, awarded):
        """Settle each site's awards against its meter and announced baseline.

        A site's delivery is measured at its meter: delivered = metered − baseline for
        ``down`` (more consumption), baseline − metered for ``up``. A site's awards are
        netted into one direction and settled at their quantity-weighted price with the
        market's settlement rule (shortfall penalised at 1.5x the price).
        """
        n = len(self.population)
        signed = np.zeros(n)
        value = np.zeros(n)
        price_kw = np.zeros(len(bids))
        columns = result.award_arrays()
        np.add.at(
            price_kw,
            columns["book_row"],
            columns["price_eur_per_kwh"] + columns["price_eur_per_kvarh"],
        )
        active = ~bids.is_reactive
        np.add.at(signed, bids.site[active], (bids.sign * awarded)[active])
        np.add.at(value, bids.site, awarded * price_kw)
        sites = np.flatnonzero((np.abs(signed) > 1e-9) | (value > 0))
        volume = np.zeros(n)
        np.add.at(volume, bids.site, awarded)
        price = np.where(volume[sites] > 0, value[sites] / np.maximum(volume[sites], 1e-12), 0.0)
        direction = np.where(signed[sites] >= 0, 1.0, -1.0)
        delivered = direction * (metered[sites] - announced[sites])
        reactive_only = np.abs(signed[sites]) <= 1e-9
        arrays = settle_arrays(
            np.where(reactive_only, 0.0, np.abs(signed[sites])),
            np.where(reactive_only, 0.0, delivered),
            price,
            self.dt_h,
            awarded_q_kvar=np.where(reactive_only, volume[sites], 0.0),
            delivered_q_kvar=np.where(reactive_only, volume[sites], 0.0),
            price_eur_per_kvarh=price,
        )
        revenue = np.zeros(n)
        revenue[sites] = arrays.net_eur
        awarded_site = np.zeros(n)
        awarded_site[sites] = np.abs(signed[sites])
        return revenue, awarded_site, float(arrays.net_eur.sum())
