"""Run metrics: voltage violations, costs, welfare, efficiency against the yardsticks.

Costs are compared on one basis: what the sites pay for energy over the window (bills,
battery wear, inverter use) minus the value of the energy they hold in their stores at the
end, valued as each agent values it when it plans (:func:`stored_value_eur`), so a case that
ends with emptier batteries or a colder house is not counted as cheaper.
"""

from __future__ import annotations

import numpy as np

from agents import FlexPopulation, Horizon
from sim.build import Setup

__all__ = ["stored_value_eur", "violation_stats"]


def stored_value_eur(setup: Setup, population: FlexPopulation) -> float:
    """Value of the energy in every store at the end of the window (terminal valuation)."""
    s = setup.scenario
    k = setup.n_rounds
    h = s.time.horizon_slots
    horizon = Horizon.from_timestamps(
        setup.timestamps[k : k + h], setup.t_out_c[k : k + h], s.tariff, first_slot=k
    )
    value = 0.0
    for group in population.groups.values():
        rows = group.store_rows(horizon)
        value += float(rows.terminal_eur_per_kwh @ group.e_kwh)
    return value


def violation_stats(vm_pu: np.ndarray, v_min: float, v_max: float, slot_minutes: int) -> dict:
    """Out-of-band statistics of voltages shaped (n_slots, n_bus)."""
    over = np.clip(vm_pu - v_max, 0.0, None)
    under = np.clip(v_min - vm_pu, 0.0, None)
    outside = (over > 0) | (under > 0)
    return {
        "violation_bus_slots": int(outside.sum()),
        "violation_minutes": int(outside.any(axis=1).sum()) * slot_minutes,
        "violation_bus_minutes": int(outside.sum()) * slot_minutes,
        "overvoltage_bus_slots": int((over > 0).sum()),
        "undervoltage_bus_slots": int((under > 0).sum()),
        "worst_deviation_pu": float(max(over.max(initial=0.0), under.max(initial=0.0))),
        "violation_pu_h": float((over + under).sum() * slot_minutes / 60.0),
        "v_max_pu": float(np.nanmax(vm_pu)) if vm_pu.size else float("nan"),
        "v_min_pu": float(np.nanmin(vm_pu)) if vm_pu.size else float("nan"),
    }
