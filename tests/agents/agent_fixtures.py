"""Shared fixtures for the agents' tests: horizons in winter and summer, populations."""

import numpy as np
import pandas as pd
import pytest

from agents import PRESETS, FlexPopulation, Horizon, Tariff

SLOTS = 96


def day_horizon(day: str, first_slot: int = 0, t_mean_c: float = 1.1) -> Horizon:
    """A day of 15-minute slots from local midnight, with a sine around ``t_mean_c``."""
    ts = pd.date_range(f"{day} 00:00", periods=SLOTS, freq="15min", tz="Europe/Ljubljana")
    ts = ts.tz_convert("UTC")
    hours = np.arange(SLOTS) / 4.0
    t_out = t_mean_c + 4.0 * np.sin((hours - 9.0) / 24.0 * 2.0 * np.pi)
    return Horizon.from_timestamps(ts, t_out, Tariff(), first_slot=first_slot)


def pv_per_kwp(n_slots: int = SLOTS, peak: float = 0.7) -> np.ndarray:
    """A clear-sky-like PV shape per kWp, zero at night."""
    hours = np.arange(n_slots) / 4.0 % 24
    return np.clip(np.sin((hours - 6.0) / 12.0 * np.pi), 0.0, None) * peak


def base_load(pop: FlexPopulation, n_slots: int = SLOTS) -> np.ndarray:
    """Each site's base load: its annual energy spread with an evening bump."""
    hours = np.arange(n_slots) / 4.0 % 24
    shape = 1.0 + 0.6 * np.exp(-(((hours - 19.0) / 2.5) ** 2))
    shape = shape / shape.mean()
    annual = np.array([s.annual_load_kwh for s in pop.specs])
    return (annual / 8760.0)[:, None] * shape[None, :]


MIX = [
    "home",
    "home_pv",
    "home_all",
    "home_heat_pump",
    "home_ev",
    "home_pv_battery",
    "school",
    "sports_centre",
    "heating_plant",
    "community_battery",
]


def make_population(names: list[str], seed: int = 7) -> FlexPopulation:
    """One site per preset name, on buses 1, 2, ..."""
    return FlexPopulation.from_specs(
        [f"{name}-{i}" for i, name in enumerate(names)],
        list(range(1, len(names) + 1)),
        [PRESETS[name] for name in names],
        seed=seed,
    )


@pytest.fixture
def winter() -> Horizon:
    return day_horizon("2026-01-13")


@pytest.fixture
def summer() -> Horizon:
    return day_horizon("2026-07-14", t_mean_c=20.6)


def voltage_requests(requests: list) -> list:
    """The DSO's voltage requests (congestion requests carry their branch as ``zone``; they
    are tested in test_congestion.py)."""
    return [r for r in requests if r.zone is None]
