"""``locational``: the cheapest set of bids that removes the voltage need, as an LP (HiGHS).

Model (one LP over all requests of the call)::

    minimise   sum_j c_j x_j + sum_r v_r u_r
    subject to sum_j s_rj x_j + u_r >= dv_r      for every request r   (dual lambda_r >= 0)
               0 <= x_j <= quantity_j,  u_r >= 0

* ``x_j`` is the P (kW) or Q (kvar) part of an eligible bid row (same direction, interval
  covering the request's); P and Q parts are separate columns competing in the same rows.
  A row's quantity is shared by all requests: a kW at bus b helps every request with a
  sensitivity at b, by that sensitivity.
* ``s_rj`` is the request's ``sensitivity_pu_per_kw`` (or ``..._per_kvar``) at the row's
  bus; a request with both maps empty counts kW at its own bus one-for-one (s = 1).
* ``dv_r`` is ``dv_required_pu``; when that is 0 it is ``p_kw x s_ref`` (the kW need
  converted with the reference sensitivity). The request's ``q_kvar`` and
  ``max_price_eur_per_kvarh`` are not used: the need is in pu, and Q bids meet it through
  ``sensitivity_pu_per_kvar`` at the same value per pu.
* ``u_r`` is the unserved need, priced at the buyer's value ``v_r = max_price_eur_per_kwh /
  s_ref``: the request's cap translated to EUR per pu. ``s_ref`` is the kW sensitivity at
  the request's bus if positive, else its largest positive sensitivity. A bid is bought
  only if it removes need more cheaply than the buyer values it.
* ``c_j`` is the ask, plus a perturbation below ``1e-6 x (1 + max ask)`` that grows with
  the merit rank, so among otherwise equal bids the earlier row wins (the tie-break rule).

Prices are the duals: the locational price at bus b is ``pi_b = sum_r lambda_r s_rb``, in
EUR/kWh (EUR/kvarh with kvar sensitivities). An accepted row is paid ``max(ask, pi_b)``;
at the optimum ``pi_b >= ask`` for every accepted row up to solver tolerance, so the max
only removes round-off (and makes indivisible rows whole, see below). Since ``lambda_r <=
v_r``, ``pi_b <= sum_r v_r max(s_rb, 0)``: the buyers' caps translated to bus b.
``prices[request_id]`` is ``lambda_r x s_ref`` (the price of a kW at the reference bus).
An award is attributed to the request contributing most to its row's price (ties: request
order; if no dual is positive, the request with the largest sensitivity).

Minimum fractions: if at most ``mip_max_indivisible`` columns have a minimum, their
columns are semi-continuous (0 or between minimum and quantity) and HiGHS solves the MIP
to ``mip_rel_gap``; then the on/off decisions are fixed and the LP is solved again for
duals. Above that number, or if HiGHS returns no MIP optimum (1.16 can end in "Solve
error" on degenerate semi-continuous models), the LP relaxation is repaired
deterministically instead (not necessarily optimal): every column
stuck between 0 and its minimum is switched on (bounds ``[minimum, quantity]``) if it is
at least half its minimum, else off, and the LP is solved again, until none is stuck. A
switched-on row accepted at its minimum may be paid its ask above the dual (make-whole).

Curve bids: a bid's minimum sits on its first step; a later step may be bought only if
the first step is (so the bid as a whole is 0 or at least its minimum). The MIP links
them (``x_step <= quantity_step / minimum_first x x_first``); once the first step is
off (by the MIP or the repair), its later steps' upper bounds are set to 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import highspy
import numpy as np
from pydantic import Field

from market.book import OrderBook
from market.messages import ClearingResult, FlexRequest
from market.registry import register_rule
from market.rules._colgen import solve_by_columns
from market.rules._common import (
    FloatArray,
    RuleParams,
    assemble_awards,
    parse_params,
    sorted_requests,
)
from market.rules._highs import new_highs, pass_lp, run
from market.rules._sensitivity import (
    GATE_ABSENT,
    SensitivityMatrix,
    build_sensitivity_matrix,
    sensitivity_reports,
)

__all__ = ["LocationalParams", "locational"]

_TOLERANCE = 1e-9


class LocationalParams(RuleParams):
    """Parameters of the ``locational`` rule.

    Attributes:
        solver: HiGHS solver for the LP: ``"simplex"`` (default, exact duals) or ``"ipm"``.
        mip_max_indivisible: Up to this many columns with a minimum quantity, solve a MIP;
            above, use the LP relaxation with the deterministic repair.
        mip_rel_gap: Relative optimality gap at which the MIP stops.
        time_limit_s: Wall-clock limit per HiGHS call (a guard, not a tuning knob).
        column_generation_above: Above this many columns, and when no column has a
            minimum quantity or a curve gate, solve by column generation (same optimum,
            see :mod:`market.rules._colgen`); on a noon round of 100,000 homes (about
            57,000 columns, 90 requests) it held a few thousand columns.
    """

    solver: Literal["simplex", "ipm"] = "simplex"
    mip_max_indivisible: int = 50
    mip_rel_gap: float = 1e-9
    time_limit_s: float = 60.0
    column_generation_above: int = Field(5000, ge=0)


def _mip_decisions(
    matrix: SensitivityMatrix, params: LocationalParams, cost: FloatArray, has_min: np.ndarray
) -> np.ndarray | None:
    """Which indivisible columns the MIP switches on; ``None`` if HiGHS gives no optimum.

    HiGHS can end a semi-continuous MIP in "Solve error" when its solution misses a
    minimum by more than its feasibility tolerance (seen with 1.16 on degenerate costs);
    the caller then falls back to the deterministic repair.
    """
    highs = new_highs(params)
    highs.setOptionValue("solver", "choose")
    highs.setOptionValue("mip_feasibility_tolerance", 1e-9)
    lower = np.where(has_min, matrix.minimum, 0.0)
    upper = np.where(matrix.gate == GATE_ABSENT, 0.0, matrix.quantity)
    pass_lp(highs, matrix, cost, lower, upper, has_min)
    _link_gated_columns(highs, matrix)
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(highs.getSolution().col_value)[: has_min.shape[0]]
    return has_min & (x > _TOLERANCE)


def _link_gated_columns(highs: highspy.Highs, matrix: SensitivityMatrix) -> None:
    """Add ``x_j - quantity_j / minimum_g x x_g <= 0`` for every gated column j, gate g."""
    gated = np.flatnonzero(matrix.gate >= 0)
    if gated.size == 0:
        return
    gates = matrix.gate[gated]
    n = gated.shape[0]
    index = np.column_stack([gated, gates]).reshape(-1).astype(np.int32)
    ratio = matrix.quantity[gated] / matrix.minimum[gates]
    value = np.column_stack([np.ones(n), -ratio]).reshape(-1)
    starts = np.arange(0, 2 * n, 2, dtype=np.int32)
    highs.addRows(n, np.full(n, -highspy.kHighsInf), np.zeros(n), 2 * n, starts, index, value)


def _close_gated(matrix: SensitivityMatrix, upper: FloatArray) -> FloatArray:
    """Upper bounds with every column whose gate is off (upper bound 0) set to 0."""
    gate = matrix.gate
    closed = (gate == GATE_ABSENT) | ((gate >= 0) & (upper[np.maximum(gate, 0)] <= 0.0))
    return np.where(closed, 0.0, upper)


def _solve(
    matrix: SensitivityMatrix, params: LocationalParams
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Solve, honouring minimum quantities; return (x, slack, lambda)."""
    n_bid = matrix.column_rows.shape[0]
    cost = matrix.ask + matrix.tie_break
    lower = np.zeros(n_bid)
    upper = _close_gated(matrix, matrix.quantity.copy())
    undecided = matrix.minimum > _TOLERANCE
    if (
        n_bid > params.column_generation_above
        and not undecided.any()
        and not (matrix.gate >= 0).any()
    ):
        values, slack, row_dual, _ = solve_by_columns(matrix, params, cost, upper)
        x = np.clip(values, lower, upper)
        x[x <= _TOLERANCE] = 0.0
        duals = np.maximum(row_dual, 0.0) / matrix.s_ref
        return x, np.maximum(slack, 0.0) * matrix.s_ref, duals
    if undecided.any() and undecided.sum() <= params.mip_max_indivisible:
        on = _mip_decisions(matrix, params, cost, undecided)
        if on is not None:
            lower = np.where(on, matrix.minimum, 0.0)
            upper = _close_gated(matrix, np.where(undecided & ~on, 0.0, upper))
            undecided = np.zeros(n_bid, dtype=bool)
    highs = new_highs(params)
    pass_lp(highs, matrix, cost, lower, upper, None)
    run(highs)
    while undecided.any():
        x = np.asarray(highs.getSolution().col_value)[:n_bid]
        stuck = undecided & (x > _TOLERANCE) & (x < matrix.minimum - 1e-7)
        if not stuck.any():
            break
        on = stuck & (x >= 0.5 * matrix.minimum)
        lower = np.where(on, matrix.minimum, lower)
        closed = _close_gated(matrix, np.where(stuck & ~on, 0.0, upper))
        changed = stuck | (closed != upper)
        upper = closed
        undecided = undecided & ~stuck
        cols = np.flatnonzero(changed).astype(np.int32)
        highs.changeColsBounds(cols.shape[0], cols, lower[cols], upper[cols])
        run(highs)
    solution = highs.getSolution()
    values = np.asarray(solution.col_value)
    duals = np.maximum(np.asarray(solution.row_dual), 0.0) / matrix.s_ref
    x = np.clip(values[:n_bid], lower, upper)
    x[x <= _TOLERANCE] = 0.0
    return x, np.maximum(values[n_bid:], 0.0) * matrix.s_ref, duals


@register_rule("locational")
def locational(
    requests: Sequence[FlexRequest], book: OrderBook, params: Mapping[str, Any]
) -> ClearingResult:
    """Cheapest bids that remove the voltage need; duals are locational prices (see module)."""
    settings = parse_params(LocationalParams, params)
    ordered = sorted_requests(requests)
    matrix = build_sensitivity_matrix(ordered, book)
    if matrix.dv_pu.shape[0] == 0 or matrix.column_rows.shape[0] == 0:
        x = np.zeros(matrix.column_rows.shape[0])
        slack, duals = matrix.dv_pu.copy(), np.zeros(matrix.dv_pu.shape[0])
    else:
        x, slack, duals = _solve(matrix, settings)
    pi = matrix.column_price(duals)
    accepted = np.flatnonzero(x > 0.0)
    request_index = matrix.attribute(duals, accepted)
    is_p = matrix.is_p[accepted]
    rows = matrix.column_rows[accepted]
    paid = np.maximum(matrix.ask[accepted], pi[accepted])
    awards = assemble_awards(
        ordered,
        book,
        request_index,
        rows,
        np.where(is_p, x[accepted], 0.0),
        np.where(is_p, 0.0, x[accepted]),
        np.where(is_p, paid, 0.0),
        np.where(is_p, 0.0, paid),
    )
    return ClearingResult.model_construct(
        rule="locational",
        params=settings.model_dump(),
        awards=awards,
        **sensitivity_reports(ordered, book, matrix, duals, slack),
        rounds=1,
        converged=True,
    )
