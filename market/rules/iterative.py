"""``iterative_price``: the buyer posts locational prices only; sellers answer quantities.

Each round the buyer posts, per request, a price of voltage support ``lambda_r`` (EUR per
pu); a row at bus b then sees ``pi_b = sum_r lambda_r s_rb`` EUR/kWh (EUR/kvarh for Q),
the same locational price the ``locational`` rule computes (same sensitivity matrix, same
``dv_r``, ``v_r`` and ``s_ref``; see :mod:`market.rules.locational`). Sellers answer how
much they deliver at that price through a :class:`PriceResponder`; nothing else about
them is revealed. The price then moves by a projected subgradient step on the remaining
need ``g_r = dv_r - sum_j s_rj x_j``::

    lambda_r <- clip(lambda_r + step_r * v_r * clip(g_r / dv_r, -1, 1), 0, v_r)

Oscillation guard: when ``g_r`` changes sign between rounds (over- then under-supplied),
``step_r`` is multiplied by ``damping``. Answers are taken on one fixed book (its latest
bid versions), clipped to each row's offered quantity, set to 0 below the row's minimum
quantity, and set to 0 where the posted price is below the row's ask (the book price is
the seller's reservation price, so no award is ever paid less than its ask); a later step
of a curve bid counts only if its first step (which holds the bid's minimum) is answered.

Stops when every need is met (``converged=True``), when the prices are at the buyers'
caps and the answers no longer change (no progress is possible), or after ``max_rounds``.

The buyer accepts the answers of the round that left the least need uncovered (summed
over requests relative to ``dv_r``; the earliest such round on ties, whose prices are
the lowest for the needs still open; the converged round when there is one), at that
round's posted prices. Without this, a truthful row that
over-covers a request drives its price down below the row's ask, the row leaves, and
while another request keeps the iteration going the run can end in a round without it.

Rationing. A truthful row answers its whole offer once the price meets its ask, so the
last round's answers can be many times the need (every row below the price answers at
once: ~3,700 kW for a need of tens of kW on the scale grid). The buyer takes only what it
needs: it accepts the answering columns in order of cost per pu of voltage support, ask /
(largest sensitivity of the column over the requests), ties by merit rank; each column
takes just enough to close the largest remaining need among the requests it helps, at most
its answer and at least its minimum quantity (an indivisible straddling row is taken
whole); columns that help no request with need left get nothing. So each request's
support exceeds its need by at most the straddling column's. The order uses the book's
asks, which the buyer holds anyway (rows are never paid below them). Awards are the
rationed answers, paid the posted price ``pi_b``; ``unserved_dv_pu`` and ``converged``
are computed after rationing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from market.book import OrderBook
from market.messages import ClearingResult, FlexRequest
from market.registry import register_rule
from market.rules._common import (
    FloatArray,
    RuleParams,
    assemble_awards,
    parse_params,
    sorted_requests,
)
from market.rules._sensitivity import (
    GATE_ABSENT,
    SensitivityMatrix,
    build_sensitivity_matrix,
    sensitivity_reports,
)

__all__ = [
    "IterativeParams",
    "PriceResponder",
    "TruthfulResponder",
    "iterative_price",
    "next_prices",
    "ration",
]


@runtime_checkable
class PriceResponder(Protocol):
    """How sellers answer a posted price (agents implement this).

    ``respond`` gets the book and, per book row, the locational price that row would be
    paid; it returns per row the quantity the seller commits to deliver at that price.
    Rows the buyer has no use for are posted a price of 0. It must be deterministic given
    its inputs and its own state (seeded), and must not modify the book.
    """

    def respond(
        self,
        book: OrderBook,
        price_eur_per_kwh: FloatArray,
        price_eur_per_kvarh: FloatArray,
        round_index: int,
    ) -> tuple[FloatArray, FloatArray]:
        """Return ``(p_kw, q_kvar)`` per book row, each within ``[0, offered]``.

        Args:
            book: The order book (read-only).
            price_eur_per_kwh: Posted active price per row.
            price_eur_per_kvarh: Posted reactive price per row.
            round_index: 0 for the first round.
        """
        ...


class TruthfulResponder:
    """Answers as the book says: the full offer of every row whose ask the price meets."""

    def respond(
        self,
        book: OrderBook,
        price_eur_per_kwh: FloatArray,
        price_eur_per_kvarh: FloatArray,
        round_index: int,
    ) -> tuple[FloatArray, FloatArray]:
        """Offer ``p_kw``/``q_kvar`` where the posted price is at least the ask, else 0."""
        p = np.where(price_eur_per_kwh >= book.price_eur_per_kwh, book.p_kw, 0.0)
        q = np.where(price_eur_per_kvarh >= book.price_eur_per_kvarh, book.q_kvar, 0.0)
        return p, q


class IterativeParams(RuleParams):
    """Parameters of ``iterative_price``.

    Attributes:
        responder: The sellers' :class:`PriceResponder`; default :class:`TruthfulResponder`.
        max_rounds: Round limit.
        step: Initial step, as a fraction of the buyer's value ``v_r`` per round.
        damping: Step multiplier applied when a request's remaining need changes sign.
        initial_price_fraction: First posted ``lambda_r`` as a fraction of ``v_r``.
        tolerance: A need counts as met when less than ``tolerance x dv_r`` remains.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responder: Any = Field(default_factory=TruthfulResponder)
    max_rounds: int = Field(default=50, ge=1)
    step: float = Field(default=0.1, gt=0.0, le=1.0)
    damping: float = Field(default=0.5, gt=0.0, lt=1.0)
    initial_price_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    tolerance: float = Field(default=1e-6, ge=0.0, lt=1.0)

    @field_validator("responder")
    @classmethod
    def _is_responder(cls, value: Any) -> Any:
        if not isinstance(value, PriceResponder):
            raise ValueError(f"{type(value).__name__} has no respond(...) method")
        return value


def _answers(
    book: OrderBook,
    matrix: SensitivityMatrix,
    pi: FloatArray,
    responder: PriceResponder,
    round_index: int,
) -> FloatArray:
    """Post the prices, collect the answers and clip them to the book; per column."""
    rows, is_p = matrix.column_rows, matrix.is_p
    price_p = np.zeros(len(book))
    price_q = np.zeros(len(book))
    price_p[rows[is_p]] = pi[is_p]
    price_q[rows[~is_p]] = pi[~is_p]
    p, q = responder.respond(book, price_p, price_q, round_index)
    p = np.nan_to_num(np.asarray(p, dtype=np.float64).reshape(-1), nan=0.0)
    q = np.nan_to_num(np.asarray(q, dtype=np.float64).reshape(-1), nan=0.0)
    if p.shape != (len(book),) or q.shape != (len(book),):
        raise ValueError(f"responder answered {p.shape}/{q.shape}, expected ({len(book)},)")
    x = np.clip(np.where(is_p, p[rows], q[rows]), 0.0, matrix.quantity)
    x[(x < matrix.minimum - 1e-12) | (pi < matrix.ask) | (x <= 1e-12)] = 0.0
    gate = matrix.gate
    x[(gate == GATE_ABSENT) | ((gate >= 0) & (x[np.maximum(gate, 0)] <= 0.0))] = 0.0
    return x


def ration(matrix: SensitivityMatrix, x: FloatArray, tolerance: float) -> FloatArray:
    """Keep only the answers the needs call for (see "Rationing" in the module docstring).

    Args:
        matrix: The sensitivity matrix of the call.
        x: Answer per column (within ``[0, quantity]``, 0 or at least the minimum).
        tolerance: A need counts as met when less than ``tolerance x dv_r`` remains.

    Returns:
        The accepted quantity per column, each 0 or between its minimum and its answer.
    """
    out = np.zeros_like(x)
    answering = np.flatnonzero(x > 0.0)
    if answering.size == 0:
        return out
    best = np.maximum.reduceat(matrix.value, matrix.start[:-1])[answering]
    with np.errstate(divide="ignore"):
        cost_per_pu = np.where(best > 0.0, matrix.ask[answering] / best, np.inf)
    order = answering[np.lexsort((answering, matrix.tie_break[answering], cost_per_pu))]
    remaining = matrix.dv_pu.copy()
    met = tolerance * matrix.dv_pu
    for j in order.tolist():
        ks = matrix.index[matrix.start[j] : matrix.start[j + 1]]
        s = matrix.value[matrix.start[j] : matrix.start[j + 1]]
        useful = (remaining[ks] > met[ks]) & (s > 0.0)
        if not useful.any():
            continue
        wanted = float((remaining[ks][useful] / s[useful]).max())
        out[j] = min(x[j], max(wanted, matrix.minimum[j]))
        remaining[ks] -= s * out[j]
        if (remaining <= met).all():
            break
    return out


def next_prices(
    duals: FloatArray,
    steps: FloatArray,
    gap: FloatArray,
    previous_gap: FloatArray,
    dv_pu: FloatArray,
    value_eur_per_pu: FloatArray,
    damping: float,
) -> tuple[FloatArray, FloatArray]:
    """One projected, damped subgradient step on the remaining need (see module docstring).

    Returns:
        The next posted ``lambda`` per request and the (possibly damped) steps.
    """
    flipped = np.sign(gap) * np.sign(previous_gap) < 0
    steps = np.where(flipped, steps * damping, steps)
    relative = np.clip(gap / dv_pu, -1.0, 1.0)
    return np.clip(duals + steps * value_eur_per_pu * relative, 0.0, value_eur_per_pu), steps


@register_rule("iterative_price")
def iterative_price(
    requests: Sequence[FlexRequest], book: OrderBook, params: Mapping[str, Any]
) -> ClearingResult:
    """Post locational prices, collect answers, move prices until the need is met."""
    settings = parse_params(IterativeParams, params)
    ordered = sorted_requests(requests)
    matrix = build_sensitivity_matrix(ordered, book)
    n_req, n_col = matrix.dv_pu.shape[0], matrix.column_rows.shape[0]
    column_of_entry = np.repeat(np.arange(n_col), np.diff(matrix.start))
    value = matrix.value_eur_per_pu
    duals = settings.initial_price_fraction * value
    steps = np.full(n_req, settings.step)
    previous_gap = np.zeros(n_req)
    previous_x: FloatArray | None = None
    x = np.zeros(n_col)
    rounds, converged = 0, n_req == 0
    best = (np.inf, x, matrix.column_price(duals), duals)
    while not converged and rounds < settings.max_rounds and n_col > 0:
        pi = matrix.column_price(duals)
        x = _answers(book, matrix, pi, settings.responder, rounds)
        rounds += 1
        achieved = np.bincount(
            matrix.index, weights=matrix.value * x[column_of_entry], minlength=n_req
        )
        gap = matrix.dv_pu - achieved
        short = float((np.maximum(gap, 0.0) / matrix.dv_pu).sum())
        if short < best[0]:
            best = (short, x, pi, duals)
        if (gap <= settings.tolerance * matrix.dv_pu).all():
            converged = True
            break
        unmet = gap > settings.tolerance * matrix.dv_pu
        at_cap = (duals[unmet] >= value[unmet]).all()
        if at_cap and previous_x is not None and np.array_equal(x, previous_x):
            break
        duals, steps = next_prices(
            duals, steps, gap, previous_gap, matrix.dv_pu, value, settings.damping
        )
        previous_gap, previous_x = gap, x
    _, x, pi, duals = best
    x = ration(matrix, x, settings.tolerance)
    achieved = np.bincount(matrix.index, weights=matrix.value * x[column_of_entry], minlength=n_req)
    gap = matrix.dv_pu - achieved
    converged = bool((gap <= settings.tolerance * matrix.dv_pu).all())
    accepted = np.flatnonzero(x > 0.0)
    is_p = matrix.is_p[accepted]
    paid = np.maximum(pi[accepted], matrix.ask[accepted])
    awards = assemble_awards(
        ordered,
        book,
        matrix.attribute(duals, accepted),
        matrix.column_rows[accepted],
        np.where(is_p, x[accepted], 0.0),
        np.where(is_p, 0.0, x[accepted]),
        np.where(is_p, paid, 0.0),
        np.where(is_p, 0.0, paid),
    )
    unserved = np.maximum(gap, 0.0)
    report = sensitivity_reports(ordered, book, matrix, duals, unserved)
    dumped = settings.model_dump(exclude={"responder"})
    dumped["responder"] = type(settings.responder).__name__
    return ClearingResult.model_construct(
        rule="iterative_price",
        params=dumped,
        awards=awards,
        **report,
        rounds=rounds,
        converged=converged,
    )
