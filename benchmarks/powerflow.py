"""Benchmark: batched power flow against pandapower's runpp loop and lightsim2grid.

Run ``.venv/bin/python benchmarks/powerflow.py`` (prints a table; not part of the test suite).

Cases (issue 3):
  (a) CIGRE LV, 96 random load scalings (seeded);
  (b) simbench 1-MV-urban--0-sw, 96 quarter-hours of its own profiles (one day);
  (c) simbench 1-MVLV-semiurb-all-2-sw (9,104 buses), 96 quarter-hours of its own profiles.

Timed: only the solve of the 96 scenarios; each figure is the median of several repeats after
one warm-up (pandapower's numba compilation and our factorisation happen in the warm-up).
pandapower: a loop writing each scenario into the element tables and calling ``runpp``
(default options); on (c) only the first PP_SUBSET scenarios are timed and the time is scaled
to 96, as the output says. lightsim2grid: its C++ batched solvers ``TimeSeriesCPP`` (each step
starts from the previous one) and ``InjectionSweepCPP`` (each from the same start), fastest of
the two, on a switch-free copy of the net (lightsim2grid does not model switches: closed
bus-bus switches are fused, branches behind open switches are taken out of service, storage
becomes loads). max |dV| is against pandapower on the scenarios pandapower solved.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pandas as pd

import grid
from grid import profiles

N_SCENARIOS = 96
PP_SUBSET = 10
REPEATS = 5
DAY_START = pd.Timestamp("2016-06-15 00:00", tz="UTC")


@dataclass
class Case:
    """One benchmark case: the net, our network and per-element scenario values."""

    label: str
    net: pp.pandapowerNet
    network: grid.Network
    elements: profiles.ElementInjections


def _median_time(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cigre_lv_case() -> Case:
    net = grid.pandapower_net("cigre_lv")
    network = grid.Network.from_pandapower(net, name="cigre_lv")
    rng = np.random.default_rng(2026)
    scale = rng.uniform(0.2, 2.0, (N_SCENARIOS, len(network.load_ids)))
    tile = lambda values: np.tile(values, (N_SCENARIOS, 1))  # noqa: E731
    elements = profiles.ElementInjections(
        time=pd.DatetimeIndex([DAY_START] * N_SCENARIOS),
        load_p_mw=scale * network.load_p_mw,
        load_q_mvar=scale * network.load_q_mvar,
        sgen_p_mw=tile(network.sgen_p_mw),
        sgen_q_mvar=tile(network.sgen_q_mvar),
        storage_p_mw=tile(network.storage_p_mw),
        storage_q_mvar=tile(network.storage_q_mvar),
    )
    return Case("(a) cigre_lv", net, network, elements)


def _simbench_case(label: str, code: str) -> Case:
    """The simbench grid and one day of its own profiles, from simbench_window (the numbers of
    simbench_profiles without building the whole year of absolute values, ~3 GB on (c))."""
    net = grid.simbench_net(code)
    network = grid.Network.from_pandapower(net, name=code)
    elements = profiles.simbench_window(network, code, DAY_START, N_SCENARIOS)
    return Case(label, net, network, elements)


def _write_scenario(net: pp.pandapowerNet, case: Case, k: int) -> None:
    """Write scenario k's element values into the pandapower net (scaling set to 1)."""
    e = case.elements
    for table, ids in (("load", case.network.load_ids), ("sgen", case.network.sgen_ids)):
        net[table].loc[ids, "p_mw"] = getattr(e, f"{table}_p_mw")[k]
        net[table].loc[ids, "q_mvar"] = getattr(e, f"{table}_q_mvar")[k]
        net[table].loc[ids, "scaling"] = 1.0
    ids = case.network.storage_ids
    net.storage.loc[ids, "p_mw"] = e.storage_p_mw[k]
    net.storage.loc[ids, "q_mvar"] = e.storage_q_mvar[k]
    net.storage.loc[ids, "scaling"] = 1.0


def run_pandapower(case: Case, n_runs: int) -> tuple[float, np.ndarray]:
    """Seconds for n_runs scenarios in a runpp loop, and their vm (n_runs, n_bus)."""
    net = copy.deepcopy(case.net)
    vm = np.empty((n_runs, case.network.n_bus))

    def loop() -> None:
        for k in range(n_runs):
            _write_scenario(net, case, k)
            pp.runpp(net)
            vm[k] = net.res_bus.vm_pu.loc[case.network.bus_ids].to_numpy()

    repeats = 1 if n_runs * case.network.n_bus > 50_000 else 2
    return _median_time(loop, repeats), vm


def run_ours(case: Case) -> tuple[float, float, np.ndarray]:
    """(first call incl. factorisation, median solve time, vm) for all scenarios."""
    network = case.network
    sys.modules["grid.powerflow"]._SOLVERS.pop(network, None)
    p_mw, q_mvar = _bus_injections(case)
    start = time.perf_counter()
    grid.powerflow(network, p_mw, q_mvar)
    first = time.perf_counter() - start
    result = grid.powerflow(network, p_mw, q_mvar)
    assert result.converged.all(), "our power flow did not converge on every scenario"
    seconds = _median_time(lambda: grid.powerflow(network, p_mw, q_mvar), REPEATS)
    return first, seconds, result.vm_pu


def _bus_injections(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus consumption of every scenario (as grid.profiles.bus_injections computes it)."""
    network, e = case.network, case.elements
    p = np.zeros((N_SCENARIOS, network.n_bus))
    q = np.zeros((N_SCENARIOS, network.n_bus))
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        pos = network.bus_position(getattr(network, f"{table}_bus"))
        np.add.at(p.T, pos, sign * getattr(e, f"{table}_p_mw").T)
        np.add.at(q.T, pos, sign * getattr(e, f"{table}_q_mvar").T)
    return p, q


def _switch_free(net: pp.pandapowerNet) -> tuple[pp.pandapowerNet, dict[int, int]]:
    """A copy without switches and storage, contiguous bus index; maps original bus -> new."""
    net = copy.deepcopy(net)
    for table in ("profiles", "loadcases"):
        net.pop(table, None)
    for idx in net.storage.index:
        row = net.storage.loc[idx]
        if row.in_service:
            pp.create_load(net, row.bus, p_mw=row.p_mw, q_mvar=row.q_mvar, name="storage")
    net.storage = net.storage.iloc[0:0]
    open_sw = net.switch[~net.switch.closed.astype(bool)]
    net.line.loc[open_sw.element[open_sw.et == "l"].unique(), "in_service"] = False
    net.trafo.loc[open_sw.element[open_sw.et == "t"].unique(), "in_service"] = False
    parent = {int(b): int(b) for b in net.bus.index}

    def root(bus: int) -> int:
        while parent[bus] != bus:
            parent[bus] = parent[parent[bus]]
            bus = parent[bus]
        return bus

    bus_bus = net.switch[(net.switch.et == "b") & net.switch.closed.astype(bool)]
    for a, b in zip(bus_bus.bus.astype(int), bus_bus.element.astype(int), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    keep = {bus: root(bus) for bus in parent}
    groups: dict[int, list[int]] = {}
    for bus, kept in keep.items():
        if bus != kept:
            groups.setdefault(kept, []).append(bus)
    for kept, others in groups.items():
        pp.toolbox.fuse_buses(net, kept, others)
    net.switch = net.switch.iloc[0:0]
    for table in ("bus", "line", "trafo", "load", "sgen", "ext_grid", "shunt", "gen"):
        df = net[table]
        for column in df.select_dtypes(include="object").columns:
            try:
                df[column] = pd.to_numeric(df[column])
            except (TypeError, ValueError):
                continue
    unsupplied = sorted(pp.topology.unsupplied_buses(net))
    pp.toolbox.drop_buses(net, unsupplied)
    net.bus["orig"] = net.bus.index
    pp.toolbox.create_continuous_bus_index(net, start=0)
    new_of_kept = dict(zip(net.bus.orig.astype(int), net.bus.index.astype(int), strict=True))
    return net, {o: new_of_kept[k] for o, k in keep.items() if k in new_of_kept}


def run_lightsim(case: Case) -> tuple[float | None, str, np.ndarray | None]:
    """(median seconds, solver used or the reason it failed, vm (n_scen, n_bus))."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lightsim2grid.lightsim2grid_cpp import InjectionSweepCPP, TimeSeriesCPP
            from lightsim2grid.network import init_from_pandapower

            free, bus_map = _switch_free(case.net)
            model = init_from_pandapower(free, pp_orig_file="pandapower_v3")
        pp.runpp(free)
        start = free.res_bus.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(free.res_bus.va_degree))
        v0 = model.ac_pf(start.astype(complex), 30, 1e-8)
        if v0.shape[0] == 0:
            return None, "lightsim2grid: ac_pf diverged on the base case", None
        e = case.elements
        storage_as_load = free.load.name == "storage"
        load_p = np.zeros((N_SCENARIOS, len(free.load)))
        load_q = np.zeros_like(load_p)
        load_p[:, ~storage_as_load] = e.load_p_mw
        load_q[:, ~storage_as_load] = e.load_q_mvar
        load_p[:, storage_as_load] = e.storage_p_mw
        load_q[:, storage_as_load] = e.storage_q_mvar
        sgen_p = np.ascontiguousarray(e.sgen_p_mw)
        gen_p = np.tile(np.asarray(model.get_gen_target_p(), float), (N_SCENARIOS, 1))
        best: tuple[float, str, np.ndarray] | None = None
        for cls in (TimeSeriesCPP, InjectionSweepCPP):
            computer = cls(model)

            def solve(computer=computer) -> None:
                status = computer.compute_Vs(gen_p, sgen_p, load_p, load_q, v0, 30, 1e-8)
                if status != 1:
                    raise RuntimeError(f"diverged after {computer.nb_solved()} steps")

            seconds = _median_time(solve, REPEATS)
            if best is None or seconds < best[0]:
                vm = np.abs(np.asarray(computer.get_voltages()))
                best = (seconds, cls.__name__, vm)
        assert best is not None
        cols = np.array([bus_map[int(b)] for b in case.network.bus_ids])
        return best[0], best[1], best[2][:, cols]
    except Exception as error:  # the benchmark reports why the peer failed
        return None, f"lightsim2grid failed: {type(error).__name__}: {error}", None


def main() -> None:
    """Run the three cases and print the table."""
    warnings.simplefilter("ignore")
    cases = [
        _cigre_lv_case(),
        _simbench_case("(b) 1-MV-urban--0-sw", "1-MV-urban--0-sw"),
        _simbench_case("(c) 1-MVLV-semiurb-all-2-sw", "1-MVLV-semiurb-all-2-sw"),
    ]
    rows, notes = [], []
    for case in cases:
        print(f"{case.label}: timing ...", file=sys.stderr, flush=True)
        n_pp = PP_SUBSET if case.network.n_bus > 5000 else N_SCENARIOS
        pp_s, vm_pp = run_pandapower(case, n_pp)
        pp_96 = pp_s * N_SCENARIOS / n_pp
        if n_pp < N_SCENARIOS:
            notes.append(
                f"{case.label}: pandapower timed on {n_pp} runs and scaled x{N_SCENARIOS / n_pp:g}"
            )
        first, ours_s, vm_ours = run_ours(case)
        ls_s, ls_name, vm_ls = run_lightsim(case)
        notes.append(f"{case.label}: lightsim2grid -> {ls_name}")
        dv_ours = np.abs(vm_ours[:n_pp] - vm_pp).max()
        dv_ls = np.abs(vm_ls[:n_pp] - vm_pp).max() if vm_ls is not None else float("nan")
        rows.append(
            [
                case.label,
                case.network.n_bus,
                N_SCENARIOS,
                f"{pp_96:.3f}",
                "n/a" if ls_s is None else f"{ls_s * 1e3:.2f}",
                f"{ours_s * 1e3:.2f}",
                f"{first * 1e3:.1f}",
                f"{pp_96 / ours_s:,.0f}x",
                "n/a" if ls_s is None else f"{ls_s / ours_s:.2f}x",
                f"{dv_ours:.1e}",
                f"{dv_ls:.1e}",
            ]
        )
    header = [
        "case",
        "buses",
        "scen",
        "pandapower s",
        "lightsim ms",
        "ours ms",
        "ours 1st ms",
        "pp/ours",
        "ls/ours",
        "max|dV| ours",
        "max|dV| ls",
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print()
    print(f"times: median of {REPEATS} repeats after a warm-up (pandapower: 1-2 repeats);")
    print("'ours 1st' = first call after dropping the cached factorisation (LU included).")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
