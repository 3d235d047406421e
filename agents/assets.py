"""Each flexible asset kind written as a population of energy stores (:mod:`agents.store`).

One function per kind turns the kind's parameter arrays (one row per asset) and the
horizon's exogenous inputs into :class:`~agents.store.StoreRows`, and converts the store's
state back to the asset's own quantity (state of charge, indoor temperature, tank heat).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.presets import BatterySpec, EVSpec, HeatPumpSpec, TankSpec
from agents.store import StoreRows
from agents.tariff import Tariff

__all__ = ["ASSET_KINDS", "AssetGroup", "Horizon", "stack_specs"]

ASSET_KINDS = ("tank", "heat_pump", "ev", "battery")
"""Planning order within a site: each kind plans against the site's net load including the
plans of the kinds before it (sequential self-optimisation, see :mod:`agents.population`)."""

_SPEC_TYPES = {"battery": BatterySpec, "heat_pump": HeatPumpSpec, "ev": EVSpec, "tank": TankSpec}


@dataclass(frozen=True)
class Horizon:
    """The exogenous inputs every asset of a population sees for one plan.

    Attributes:
        first_slot: absolute index of the first slot (slots counted from the run's start).
        dt_h: slot length in hours.
        local_hour: local time of day of each slot start, in hours, shape (h,).
        t_out_c: forecast outdoor temperature per slot, shape (h,).
        import_eur_per_kwh: retail import price per slot, shape (h,).
        export_eur_per_kwh: export price per slot, shape (h,).
    """

    first_slot: int
    dt_h: float
    local_hour: np.ndarray
    t_out_c: np.ndarray
    import_eur_per_kwh: np.ndarray
    export_eur_per_kwh: np.ndarray

    @property
    def length(self) -> int:
        """Number of slots."""
        return len(self.local_hour)

    @classmethod
    def from_timestamps(
        cls,
        timestamps: pd.DatetimeIndex,
        t_out_c: np.ndarray,
        tariff: Tariff,
        first_slot: int = 0,
        local_tz: str = "Europe/Ljubljana",
    ) -> "Horizon":
        """The horizon of UTC slot starts ``timestamps`` (evenly spaced) under ``tariff``."""
        if len(timestamps) < 2:
            raise ValueError(f"timestamps: need at least 2 slots, got {len(timestamps)}")
        dt_h = (timestamps[1] - timestamps[0]).total_seconds() / 3600.0
        local = timestamps.tz_convert(local_tz)
        t_out = np.asarray(t_out_c, dtype=float)
        if t_out.shape != (len(timestamps),):
            raise ValueError(
                f"t_out_c: shape {t_out.shape} does not match {len(timestamps)} timestamps"
            )
        return cls(
            first_slot=first_slot,
            dt_h=dt_h,
            local_hour=np.asarray(local.hour + local.minute / 60.0, dtype=float),
            t_out_c=t_out,
            import_eur_per_kwh=tariff.import_price(timestamps),
            export_eur_per_kwh=tariff.export_price(timestamps),
        )


def stack_specs(specs: list, kind: str) -> dict[str, np.ndarray]:
    """Turn a list of one kind's pydantic specs into one float array per field."""
    fields = _SPEC_TYPES[kind].model_fields
    return {name: np.array([getattr(s, name) for s in specs], dtype=float) for name in fields}


@dataclass
class AssetGroup:
    """All assets of one kind in a population.

    Attributes:
        kind: one of :data:`ASSET_KINDS`.
        site: row of the owning site in the population, shape (m,).
        params: the kind's parameters, one array per field, shape (m,) each.
        e_kwh: current state of each store (kWh of electricity or heat), shape (m,).
    """

    kind: str
    site: np.ndarray
    params: dict[str, np.ndarray]
    e_kwh: np.ndarray

    @classmethod
    def from_specs(cls, kind: str, site: np.ndarray, specs: list) -> "AssetGroup":
        """Build a group from pydantic specs, with each store at its initial state."""
        params = stack_specs(specs, kind)
        group = cls(
            kind=kind,
            site=np.asarray(site, dtype=np.intp),
            params=params,
            e_kwh=np.zeros(len(specs)),
        )
        group.e_kwh = group.initial_state()
        return group

    def __len__(self) -> int:
        return len(self.site)

    def subset(self, mask: np.ndarray, site_map: np.ndarray) -> "AssetGroup":
        """The assets whose site is kept by ``mask``; ``site_map`` renumbers kept sites."""
        keep = mask[self.site]
        return AssetGroup(
            kind=self.kind,
            site=site_map[self.site[keep]],
            params={name: value[keep] for name, value in self.params.items()},
            e_kwh=self.e_kwh[keep].copy(),
        )

    def initial_state(self) -> np.ndarray:
        """State of each store at the start of a run, from its spec."""
        p = self.params
        if self.kind == "battery":
            return p["soc_init"] * p["capacity_kwh"]
        if self.kind == "heat_pump":
            return (p["t_init_c"] - p["t_min_c"]) * p["c_kwh_per_k"]
        if self.kind == "ev":
            return p["soc_init"] * p["capacity_kwh"]
        return p["soc_init"] * p["capacity_kwh"]

    def observable(self) -> np.ndarray:
        """The asset's own quantity: SoC (0–1), indoor temperature (°C) or tank SoC (0–1)."""
        p = self.params
        if self.kind == "heat_pump":
            return p["t_min_c"] + self.e_kwh / p["c_kwh_per_k"]
        return self.e_kwh / p["capacity_kwh"]

    def cop(self, t_out_c: np.ndarray) -> np.ndarray:
        """Heat pump COP per asset and slot (linear in outdoor temperature, clipped)."""
        p = self.params
        cop = p["cop_at_7c"][:, None] + p["cop_slope_per_k"][:, None] * (t_out_c[None, :] - 7.0)
        return np.clip(cop, p["cop_min"][:, None], p["cop_max"][:, None])

    def ev_present(self, local_hour: np.ndarray) -> np.ndarray:
        """Whether each car is plugged in during each slot, shape (m, h)."""
        arrive = self.params["arrival_hour"][:, None]
        depart = self.params["departure_hour"][:, None]
        hour = local_hour[None, :]
        away = np.where(
            depart < arrive, (hour >= depart) & (hour < arrive), (hour >= depart) | (hour < arrive)
        )
        return ~away

    def heat_demand_kw(self, t_out_c: np.ndarray) -> np.ndarray:
        """The district-heating demand each plant serves (degree-hour model), shape (m, h)."""
        p = self.params
        cold = np.clip(15.0 - t_out_c[None, :], 0.0, None)
        return p["heat_base_kw"][:, None] + p["heat_ua_kw_per_k"][:, None] * cold

    def store_rows(self, horizon: Horizon) -> StoreRows:
        """The group's stores over ``horizon`` (see :mod:`agents.store` for the model)."""
        m, h, dt = len(self), horizon.length, horizon.dt_h
        p = self.params
        ones = np.ones((m, h))
        mean_import = float(np.mean(horizon.import_eur_per_kwh))
        if self.kind == "battery":
            cap = p["capacity_kwh"][:, None]
            return StoreRows(
                e_min_kwh=np.broadcast_to(p["soc_min"][:, None] * cap, (m, h + 1)),
                e_max_kwh=np.broadcast_to(p["soc_max"][:, None] * cap, (m, h + 1)),
                p_min_kw=-p["p_max_kw"][:, None] * ones,
                p_max_kw=p["p_max_kw"][:, None] * ones,
                eta_in=p["eta_charge"][:, None] * ones,
                eta_out=p["eta_discharge"],
                retention=np.ones(m),
                drain_kwh=np.zeros((m, h)),
                spill=np.zeros(m, dtype=bool),
                wear_eur_per_kwh=p["wear_eur_per_kwh"],
                terminal_eur_per_kwh=mean_import * p["eta_discharge"],
            )
        if self.kind == "heat_pump":
            c = p["c_kwh_per_k"]
            cop = self.cop(horizon.t_out_c)
            band = ((p["t_max_c"] - p["t_min_c"]) * c)[:, None]
            loss_at_min = p["ua_kw_per_k"][:, None] * (
                p["t_min_c"][:, None] - horizon.t_out_c[None, :]
            )
            return StoreRows(
                e_min_kwh=np.zeros((m, h + 1)),
                e_max_kwh=np.broadcast_to(band, (m, h + 1)),
                p_min_kw=np.zeros((m, h)),
                p_max_kw=p["p_max_kw"][:, None] * ones,
                eta_in=cop,
                eta_out=np.ones(m),
                retention=1.0 - p["ua_kw_per_k"] * dt / c,
                drain_kwh=(loss_at_min - p["gains_kw"][:, None]) * dt,
                spill=np.ones(m, dtype=bool),
                wear_eur_per_kwh=np.zeros(m),
                terminal_eur_per_kwh=mean_import / cop.mean(axis=1),
            )
        if self.kind == "ev":
            cap = p["capacity_kwh"][:, None]
            present = self.ev_present(horizon.local_hour)
            away_h = np.where(
                p["departure_hour"] < p["arrival_hour"],
                p["arrival_hour"] - p["departure_hour"],
                24.0 - p["departure_hour"] + p["arrival_hour"],
            )
            drain = np.where(present, 0.0, (p["trip_kwh"] / away_h)[:, None] * dt)
            e_min = np.zeros((m, h + 1))
            leaves = present[:, :-1] & ~present[:, 1:]
            # A car that cannot reach its target before it leaves (it came home late and
            # empty) aims for what it can reach, less one slot of charging as a margin
            # for the planning grid; a car must never be planned into an impossible state.
            charge = np.where(present, p["p_max_kw"][:, None] * p["eta"][:, None] * dt, 0.0)
            reachable = self.e_kwh[:, None] + np.cumsum(charge - drain, axis=1)[:, :-1]
            margin = (p["p_max_kw"] * p["eta"] * dt)[:, None]
            target = np.minimum(p["target_soc"][:, None] * cap, reachable - margin)
            e_min[:, 1:h][leaves] = np.clip(target, 0.0, None)[leaves]
            return StoreRows(
                e_min_kwh=e_min,
                e_max_kwh=np.broadcast_to(cap, (m, h + 1)),
                p_min_kw=np.zeros((m, h)),
                p_max_kw=np.where(present, p["p_max_kw"][:, None], 0.0),
                eta_in=p["eta"][:, None] * ones,
                eta_out=np.ones(m),
                retention=np.ones(m),
                drain_kwh=drain,
                spill=np.zeros(m, dtype=bool),
                wear_eur_per_kwh=np.zeros(m),
                terminal_eur_per_kwh=mean_import * p["eta"],
            )
        if self.kind == "tank":
            cap = p["capacity_kwh"][:, None]
            demand = self.heat_demand_kw(horizon.t_out_c)
            return StoreRows(
                e_min_kwh=np.broadcast_to(p["soc_min"][:, None] * cap, (m, h + 1)),
                e_max_kwh=np.broadcast_to(p["soc_max"][:, None] * cap, (m, h + 1)),
                p_min_kw=np.zeros((m, h)),
                p_max_kw=p["p_max_kw"][:, None] * ones,
                eta_in=p["efficiency"][:, None] * ones,
                eta_out=np.ones(m),
                retention=p["retention_per_h"] ** dt,
                drain_kwh=p["electric_share"][:, None] * demand * dt,
                spill=np.zeros(m, dtype=bool),
                wear_eur_per_kwh=np.zeros(m),
                terminal_eur_per_kwh=mean_import / p["efficiency"],
            )
        raise ValueError(f"kind: unknown asset kind {self.kind!r}; known: {ASSET_KINDS}")
