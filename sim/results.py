"""Results of a run as tidy tables and a summary, written to a directory.

Files (every table has a ``case`` column: ``market``, ``no_control`` or ``optimum``):

* ``summary.json``: metrics of each case, the comparison (efficiency), the scenario and its
  hash, the seed, package versions, wall time per phase;
* ``timeseries.parquet``: one row per case and round;
* ``agents.parquet``: one row per case, round and agent;
* ``bus_voltages.parquet``: one row per case, round and bus;
* ``awards.parquet``: one row per award of the market;
* ``timings.parquet`` and ``wall_time.json``: wall time per phase and round, and in all.

Everything but the timings is identical between two runs of the same scenario and seed.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from sim.engine import RoundEngine

__all__ = [
    "agent_table",
    "bus_table",
    "package_versions",
    "timeseries_table",
    "timing_table",
    "write_results",
]

_PACKAGES = (
    "gridbid",
    "numpy",
    "pandas",
    "pandapower",
    "simbench",
    "highspy",
    "scipy",
    "mesa",
    "numba",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def timeseries_table(case: str, engine: RoundEngine, v_min: float, v_max: float) -> pd.DataFrame:
    """One row per round of an engine."""
    rows = []
    times = engine.setup.timestamps
    for r in engine.records:
        outside = (r.vm_pu > v_max) | (r.vm_pu < v_min)
        rows.append(
            {
                "case": case,
                "round": r.round,
                "time": times[r.round],
                "v_max_pu": float(np.max(r.vm_pu)),
                "v_min_pu": float(np.min(r.vm_pu)),
                "violated_buses": int(outside.sum()),
                "worst_deviation_pu": float(
                    max(np.max(r.vm_pu) - v_max, v_min - np.min(r.vm_pu), 0)
                ),
                "max_loading_percent": float(np.max(r.loading_percent, initial=0.0)),
                "losses_mw": r.losses_mw,
                "n_requests": r.n_requests,
                "requested_dv_pu": r.requested_dv_pu,
                "n_bids": r.n_bids,
                "n_awards": r.n_awards,
                "awarded_kw": float(r.awarded_kw.sum()),
                "dso_cost_eur": r.dso_cost_eur,
                "unserved_dv_pu": r.unserved_dv_pu,
                "clearing_rounds": r.clearing_rounds,
                "agents_bill_eur": float(r.bill_eur.sum()),
            }
        )
    return pd.DataFrame(rows)


def timing_table(case: str, engine: RoundEngine) -> pd.DataFrame:
    """Wall time per phase and round (kept apart: timings differ between identical runs)."""
    return pd.DataFrame(
        [
            {"case": case, "round": r.round, **{f"{k}_s": v for k, v in r.phase_s.items()}}
            for r in engine.records
        ]
    )


def agent_table(case: str, engine: RoundEngine) -> pd.DataFrame:
    """One row per round and agent of an engine."""
    setup = engine.setup
    n = setup.n_agents
    records = engine.records
    kinds = np.array([spec.kind for spec in setup.specs], dtype=object)

    def stack(name: str) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in records]) if records else np.zeros(0)

    return pd.DataFrame(
        {
            "case": case,
            "round": np.repeat([r.round for r in records], n),
            "agent_id": np.tile(np.asarray(setup.agent_ids, dtype=object), len(records)),
            "kind": np.tile(kinds, len(records)),
            "bus": np.tile(setup.bus, len(records)),
            "baseline_kw": stack("baseline_kw"),
            "metered_kw": stack("metered_kw"),
            "bill_eur": stack("bill_eur"),
            "revenue_eur": stack("revenue_eur"),
            "flex_cost_eur": stack("flex_cost_eur"),
            "awarded_kw": stack("awarded_kw"),
        }
    )


def bus_table(case: str, vm_pu: np.ndarray, bus_ids: np.ndarray, times) -> pd.DataFrame:
    """Voltages (n_rounds, n_bus) as one row per round and bus."""
    n_rounds, n_bus = vm_pu.shape
    return pd.DataFrame(
        {
            "case": case,
            "round": np.repeat(np.arange(n_rounds), n_bus),
            "time": np.repeat(np.asarray(times[:n_rounds]), n_bus),
            "bus": np.tile(bus_ids, n_rounds),
            "vm_pu": vm_pu.ravel(),
        }
    )


def write_results(out: Path, summary: dict, tables: dict[str, pd.DataFrame]) -> None:
    """Write ``summary.json`` and one parquet file per table into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=float))
    for name, table in tables.items():
        table.to_parquet(out / f"{name}.parquet", index=False)
