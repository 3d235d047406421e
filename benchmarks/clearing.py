"""Clearing benchmark: pay-as-clear on 10^6 bids, locational LP on 10^4 bids / 100 needs.

Run: ``.venv/bin/python benchmarks/clearing.py [--repeat N]``. Prints medians of N runs
(wall clock, ``time.perf_counter``) next to a peer measured in the same run:

* pay-as-clear: the bare numpy merit order (one unstable ``argsort`` + ``cumsum`` +
  ``searchsorted``; no tie-break, eligibility, minimum fractions or awards): the floor
  any merit-order rule on this many rows pays.
* locational: ``scipy.optimize.linprog(method="highs")`` on the very same LP (matrix
  built by our rule, so the peer times the solve only), and the rule itself with column
  generation switched off (``whole LP``).

Every run gets a freshly built book (book building is timed separately), so the merit
order and bus index caches are cold, as in a simulator round with new bids.
Targets (issue 4): pay-as-clear 1,000,000 bids <= 1 s; locational 10,000 bids over 100
violated buses <= 1 s.

``--grid-need`` adds the DSO's request building (the round's "grid need" phase after its
power flow) on ``configs/scale_mvlv.yaml`` (9,104 buses, ~11.5k agents), rounds 44.. of
its day, where PV lifts whole LV grids above 1.05 pu: ``DSOAgent.requests`` with one
request per zone (the default) against the peer ``request_per="bus"`` (one request, one
sensitivity row and one map per violated bus, as the DSO did before zones), on the same
assessments. Building the scenario takes ~15 s and is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csc_matrix

from market import FlexRequest, OrderBook, clear
from market.rules._common import sorted_requests
from market.rules._sensitivity import build_sensitivity_matrix

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


def _median(samples: list[float]) -> str:
    return f"median {statistics.median(samples):7.3f} s  (min {min(samples):.3f}, n={len(samples)})"


def _book(n: int, n_bus: int, direction: str, seed: int) -> OrderBook:
    rng = np.random.default_rng(seed)
    return OrderBook.from_arrays(
        np.array([f"b{i}" for i in range(n)], dtype=object),
        np.array([f"s{i}" for i in range(n)], dtype=object),
        rng.integers(0, n_bus, n),
        np.full(n, direction),
        rng.uniform(0.5, 5.0, n),
        rng.uniform(0.02, 0.5, n),
    )


def _time(fn: Callable[[], object], make: Callable[[], object] | None, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        arg = make() if make else None
        start = time.perf_counter()
        fn(arg) if make else fn()  # type: ignore[call-arg]
        samples.append(time.perf_counter() - start)
    return samples


def bench_pay_as_clear(repeat: int) -> None:
    """1,000,000 bids on 1,000 buses; (A) one request every bus helps, (B) 100 requests."""
    n, n_bus = 1_000_000, 1_000
    start = time.perf_counter()
    _book(n, n_bus, "up", 0)
    print(f"order book from_arrays, {n:,} rows:          {time.perf_counter() - start:7.3f} s")
    one = [
        FlexRequest(
            request_id="r0",
            buyer_id="dso",
            bus=0,
            t_start=T0,
            t_end=T1,
            direction="up",
            p_kw=50_000.0,
            max_price_eur_per_kwh=0.3,
            sensitivity_pu_per_kw={b: 1e-4 for b in range(n_bus)},
        )
    ]
    hundred = [
        FlexRequest(
            request_id=f"r{k}",
            buyer_id="dso",
            bus=10 * k,
            t_start=T0,
            t_end=T1,
            direction="up",
            p_kw=500.0,
            max_price_eur_per_kwh=0.3,
            sensitivity_pu_per_kw={10 * k + j: 1e-4 for j in range(10)},
        )
        for k in range(100)
    ]
    books = [_book(n, n_bus, "up", seed) for seed in range(repeat)]
    results = {}

    def run(requests: list[FlexRequest], label: str) -> None:
        samples = []
        for book in books:
            book._cache.clear()  # cold caches: a fresh round's book
            t = time.perf_counter()
            results[label] = clear("pay_as_clear", requests, book)
            samples.append(time.perf_counter() - t)
        awards = len(results[label].awards)
        print(f"pay_as_clear {label:<31} {_median(samples)}  awards={awards:,}")

    run(one, "1e6 bids, 1 request:")
    run(hundred, "1e6 bids, 100 requests:")
    price = books[0].price_eur_per_kwh
    qty = books[0].p_kw

    def peer() -> None:
        order = np.argsort(price)
        cumulative = np.cumsum(qty[order])
        np.searchsorted(cumulative, 50_000.0)

    print(f"peer: bare numpy merit order, 1e6 rows:   {_median(_time(peer, None, repeat))}")


def _feeder_requests(n_feeders: int, per_feeder: int, violated: int) -> list[FlexRequest]:
    """Radial feeders: s(v, j) = 2e-5 x min(pos_v, pos_j) on the same feeder, else 0."""
    requests = []
    for f in range(n_feeders):
        for k in range(violated):
            pos_v = per_feeder - 1 - 3 * k
            bus = f * per_feeder + pos_v
            sens = {f * per_feeder + j: 2e-5 * (min(pos_v, j) + 1) for j in range(per_feeder)}
            requests.append(
                FlexRequest(
                    request_id=f"v{bus}",
                    buyer_id="dso",
                    bus=bus,
                    t_start=T0,
                    t_end=T1,
                    direction="down",
                    p_kw=0.0,
                    max_price_eur_per_kwh=0.6,
                    dv_required_pu=0.02 + 0.002 * k,
                    sensitivity_pu_per_kw=sens,
                )
            )
    return requests


def bench_locational(repeat: int) -> None:
    """10,000 bids on 2,000 buses (20 radial feeders x 100); 100 violated buses (5 per feeder)."""
    requests = _feeder_requests(20, 100, 5)
    books = [_book(10_000, 2_000, "down", 100 + seed) for seed in range(repeat)]
    whole = {"column_generation_above": 10**9}
    costs = {}
    for label, params in (
        ("simplex", {"solver": "simplex"}),
        ("ipm", {"solver": "ipm"}),
        ("whole LP", {"solver": "simplex", **whole}),
    ):
        samples = []
        for book in books:
            book._cache.clear()
            t = time.perf_counter()
            result = clear("locational", requests, book, params)
            samples.append(time.perf_counter() - t)
        unserved = sum(result.unserved_dv_pu.values())
        costs[label] = result.cost_eur
        print(
            f"locational {label:<8} 1e4 bids, 100 needs:  {_median(samples)}  "
            f"awards={len(result.awards):,} unserved={unserved:.4f} pu  "
            f"cost={result.cost_eur:.6f} EUR"
        )
    print(
        "  (simplex and ipm solve by column generation; 'whole LP' hands HiGHS every column: "
        f"same cost to {abs(costs['simplex'] - costs['whole LP']):.1e} EUR)"
    )
    matrix = build_sensitivity_matrix(sorted_requests(requests), books[0])
    n_col, n_req = matrix.column_rows.shape[0], matrix.dv_pu.shape[0]
    a = csc_matrix((matrix.value, matrix.index, matrix.start), shape=(n_req, n_col))
    a_full = csc_matrix(np.hstack([a.toarray(), np.eye(n_req)]))
    cost = np.concatenate([matrix.ask, matrix.value_eur_per_pu])
    bounds = [(0.0, u) for u in matrix.quantity] + [(0.0, None)] * n_req

    def peer() -> None:
        linprog(cost, A_ub=-a_full, b_ub=-matrix.dv_pu, bounds=bounds, method="highs")

    print(
        f"peer: scipy linprog(highs), same LP ({n_col:,} cols, {matrix.value.shape[0]:,} nnz): "
        f"{_median(_time(peer, None, repeat))}"
    )


def bench_grid_need(repeat: int, rounds: int) -> None:
    """DSO requests on the scale grid: zones against one request per violated bus."""
    from pathlib import Path

    from agents import DSOAgent
    from sim.build import build
    from sim.engine import RoundEngine
    from sim.scenario import load_scenario

    config = Path(__file__).resolve().parents[1] / "configs" / "scale_mvlv.yaml"
    setup = build(load_scenario(config, "base"))
    engine = RoundEngine(setup, market=True)
    engine.round = 44
    seen = []
    publish = engine.dso.requests

    def spy(assessment, t_start, t_end, round_id):  # type: ignore[no-untyped-def]
        seen.append((assessment, t_start, t_end, round_id))
        return publish(assessment, t_start, t_end, round_id)

    engine.dso.requests = spy  # type: ignore[method-assign]
    phase = [engine.step().phase_s["grid_need"] for _ in range(rounds)]
    print(f"grid need phase in the engine (power flow + zone requests): {_median(phase)}")
    settings = engine.dso.settings
    for mode in ("zone", "bus"):
        dso = DSOAgent(setup.network, settings.model_copy(update={"request_per": mode}))
        samples, counts, kw = [], [], []
        for assessment, t_start, t_end, k in seen:
            for _ in range(repeat):
                t = time.perf_counter()
                requests = dso.requests(assessment, t_start, t_end, k)
                samples.append(time.perf_counter() - t)
            counts.append(len(requests))
            kw.append(sum(r.p_kw for r in requests))
        violated = [len(a.over_bus_ids) + len(a.under_bus_ids) for a, *_ in seen]
        label = "zones" if mode == "zone" else "peer: one request per violated bus"
        print(
            f"{label:<36} {_median(samples)}  violated buses {violated}, requests {counts}, "
            f"sum p_kw {[round(x) for x in kw]}"
        )


def main() -> None:
    """Parse ``--repeat`` (and ``--grid-need``) and run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--grid-need", action="store_true", help="also time the DSO's requests")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the grid-need bench")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bench_pay_as_clear(args.repeat)
    bench_locational(args.repeat)
    if args.grid_need:
        bench_grid_need(args.repeat, args.rounds)
    print(f"load average after:  {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
