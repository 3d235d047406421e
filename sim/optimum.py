"""The central optimum: the yardstick a market is measured against.

One linear program per day (HiGHS, through scipy's ``linprog``) that knows every site's true
base load and PV (no forecast error), every asset's limits and costs, and the grid
linearised around the no-control operating point of each slot (voltage sensitivities from
:func:`grid.sensitivities`). It chooses every asset's power, PV curtailment and inverter
reactive power so that all buses stay in the band at the least total cost of the sites
(energy bills at the tariff, battery wear, inverter cost), minus the value of energy left in
the stores at the day's end (the same terminal value the agents use). Band violations that
cannot be removed cost ``violation_penalty_eur_per_pu_h`` per pu·h and bus.

Simplifications, stated: branch limits are not modelled (the DSO's congestion requests in the
market are; the optimum stays a relaxation, so its cost is still a lower bound, and what the
market pays for congestion counts in the market's resolving cost only); rows of the voltage
constraints are kept only for (slot, bus) pairs within ``screen_pu`` of the band under no
control (the others are far from binding); the stores use the continuous model of
:mod:`agents.store` (the agents plan on a grid, so the optimum is a relaxation of what they
can do: its cost is a lower bound); each day starts from the state the previous day's
optimum ended in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from agents import FlexPopulation, Horizon
from grid import PowerFlowResult, sensitivities
from sim.build import Setup
from sim.metrics import stored_value_eur

__all__ = ["OptimumResult", "solve_optimum"]


@dataclass(frozen=True)
class OptimumResult:
    """The optimum over the window.

    Attributes:
        cost_eur: the sites' bills, wear and inverter cost over the window, minus the value
            of the energy left in their stores at the end (:func:`sim.metrics.stored_value_eur`).
        violation_pu_h: remaining linearised violation, summed over buses and hours.
        site_p_kw: each site's net consumption per slot, (n_rounds, n).
        vm_pu: linearised voltages per slot and bus, (n_rounds, n_bus).
        solve_s: HiGHS time, summed over days.
    """

    cost_eur: float
    violation_pu_h: float
    site_p_kw: np.ndarray
    vm_pu: np.ndarray
    solve_s: float


class _Vars:
    """Column allocator: named blocks of variables with bounds and costs."""

    def __init__(self) -> None:
        self.n = 0
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []

    def add(self, shape, lb, ub, cost=0.0) -> np.ndarray:
        size = int(np.prod(shape))
        index = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        self.lb.append(np.broadcast_to(lb, shape).ravel().astype(float))
        self.ub.append(np.broadcast_to(ub, shape).ravel().astype(float))
        self.cost.append(np.broadcast_to(cost, shape).ravel().astype(float))
        return index


class _Rows:
    """Row builder collecting COO triplets for equalities and inequalities."""

    def __init__(self) -> None:
        self.r, self.c, self.v, self.rhs = [], [], [], []
        self.n = 0

    def add(self, cols: list[np.ndarray], coefs: list, rhs: np.ndarray) -> None:
        rhs = np.asarray(rhs, dtype=float).ravel()
        rows = np.arange(self.n, self.n + len(rhs))
        for col, coef in zip(cols, coefs, strict=True):
            col = np.asarray(col).reshape(len(rhs), -1)
            coef = np.broadcast_to(np.asarray(coef, dtype=float), col.shape)
            self.r.append(np.repeat(rows, col.shape[1]))
            self.c.append(col.ravel())
            self.v.append(np.broadcast_to(coef, col.shape).ravel())
        self.rhs.append(rhs)
        self.n += len(rhs)

    def matrix(self, n_cols: int):
        if self.n == 0:
            return None, None
        a = sp.csr_matrix(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n, n_cols),
        )
        return a, np.concatenate(self.rhs)


def solve_optimum(
    setup: Setup,
    nc_flows: PowerFlowResult,
    nc_site_p_kw: np.ndarray,
    *,
    enforce_band: bool = True,
    screen_pu: float = 0.01,
) -> OptimumResult:
    """Solve the central LP day by day over the setup's window.

    Args:
        setup: the run's setup (truth, agents, grid).
        nc_flows: the no-control run's power flow, a batch with one scenario per round (the
            linearisation points).
        nc_site_p_kw: the no-control run's metered site consumption, (n_rounds, n).
        enforce_band: ``False`` gives the unconstrained optimum (perfect self-optimisation),
            against which the cost of resolving violations is measured.
        screen_pu: keep voltage rows of (slot, bus) within this distance of the band.
    """
    s = setup.scenario
    band = (s.dso.v_min_pu, s.dso.v_max_pu)
    pop = FlexPopulation.from_specs(setup.agent_ids, setup.bus, setup.specs, seed=s.seed)
    per_day = 24 * 60 // s.time.slot_minutes
    total_cost, total_violation, solve_s = 0.0, 0.0, 0.0
    site_p = np.zeros((setup.n_rounds, len(pop)))
    vm = np.zeros((setup.n_rounds, setup.network.n_bus))
    for day_start in range(0, setup.n_rounds, per_day):
        slots = np.arange(day_start, min(day_start + per_day, setup.n_rounds))
        result = _solve_day(
            setup, pop, slots, nc_flows, nc_site_p_kw, band, enforce_band, screen_pu
        )
        total_cost += result[0]
        total_violation += result[1]
        site_p[slots] = result[2]
        vm[slots] = result[3]
        solve_s += result[4]
    total_cost -= stored_value_eur(setup, pop)
    return OptimumResult(total_cost, total_violation, site_p, vm, solve_s)


def _solve_day(setup, pop, slots, nc_flows, nc_site_p_kw, band, enforce_band, screen_pu):
    """One day's LP; returns (site cost, violation pu·h, site power, voltages, solve time)."""
    s = setup.scenario
    n, h = len(pop), len(slots)
    horizon = Horizon.from_timestamps(
        setup.timestamps[slots[0] : slots[0] + max(h, 2)],
        setup.t_out_c[slots[0] : slots[0] + max(h, 2)],
        s.tariff,
        first_slot=int(slots[0]),
    )
    dt = horizon.dt_h
    imp, exp = horizon.import_eur_per_kwh[:h], horizon.export_eur_per_kwh[:h]
    base = setup.base_kw[:, slots]
    pv = np.minimum(pop.pv_kwp[:, None] * setup.pv_kw_per_kwp[:, slots], pop.pv_kva[:, None])
    q_max = np.sqrt(np.clip(pop.pv_kva[:, None] ** 2 - pv**2, 0, None))

    v = _Vars()
    eq = _Rows()
    imp_v = v.add((n, h), 0.0, np.inf, (imp * dt)[None, :])
    exp_v = v.add((n, h), 0.0, np.inf, (-exp * dt)[None, :])
    curt = v.add((n, h), 0.0, pv)
    q_pos = v.add((n, h), 0.0, q_max, (pop.q_cost_eur_per_kvarh[:, None] * dt))
    q_neg = v.add((n, h), 0.0, q_max, (pop.q_cost_eur_per_kvarh[:, None] * dt))
    # net consumption of each site: imp - exp = base - pv + curt + sum of store powers
    store_cols = []
    state_cols = []
    # Energy left at the day's end is valued as the agents value it from there on (the
    # horizon that starts at the end), the valuation the reported cost uses
    # (sim.metrics.stored_value_eur); the day's own horizon would value it at the mean
    # price of the day's slots, which for a window shorter than a day is another price.
    end, span = int(slots[-1]) + 1, s.time.horizon_slots
    after = Horizon.from_timestamps(
        setup.timestamps[end : end + span],
        setup.t_out_c[end : end + span],
        s.tariff,
        first_slot=end,
    )
    for _kind, group in pop.groups.items():
        rows = group.store_rows(horizon)
        terminal = group.store_rows(after).terminal_eur_per_kwh
        m = len(group)
        p_min, p_max = rows.p_min_kw[:, :h], rows.p_max_kw[:, :h]
        pc = v.add((m, h), 0.0, np.clip(p_max, 0, None), rows.wear_eur_per_kwh[:, None] * dt)
        pd = v.add((m, h), 0.0, np.clip(-p_min, 0, None), rows.wear_eur_per_kwh[:, None] * dt)
        e = v.add((m, h + 1), rows.e_min_kwh[:, : h + 1], rows.e_max_kwh[:, : h + 1])
        state_cols.append((group, e[:, h], terminal))
        # terminal value of the last state
        v.cost[-1] = v.cost[-1].reshape(m, h + 1).copy()
        v.cost[-1][:, h] = -terminal
        v.cost[-1] = v.cost[-1].ravel()
        eq.add([e[:, 0:1]], [1.0], group.e_kwh)
        # e[t+1] - a e[t] - eta_in dt pc + dt/eta_out pd (+ spill) = -drain
        dyn_cols = [e[:, 1:], e[:, :-1], pc, pd]
        dyn_coef = [
            np.ones((m, h)),
            -np.broadcast_to(rows.retention[:, None], (m, h)),
            -rows.eta_in[:, :h] * dt,
            np.broadcast_to((dt / rows.eta_out)[:, None], (m, h)),
        ]
        spill_rows = rows.spill
        if spill_rows.any():
            spill = v.add((m, h), 0.0, np.where(spill_rows[:, None], np.inf, 0.0))
            dyn_cols.append(spill)
            dyn_coef.append(np.ones((m, h)))
        eq.add(
            [c.reshape(m * h, 1) for c in dyn_cols],
            [np.asarray(c).reshape(m * h, 1) for c in dyn_coef],
            -rows.drain_kwh[:, :h],
        )
        store_cols.append((group.site, pc, pd))
    # site balance rows: imp - exp - curt - sum(pc - pd) = base - pv
    balance = _Rows()
    cols = [imp_v.reshape(n * h, 1), exp_v.reshape(n * h, 1), curt.reshape(n * h, 1)]
    coefs = [np.ones((n * h, 1)), -np.ones((n * h, 1)), -np.ones((n * h, 1))]
    balance.add(cols, coefs, base - pv)
    r, c, vals = [balance.r[0], balance.r[1], balance.r[2]], [*balance.c], [*balance.v]
    for site, pc, pd in store_cols:
        row_ids = (site[:, None] * h + np.arange(h)[None, :]).ravel()
        r += [row_ids, row_ids]
        c += [pc.ravel(), pd.ravel()]
        vals += [-np.ones(pc.size), np.ones(pd.size)]
    a_bal = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(r), np.concatenate(c))), shape=(n * h, v.n)
    )
    b_bal = (base - pv).ravel()

    # linearised voltages around no control, screened
    a_v_parts, b_v_parts, vm_rows = [], [], []
    net = setup.network
    site_pos = net.bus_position(setup.bus)
    vm_lin_const = np.zeros((h, net.n_bus))
    slack_cost = s.violation_penalty_eur_per_pu_h * dt
    slack_columns: list[np.ndarray] = []
    for j, k in enumerate(slots):
        vm_nc = nc_flows.vm_pu[k]
        vm_lin_const[j] = vm_nc
        if not enforce_band:
            continue
        high = vm_nc > band[1] - screen_pu
        low = vm_nc < band[0] + screen_pu
        near = high | low
        if not near.any():
            continue
        sens = sensitivities(net, nc_flows, buses=net.bus_ids[near], scenario=int(k))
        dp = sens.dv_dp_pu_per_mw[:, site_pos] / 1000.0  # per kW of site consumption
        dq = sens.dv_dq_pu_per_mvar[:, site_pos] / 1000.0
        # site consumption change = (imp - exp) - nc_p ; q = q_pos - q_neg (absorbing +)
        cols_site = np.concatenate([imp_v[:, j], exp_v[:, j], q_pos[:, j], q_neg[:, j]])
        const = vm_nc[near] - dp @ nc_site_p_kw[k]
        for sign, side, bound in ((1.0, high[near], band[1]), (-1.0, low[near], -band[0])):
            if not side.any():
                continue
            nb = int(side.sum())
            slack = v.add((nb,), 0.0, np.inf, slack_cost)
            slack_columns.append(slack)
            coef = np.hstack([dp, -dp, dq, -dq])[side] * sign
            a = sp.csr_matrix(
                (
                    np.r_[coef.ravel(), -np.ones(nb)],
                    (
                        np.r_[np.repeat(np.arange(nb), len(cols_site)), np.arange(nb)],
                        np.r_[np.tile(cols_site, nb), slack],
                    ),
                ),
                shape=(nb, v.n),
            )
            a_v_parts.append(a)
            b_v_parts.append(bound - sign * const[side])
        vm_rows.append((j, near, dp, dq))

    n_cols = v.n
    a_eq, b_eq = eq.matrix(n_cols)
    a_eq = sp.vstack([a_eq, _pad(a_bal, n_cols)]) if a_eq is not None else _pad(a_bal, n_cols)
    b_eq = np.r_[b_eq, b_bal] if b_eq is not None else b_bal
    a_ub = sp.vstack([_pad(a, n_cols) for a in a_v_parts]).tocsr() if a_v_parts else None
    b_ub = np.concatenate(b_v_parts) if b_v_parts else None
    cost = np.concatenate(v.cost)
    bounds = np.column_stack([np.concatenate(v.lb), np.concatenate(v.ub)])
    t0 = time.perf_counter()
    res = linprog(
        cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq.tocsr(), b_eq=b_eq, bounds=bounds, method="highs"
    )
    elapsed = time.perf_counter() - t0
    if res.status != 0:
        raise RuntimeError(
            f"central optimum LP failed on day starting slot {slots[0]}: {res.message}"
        )
    x = res.x
    site_p = (x[imp_v] - x[exp_v]).T  # (h, n)
    q = (x[q_pos] - x[q_neg]).T
    vm_lin = vm_lin_const.copy()
    violation = 0.0
    for j, near, dp, dq in vm_rows:
        k = slots[j]
        vm_lin[j, near] += dp @ (site_p[j] - nc_site_p_kw[k]) + dq @ q[j]
    lo, hi = band
    violation = float((np.clip(vm_lin - hi, 0, None) + np.clip(lo - vm_lin, 0, None)).sum()) * dt
    penalty = slack_cost * float(x[np.concatenate(slack_columns)].sum()) if slack_columns else 0.0
    terminal = 0.0
    for group, e_end, price in state_cols:
        terminal += float(price @ x[e_end])
        group.e_kwh = x[e_end].copy()  # the next day starts where this one ended
    return float(res.fun) - penalty + terminal, violation, site_p, vm_lin, elapsed


def _pad(matrix, n_cols: int):
    """Widen a sparse matrix built before later columns were added."""
    matrix = sp.csr_matrix(matrix)
    if matrix.shape[1] == n_cols:
        return matrix
    return sp.hstack([matrix, sp.csr_matrix((matrix.shape[0], n_cols - matrix.shape[1]))])
