"""Column generation for the ``locational`` LP on large books.

A scale round asks a few hundred requests (rows) against 50,000-100,000 bid parts (columns),
and most columns are far from the margin: a kW at a bus with a small sensitivity, or an ask
many times the local price. The LP is solved on a working set of columns and the rest are
priced out with the duals: a column ``j`` left at zero is optimal for the whole LP when its
reduced cost ``c_j - sum_k y_k a_kj`` is not negative. The columns that fail that test join
the working set (HiGHS keeps its basis, so each round is a few simplex iterations) until
none fails; the working set's optimum is then an optimum of the whole LP, with the same
objective and duals that are valid for every column. Written here because HiGHS has no
pricing hook for columns that are not in its model, and handing it the whole matrix costs
the time this saves.

The first working set takes, for every row, its cheapest columns per unit of coverage
(ask over the scaled coefficient, ties by column) until they could cover
``_FIRST_COVER`` times the row's need, and at least its ``_FIRST_PER_ROW`` cheapest.
On a noon round of 100,000 homes (48,825 columns, 90 requests) that first set of 10,793
columns already held the optimum.
Only for books without minimum quantities or curve gates (the MIP and the repair need every
column); ``locational`` decides that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from market.rules._common import FloatArray
from market.rules._highs import new_highs, pass_lp, run
from market.rules._sensitivity import SensitivityMatrix

__all__ = ["solve_by_columns"]

_FIRST_COVER = 3.0
_FIRST_PER_ROW = 20
_REDUCED_COST_TOLERANCE = 1e-9
_MAX_ROUNDS = 100


def _first_columns(
    matrix: SensitivityMatrix,
    cost: FloatArray,
    upper: FloatArray,
    col_of: np.ndarray,
    coef: FloatArray,
) -> np.ndarray:
    """The first working set (see the module docstring), as a column mask; ``col_of`` and
    ``coef`` are each entry's column and scaled coefficient."""
    n_col = cost.shape[0]
    need = matrix.dv_pu / matrix.s_ref
    useful = (coef > 0.0) & (upper[col_of] > 0.0)
    entries = np.flatnonzero(useful)
    row = matrix.index[entries]
    ratio = cost[col_of[entries]] / coef[entries]
    order = np.lexsort((col_of[entries], ratio, row))
    entries, row = entries[order], row[order]
    cover = coef[entries] * upper[col_of[entries]]
    starts = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, row.shape[0]]))
    before = np.cumsum(cover) - cover
    before -= before[group_start]
    rank = np.arange(row.shape[0]) - group_start
    keep = (before < _FIRST_COVER * need[row]) | (rank < _FIRST_PER_ROW)
    chosen = np.zeros(n_col, dtype=bool)
    chosen[col_of[entries[keep]]] = True
    return chosen


def _entries(matrix: SensitivityMatrix, cols: np.ndarray) -> np.ndarray:
    """Positions in the CSC arrays of the entries of ``cols`` (ascending column numbers)."""
    mask = np.zeros(matrix.column_rows.shape[0], dtype=bool)
    mask[cols] = True
    return np.flatnonzero(np.repeat(mask, np.diff(matrix.start)))


def _column_slices(matrix: SensitivityMatrix, cols: np.ndarray, coef: FloatArray):
    """CSC slices (starts, indices, scaled values ``coef``, count) of ascending ``cols``."""
    lengths = (matrix.start[cols + 1] - matrix.start[cols]).astype(np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int32)
    entries = _entries(matrix, cols)
    index = matrix.index[entries].astype(np.int32)
    return starts, index, coef[entries], int(entries.shape[0])


def solve_by_columns(
    matrix: SensitivityMatrix, params, cost: FloatArray, upper: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, int]:
    """Solve the LP by column generation.

    Returns:
        Every column's value, the slack per row (scaled as HiGHS sees it), the raw row
        duals and the number of columns the LP held in the end.
    """
    n_col = cost.shape[0]
    n_req = matrix.dv_pu.shape[0]
    col_of = np.repeat(np.arange(n_col), np.diff(matrix.start))
    coef = matrix.value / matrix.s_ref[matrix.index]
    in_lp = _first_columns(matrix, cost, upper, col_of, coef)
    first = np.flatnonzero(in_lp)
    sub = _restrict(matrix, first)
    highs = new_highs(params)
    pass_lp(highs, sub, cost[first], np.zeros(first.size), upper[first], None)
    run(highs)
    order = [first]  # HiGHS columns: first, then the slacks, then each added block
    for _ in range(_MAX_ROUNDS):
        y = np.maximum(np.asarray(highs.getSolution().row_dual), 0.0)
        priced = np.bincount(col_of, weights=y[matrix.index] * coef, minlength=n_col)
        reduced = cost - priced
        add = np.flatnonzero(
            ~in_lp & (upper > 0.0) & (reduced < -_REDUCED_COST_TOLERANCE * (1.0 + np.abs(cost)))
        )
        if add.size == 0:
            break
        starts, index, value, nnz = _column_slices(matrix, add, coef)
        highs.addCols(
            add.size, cost[add], np.zeros(add.size), upper[add], nnz, starts, index, value
        )
        in_lp[add] = True
        order.append(add)
        run(highs)
    else:
        raise RuntimeError(f"locational: column generation did not settle in {_MAX_ROUNDS} rounds")
    solution = highs.getSolution()
    values = np.asarray(solution.col_value)
    x = np.zeros(n_col)
    x[first] = values[: first.size]
    slack = values[first.size : first.size + n_req]
    offset = first.size + n_req
    for block in order[1:]:
        x[block] = values[offset : offset + block.size]
        offset += block.size
    return x, slack, np.asarray(solution.row_dual), int(in_lp.sum())


def _restrict(matrix: SensitivityMatrix, cols: np.ndarray) -> SensitivityMatrix:
    """The matrix with only the ascending ``cols`` (same rows)."""
    lengths = matrix.start[cols + 1] - matrix.start[cols]
    entries = _entries(matrix, cols)
    per_column = ("column_rows", "is_p", "ask", "quantity", "minimum", "tie_break", "gate")
    return dataclasses.replace(
        matrix,
        **{name: getattr(matrix, name)[cols] for name in per_column},
        start=np.r_[0, np.cumsum(lengths)].astype(matrix.start.dtype),
        index=matrix.index[entries],
        value=matrix.value[entries],
    )
