"""A gridbid site agent (:mod:`agents`) as a client of the coordinator.

:class:`SiteClientAgent` runs the same decision code as the simulator on a population of
one: it plans its assets against the tariff, bids its true cost of deviating for the DSO's
requests, dispatches its awards and reports per-asset meter values. It satisfies
:class:`service.client.ClientAgent`, so :class:`service.client.AgentClient` drives it against a
live coordinator (``gridbid agent``).

What a real controller reads from its own meters and forecasts (base load, PV per kWp,
outdoor temperature) comes from a :data:`Conditions` callable. :func:`typical_conditions`
is the stand-in used by ``gridbid agent``: a flat base load from the annual consumption, a
clear-sky PV day and Idrija's monthly mean temperatures; a controller in the pilot passes
its own.

Reactive power is not offered through the coordinator: its meter readings carry active
power only, so a reactive award could not be settled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents import PRESETS, FlexPopulation, Horizon, SiteSpec, Tariff
from agents.population import Baseline, BidTable
from market import Award, Bid, Direction, FlexRequest
from service.client import AgentClient, AssetSpec

__all__ = [
    "AgentConfig",
    "Conditions",
    "SiteClientAgent",
    "load_agent_config",
    "run_agent",
    "typical_conditions",
]

Conditions = Callable[[pd.DatetimeIndex], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``timestamps -> (base_kw, pv_kw_per_kwp, t_out_c)``, one value per slot each."""

_IDRIJA_MONTHLY_C = (1.1, 3.3, 5.6, 10.0, 13.9, 19.4, 20.6, 20.6, 15.6, 11.1, 6.1, 2.2)


def typical_conditions(annual_load_kwh: float) -> Conditions:
    """A stand-in feed: flat base load, clear-sky PV (peak 0.7 kW/kWp), Idrija's monthly
    mean temperature with a ±4 °C daily swing (../shared/IDRIJA.md)."""

    def conditions(timestamps: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = timestamps.tz_convert("Europe/Ljubljana")
        hour = np.asarray(local.hour + local.minute / 60.0, dtype=float)
        day_length = 12.0 + 3.5 * np.sin((np.asarray(local.dayofyear) - 80) / 365.0 * 2 * np.pi)
        rise = 13.0 - day_length / 2
        pv = 0.7 * np.clip(np.sin((hour - rise) / day_length * np.pi), 0.0, None)
        months = np.asarray(_IDRIJA_MONTHLY_C)[np.asarray(local.month) - 1]
        t_out = months + 4.0 * np.sin((hour - 9.0) / 24.0 * 2 * np.pi)
        return np.full(len(timestamps), annual_load_kwh / 8760.0), pv, t_out

    return conditions


@dataclass
class _Slot:
    baseline: Baseline
    bids: BidTable
    awarded: np.ndarray = field(default_factory=lambda: np.zeros(0))


class SiteClientAgent:
    """One site (a home, the school, a battery, the heating plant) talking to the coordinator.

    Args:
        participant_id: the site's participant id at the coordinator (its seller id).
        bus: pandapower bus of the site.
        spec: the site's assets and behaviour (an :data:`agents.PRESETS` entry or its own).
        conditions: the site's own view of its base load, PV and outdoor temperature.
        tariff: the retail tariff it optimises against.
        seed: seed of its forecast noise.
        horizon_slots: how far it plans ahead.
        slot_minutes: the market's slot length.
    """

    def __init__(
        self,
        participant_id: str,
        bus: int,
        spec: SiteSpec,
        conditions: Conditions,
        *,
        tariff: Tariff | None = None,
        seed: int = 0,
        horizon_slots: int = 96,
        slot_minutes: int = 15,
    ) -> None:
        self.participant_id = participant_id
        self.bus = bus
        self.population = FlexPopulation.from_specs([participant_id], [bus], [spec], seed=seed)
        self.conditions = conditions
        self.tariff = tariff or Tariff()
        self.horizon_slots = horizon_slots
        self.slot = timedelta(minutes=slot_minutes)
        self.slots: dict[datetime, _Slot] = {}

    def _asset_id(self, kind: str) -> str:
        return f"{self.participant_id}-{kind}"

    def assets(self) -> Sequence[AssetSpec]:
        """Each store and the PV (if any), with its rating."""
        pop = self.population
        specs = [
            AssetSpec(self._asset_id(kind), self.bus, float(group.params["p_max_kw"][0]), kind)
            for kind, group in pop.groups.items()
        ]
        if pop.pv_kwp[0] > 0:
            specs.append(AssetSpec(self._asset_id("pv"), self.bus, float(pop.pv_kva[0]), "pv"))
        return specs

    def _plan(self, t_start: datetime) -> Baseline:
        times = pd.date_range(t_start, periods=self.horizon_slots, freq=self.slot)
        base, pv, t_out = self.conditions(times)
        first = int(t_start.timestamp() // self.slot.total_seconds())
        horizon = Horizon.from_timestamps(times, t_out, self.tariff, first_slot=first)
        return self.population.plan(horizon, base[None, :], pv[None, :])

    def bids_for(self, requests: Sequence[FlexRequest], t_start: datetime) -> list[Bid]:
        """Plan from the latest state and bid for the requests of the slot at ``t_start``."""
        baseline = self._plan(t_start)
        table = self.population.bids(
            baseline, requests, t_start, t_start + self.slot, baseline.horizon.first_slot
        )
        self.slots[t_start] = _Slot(baseline, table, np.zeros(len(table)))
        book = table.book
        return [
            Bid(
                bid_id=str(book.bid_id[row]),
                seller_id=self.participant_id,
                asset_id=str(book.asset_id[row]),
                bus=self.bus,
                direction=Direction.DOWN if table.sign[row] > 0 else Direction.UP,
                p_kw=float(book.p_kw[row]),
                price_eur_per_kwh=float(book.price_eur_per_kwh[row]),
                t_start=t_start,
                t_end=t_start + self.slot,
            )
            for row in range(len(table))
            if not table.is_reactive[row]
        ]

    def on_awards(self, awards: Sequence[Award]) -> None:
        """Remember what was awarded, bid by bid, to dispatch it."""
        for award in awards:
            slot = self.slots.get(award.t_start)
            if slot is None:
                continue
            rows = np.flatnonzero(slot.bids.book.bid_id == award.bid_id)
            if len(rows):
                slot.awarded[rows[0]] += award.p_kw

    def _slot(self, t_start: datetime) -> _Slot:
        """The slot's plan and bids (planned now, without bids, if it was never bid on)."""
        slot = self.slots.get(t_start)
        if slot is None:
            baseline = self._plan(t_start)
            slot = _Slot(
                baseline, self.population.bids(baseline, [], t_start, t_start + self.slot, 0)
            )
            self.slots[t_start] = slot
        return slot

    def baselines(self, t_start: datetime) -> dict[str, float]:
        """The plan's first slot per asset: each store's power, the PV's forecast output
        (negative: generation)."""
        plan = self._slot(t_start).baseline
        values = {
            self._asset_id(kind): float(store.p_kw[0, 0])
            for kind, store in plan.store_plans.items()
        }
        if self.population.pv_kwp[0] > 0:
            values[self._asset_id("pv")] = -float(plan.pv_kw[0, 0])
        return values

    def meter(self, t_start: datetime) -> dict[str, float]:
        """Dispatch the slot (plan plus awards), advance the assets, report each asset's
        metered power (the baseline was declared before gate closure)."""
        slot = self._slot(t_start)
        del self.slots[t_start]
        base, pv, _ = self.conditions(pd.DatetimeIndex([t_start]))
        table = slot.bids
        awarded = slot.awarded if len(table) else None
        self.population.deliver(slot.baseline, table if len(table) else None, awarded, base, pv)
        values = {}
        for kind, plan in slot.baseline.store_plans.items():
            planned = float(plan.p_kw[0, 0])
            rows = table.asset == kind
            extra = float((table.sign[rows] * slot.awarded[rows]).sum()) if len(table) else 0.0
            values[self._asset_id(kind)] = planned + extra
        if self.population.pv_kwp[0] > 0:
            pv_true = min(
                float(self.population.pv_kwp[0] * pv[0]), float(self.population.pv_kva[0])
            )
            rows = table.asset == "pv"
            curtailed = float(slot.awarded[rows].sum()) if len(table) else 0.0
            values[self._asset_id("pv")] = -max(pv_true - curtailed, 0.0)
        return values


class AgentConfig(BaseModel):
    """``gridbid agent --config FILE``: which site this controller is.

    Attributes:
        participant_id: its id at the coordinator (the key must belong to it).
        bus: its pandapower bus.
        preset: an :data:`agents.PRESETS` name; ``overrides`` change any of its parameters.
        seed: seed of its forecast noise.
        hours: how long to run, in coordinator time.
        poll_s: how often to poll the coordinator, in seconds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    participant_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    bus: int = Field(ge=0)
    preset: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)
    hours: float = Field(24.0, gt=0)
    poll_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _known_preset(self) -> AgentConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; known: {sorted(PRESETS)}")
        return self

    def spec(self) -> SiteSpec:
        """The preset with the overrides applied."""
        return PRESETS[self.preset].with_overrides(self.overrides)


def load_agent_config(path: Path) -> AgentConfig:
    """Read and check an agent YAML; errors name the file and the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read: {error}") from error
    try:
        config = AgentConfig.model_validate(data)
        config.spec()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ValueError(f"{path}: {problems}") from None
    return config


async def run_agent(config: AgentConfig, url: str, key: str) -> None:
    """Run the configured site against the coordinator at ``url`` for ``config.hours``."""
    spec = config.spec()
    agent = SiteClientAgent(
        config.participant_id,
        config.bus,
        spec,
        typical_conditions(spec.annual_load_kwh),
        seed=config.seed,
    )
    async with AgentClient(url, key) as client:
        until = await client.now() + timedelta(hours=config.hours)
        await client.run(agent, until=until, poll_s=config.poll_s)
