"""Batched AC power flow: a Z-bus fixed point on one factorisation, Newton as the fallback.

Method. With the slack voltages fixed, the PQ node voltages satisfy
``Y_LL v = conj(s / v) - Y_LS v_slack``. The fixed point
``v <- v_noload + Y_LL^-1 conj(s / v)`` needs ``Y_LL`` factorised once per network (SuperLU,
cached per :class:`~grid.network.Network`) and reused by every sweep of every scenario; all
scenarios of a batch advance together, their triangular solves sharing one pass over the LU
factors (a numba kernel, :mod:`grid._kernels`). A scenario still off after ``max_iter`` sweeps
goes to a full Newton-Raphson of its own; one that Newton cannot solve either is reported with
``converged=False`` and NaN values, never as a result.

Why this method (measured on this shared 2-core machine, 96 scenarios; the full comparison
is benchmarks/powerflow.py):

- Newton needs a new Jacobian factorisation per iteration *per scenario*; the fixed point
  shares one factorisation and converged in 4-8 sweeps on simbench's own profiles and 5-17 on
  random scalings up to 2x load (distribution load is small against short-circuit power), so
  a batch costs a handful of multi-right-hand-side triangular solves.
- Dense ``Y_LL^-1`` products (the prototype's choice) went 10-50x slower whenever OpenBLAS
  threads competed for the two cores; SuperLU's own multi-RHS solve took ~1 ms per scenario
  and sweep on the 9,104-bus grid (95 ms per sweep of 96); the numba pass takes 16-20 ms for
  all 96 there, and 0.2 ms on 1-MV-urban--0-sw.
- Result, one run of benchmarks/powerflow.py (2026-11-27, load average ~3): 96 scenarios in
  1.3 ms on CIGRE LV (pandapower loop 5.7 s, lightsim2grid 3.6 ms), 2.4 ms on
  1-MV-urban--0-sw (lightsim2grid 8.6 ms) and 212 ms on 1-MVLV-semiurb-all-2-sw
  (lightsim2grid 424 ms), max |dV| against pandapower 3e-8 pu.
- Anderson(1..3) acceleration of the sweeps was tried and saved at most 2 of 8-11 sweeps
  (measured on cigre_mv and 1-MV-urban--0-sw), not worth its extra passes.

The stopping test is pandapower's, an absolute P/Q mismatch below ``tol`` MVA; it is exact at
no extra cost because after a sweep the mismatch at node i equals ``|s_i| |dv_i| / |v_i|``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from grid import _kernels
from grid._ac import newton
from grid.network import Network

NEWTON_MAX_ITER = 30


@dataclass(frozen=True, eq=False)
class PowerFlowResult:
    """Power-flow results; leading dimensions follow the input (none, or scenarios).

    Attributes:
        vm_pu: Voltage magnitude per bus, in ``network.bus_ids`` order.
        va_degree: Voltage angle per bus (degrees, pandapower's reference).
        loading_percent: Branch loading as pandapower computes it (current-based).
        p_from_mw: Active power entering each branch at its from (hv) end.
        losses_mw: Active losses of all branches (sum of ``p_from + p_to``).
        converged: Whether the scenario converged; if not, its values are NaN.
        iterations: Fixed-point sweeps plus Newton iterations used per scenario.
        v_node_pu: Complex voltage of every internal node (for sensitivities).
    """

    vm_pu: np.ndarray
    va_degree: np.ndarray
    loading_percent: np.ndarray
    p_from_mw: np.ndarray
    losses_mw: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    v_node_pu: np.ndarray

    def __post_init__(self) -> None:
        for value in vars(self).values():
            value.setflags(write=False)


class _Solver:
    """SuperLU factors of ``Y_LL``, the no-load voltages and the bus-to-node aggregation."""

    def __init__(self, network: Network) -> None:
        model = network.model
        n_node = model.n_node
        is_slack = np.zeros(n_node, bool)
        is_slack[model.slack_nodes] = True
        self.pq = np.flatnonzero(~is_slack)
        ybus = model.ybus.tocsr()
        y_ll = ybus[self.pq][:, self.pq].tocsc()
        y_ls = ybus[self.pq][:, model.slack_nodes]
        lu = spla.splu(y_ll, permc_spec="MMD_AT_PLUS_A")
        self.v_noload = lu.solve(-(y_ls @ model.v_slack))
        self.perm_r = lu.perm_r.astype(np.int64)
        self.perm_c = lu.perm_c.astype(np.int64)
        l_ptr, l_idx, l_val, l_diag = _strict_triangle(lu.L, lower=True)
        u_ptr, u_idx, u_val, u_diag = _strict_triangle(lu.U, lower=False)
        if not np.allclose(l_diag, 1.0):
            raise RuntimeError("SuperLU returned a non-unit lower factor")
        u_inv = 1.0 / u_diag
        self.factors = (
            l_ptr,
            l_idx,
            l_val.real.copy(),
            l_val.imag.copy(),
            u_ptr,
            u_idx,
            u_val.real.copy(),
            u_val.imag.copy(),
            u_inv.real.copy(),
            u_inv.imag.copy(),
        )
        pq_pos = np.full(n_node, -1)
        pq_pos[self.pq] = np.arange(len(self.pq))
        self.bus_pq = pq_pos[model.node_of_bus].astype(np.int64)
        rows = np.arange(len(model.branch_from_node))
        f, t = model.branch_from_node, model.branch_to_node
        self.y_branch = tuple(
            np.asarray(y[rows, ends]).ravel().astype(complex)
            for y in (model.yf, model.yt)
            for ends in (f, t)
        )

    def sweep(self, v: np.ndarray, s_conj: np.ndarray, abs_s2: np.ndarray) -> np.ndarray:
        """One fixed-point sweep of every column of ``v`` in place; returns the mismatches."""
        mismatch = np.empty(v.shape[1])
        _kernels.sweep(
            v,
            s_conj,
            abs_s2,
            self.v_noload,
            self.perm_r,
            self.perm_c,
            *self.factors,
            np.empty((v.shape[0], min(v.shape[1], _kernels.BLOCK))),
            np.empty((v.shape[0], min(v.shape[1], _kernels.BLOCK))),
            mismatch,
        )
        return mismatch


def _strict_triangle(
    factor: sp.spmatrix, *, lower: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSC pointers, rows and values of the strict triangle, and the diagonal."""
    csc = sp.csc_matrix(factor)
    diag = csc.diagonal().astype(complex)
    strict = sp.tril(csc, k=-1) if lower else sp.triu(csc, k=1)
    strict = sp.csc_matrix(strict)
    strict.sort_indices()
    return (
        strict.indptr.astype(np.int64),
        strict.indices.astype(np.int64),
        strict.data.astype(complex),
        diag,
    )


_SOLVERS: weakref.WeakKeyDictionary[Network, _Solver] = weakref.WeakKeyDictionary()


def _solver(network: Network) -> _Solver:
    """The cached solver of a network (factorised on first use)."""
    solver = _SOLVERS.get(network)
    if solver is None:
        solver = _SOLVERS[network] = _Solver(network)
    return solver


def _check_input(network: Network, name: str, values: np.ndarray) -> np.ndarray:
    """Validate a per-bus array of one scenario or a batch; return it as 2-D float."""
    array = np.asarray(values, dtype=float)
    if array.ndim not in (1, 2) or array.shape[-1] != network.n_bus:
        raise ValueError(
            f"{name} must have shape (n_bus,) or (n_scenarios, n_bus) with "
            f"n_bus={network.n_bus}, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite values at {np.argwhere(~np.isfinite(array))[:5]}")
    return np.atleast_2d(array)


def powerflow(
    network: Network,
    p_mw: np.ndarray,
    q_mvar: np.ndarray,
    *,
    tol: float = 1e-8,
    max_iter: int = 40,
    v_start: np.ndarray | None = None,
) -> PowerFlowResult:
    """Solve the AC power flow for one scenario or a batch.

    Args:
        network: The network.
        p_mw: Active consumption per bus (load convention, positive = consumption), shape
            ``(n_bus,)`` or ``(n_scenarios, n_bus)``.
        q_mvar: Reactive consumption per bus, same shape.
        tol: Largest P or Q mismatch accepted at any node, in MVA (pandapower's
            ``tolerance_mva``, same default).
        max_iter: Fixed-point sweeps before a scenario is handed to Newton-Raphson.
        v_start: Complex node voltages to start the sweeps from (a nearby solution's
            ``v_node_pu``, shape ``(n_node,)`` for every scenario or one row per scenario);
            default the no-load voltages. The solution is the same to ``tol``; a start near
            it saves sweeps (the DSO's sizing flows perturb one bus of a solved point).
            Newton's fallback still starts from no load.

    Returns:
        The result; non-converged scenarios have ``converged=False`` and NaN values.

    Raises:
        ValueError: If the shapes differ from ``(n_bus,)``/``(n, n_bus)`` or values are not
            finite.
    """
    p = _check_input(network, "p_mw", p_mw)
    q = _check_input(network, "q_mvar", q_mvar)
    if p.shape != q.shape:
        raise ValueError(f"p_mw has shape {p.shape} but q_mvar has shape {q.shape}")
    model = network.model
    solver = _solver(network)
    if not tol > 0:
        raise ValueError(f"tol must be a positive mismatch in MVA, got {tol!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")
    tol_pu = tol / model.base_mva
    s_conj, abs_s2 = _kernels.aggregate(
        np.ascontiguousarray(p.T),
        np.ascontiguousarray(q.T),
        solver.bus_pq,
        len(solver.pq),
        model.base_mva,
    )
    n_scen = p.shape[0]
    start = _start_voltages(network, solver, v_start, n_scen)
    v_pq, converged, iterations = _fixed_point(solver, s_conj, abs_s2, tol_pu, max_iter, start)
    v_node = np.empty((n_scen, model.n_node), complex)
    v_node[:, model.slack_nodes] = model.v_slack
    v_node[:, solver.pq] = v_pq.T
    for k in np.flatnonzero(~converged):
        s_pq = np.conj(s_conj[:, k])
        v_node[k], converged[k], extra = _newton_fallback(network, solver, s_pq, tol_pu)
        iterations[k] += extra
    v_node[~converged] = np.nan
    return _result(network, solver, v_node, converged, iterations, squeeze=np.ndim(p_mw) == 1)


def _start_voltages(
    network: Network, solver: _Solver, v_start: np.ndarray | None, n_scen: int
) -> np.ndarray:
    """PQ-node start voltages (n_pq, n_scenarios) from ``v_start`` (or no load)."""
    if v_start is None:
        return np.broadcast_to(solver.v_noload[:, None], (len(solver.pq), n_scen))
    v = np.asarray(v_start)
    n_node = network.model.n_node
    if v.shape not in ((n_node,), (n_scen, n_node)):
        raise ValueError(
            f"v_start has shape {v.shape}; expected ({n_node},) or ({n_scen}, {n_node})"
        )
    if not np.isfinite(v).all():
        raise ValueError("v_start must be finite (a converged solution's v_node_pu)")
    v = np.atleast_2d(v)[:, solver.pq].T
    return np.broadcast_to(v, (len(solver.pq), n_scen))


def _fixed_point(
    solver: _Solver,
    s_conj: np.ndarray,
    abs_s2: np.ndarray,
    tol_pu: float,
    max_iter: int,
    start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched Z-bus sweeps over the scenarios that have not passed yet.

    Finished columns are copied out when they pass and keep being swept (harmlessly) until
    half of the working set has finished; only then are the working arrays compacted
    (compaction copies them whole, and sweeping a few extra columns is cheaper).

    Args:
        solver: The network's factorised solver.
        s_conj: ``conj(s)`` per PQ node and scenario (n_pq, n_scenarios), per unit.
        abs_s2: ``|s|**2``, same shape.
        tol_pu: Mismatch threshold (per unit).
        max_iter: Sweep cap.
        start: PQ-node start voltages (n_pq, n_scenarios).

    Returns:
        PQ-node voltages (n_pq, n_scenarios), converged flags, sweeps used.
    """
    n_pq, n_scen = s_conj.shape
    v = np.empty((n_pq, n_scen), complex)
    v[:] = start
    v_out = np.empty_like(v)
    converged = np.zeros(n_scen, bool)
    iterations = np.zeros(n_scen, np.int64)
    ids = np.arange(n_scen)
    live = np.ones(n_scen, bool)
    with np.errstate(all="ignore"):
        for sweep in range(1, max_iter + 1):
            mismatch = solver.sweep(v, s_conj, abs_s2)
            iterations[ids[live]] = sweep
            done = live & (mismatch < tol_pu)
            stop = done | (live & ~np.isfinite(mismatch))
            if sweep == max_iter:
                stop = live.copy()
            if not stop.any():
                continue
            if stop.all():
                v_out[:, ids] = v
                converged[ids[done]] = True
                break
            v_out[:, ids[stop]] = v[:, stop]
            converged[ids[done]] = True
            live &= ~stop
            if live.sum() <= 0.5 * live.size:
                ids, v = ids[live], np.ascontiguousarray(v[:, live])
                s_conj = np.ascontiguousarray(s_conj[:, live])
                abs_s2 = np.ascontiguousarray(abs_s2[:, live])
                live = np.ones(ids.size, bool)
            if not live.any():
                break
    return v_out, converged, iterations


def _newton_fallback(
    network: Network, solver: _Solver, s_pq: np.ndarray, tol_pu: float
) -> tuple[np.ndarray, bool, int]:
    """Newton-Raphson from the no-load voltages for one scenario."""
    model = network.model
    s_node = np.zeros(model.n_node, complex)
    s_node[solver.pq] = s_pq
    v0 = np.empty(model.n_node, complex)
    v0[model.slack_nodes] = model.v_slack
    v0[solver.pq] = solver.v_noload
    with np.errstate(all="ignore"):
        return newton(model.ybus, s_node, v0, solver.pq, tol_pu=tol_pu, max_iter=NEWTON_MAX_ITER)


def _result(
    network: Network,
    solver: _Solver,
    v_node: np.ndarray,
    converged: np.ndarray,
    iterations: np.ndarray,
    *,
    squeeze: bool,
) -> PowerFlowResult:
    """Bus and branch quantities from node voltages (n_scenarios, n_node)."""
    model = network.model
    vm, va = _kernels.bus_polar(v_node, model.node_of_bus)
    loading, p_from, losses = _kernels.branch_flows(
        v_node,
        model.branch_from_node,
        model.branch_to_node,
        *solver.y_branch,
        model.loading_scale_from,
        model.loading_scale_to,
        model.base_mva,
    )
    failed = ~converged
    for array in (vm, va, loading, p_from, losses):
        array[failed] = np.nan
    values = {
        "vm_pu": vm,
        "va_degree": va,
        "loading_percent": loading,
        "p_from_mw": p_from,
        "losses_mw": losses,
        "converged": converged,
        "iterations": iterations,
        "v_node_pu": v_node,
    }
    if squeeze:
        values = {key: value[0] for key, value in values.items()}
    return PowerFlowResult(**{key: np.asarray(value) for key, value in values.items()})
