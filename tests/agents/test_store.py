"""The vectorised store DP against a plain numpy DP, and its physics.

Peer: a straightforward backward recursion over (rows, level, level) arrays written with
:meth:`StoreRows.feasible_power` (the same model, no numba); tolerance 1e-9 EUR.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.store import (
    StoreRows,
    _backward,
    _slot_one,
    _stage_cost,
    auto_levels,
    level_grid,
    level_offsets,
    plan_stores,
    replan_first_slots,
)

H = 24
DT = 0.25


def battery_rows(n: int, h: int, rng: np.random.Generator) -> StoreRows:
    cap = rng.uniform(2.0, 20.0, n)
    p_max = rng.uniform(1.0, 10.0, n)
    return StoreRows(
        e_min_kwh=np.broadcast_to((0.1 * cap)[:, None], (n, h + 1)),
        e_max_kwh=np.broadcast_to((0.9 * cap)[:, None], (n, h + 1)),
        p_min_kw=np.broadcast_to(-p_max[:, None], (n, h)),
        p_max_kw=np.broadcast_to(p_max[:, None], (n, h)),
        eta_in=np.full((n, h), 0.93),
        eta_out=np.full(n, 0.9),
        retention=np.ones(n),
        drain_kwh=np.zeros((n, h)),
        spill=np.zeros(n, dtype=bool),
        wear_eur_per_kwh=rng.uniform(0.0, 0.1, n),
        terminal_eur_per_kwh=np.full(n, 0.1),
    )


def reference_value(rows, other, imp, exp, n_levels):
    """Cost to go from slot 2, by the numpy model (no numba)."""
    n, h = rows.n, rows.horizon
    offset = level_offsets(rows)
    levels = np.ascontiguousarray(level_grid(rows, np.full(n, n_levels), offset))
    value = -rows.terminal_eur_per_kwh[:, None] * (levels + offset[:, h : h + 1])
    bad = (levels + offset[:, h : h + 1] < rows.e_min_kwh[:, h : h + 1] - 1e-9) | (
        levels + offset[:, h : h + 1] > rows.e_max_kwh[:, h : h + 1] + 1e-9
    )
    value = np.where(bad, np.inf, value)
    for t in range(h - 1, 1, -1):
        e_from = (levels + offset[:, t : t + 1])[:, :, None]
        e_to = (levels + offset[:, t + 1 : t + 2])[:, None, :]
        p, ok = rows.feasible_power(e_from, e_to, t, DT)
        stage = _stage_cost(rows, p, other[:, t], imp[:, t], exp[:, t], DT)
        value = np.where(ok, stage + value[:, None, :], np.inf).min(axis=2)
    return levels, value


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_compiled_dp_matches_the_numpy_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5
    rows = battery_rows(n, H, rng)
    other = rng.uniform(-3.0, 3.0, (n, H))
    imp = np.broadcast_to(rng.uniform(0.1, 0.3, H), (n, H))
    exp = np.broadcast_to(np.full(H, 0.05), (n, H))
    e0 = rows.e_min_kwh[:, 0] + rng.uniform(0, 1, n) * (rows.e_max_kwh[:, 0] - rows.e_min_kwh[:, 0])
    levels, expected = reference_value(rows, other, imp, exp, 15)
    offset = level_offsets(rows)
    value, _ = _backward(
        levels,
        np.full(n, 15),
        offset,
        rows.e_min_kwh,
        rows.e_max_kwh,
        rows.p_min_kw,
        rows.p_max_kw,
        rows.eta_in,
        rows.eta_out,
        rows.retention,
        rows.drain_kwh,
        rows.spill,
        rows.wear_eur_per_kwh,
        rows.terminal_eur_per_kwh,
        other,
        np.ascontiguousarray(imp),
        np.ascontiguousarray(exp),
        DT,
    )
    np.testing.assert_allclose(value[0], expected, rtol=0, atol=1e-9)
    plan = plan_stores(rows, e0, other, imp, exp, dt_h=DT, n_levels=15)
    np.testing.assert_allclose(plan.cost_eur, plan.alternatives.cost_eur.min(axis=1), atol=0)
    # The plan's cost is what its own power path costs, slot by slot, plus the terminal value.
    net = other + plan.p_kw
    bill = (DT * np.where(net >= 0, net * imp, net * exp)).sum(axis=1)
    bill += (rows.wear_eur_per_kwh[:, None] * np.abs(plan.p_kw) * DT).sum(axis=1)
    bill -= rows.terminal_eur_per_kwh * plan.e_kwh[:, -1]
    np.testing.assert_allclose(plan.cost_eur, bill, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_plan_respects_limits_and_its_own_dynamics(seed: int) -> None:
    """Every planned slot: power within limits, state within bounds, and the state path is
    what the forward model gives for the planned power (energy balance of the store)."""
    rng = np.random.default_rng(seed)
    n = 8
    rows = battery_rows(n, H, rng)
    e0 = rows.e_min_kwh[:, 0] + rng.uniform(0, 1, n) * (rows.e_max_kwh[:, 0] - rows.e_min_kwh[:, 0])
    imp = rng.uniform(0.05, 0.4, H)
    plan = plan_stores(rows, e0, rng.uniform(-5, 5, (n, H)), imp, np.full(H, 0.04), dt_h=DT)
    assert plan.feasible.all()
    assert (plan.p_kw >= rows.p_min_kw - 1e-9).all() and (plan.p_kw <= rows.p_max_kw + 1e-9).all()
    assert (plan.e_kwh >= rows.e_min_kwh - 1e-9).all() and (
        plan.e_kwh <= rows.e_max_kwh + 1e-9
    ).all()
    for t in range(H):
        np.testing.assert_allclose(
            rows.next_state(plan.e_kwh[:, t], plan.p_kw[:, t], t, DT),
            plan.e_kwh[:, t + 1],
            atol=1e-9,
        )


def test_battery_buys_cheap_and_sells_dear() -> None:
    """Hand-made case: price 0.10 for 8 slots then 0.30, a 2 kW load throughout, so a
    battery that starts nearly empty charges while cheap and discharges while dear."""
    rows = battery_rows(1, 16, np.random.default_rng(0))
    price = np.r_[np.full(8, 0.10), np.full(8, 0.30)]
    plan = plan_stores(
        rows, rows.e_min_kwh[:, 0], np.full((1, 16), 2.0), price, np.full(16, 0.0), dt_h=DT
    )
    assert plan.p_kw[0, :8].sum() > 0.5 * rows.p_max_kw[0, 0]
    assert plan.p_kw[0, 8:].sum() < 0


def test_auto_levels_lets_a_slow_charger_move() -> None:
    """An EV-like store (1.7 kWh per slot on a 50 kWh span) gets a grid fine enough to move."""
    n, h = 1, 8
    rows = StoreRows(
        e_min_kwh=np.zeros((n, h + 1)),
        e_max_kwh=np.full((n, h + 1), 50.0),
        p_min_kw=np.zeros((n, h)),
        p_max_kw=np.full((n, h), 7.4),
        eta_in=np.full((n, h), 0.92),
        eta_out=np.ones(n),
        retention=np.ones(n),
        drain_kwh=np.zeros((n, h)),
        spill=np.zeros(n, dtype=bool),
        wear_eur_per_kwh=np.zeros(n),
        terminal_eur_per_kwh=np.full(n, 1.0),
    )
    k = int(auto_levels(rows, level_offsets(rows), DT)[0])
    assert 50.0 / (k - 1) <= 7.4 * 0.92 * DT / 2 + 1e-12
    plan = plan_stores(
        rows, np.array([10.0]), np.zeros((n, h)), np.full(h, 0.1), np.zeros(h), dt_h=DT
    )
    assert plan.e_kwh[0, -1] > 10.0 + 7.4 * 0.92 * DT * h * 0.8


def shifted_rows(rows: StoreRows, s: int) -> StoreRows:
    """The same stores seen from slot ``s`` on (what a later round's rows describe)."""
    return StoreRows(
        **{name: value[:, s:] if name in SLOTTED else value for name, value in vars(rows).items()}
    )


SLOTTED = {"e_min_kwh", "e_max_kwh", "p_min_kw", "p_max_kw", "eta_in", "drain_kwh"}


def test_redeciding_at_shift_zero_repeats_the_full_plans_first_slots() -> None:
    rng = np.random.default_rng(3)
    n = 12
    rows = battery_rows(n, H, rng)
    e0 = rows.e_min_kwh[:, 0] + rng.uniform(0, 1, n) * (rows.e_max_kwh[:, 0] - rows.e_min_kwh[:, 0])
    other, imp = rng.uniform(-3, 3, (n, H)), rng.uniform(0.1, 0.3, H)
    plan = plan_stores(rows, e0, other, imp, np.full(H, 0.05), dt_h=DT, n_keep=4)
    again = replan_first_slots(
        rows, e0, other, imp, np.full(H, 0.05), dt_h=DT, tables=plan.tables, shift=0
    )
    np.testing.assert_array_equal(again.alternatives.cost_eur, plan.alternatives.cost_eur)
    np.testing.assert_array_equal(again.p_kw, plan.p_kw[:, :2])
    np.testing.assert_array_equal(again.e_kwh, plan.e_kwh[:, :3])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.integers(1, 2))
def test_redeciding_later_prices_the_plans_own_path_at_its_cost_to_go(seed, shift) -> None:
    """``shift`` slots after a full plan, from the state the plan reached: the plan's own
    action costs exactly the rest of the plan (slot costs plus terminal value), and the
    re-decided choice costs no more (it may leave the grid for a slot)."""
    rng = np.random.default_rng(seed)
    n = 6
    rows = battery_rows(n, H, rng)
    e0 = rows.e_min_kwh[:, 0] + rng.uniform(0, 1, n) * (rows.e_max_kwh[:, 0] - rows.e_min_kwh[:, 0])
    other, imp, exp = rng.uniform(-3, 3, (n, H)), rng.uniform(0.1, 0.3, H), np.full(H, 0.05)
    plan = plan_stores(rows, e0, other, imp, exp, dt_h=DT, n_levels=15, n_keep=4)
    s = shift + 1  # the plan's states from slot 2 on lie on the grid
    later = replan_first_slots(
        shifted_rows(rows, s),
        plan.e_kwh[:, s],
        other[:, s:],
        imp[s:],
        exp[s:],
        dt_h=DT,
        tables=plan.tables,
        shift=s,
    )
    net = other[:, s:] + plan.p_kw[:, s:]
    rest = (DT * np.where(net >= 0, net * imp[s:], net * exp[s:])).sum(axis=1)
    rest += (rows.wear_eur_per_kwh[:, None] * np.abs(plan.p_kw[:, s:]) * DT).sum(axis=1)
    rest -= rows.terminal_eur_per_kwh * plan.e_kwh[:, -1]
    own = np.abs(later.alternatives.p_kw - plan.p_kw[:, s : s + 1]) < 1e-9
    assert own.any(axis=1).all()
    own_cost = np.where(own, later.alternatives.cost_eur, np.inf).min(axis=1)
    np.testing.assert_allclose(own_cost, rest, atol=1e-9)
    assert (later.cost_eur <= rest + 1e-9).all() and later.feasible.all()
    assert later.p_kw.shape == (n, 2) and later.e_kwh.shape == (n, 3)


def test_redeciding_refuses_a_shift_the_tables_do_not_cover() -> None:
    rows = battery_rows(2, H, np.random.default_rng(0))
    e0 = rows.e_min_kwh[:, 0]
    plan = plan_stores(rows, e0, np.zeros((2, H)), np.full(H, 0.2), np.zeros(H), dt_h=DT, n_keep=2)
    with pytest.raises(ValueError, match="shift"):
        replan_first_slots(
            rows,
            e0,
            np.zeros((2, H)),
            np.full(H, 0.2),
            np.zeros(H),
            dt_h=DT,
            tables=plan.tables,
            shift=2,
        )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spill=st.booleans())
def test_compiled_slot_one_matches_the_numpy_model(seed: int, spill: bool) -> None:
    """Slot 1 from off-grid landings onto the grid: the compiled kernel (which only looks at
    the levels the power limits can reach) against the full (n, M, K) numpy evaluation."""
    rng = np.random.default_rng(seed)
    n, k = 7, 15
    rows = battery_rows(n, H, rng)
    if spill:  # a heat-pump-like store: no discharge, losses, may discard heat
        rows = StoreRows(**(vars(rows) | {
            "p_min_kw": np.zeros((n, H)), "retention": np.full(n, 0.97),
            "drain_kwh": rng.uniform(0.0, 0.5, (n, H)), "spill": np.ones(n, dtype=bool),
            "eta_in": np.full((n, H), 3.0)}))
    offset = level_offsets(rows)
    k_row = np.full(n, k)
    levels = level_grid(rows, k_row, offset)
    value2 = rng.uniform(-1, 1, (n, k))
    value2[rng.uniform(size=(n, k)) < 0.2] = np.inf
    lo, hi = rows.e_min_kwh[:, 1:2], rows.e_max_kwh[:, 1:2]
    e1 = lo + rng.uniform(-0.1, 1.1, (n, 9)) * (hi - lo)
    other, imp, exp = rng.uniform(-3, 3, n), rng.uniform(0.1, 0.3, n), np.full(n, 0.05)
    targets = (levels + offset[:, 2:3])[:, None, :]
    p1, ok1 = rows.feasible_power(e1[:, :, None], targets, 1, DT)
    stage1 = _stage_cost(rows, p1, other, imp, exp, DT)
    total = np.where(ok1, stage1 + value2[:, None, :], np.inf)
    expected = total.min(axis=2)
    c = np.ascontiguousarray
    cost, level, power = _slot_one(
        c(e1), c(levels), k_row, c(offset[:, 2]), c(rows.e_min_kwh[:, 2]),
        c(rows.e_max_kwh[:, 2]), c(rows.p_min_kw[:, 1]), c(rows.p_max_kw[:, 1]),
        c(rows.eta_in[:, 1]), rows.eta_out, rows.retention, c(rows.drain_kwh[:, 1]),
        rows.spill, rows.wear_eur_per_kwh, other, imp, exp, c(value2), DT,
    )
    np.testing.assert_allclose(cost, expected, rtol=0, atol=1e-12)
    found = np.isfinite(expected)
    assert found.any()
    best = np.argmin(total, axis=2)
    np.testing.assert_array_equal(level[found], best[found])
    chosen_p = np.take_along_axis(p1, best[:, :, None], axis=2)[..., 0]
    np.testing.assert_allclose(power[found], chosen_p[found], atol=1e-12)
