"""Scale benchmark: the market loop locally and sharded over Ray actors.

Two populations on simbench's ``1-MVLV-semiurb-all-2-sw`` (9,104 buses):

1. ``configs/scale_mvlv.yaml``: every load and PV sgen of the net an agent (~12,000);
2. a synthetic population of ``--agents`` (default 100,000) small sites spread over the
   load buses (the net's own loads removed, ``load_scale: 0``; sizes scaled so the total
   stays near the net's own load).

For each: the local backend, then Ray with 1 and 2 shards (the peer of the sharded runs is
the local run of the same population, measured here). Printed per run: wall time of the
market loop after one warm-up round (build, actor start-up and the first round apart),
agent-rounds per second, peak memory (driver and each shard's process, resident set), the
agents' work (plan, bids, dispatch phases as the driver sees them, transfers included),
and the scale-out efficiency from 1 to 2 shards,
``t(1) / (2 * t(2))``. Targets on a 2-core machine: the 100,000-agent day <= 120 s, 1->2
shard efficiency >= 80 %. Not part of the test suite.

    .venv/bin/python benchmarks/scale.py                     # one day each (slow)
    .venv/bin/python benchmarks/scale.py --rounds 8          # 8 rounds, day extrapolated
    .venv/bin/python benchmarks/scale.py --skip-mvlv --agents 20000 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sim.build import build
from sim.engine import RoundEngine
from sim.ray_backend import ShardedPopulation, ray_session
from sim.scenario import Population, Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]

_MIX = (  # preset, share, overrides (a quarter-size site: ~1,000 kWh/yr)
    ("home", 0.45, {"annual_load_kwh": 1000.0}),
    ("home_pv", 0.25, {"annual_load_kwh": 1000.0, "pv": {"kwp": 1.5, "inverter_kva": 1.5}}),
    ("home_pv_battery", 0.15, {"annual_load_kwh": 1000.0,
                               "pv": {"kwp": 1.5, "inverter_kva": 1.5},
                               "battery": {"capacity_kwh": 3.0, "p_max_kw": 1.5}}),
    ("home_heat_pump", 0.10, {"annual_load_kwh": 1000.0,
                              "heat_pump": {"p_max_kw": 1.2, "ua_kw_per_k": 0.06,
                                            "c_kwh_per_k": 2.5}}),
    ("home_ev", 0.05, {"annual_load_kwh": 1000.0, "ev": {"p_max_kw": 3.7, "trip_kwh": 3.0}}),
)


def synthetic(base: Scenario, agents: int) -> Scenario:
    """``agents`` quarter-size homes over the load buses of ``base``'s grid."""
    counts = [int(agents * share) for _, share, _ in _MIX]
    counts[0] += agents - sum(counts)
    populations = tuple(
        Population(preset=preset, count=count, placement="load_buses", overrides=overrides)
        for (preset, _, overrides), count in zip(_MIX, counts, strict=True)
    )
    return base.model_copy(update={"name": f"synthetic_{agents}", "populations": populations,
                                   "pv_from_net": False, "load_scale": 0.0})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_loop(setup, rounds: int, shards: int | None) -> dict:
    """Run ``rounds`` market rounds locally (``shards`` None) or over Ray shards."""
    t0 = time.perf_counter()
    population = None
    if shards is not None:
        population = ShardedPopulation(setup, shards=shards, max_restarts=1,
                                       cpus_per_shard=1.0)
    engine = RoundEngine(setup, market=True, population=population)
    engine.step()  # warm-up: actors started, modules imported, numba kernels loaded
    started = time.perf_counter() - t0
    phases = {}
    t0 = time.perf_counter()
    for _ in range(rounds):
        record = engine.step()
        for name, seconds in record.phase_s.items():
            phases[name] = phases.get(name, 0.0) + seconds
    loop = time.perf_counter() - t0
    shard_rss = population.peak_rss_mb() if population is not None else []
    if population is not None:
        population.close()
    return {"loop_s": loop, "start_s": started, "phases": phases, "shard_rss_mb": shard_rss,
            "driver_rss_mb": _peak_rss_mb(), "bids": sum(r.n_bids for r in engine.records)}


def report(name: str, setup, rounds: int, shard_counts: list[int | None]) -> None:
    """Time one population on every backend and print the figures."""
    n = setup.n_agents
    day = setup.n_rounds
    print(f"\n{name}: {n} agents, {setup.network.n_bus} buses, {rounds} of {day} rounds "
          "timed after one warm-up round; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for shards in shard_counts:
        r = time_loop(setup, rounds, shards)
        results[shards] = r
        label = "local" if shards is None else f"ray {shards} shard{'s' * (shards > 1)}"
        work = sum(r["phases"].get(p, 0.0) for p in ("plan", "bids", "dispatch"))
        per_day = r["loop_s"] / rounds * day
        rss = ", ".join(f"{m:.0f}" for m in r["shard_rss_mb"]) or "-"
        print(f"  {label:<13} loop {r['loop_s']:7.1f} s ({r['loop_s'] / rounds:6.2f} s/round; "
              f"day {'' if rounds == day else '~'}{per_day:7.1f} s)  "
              f"{n * rounds / r['loop_s']:9.0f} agent-rounds/s  agents' work {work:6.1f} s  "
              f"start+warm-up {r['start_s']:5.1f} s  peak RSS driver {r['driver_rss_mb']:.0f} MB, "
              f"shards [{rss}] MB  bids {r['bids']}", flush=True)
    if 1 in results and 2 in results:
        one, two = results[1], results[2]
        loop_eff = one["loop_s"] / (2 * two["loop_s"])
        work = [sum(x["phases"].get(p, 0.0) for p in ("plan", "bids", "dispatch"))
                for x in (one, two)]
        print(f"  scale-out 1->2 shards: {100 * loop_eff:.0f} % of the whole loop, "
              f"{100 * work[0] / (2 * work[1]):.0f} % of the agents' work (target >= 80 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run (default a day)")
    parser.add_argument("--agents", type=int, default=100_000, help="synthetic population size")
    parser.add_argument("--skip-mvlv", action="store_true", help="only the synthetic population")
    parser.add_argument("--skip-synthetic", action="store_true", help="only scale_mvlv")
    parser.add_argument("--backends", default="local,1,2",
                        help="comma list of local and shard counts (default local,1,2)")
    parser.add_argument("--replan-every", type=int, default=None,
                        help="override the config's planning cadence (time.replan_every_slots)")
    args = parser.parse_args()
    shard_counts = [None if b == "local" else int(b) for b in args.backends.split(",")]
    base = load_scenario(ROOT / "configs" / "scale_mvlv.yaml", "base")
    if args.replan_every is not None:
        time_window = base.time.model_copy(update={"replan_every_slots": args.replan_every})
        base = base.model_copy(update={"time": time_window})
    print(f"planning cadence: every {base.time.replan_every_slots} slots", flush=True)
    with ray_session(num_cpus=os.cpu_count()):
        if not args.skip_mvlv:
            t0 = time.perf_counter()
            setup = build(base)
            print(f"build scale_mvlv: {time.perf_counter() - t0:.1f} s", flush=True)
            report("scale_mvlv", setup, args.rounds or setup.n_rounds, shard_counts)
        if not args.skip_synthetic:
            t0 = time.perf_counter()
            setup = build(synthetic(base, args.agents))
            print(f"build synthetic: {time.perf_counter() - t0:.1f} s", flush=True)
            report(f"synthetic {args.agents}", setup, args.rounds or setup.n_rounds,
                   shard_counts)


if __name__ == "__main__":
    main()
