"""From a scenario to the things a run needs: network, agents, exogenous time series.

Everything here is computed once per run: the network, the population of sites and where
they sit, and for every slot of the window (plus one planning horizon beyond it) the real
base load and PV of each site, the outdoor temperature, and the per-bus load of the net's
elements that are not agents.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents import PVSpec, SiteSpec
from grid import Network, build_network
from grid.profiles import simbench_window
from grid.sources import simbench_net
from sim.scenario import Scenario, ScenarioError

__all__ = ["Setup", "build"]

_LOCAL = "Europe/Ljubljana"
_PROFILE_YEAR = 2016
_REFERENCE_CODE = "1-LV-rural2--2-sw"  # source of the relative load profiles (H0, G1, ...)
_DEFAULT_PQ = float(np.tan(np.arccos(0.97)))


@dataclass(frozen=True)
class Setup:
    """A scenario made concrete.

    Attributes:
        scenario: the scenario.
        network: the grid.
        agent_ids, bus, specs: the sites (one entry per agent).
        timestamps: UTC start of every slot of the window plus one horizon, (T,).
        n_rounds: slots simulated (the window).
        base_kw: real base load per site and slot, (n, T).
        pv_kw_per_kwp: real PV output per kWp per site and slot, (n, T).
        q_per_p: reactive per active base load of each site, (n,).
        t_out_c: outdoor temperature per slot, (T,).
        other_p_mw, other_q_mvar: per-bus load of the net's elements that are not agents
            (load convention), (T, n_bus).
    """

    scenario: Scenario
    network: Network
    agent_ids: list[str]
    bus: np.ndarray
    specs: list[SiteSpec]
    timestamps: pd.DatetimeIndex
    n_rounds: int
    base_kw: np.ndarray
    pv_kw_per_kwp: np.ndarray
    q_per_p: np.ndarray
    t_out_c: np.ndarray
    other_p_mw: np.ndarray
    other_q_mvar: np.ndarray

    @property
    def n_agents(self) -> int:
        """Number of sites."""
        return len(self.agent_ids)


def _window(scenario: Scenario) -> tuple[pd.DatetimeIndex, int]:
    t = scenario.time
    start = pd.Timestamp(t.start).tz_localize(_LOCAL) + pd.Timedelta(hours=t.start_hour)
    start = start.tz_convert("UTC")
    n_rounds = t.n_rounds
    total = n_rounds + t.horizon_slots
    return pd.date_range(start, periods=total, freq=f"{t.slot_minutes}min"), n_rounds


def _profile_start(date: dt.date) -> pd.Timestamp:
    """The 2016 day with the same ISO week and weekday as ``date``, as a UTC timestamp."""
    _, week, weekday = date.isocalendar()
    mapped = dt.date.fromisocalendar(_PROFILE_YEAR, min(week, 52), weekday)
    return pd.Timestamp(mapped).tz_localize("Europe/Berlin").tz_convert("UTC")


def _temperature(scenario: Scenario, timestamps: pd.DatetimeIndex) -> np.ndarray:
    """Monthly means interpolated between mid-months, plus the daily sine."""
    w = scenario.weather
    local = timestamps.tz_convert(_LOCAL)
    month_pos = np.asarray(local.month - 1 + (local.day - 15) / 30.0, dtype=float)
    means = np.asarray(w.monthly_mean_c)
    lower = np.floor(month_pos).astype(int)
    frac = month_pos - lower
    mean = (1 - frac) * means[lower % 12] + frac * means[(lower + 1) % 12]
    hour = np.asarray(local.hour + local.minute / 60.0, dtype=float)
    return mean + w.offset_c + w.diurnal_amplitude_c * np.sin((hour - 9.0) / 24.0 * 2 * np.pi)


@functools.lru_cache(maxsize=1)
def _relative_load_profiles() -> pd.DataFrame:
    """simbench's relative load profiles (one column per name, e.g. ``H0-A``), UTC index."""
    net = simbench_net(_REFERENCE_CODE, with_profiles=True)
    table = net.profiles["load"]
    local = pd.DatetimeIndex(pd.to_datetime(table["time"], format="%d.%m.%Y %H:%M"))
    index = local.tz_localize("Europe/Berlin", ambiguous="infer").tz_convert("UTC")
    columns = {c[: -len("_pload")]: c for c in table.columns if c.endswith("_pload")}
    return pd.DataFrame({n: table[c].to_numpy(float) for n, c in columns.items()}, index=index)


def _annual_profile_kw(name: str, annual_kwh: float, start: pd.Timestamp, n: int) -> np.ndarray:
    """A named relative profile scaled to ``annual_kwh`` per year, ``n`` slots from ``start``."""
    table = _relative_load_profiles()
    if name not in table.columns:
        raise ScenarioError(
            f"load_profile: unknown simbench profile {name!r}; known: {sorted(table.columns)}"
        )
    column = table[name].to_numpy()
    first = table.index.get_indexer([start])[0]
    if first < 0 or first + n > len(column):
        raise ScenarioError(f"time: window of {n} slots from {start} is outside simbench's year")
    scale = annual_kwh / (column.sum() * 0.25)
    return column[first : first + n] * scale


def _synthetic(network: Network, timestamps: pd.DatetimeIndex):
    """For pandapower's CIGRE nets (no profiles): loads follow H0, PV a clear-sky shape."""
    n = len(timestamps)
    start = _profile_start(timestamps[0].tz_convert(_LOCAL).date())
    shape = _annual_profile_kw("H0-A", 1.0, start, n)
    shape = shape / shape.max()
    local = timestamps.tz_convert(_LOCAL)
    hour = np.asarray(local.hour + local.minute / 60.0)
    doy = np.asarray(local.dayofyear)
    day_len = 12.0 + 3.5 * np.sin((doy - 80) / 365.0 * 2 * np.pi)
    pv = np.clip(np.sin((hour - (13.0 - day_len / 2)) / day_len * np.pi), 0.0, None)
    load_p = np.outer(shape, network.load_p_mw)
    load_q = np.outer(shape, network.load_q_mvar)
    sgen_p = np.outer(pv, network.sgen_p_mw)
    return load_p, load_q, sgen_p, np.zeros((n, len(network.storage_ids)))


def build(scenario: Scenario) -> Setup:
    """Make a scenario concrete; refuses an agent on a bus the network does not have."""
    network = build_network(scenario.grid.name)
    timestamps, n_rounds = _window(scenario)
    n_slots = len(timestamps)
    profile_start = _profile_start(scenario.time.start) + pd.Timedelta(
        hours=scenario.time.start_hour
    )
    if scenario.grid.simbench:
        elements = simbench_window(network, scenario.grid.simbench, profile_start, n_slots)
        load_p, load_q = elements.load_p_mw, elements.load_q_mvar
        sgen_p, storage_p = elements.sgen_p_mw, elements.storage_p_mw
    else:
        load_p, load_q, sgen_p, storage_p = _synthetic(network, timestamps)
    pv_shape = _pv_per_kwp(network, sgen_p)

    load_buses = np.unique(network.load_bus)
    known_buses = set(network.bus_ids.tolist())
    ids: list[str] = []
    buses: list[int] = []
    specs: list[SiteSpec] = []
    base_rows: list[np.ndarray] = []
    q_ratio: list[float] = []
    load_taken = np.zeros(len(network.load_ids), dtype=bool)
    next_load = 0
    for g, group in enumerate(scenario.populations):
        spec = group.spec()
        if scenario.forecast_sigma is not None:
            spec = spec.model_copy(update={"forecast_sigma": scenario.forecast_sigma})
        for i in range(group.count):
            if group.placement == "bus":
                bus = int(group.bus)  # type: ignore[arg-type]
                if bus not in known_buses:
                    raise ScenarioError(
                        f"populations.{g}.bus: bus {bus} is not in {scenario.grid.name} "
                        f"(buses {min(known_buses)}..{max(known_buses)})"
                    )
                base = _annual_profile_kw(
                    spec.load_profile or "H0-A", spec.annual_load_kwh, profile_start, n_slots
                )
                ratio = _DEFAULT_PQ
            elif group.placement == "net_loads":
                while next_load < len(network.load_ids) and load_taken[next_load]:
                    next_load += 1
                if next_load >= len(network.load_ids):
                    raise ScenarioError(
                        f"populations.{g}.count: {group.count} sites on net loads, but "
                        f"{scenario.grid.name} has only {len(network.load_ids)} loads left"
                    )
                load_taken[next_load] = True
                bus = int(network.load_bus[next_load])
                base = load_p[:, next_load] * 1000.0
                p_mean = max(float(np.mean(load_p[:, next_load])), 1e-12)
                ratio = float(np.mean(load_q[:, next_load])) / p_mean
            else:
                if len(load_buses) == 0:
                    raise ScenarioError(f"populations.{g}: {scenario.grid.name} has no loads")
                bus = int(load_buses[(i * len(load_buses)) // max(group.count, 1)])
                base = _annual_profile_kw(
                    spec.load_profile or "H0-A", spec.annual_load_kwh, profile_start, n_slots
                )
                ratio = _DEFAULT_PQ
            ids.append(f"{group.preset}-{g}-{i}")
            buses.append(bus)
            specs.append(spec)
            base_rows.append(np.asarray(base, dtype=float))
            q_ratio.append(ratio)

    pv_rows = [np.asarray(pv_shape["generic"]) for _ in specs]
    sgen_taken = np.zeros(len(network.sgen_ids), dtype=bool)
    if scenario.pv_from_net:
        by_bus: dict[int, list[int]] = {}
        for row, bus in enumerate(buses):
            if specs[row].pv is None:
                by_bus.setdefault(bus, []).append(row)
        for k, bus in enumerate(network.sgen_bus.tolist()):
            kwp = float(network.sgen_p_mw[k]) * 1000.0
            if kwp <= 0:
                continue
            sgen_taken[k] = True
            pv = PVSpec(kwp=kwp, inverter_kva=1.1 * kwp)
            if by_bus.get(bus):
                row = by_bus[bus].pop(0)
                specs[row] = specs[row].model_copy(update={"pv": pv})
                pv_rows[row] = pv_shape[k]
            else:
                ids.append(f"pv-{int(network.sgen_ids[k])}")
                buses.append(int(bus))
                specs.append(SiteSpec(kind="pv_plant", annual_load_kwh=0.0, pv=pv))
                base_rows.append(np.zeros(n_slots))
                q_ratio.append(0.0)
                pv_rows.append(pv_shape[k])

    other_p = np.zeros((n_slots, network.n_bus))
    other_q = np.zeros((n_slots, network.n_bus))
    keep = ~load_taken
    pos = network.bus_position(network.load_bus[keep])
    np.add.at(other_p.T, pos, scenario.load_scale * load_p[:, keep].T)
    np.add.at(other_q.T, pos, scenario.load_scale * load_q[:, keep].T)
    keep = ~sgen_taken
    np.add.at(other_p.T, network.bus_position(network.sgen_bus[keep]), -sgen_p[:, keep].T)
    np.add.at(other_p.T, network.bus_position(network.storage_bus), storage_p.T)

    n = len(ids)
    return Setup(
        scenario=scenario,
        network=network,
        agent_ids=ids,
        bus=np.asarray(buses, dtype=np.int64),
        specs=specs,
        timestamps=timestamps,
        n_rounds=n_rounds,
        base_kw=np.vstack(base_rows) if n else np.zeros((0, n_slots)),
        pv_kw_per_kwp=np.vstack(pv_rows) if n else np.zeros((0, n_slots)),
        q_per_p=np.asarray(q_ratio, dtype=float),
        t_out_c=_temperature(scenario, timestamps),
        other_p_mw=other_p,
        other_q_mvar=other_q,
    )


def _pv_per_kwp(network: Network, sgen_p: np.ndarray) -> dict:
    """PV output per kWp of each of the net's sgens, and a generic shape for added PV
    (the mean of the net's PV shapes, or a clear-sky day when the net has none)."""
    shapes: dict = {}
    rated = network.sgen_p_mw
    for k in range(len(rated)):
        if rated[k] > 0:
            shapes[k] = np.clip(sgen_p[:, k] / rated[k], 0.0, 1.0)
    if shapes:
        shapes["generic"] = np.mean([s for s in shapes.values()], axis=0)
    else:
        shapes["generic"] = np.zeros(sgen_p.shape[0])
    return shapes
