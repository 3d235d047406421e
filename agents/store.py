"""Planning a population of energy stores by vectorised dynamic programming.

Every flexible asset of gridbid's agents is written as a *store* of energy with losses:
a battery stores electricity, a heat pump stores heat in the building's thermal mass
(1R1C model), an EV charger fills the car's battery before it leaves, a district-heating
plant fills its hot-water tank. One slot of a store:

    e[t+1] = retention * e[t] + dt * (eta_in[t] * p⁺ - p⁻ / eta_out) - drain[t]

with ``p`` the electric power drawn from the grid (load convention: positive = consumption,
negative = discharge back to the site), ``drain`` what leaves regardless (heat loss at the
reference temperature, the heat demand, an EV's trip) and ``spill`` the right to discard energy
for free (an occupant opening a window when the sun over-heats the house).

Why our own solver: a per-agent LP (HiGHS) costs ~10 ms for 96 slots, so 10,000 agents
would need 100 s per plan; the stacked LP (~3 M variables) is slower still. The problem of
one store is one-dimensional, so a dynamic programme over a grid of ``n_levels`` states,
vectorised over all rows at once, plans a population in one call and yields as a by-product
the exact cost-to-go of every alternative action in the first slot: the agent's truthful
price of deviating from its plan (see :mod:`agents.bidding`). Each row keeps its own grid,
bounds and prices; rows never read each other.

The grid makes the plan approximate (power moves the state between grid levels), never
infeasible: every transition is checked against the row's power and state limits exactly,
with continuous power. A state that starts off the grid (after a partial award) is handled
exactly in the first slot.
"""

from dataclasses import dataclass, replace

import numba
import numpy as np

__all__ = [
    "CostToGo",
    "StoreAlternatives",
    "StorePlan",
    "StoreRows",
    "plan_stores",
    "replan_first_slots",
]

_TOL = 1e-9


@dataclass(frozen=True)
class StoreRows:
    """Parameters of ``n`` stores over a horizon of ``h`` slots (one row per store).

    Attributes:
        e_min_kwh: lower state bound at each slot boundary, shape (n, h + 1).
        e_max_kwh: upper state bound at each slot boundary, shape (n, h + 1).
        p_min_kw: lowest electric power per slot (negative = discharge), shape (n, h).
        p_max_kw: highest electric power per slot, shape (n, h).
        eta_in: energy stored per kWh drawn (a heat pump's COP), shape (n, h).
        eta_out: kWh returned per kWh taken from the store, shape (n,).
        retention: share of the state kept over one slot (self-discharge, heat loss), (n,).
        drain_kwh: energy leaving the store in each slot whatever ``p`` is, shape (n, h).
        spill: whether the store may discard energy for free, shape (n,).
        wear_eur_per_kwh: cost per kWh of electric throughput (degradation), shape (n,).
        terminal_eur_per_kwh: value of each kWh left in the store at the horizon's end, (n,).
    """

    e_min_kwh: np.ndarray
    e_max_kwh: np.ndarray
    p_min_kw: np.ndarray
    p_max_kw: np.ndarray
    eta_in: np.ndarray
    eta_out: np.ndarray
    retention: np.ndarray
    drain_kwh: np.ndarray
    spill: np.ndarray
    wear_eur_per_kwh: np.ndarray
    terminal_eur_per_kwh: np.ndarray

    @property
    def n(self) -> int:
        """Number of stores (rows)."""
        return self.p_min_kw.shape[0]

    @property
    def horizon(self) -> int:
        """Number of slots planned."""
        return self.p_min_kw.shape[1]

    def rows(self, index: np.ndarray | slice) -> "StoreRows":
        """The same stores restricted to some rows (a sub-population)."""
        return StoreRows(**{name: value[index] for name, value in vars(self).items()})

    def power_for(self, e_from: np.ndarray, e_to: np.ndarray, t: int, dt_h: float) -> np.ndarray:
        """Electric power (kW) that moves each store from ``e_from`` to ``e_to`` in slot ``t``.

        ``e_from`` and ``e_to`` broadcast against shape (n, ...); extra axes are levels.
        Spill is not applied here (see :meth:`feasible_power`).
        """
        shape = (self.n,) + (1,) * (np.ndim(e_to) - 1)
        retention = self.retention.reshape(shape)
        drain = self.drain_kwh[:, t].reshape(shape)
        delta = e_to - retention * e_from + drain
        eta_in = self.eta_in[:, t].reshape(shape)
        eta_out = self.eta_out.reshape(shape)
        return np.where(delta >= 0, delta / (eta_in * dt_h), delta * eta_out / dt_h)

    def feasible_power(
        self, e_from: np.ndarray, e_to: np.ndarray, t: int, dt_h: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Power for each transition and whether the transition respects every limit.

        A store that may spill and would need less than its minimum power draws the minimum
        and discards the rest.
        """
        shape = (self.n,) + (1,) * (np.ndim(e_to) - 1)
        p = self.power_for(e_from, e_to, t, dt_h)
        p_min = self.p_min_kw[:, t].reshape(shape)
        p_max = self.p_max_kw[:, t].reshape(shape)
        spill = self.spill.reshape(shape)
        p = np.where(spill & (p < p_min), p_min, p)
        e_lo = self.e_min_kwh[:, t + 1].reshape(shape)
        e_hi = self.e_max_kwh[:, t + 1].reshape(shape)
        ok = (
            (p >= p_min - _TOL)
            & (p <= p_max + _TOL)
            & (e_to >= e_lo - _TOL)
            & (e_to <= e_hi + _TOL)
        )
        return np.clip(p, p_min, p_max), ok

    def next_state(self, e_from: np.ndarray, p_kw: np.ndarray, t: int, dt_h: float) -> np.ndarray:
        """State after drawing ``p_kw`` in slot ``t`` (the forward model, no spill)."""
        gain = np.where(p_kw >= 0, p_kw * self.eta_in[:, t] * dt_h, p_kw / self.eta_out * dt_h)
        return self.retention * e_from + gain - self.drain_kwh[:, t]


@dataclass(frozen=True)
class StoreAlternatives:
    """The actions a store considered in the first slot, with their total cost.

    Attributes:
        p_kw: power of each alternative, shape (n, m).
        cost_eur: the slot's cost plus the cost of the best plan after it (the plan
            re-made with that first action forced); ``inf`` if infeasible, shape (n, m).
        chosen: index of the planned alternative, shape (n,).
    """

    p_kw: np.ndarray
    cost_eur: np.ndarray
    chosen: np.ndarray


@dataclass(frozen=True)
class CostToGo:
    """The cost-to-go tables of one plan, kept to re-decide its first slots later.

    A full plan (:func:`plan_stores`) solves the horizon backwards once; the cost to go from
    each state level is kept for the next ``n_keep`` slots. :func:`replan_first_slots` then
    re-decides the first two slots of a later round exactly, from the real state and a new
    forecast, against these tables, without a new backward recursion. Rows are grouped in
    buckets of equal grid size, as in the plan.

    Attributes:
        buckets: per bucket, ``(rows, k_row, levels, offset, value)``: the bucket's row
            positions, grid sizes, base levels (n_b, K), level offsets per slot boundary
            (n_b, h + 1) and cost to go at slots ``2 … 1 + n_keep`` (n_keep, n_b, K).
        n: number of rows.
        n_keep: how many later slots the tables serve (``shift`` in ``0 … n_keep - 1``).
    """

    buckets: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    n: int
    n_keep: int

    def subset(self, keep: np.ndarray) -> "CostToGo":
        """The tables of the rows where the boolean mask ``keep`` (shape (n,)) is true,
        renumbered in order (a sub-population's stores)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n,):
            raise ValueError(f"keep: expected a mask of shape ({self.n},), got {keep.shape}")
        rank = np.cumsum(keep) - 1
        buckets = []
        for idx, k_row, levels, offset, value in self.buckets:
            sel = keep[idx]
            if sel.any():
                buckets.append(
                    (rank[idx[sel]], k_row[sel], levels[sel], offset[sel], value[:, sel])
                )
        return CostToGo(tuple(buckets), int(keep.sum()), self.n_keep)


@dataclass(frozen=True)
class StorePlan:
    """The plan of a population of stores.

    Attributes:
        p_kw: planned power per slot, shape (n, h).
        e_kwh: planned state at each slot boundary, shape (n, h + 1); ``e_kwh[:, 0]`` is the
            initial state.
        cost_eur: planned total cost per row (energy at the site's prices, wear, minus the
            terminal value), shape (n,).
        feasible: whether a plan within all limits exists from the initial state, (n,).
        alternatives: the first slot's alternatives, for bidding.
        n_levels: the state grid size of each row, shape (n,).
        tables: the cost to go a full plan kept for re-deciding its first slots in later
            rounds (:func:`replan_first_slots`); ``None`` for a re-decided plan.
    """

    p_kw: np.ndarray
    e_kwh: np.ndarray
    cost_eur: np.ndarray
    feasible: np.ndarray
    alternatives: StoreAlternatives
    n_levels: np.ndarray
    tables: CostToGo | None = None


def site_cost_eur(
    net_kw: np.ndarray, import_eur_per_kwh: np.ndarray, export_eur_per_kwh: np.ndarray, dt_h: float
) -> np.ndarray:
    """Energy bill of a site for one slot: imports at the import price, exports earn less."""
    return dt_h * np.where(net_kw >= 0, net_kw * import_eur_per_kwh, net_kw * export_eur_per_kwh)


def _stage_cost(
    rows: StoreRows,
    p: np.ndarray,
    other_kw: np.ndarray,
    import_price: np.ndarray,
    export_price: np.ndarray,
    dt_h: float,
) -> np.ndarray:
    shape = (rows.n,) + (1,) * (p.ndim - 1)
    bill = site_cost_eur(
        other_kw.reshape(shape) + p,
        import_price.reshape(shape),
        export_price.reshape(shape),
        dt_h,
    )
    return bill + rows.wear_eur_per_kwh.reshape(shape) * np.abs(p) * dt_h


@numba.njit(cache=True, parallel=True, fastmath=False)
def _backward(
    levels: np.ndarray,
    k_count: np.ndarray,
    offset: np.ndarray,
    e_min: np.ndarray,
    e_max: np.ndarray,
    p_min: np.ndarray,
    p_max: np.ndarray,
    eta_in: np.ndarray,
    eta_out: np.ndarray,
    retention: np.ndarray,
    drain: np.ndarray,
    spill: np.ndarray,
    wear: np.ndarray,
    terminal: np.ndarray,
    other_kw: np.ndarray,
    import_price: np.ndarray,
    export_price: np.ndarray,
    dt_h: float,
    n_keep: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Backward recursion over slots h-1 … 2; returns the cost to go and the policy.

    The cost to go is kept for slots ``2 … 2 + n_keep - 1``, shape (n_keep, n, K) (slot
    ``h`` is the terminal value), so a plan can be re-decided from a later slot without a
    new recursion (:func:`replan_first_slots`).

    Compiled with numba: the same arithmetic as :meth:`StoreRows.feasible_power` and
    :func:`_stage_cost` (kept in step by the tests, which compare against them), written as
    loops so that no (n, K, K) temporaries are built; ~50x faster than the numpy version.
    """
    n, k_levels = levels.shape
    h = p_min.shape[1]
    value_out = np.full((n_keep, n, k_levels), np.inf)
    policy = np.zeros((h, n, k_levels), dtype=np.int16)
    for i in numba.prange(n):
        value = np.full(k_levels, np.inf)
        new_value = np.full(k_levels, np.inf)
        k_row = k_count[i]
        for k in range(k_row):
            e = levels[i, k] + offset[i, h]
            if e < e_min[i, h] - _TOL or e > e_max[i, h] + _TOL:
                value[k] = np.inf
            else:
                value[k] = -terminal[i] * e
        if h - 2 < n_keep:
            value_out[h - 2, i, :] = value
        for t in range(h - 1, 1, -1):
            lo = e_min[i, t + 1] - _TOL
            hi = e_max[i, t + 1] + _TOL
            pmin = p_min[i, t]
            pmax = p_max[i, t]
            base = levels[i, 0] + offset[i, t + 1]
            step = levels[i, 1] - levels[i, 0] if k_row > 1 else 1.0
            gain_lo = pmin * eta_in[i, t] * dt_h if pmin >= 0 else pmin / eta_out[i] * dt_h
            gain_hi = pmax * eta_in[i, t] * dt_h if pmax >= 0 else pmax / eta_out[i] * dt_h
            # Per-slot constants, hoisted out of the (level, target) loops.
            ret = retention[i]
            drain_t = drain[i, t]
            in_scale = eta_in[i, t] * dt_h
            out_scale = eta_out[i] / dt_h
            other_t = other_kw[i, t]
            buy = import_price[i, t] * dt_h
            sell = export_price[i, t] * dt_h
            wear_t = wear[i] * dt_h
            off_next = offset[i, t + 1]
            may_spill = spill[i]
            for k in range(k_row):
                e = levels[i, k] + offset[i, t]
                best = np.inf
                best_j = 0
                # Only targets the power limits can reach (levels are evenly spaced); one
                # level of slack on each side, the exact checks below decide.
                passive = ret * e - drain_t
                j_lo = 0
                if not may_spill and step > 0:
                    j_lo = max(0, int(np.floor((passive + gain_lo - base) / step)) - 1)
                j_hi = k_row - 1
                if step > 0:
                    j_hi = min(k_row - 1, int(np.ceil((passive + gain_hi - base) / step)) + 1)
                for j in range(j_lo, j_hi + 1):
                    v_j = value[j]
                    if v_j == np.inf:
                        continue
                    target = levels[i, j] + off_next
                    if target < lo or target > hi:
                        continue
                    delta = target - ret * e + drain_t
                    p = delta / in_scale if delta >= 0 else delta * out_scale
                    if p < pmin:
                        if may_spill:
                            p = pmin
                        elif p < pmin - _TOL:
                            continue
                        else:
                            p = pmin
                    if p > pmax:
                        if p > pmax + _TOL:
                            continue
                        p = pmax
                    net = other_t + p
                    cost = net * buy if net >= 0 else net * sell
                    cost += wear_t * abs(p) + v_j
                    if cost < best:
                        best = cost
                        best_j = j
                new_value[k] = best
                policy[t, i, k] = best_j
            value[:] = new_value
            if t - 2 < n_keep:
                value_out[t - 2, i, :] = value
    return value_out, policy


def _pinned(rows: StoreRows) -> np.ndarray:
    """Rows whose power is fixed in some slot (an EV away from home), retention 1."""
    return ((rows.p_max_kw - rows.p_min_kw) <= _TOL).any(axis=1) & (rows.retention == 1.0)


def level_offsets(rows: StoreRows) -> np.ndarray:
    """How each row's grid moves with time, shape (n, h + 1).

    A store whose power is pinned in some slot can only follow its drain there, so its
    grid levels must move by exactly the drain for a zero-power transition to land on a
    level. Such rows get the cumulative drain as offset; every other row keeps a fixed grid.
    """
    offset = np.zeros((rows.n, rows.horizon + 1))
    offset[:, 1:] = -np.cumsum(rows.drain_kwh, axis=1)
    return np.where(_pinned(rows)[:, None], offset, 0.0)


def auto_levels(rows: StoreRows, offset: np.ndarray, dt_h: float, cap: int = 121) -> np.ndarray:
    """Grid size of each row, from the row's own parameters only (so no row's plan depends
    on another's): fine enough that one slot at full power moves the state by at least two
    grid steps (else a slow charger could never leave its level), 11 to ``cap`` levels."""
    span = (rows.e_max_kwh - offset).max(axis=1) - (rows.e_min_kwh - offset).min(axis=1)

    def gain(p: np.ndarray) -> np.ndarray:
        return np.where(p >= 0, p * rows.eta_in, p / rows.eta_out[:, None]) * dt_h

    width = gain(rows.p_max_kw) - gain(rows.p_min_kw)
    reach = np.where(width > _TOL, width, np.inf).min(axis=1)
    needed = np.ceil(2.0 * span / np.where(np.isfinite(reach), reach, span + 1.0)) + 2
    return np.clip(needed, 11, cap).astype(np.int64)


def level_grid(
    rows: StoreRows, k_row: np.ndarray, offset: np.ndarray, e0_kwh: np.ndarray | None = None
) -> np.ndarray:
    """The base state levels of each row (the level at slot ``t`` is ``grid + offset[:, t]``).

    Row ``i`` has ``k_row[i]`` levels covering every slot's bounds; the array is padded to
    the largest count (padding repeats the top level and is never used). A pinned row's
    grid is shifted so that its initial state ``e0_kwh`` is a level: in a pinned slot it
    can only move by its drain, so an initial state between levels could never land on one.
    """
    lo = (rows.e_min_kwh - offset).min(axis=1)
    hi = (rows.e_max_kwh - offset).max(axis=1)
    k_row = np.asarray(k_row)
    index = np.minimum(np.arange(k_row.max())[None, :], (k_row - 1)[:, None])
    grid = lo[:, None] + (hi - lo)[:, None] * (index / np.maximum(k_row - 1, 1)[:, None])
    if e0_kwh is None:
        return grid
    pinned = _pinned(rows)
    if not pinned.any():
        return grid
    step = (hi - lo) / np.maximum(k_row - 2, 1)
    safe = np.where(step > 0, step, 1.0)
    phase = np.mod(np.asarray(e0_kwh) - lo, safe)
    shifted = (lo + phase - safe)[:, None] + safe[:, None] * index
    return np.where(pinned[:, None] & (step > 0)[:, None], shifted, grid)


def plan_stores(
    rows: StoreRows,
    e0_kwh: np.ndarray,
    other_kw: np.ndarray,
    import_eur_per_kwh: np.ndarray,
    export_eur_per_kwh: np.ndarray,
    *,
    dt_h: float,
    n_levels: int | np.ndarray | None = None,
    p0_kw: np.ndarray | None = None,
    n_keep: int = 1,
) -> StorePlan:
    """Plan every store at least cost against its site's prices (see :func:`_plan_bucket`).

    Rows are planned in buckets of equal grid size, so a population mixing a house's heat
    pump (a dozen levels) with a school's (fifty) does not pad every row to fifty; each
    row's result is the same whichever bucket or population it is planned in.

    Returns:
        The plan, with the cost-to-go tables for re-deciding the first slots in the next
        ``n_keep`` rounds (``n_keep`` at most ``horizon - 1``) as ``tables``.
    """
    n, h = rows.n, rows.horizon
    if not 1 <= n_keep <= h - 1:
        raise ValueError(f"n_keep: must be between 1 and horizon - 1 = {h - 1}, got {n_keep}")
    offset = level_offsets(rows)
    if n_levels is None:
        k_row = auto_levels(rows, offset, dt_h)
    else:
        k_row = np.broadcast_to(np.asarray(n_levels, dtype=np.int64), (n,)).copy()
    sizes = np.unique(k_row)
    import_price = np.broadcast_to(import_eur_per_kwh, (n, h))
    export_price = np.broadcast_to(export_eur_per_kwh, (n, h))
    e0 = np.asarray(e0_kwh, dtype=float)
    if len(sizes) == 1:
        plan, bucket = _plan_bucket(
            rows,
            e0,
            other_kw,
            import_price,
            export_price,
            dt_h=dt_h,
            k_row=k_row,
            p0_kw=p0_kw,
            n_keep=n_keep,
        )
        return replace(plan, tables=CostToGo(((np.arange(n), *bucket),), n, n_keep))
    width = 1 if p0_kw is not None else 2 * int(sizes.max())
    p_plan, e_plan = np.zeros((n, h)), np.zeros((n, h + 1))
    cost, feasible = np.zeros(n), np.zeros(n, dtype=bool)
    alt_p, alt_cost = np.zeros((n, width)), np.full((n, width), np.inf)
    chosen = np.zeros(n, dtype=np.intp)
    buckets = []
    for size in sizes:
        idx = np.flatnonzero(k_row == size)
        part, bucket = _plan_bucket(
            rows.rows(idx),
            e0[idx],
            other_kw[idx],
            import_price[idx],
            export_price[idx],
            dt_h=dt_h,
            k_row=k_row[idx],
            p0_kw=None if p0_kw is None else p0_kw[idx],
            n_keep=n_keep,
        )
        p_plan[idx], e_plan[idx] = part.p_kw, part.e_kwh
        cost[idx], feasible[idx] = part.cost_eur, part.feasible
        _scatter_alternatives(part.alternatives, idx, alt_p, alt_cost, chosen)
        buckets.append((idx, *bucket))
    return StorePlan(
        p_plan,
        e_plan,
        cost,
        feasible,
        StoreAlternatives(alt_p, alt_cost, chosen),
        k_row,
        CostToGo(tuple(buckets), n, n_keep),
    )


def replan_first_slots(
    rows: StoreRows,
    e0_kwh: np.ndarray,
    other_kw: np.ndarray,
    import_eur_per_kwh: np.ndarray,
    export_eur_per_kwh: np.ndarray,
    *,
    dt_h: float,
    tables: CostToGo,
    shift: int,
    p0_kw: np.ndarray | None = None,
) -> StorePlan:
    """Re-decide the first two slots ``shift`` slots after the plan that made ``tables``.

    Slots 0 and 1 are solved exactly as in a full plan (every candidate power of slot 0
    from the real state, slot 1 onto the grid), against the kept cost to go from slot 2;
    nothing after slot 2 is re-planned. ``rows`` describe the stores from the current slot
    on (only slots 0 and 1, and the bounds up to slot 2, are read); ``other_kw`` and the
    prices need only their first two slots. The plan returned covers two slots:
    ``p_kw`` (n, 2) and ``e_kwh`` (n, 3).
    """
    if not 0 <= shift < tables.n_keep:
        raise ValueError(f"shift: tables serve 0 … {tables.n_keep - 1} slots ahead, got {shift}")
    if rows.n != tables.n:
        raise ValueError(f"rows: {rows.n} stores, the tables have {tables.n}")
    n = rows.n
    import_price = np.broadcast_to(np.asarray(import_eur_per_kwh)[..., :2], (n, 2))
    export_price = np.broadcast_to(np.asarray(export_eur_per_kwh)[..., :2], (n, 2))
    e0 = np.asarray(e0_kwh, dtype=float)
    width = 1 if p0_kw is not None else 2 * max(b[2].shape[1] for b in tables.buckets)
    p_plan, e_plan = np.zeros((n, 2)), np.zeros((n, 3))
    cost, feasible = np.zeros(n), np.zeros(n, dtype=bool)
    alt_p, alt_cost = np.zeros((n, width)), np.full((n, width), np.inf)
    chosen = np.zeros(n, dtype=np.intp)
    k_all = np.zeros(n, dtype=np.int64)
    for idx, k_row, levels, offset, value in tables.buckets:
        first = _first_slots(
            rows.rows(idx),
            e0[idx],
            other_kw[idx],
            import_price[idx],
            export_price[idx],
            dt_h=dt_h,
            k_row=k_row,
            levels=levels,
            off1=offset[:, shift + 1],
            off2=offset[:, shift + 2],
            value2=value[shift],
            p0_kw=None if p0_kw is None else p0_kw[idx],
        )
        p_plan[idx] = np.stack([first.p0_plan, first.p1_plan], axis=1)
        e_plan[idx] = np.stack([e0[idx], first.e1_plan, first.e2_plan], axis=1)
        cost[idx], feasible[idx] = first.cost, first.feasible
        _scatter_alternatives(first.alternatives, idx, alt_p, alt_cost, chosen)
        k_all[idx] = k_row
    return StorePlan(
        p_plan, e_plan, cost, feasible, StoreAlternatives(alt_p, alt_cost, chosen), k_all
    )


def _scatter_alternatives(
    part: StoreAlternatives,
    idx: np.ndarray,
    alt_p: np.ndarray,
    alt_cost: np.ndarray,
    chosen: np.ndarray,
) -> None:
    """Write a bucket's alternatives into the population's (padding repeats the last)."""
    m = part.p_kw.shape[1]
    alt_p[idx, :m], alt_cost[idx, :m] = part.p_kw, part.cost_eur
    alt_p[idx, m:] = part.p_kw[:, -1:]
    chosen[idx] = part.chosen


@dataclass(frozen=True)
class _FirstSlots:
    """Slots 0 and 1 of a bucket, decided exactly (see :func:`_first_slots`)."""

    alternatives: StoreAlternatives
    cost: np.ndarray
    feasible: np.ndarray
    p0_plan: np.ndarray
    e1_plan: np.ndarray
    p1_plan: np.ndarray
    e2_plan: np.ndarray
    level2: np.ndarray


def _first_slots(
    rows: StoreRows,
    e0: np.ndarray,
    other_kw: np.ndarray,
    import_price: np.ndarray,
    export_price: np.ndarray,
    *,
    dt_h: float,
    k_row: np.ndarray,
    levels: np.ndarray,
    off1: np.ndarray,
    off2: np.ndarray,
    value2: np.ndarray,
    p0_kw: np.ndarray | None,
) -> _FirstSlots:
    """Slot 0 from the exact state over candidate powers, slot 1 onto the grid, then the
    cost to go ``value2`` from slot 2 (levels there are ``levels + off2``)."""
    n = rows.n
    valid = np.arange(levels.shape[1])[None, :] < k_row[:, None]
    on_grid, _ = rows.feasible_power(e0[:, None], levels + off1[:, None], 0, dt_h)
    share = np.minimum(np.arange(levels.shape[1])[None, :] / np.maximum(k_row - 1, 1)[:, None], 1)
    spread = rows.p_min_kw[:, :1] + (rows.p_max_kw[:, :1] - rows.p_min_kw[:, :1]) * share
    on_grid = np.where(valid, on_grid, spread)  # padding: repeat a spread candidate
    p0 = np.concatenate([on_grid, spread], axis=1)  # (n, M)
    if p0_kw is not None:
        p0 = np.asarray(p0_kw, dtype=float).reshape(n, 1)
    e1 = _landing(rows, e0[:, None], p0, dt_h)
    ok0 = (e1 >= rows.e_min_kwh[:, 1:2] - _TOL) & (e1 <= rows.e_max_kwh[:, 1:2] + _TOL)
    stage0 = _stage_cost(rows, p0, other_kw[:, 0], import_price[:, 0], export_price[:, 0], dt_h)

    # Slot 1: from each landing onto the grid (compiled: no (n, M, K) temporaries).
    c = np.ascontiguousarray
    cost_from_1, next_level, p1 = _slot_one(
        c(e1, dtype=float),
        c(levels, dtype=float),
        c(k_row, dtype=np.int64),
        c(off2, dtype=float),
        c(rows.e_min_kwh[:, 2], dtype=float),
        c(rows.e_max_kwh[:, 2], dtype=float),
        c(rows.p_min_kw[:, 1], dtype=float),
        c(rows.p_max_kw[:, 1], dtype=float),
        c(rows.eta_in[:, 1], dtype=float),
        c(rows.eta_out, dtype=float),
        c(rows.retention, dtype=float),
        c(rows.drain_kwh[:, 1], dtype=float),
        c(rows.spill, dtype=np.bool_),
        c(rows.wear_eur_per_kwh, dtype=float),
        c(other_kw[:, 1], dtype=float),
        c(import_price[:, 1], dtype=float),
        c(export_price[:, 1], dtype=float),
        c(value2, dtype=float),
        float(dt_h),
    )
    cost0 = np.where(ok0, stage0 + cost_from_1, np.inf)
    chosen = np.argmin(cost0, axis=1)
    rows_idx = np.arange(n)
    feasible = np.isfinite(cost0[rows_idx, chosen])
    p0_plan = p0[rows_idx, chosen]
    e1_plan = e1[rows_idx, chosen]
    level = next_level[rows_idx, chosen]
    p1_plan = p1[rows_idx, chosen]
    e2_plan = levels[rows_idx, level] + off2

    # Infeasible rows (a house the heat pump cannot keep warm in extreme cold, a state
    # pushed out of its band): take the action that ends the slot closest to the band;
    # `feasible` says so, and such rows offer nothing.
    if not feasible.all():
        bad = ~feasible
        outside = np.clip(rows.e_min_kwh[:, 1:2] - e1, 0, None) + np.clip(
            e1 - rows.e_max_kwh[:, 1:2], 0, None
        )
        recovery = np.argmin(np.where(np.isfinite(stage0), outside, np.inf), axis=1)
        p0_plan = np.where(bad, p0[rows_idx, recovery], p0_plan)
        e1_plan = np.where(bad, e1[rows_idx, recovery], e1_plan)
        p1_plan = np.where(bad, 0.0, p1_plan)
        e2_plan = np.where(bad, np.nan, e2_plan)
    return _FirstSlots(
        alternatives=StoreAlternatives(p_kw=p0, cost_eur=cost0, chosen=chosen),
        cost=np.where(feasible, cost0[rows_idx, chosen], np.inf),
        feasible=feasible,
        p0_plan=p0_plan,
        e1_plan=e1_plan,
        p1_plan=p1_plan,
        e2_plan=e2_plan,
        level2=level,
    )


@numba.njit(cache=True, parallel=True, fastmath=False)
def _slot_one(
    e1: np.ndarray,
    levels: np.ndarray,
    k_count: np.ndarray,
    off2: np.ndarray,
    e_min2: np.ndarray,
    e_max2: np.ndarray,
    p_min1: np.ndarray,
    p_max1: np.ndarray,
    eta_in1: np.ndarray,
    eta_out: np.ndarray,
    retention: np.ndarray,
    drain1: np.ndarray,
    spill: np.ndarray,
    wear: np.ndarray,
    other1: np.ndarray,
    import1: np.ndarray,
    export1: np.ndarray,
    value2: np.ndarray,
    dt_h: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best move in slot 1 from each landing ``e1[i, m]`` onto a grid level of slot 2.

    The arithmetic of :meth:`StoreRows.feasible_power` and :func:`_stage_cost` (kept in
    step by the tests), as loops. Returns the cost from slot 1 on, the chosen level and its
    power, each (n, M); where no move is feasible the cost is ``inf`` and the level and
    power reported are meaningless (the caller replaces them).
    """
    n, m_count = e1.shape
    cost_out = np.full((n, m_count), np.inf)
    level_out = np.zeros((n, m_count), dtype=np.int64)
    p_out = np.zeros((n, m_count))
    for i in numba.prange(n):
        k_row = k_count[i]
        lo = e_min2[i] - _TOL
        hi = e_max2[i] + _TOL
        pmin = p_min1[i]
        pmax = p_max1[i]
        base = levels[i, 0] + off2[i]
        step = levels[i, 1] - levels[i, 0] if k_row > 1 else 1.0
        gain_lo = pmin * eta_in1[i] * dt_h if pmin >= 0 else pmin / eta_out[i] * dt_h
        gain_hi = pmax * eta_in1[i] * dt_h if pmax >= 0 else pmax / eta_out[i] * dt_h
        for m in range(m_count):
            e = e1[i, m]
            best = np.inf
            best_j = 0
            best_p = 0.0
            # Only targets the power limits can reach (levels are evenly spaced), with one
            # level of slack on each side, as in _backward; the exact checks below decide.
            passive = retention[i] * e - drain1[i]
            j_lo = 0
            if not spill[i] and step > 0:
                j_lo = max(0, int(np.floor((passive + gain_lo - base) / step)) - 1)
            j_hi = k_row - 1
            if step > 0:
                j_hi = min(k_row - 1, int(np.ceil((passive + gain_hi - base) / step)) + 1)
            for j in range(j_lo, j_hi + 1):
                target = levels[i, j] + off2[i]
                delta = target - retention[i] * e + drain1[i]
                p = delta / (eta_in1[i] * dt_h) if delta >= 0 else delta * eta_out[i] / dt_h
                if spill[i] and p < pmin:
                    p = pmin
                feasible = p >= pmin - _TOL and p <= pmax + _TOL and target >= lo and target <= hi
                p = min(max(p, pmin), pmax)
                if j == 0:
                    best_p = p
                if not feasible or not np.isfinite(value2[i, j]):
                    continue
                net = other1[i] + p
                cost = net * import1[i] * dt_h if net >= 0 else net * export1[i] * dt_h
                cost = cost + wear[i] * abs(p) * dt_h
                cost = cost + value2[i, j]
                if cost < best:
                    best = cost
                    best_j = j
                    best_p = p
            cost_out[i, m] = best
            level_out[i, m] = best_j
            p_out[i, m] = best_p
    return cost_out, level_out, p_out


def _plan_bucket(
    rows: StoreRows,
    e0_kwh: np.ndarray,
    other_kw: np.ndarray,
    import_eur_per_kwh: np.ndarray,
    export_eur_per_kwh: np.ndarray,
    *,
    dt_h: float,
    k_row: np.ndarray,
    p0_kw: np.ndarray | None = None,
    n_keep: int = 1,
) -> tuple[StorePlan, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Plan stores that share a grid size at least cost against their site's prices.

    Slots 2 … h-1 are solved on the state grid (backward DP, compiled). The first two slots
    are solved exactly from the real, possibly off-grid state: slot 0 tries a set of
    continuous powers (every power that lands on a grid level, plus an even spread over the
    power range), slot 1 goes from wherever each lands onto the grid. So every alternative's
    cost is the cost of re-planning after taking it, which is what a truthful bid asks.

    Args:
        rows: the stores' parameters over the horizon (at least 2 slots).
        e0_kwh: initial state of each store, shape (n,); may lie between grid levels.
        other_kw: the rest of each store's site net load per slot (load convention), (n, h).
            Costs are those of the site's whole bill, so a store that soaks up its own
            site's PV surplus is valued at the export price it forgoes.
        import_eur_per_kwh: import price per slot, shape (n, h) or (h,).
        export_eur_per_kwh: export price per slot, shape (n, h) or (h,).
        dt_h: slot length in hours.
        k_row: state grid size of each row.
        p0_kw: force the first slot's power, shape (n,): the plan is then the best one
            after that action (the cost of an award, re-planned).
        n_keep: slots of cost to go to keep (see :class:`CostToGo`).

    Returns:
        The plan, its cost and the alternatives of the first slot; and the bucket's tables
        ``(k_row, levels, offset, value)``.
    """
    n, h = rows.n, rows.horizon
    if h < 2:
        raise ValueError(f"horizon: need at least 2 slots to plan, got {h}")
    import_price = np.broadcast_to(import_eur_per_kwh, (n, h))
    export_price = np.broadcast_to(export_eur_per_kwh, (n, h))
    e0 = np.asarray(e0_kwh, dtype=float)
    offset = level_offsets(rows)
    levels = level_grid(rows, k_row, offset, e0)  # (n, K), shifted by offset[:, t] at slot t
    c = np.ascontiguousarray
    value, policy = _backward(
        c(levels, dtype=float),
        c(k_row, dtype=np.int64),
        c(offset, dtype=float),
        c(rows.e_min_kwh, dtype=float),
        c(rows.e_max_kwh, dtype=float),
        c(rows.p_min_kw, dtype=float),
        c(rows.p_max_kw, dtype=float),
        c(rows.eta_in, dtype=float),
        c(rows.eta_out, dtype=float),
        c(rows.retention, dtype=float),
        c(rows.drain_kwh, dtype=float),
        c(rows.spill, dtype=np.bool_),
        c(rows.wear_eur_per_kwh, dtype=float),
        c(rows.terminal_eur_per_kwh, dtype=float),
        c(other_kw, dtype=float),
        c(import_price, dtype=float),
        c(export_price, dtype=float),
        float(dt_h),
        int(n_keep),
    )
    first = _first_slots(
        rows,
        e0,
        other_kw,
        import_price,
        export_price,
        dt_h=dt_h,
        k_row=k_row,
        levels=levels,
        off1=offset[:, 1],
        off2=offset[:, 2],
        value2=value[0],
        p0_kw=p0_kw,
    )
    rows_idx = np.arange(n)
    p_plan = np.zeros((n, h))
    e_plan = np.zeros((n, h + 1))
    e_plan[:, 0] = e0
    p_plan[:, 0], e_plan[:, 1] = first.p0_plan, first.e1_plan
    p_plan[:, 1], e_plan[:, 2] = first.p1_plan, first.e2_plan
    level = first.level2
    for t in range(2, h):
        level = policy[t][rows_idx, level].astype(np.intp)
        e_plan[:, t + 1] = levels[rows_idx, level] + offset[:, t + 1]
    if h > 2:
        p_plan[:, 2:] = _path_power(rows, e_plan, dt_h)
    bad = ~first.feasible
    if bad.any():
        p_plan[bad, 2:] = 0.0
        e_plan[bad, 2:] = np.nan
    plan = StorePlan(
        p_kw=p_plan,
        e_kwh=e_plan,
        cost_eur=first.cost,
        feasible=first.feasible,
        alternatives=first.alternatives,
        n_levels=k_row,
    )
    return plan, (k_row, levels, offset, value)


def _path_power(rows: StoreRows, e_plan: np.ndarray, dt_h: float) -> np.ndarray:
    """Power of every planned transition from slot 2 on, in one vectorised pass (the same
    arithmetic as :meth:`StoreRows.feasible_power`, all slots at once)."""
    e_from, e_to = e_plan[:, 2:-1], e_plan[:, 3:]
    delta = e_to - rows.retention[:, None] * e_from + rows.drain_kwh[:, 2:]
    p = np.where(
        delta >= 0, delta / (rows.eta_in[:, 2:] * dt_h), delta * rows.eta_out[:, None] / dt_h
    )
    p_min, p_max = rows.p_min_kw[:, 2:], rows.p_max_kw[:, 2:]
    return np.clip(np.where(rows.spill[:, None] & (p < p_min), p_min, p), p_min, p_max)


def _landing(rows: StoreRows, e_from: np.ndarray, p_kw: np.ndarray, dt_h: float) -> np.ndarray:
    """State after slot 0 at power ``p_kw`` (n, M); a store that may spill discards what
    would exceed its upper bound."""
    gain = np.where(
        p_kw >= 0, p_kw * rows.eta_in[:, :1] * dt_h, p_kw / rows.eta_out[:, None] * dt_h
    )
    e = rows.retention[:, None] * e_from + gain - rows.drain_kwh[:, :1]
    return np.where(rows.spill[:, None], np.minimum(e, rows.e_max_kwh[:, 1:2]), e)
