"""The sensitivity matrix of the sensitivity-aware rules (``locational``, ``iterative_price``).

Rows are the requests that have a need and can be helped; columns are the P or Q part of
an eligible bid row with a non-zero sensitivity in at least one request, kept only if it
could ever be worth buying (its ask is not above the buyers' combined value of it). The
matrix is stored column-wise (CSC) as HiGHS wants it. See :mod:`market.rules.locational`
for the meaning of ``s_ref``, ``dv_pu`` and ``value_eur_per_pu``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from market.book import OrderBook
from market.messages import FlexRequest
from market.rules._common import FloatArray, IntArray, eligible_rows, lookup_sensitivity

__all__ = [
    "SensitivityMatrix",
    "build_sensitivity_matrix",
    "reference_sensitivity",
    "sensitivity_reports",
]

_TIE_BREAK_SCALE = 1e-6
NEED_FLOOR_PU = 1e-12
"""Needs at or below this many pu are not cleared (reported as unserved as sent)."""
GATE_ABSENT = -2
"""``gate`` of a column whose curve bid's first step is not in the matrix: never bought."""
SENSITIVITY_FLOOR_PU = 1e-9
"""Sensitivities smaller than this (pu per kW or kvar) are treated as 0: no physical
flexibility moves a voltage by less, and dividing by them would wreck the LP's scaling."""


def sensitivity_maps(request: FlexRequest) -> tuple[Mapping[int, float], Mapping[int, float]]:
    """The request's kW and kvar maps without negligible entries.

    Both maps empty (as sent) means one-for-one at the request's own bus: ``{bus: 1.0}``.
    """
    if not request.sensitivity_pu_per_kw and not request.sensitivity_pu_per_kvar:
        return {request.bus: 1.0}, {}
    return (
        {b: s for b, s in request.sensitivity_pu_per_kw.items() if abs(s) >= SENSITIVITY_FLOOR_PU},
        {
            b: s
            for b, s in request.sensitivity_pu_per_kvar.items()
            if abs(s) >= SENSITIVITY_FLOOR_PU
        },
    )


def reference_sensitivity(request: FlexRequest) -> float:
    """kW sensitivity at the request's bus if positive, else its largest positive one (or 0)."""
    kw, kvar = sensitivity_maps(request)
    own = kw.get(request.bus, 0.0)
    if own > 0.0:
        return own
    return max([s for s in (*kw.values(), *kvar.values()) if s > 0.0], default=0.0)


@dataclass(frozen=True)
class SensitivityMatrix:
    """Requests x bid-parts sensitivity matrix in CSC form, with per-column bid data.

    Attributes:
        request_index: For each matrix row k, the index of its request in clearing order.
        dv_pu, value_eur_per_pu, s_ref: Need, buyer's value per pu and reference
            sensitivity per matrix row.
        kw_maps: kW sensitivity map of every request (clearing order), fallback applied.
        column_rows: Book row of each column; ``is_p``: whether the column is the P part.
        ask, quantity, minimum: Asked price, offered and minimum quantity per column.
        tie_break: Small cost added per column so earlier rows win ties.
        start, index, value: CSC arrays (``index`` holds matrix rows k).
        gate: For the P column of a later step of a curve bid whose first step has a
            minimum quantity, the column of that first step (:data:`GATE_ABSENT` if it
            has none in the matrix); -1 for every other column. A gated column may be
            bought only if its gate is (at least its minimum).
    """

    request_index: IntArray
    dv_pu: FloatArray
    value_eur_per_pu: FloatArray
    s_ref: FloatArray
    kw_maps: tuple[Mapping[int, float], ...]
    column_rows: IntArray
    is_p: np.ndarray
    ask: FloatArray
    quantity: FloatArray
    minimum: FloatArray
    tie_break: FloatArray
    start: IntArray
    index: IntArray
    value: FloatArray
    gate: IntArray

    def column_price(self, duals: FloatArray) -> FloatArray:
        """Locational price of every column: ``sum_k duals[k] * s_kj``."""
        n_col = self.column_rows.shape[0]
        column_of_entry = np.repeat(np.arange(n_col), np.diff(self.start))
        return np.bincount(column_of_entry, weights=duals[self.index] * self.value, minlength=n_col)

    def attribute(self, duals: FloatArray, columns: IntArray) -> IntArray:
        """Request (clearing-order index) each column's award is attributed to."""
        out = np.empty(columns.shape[0], dtype=np.int64)
        for i, j in enumerate(columns.tolist()):
            ks = self.index[self.start[j] : self.start[j + 1]]
            s = self.value[self.start[j] : self.start[j + 1]]
            contribution = duals[ks] * s
            pick = int(np.argmax(contribution)) if contribution.max() > 0.0 else int(np.argmax(s))
            out[i] = self.request_index[ks[pick]]
        return out


def build_sensitivity_matrix(ordered: Sequence[FlexRequest], book: OrderBook) -> SensitivityMatrix:
    """Build the matrix for requests already in clearing order."""
    maps = [sensitivity_maps(request) for request in ordered]
    rows_k: list[int] = []
    dv: list[float] = []
    value: list[float] = []
    s_ref: list[float] = []
    for r, request in enumerate(ordered):
        ref = reference_sensitivity(request)
        need = request.dv_required_pu if request.dv_required_pu > 0.0 else request.p_kw * ref
        if ref > 0.0 and need > NEED_FLOOR_PU:
            rows_k.append(r)
            dv.append(need)
            value.append(request.max_price_eur_per_kwh / ref)
            s_ref.append(ref)
    value_arr = np.array(value, dtype=np.float64)
    t_k, t_row, t_p, t_s = [], [], [], []
    for k, r in enumerate(rows_k):
        for is_p, sens in ((True, maps[r][0]), (False, maps[r][1])):
            buses = np.fromiter((b for b, s in sens.items() if s != 0.0), dtype=np.int64)
            if buses.size == 0:
                continue
            rows = eligible_rows(book, ordered[r], book.rows_at_buses(buses))
            offered = book.p_kw if is_p else book.q_kvar
            rows = rows[offered[rows] > 0.0]
            t_k.append(np.full(rows.shape[0], k, dtype=np.int64))
            t_row.append(rows)
            t_p.append(np.full(rows.shape[0], is_p))
            t_s.append(lookup_sensitivity(sens, book.bus[rows]))
    empty_i = np.empty(0, dtype=np.int64)
    tk = np.concatenate(t_k) if t_k else empty_i
    trow = np.concatenate(t_row) if t_row else empty_i
    tp = np.concatenate(t_p) if t_p else np.empty(0, dtype=bool)
    ts = np.concatenate(t_s) if t_s else np.empty(0)
    key = trow * 2 + (~tp).astype(np.int64)
    order = np.lexsort((tk, key))
    tk, trow, tp, ts, key = tk[order], trow[order], tp[order], ts[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else empty_i
    col_rows, col_p = trow[starts], tp[starts]
    ask = np.where(col_p, book.price_eur_per_kwh[col_rows], book.price_eur_per_kvarh[col_rows])
    worth = (
        np.add.reduceat(value_arr[tk] * np.maximum(ts, 0.0), starts) if key.size else np.empty(0)
    )
    keep_col = (worth > 0.0) & (ask <= worth * (1.0 + 1e-12))
    column_of_entry = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1 if key.size else empty_i
    keep_entry = keep_col[column_of_entry] if key.size else np.empty(0, dtype=bool)
    tk, ts = tk[keep_entry], ts[keep_entry]
    col_rows, col_p, ask = col_rows[keep_col], col_p[keep_col], ask[keep_col]
    counts = np.bincount(column_of_entry[keep_entry], minlength=keep_col.shape[0])[keep_col]
    rank = np.where(col_p, book.rank("p")[col_rows], book.rank("q")[col_rows])
    gate = _gates(book, col_rows, col_p)
    top = float(ask.max()) if ask.size else 0.0
    return SensitivityMatrix(
        request_index=np.array(rows_k, dtype=np.int64),
        dv_pu=np.array(dv, dtype=np.float64),
        value_eur_per_pu=value_arr,
        s_ref=np.array(s_ref, dtype=np.float64),
        kw_maps=tuple(m[0] for m in maps),
        column_rows=col_rows,
        is_p=col_p,
        ask=ask,
        quantity=np.where(col_p, book.p_kw[col_rows], book.q_kvar[col_rows]),
        minimum=np.where(col_p, book.min_p_kw[col_rows], book.min_q_kvar[col_rows]),
        tie_break=_TIE_BREAK_SCALE * (1.0 + top) * rank / max(len(book), 1),
        start=np.r_[0, np.cumsum(counts)].astype(np.int64),
        index=tk,
        value=ts,
        gate=gate,
    )


def _gates(book: OrderBook, col_rows: IntArray, col_p: np.ndarray) -> IntArray:
    """The ``gate`` column of every column (see :class:`SensitivityMatrix`)."""
    gate = np.full(col_rows.shape[0], -1, dtype=np.int64)
    first = book.first_step_row()[col_rows]
    gated = col_p & (first != col_rows) & (book.min_p_kw[first] > 0.0)
    if gated.any():
        p_rows = col_rows[col_p]
        p_columns = np.flatnonzero(col_p)
        pos = np.clip(np.searchsorted(p_rows, first[gated]), 0, max(p_rows.shape[0] - 1, 0))
        found = p_rows[pos] == first[gated]
        gate[gated] = np.where(found, p_columns[pos], GATE_ABSENT)
    return gate


def sensitivity_reports(
    ordered: Sequence[FlexRequest],
    book: OrderBook,
    matrix: SensitivityMatrix,
    duals: FloatArray,
    unserved_dv: FloatArray,
) -> dict[str, Any]:
    """Prices per request and bus, and the need left, from per-row duals and unserved pu.

    ``prices[r] = lambda_r x s_ref`` (EUR/kWh at the reference bus); ``prices_q[r] =
    lambda_r x`` the request's kvar sensitivity at its bus, when positive;
    ``bus_prices[b] = sum_r lambda_r s_rb`` for every bus with a P column; the unserved kW
    is the unserved pu over ``s_ref``, at most ``p_kw``. Requests without a matrix row
    (nothing can help them, or nothing is needed) report their whole need as unserved.
    """
    prices: dict[str, float] = {}
    prices_q: dict[str, float] = {}
    unserved_dv_pu: dict[str, float] = {}
    unserved_p: dict[str, float] = {}
    for k, r in enumerate(matrix.request_index.tolist()):
        request = ordered[r]
        prices[request.request_id] = float(duals[k] * matrix.s_ref[k])
        own_q = request.sensitivity_pu_per_kvar.get(request.bus, 0.0)
        if own_q > 0.0:
            prices_q[request.request_id] = float(duals[k] * own_q)
        unserved_dv_pu[request.request_id] = float(unserved_dv[k])
        unserved_p[request.request_id] = float(min(unserved_dv[k] / matrix.s_ref[k], request.p_kw))
    for request in ordered:
        unserved_dv_pu.setdefault(request.request_id, request.dv_required_pu)
        unserved_p.setdefault(request.request_id, request.p_kw)
    buses = np.unique(book.bus[matrix.column_rows[matrix.is_p]])
    total = np.zeros(buses.shape[0])
    for k, r in enumerate(matrix.request_index.tolist()):
        if duals[k] > 0.0:
            total += duals[k] * lookup_sensitivity(matrix.kw_maps[r], buses)
    return {
        "prices": prices,
        "prices_q": prices_q,
        "bus_prices": dict(zip(buses.tolist(), total.tolist(), strict=True)),
        "unserved_p_kw": unserved_p,
        "unserved_q_kvar": {},
        "unserved_dv_pu": unserved_dv_pu,
    }
