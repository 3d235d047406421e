"""HiGHS for the ``locational`` rule: a silent instance, the LP handed over, the run checked."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any

import highspy
import numpy as np

from market.rules._common import FloatArray
from market.rules._sensitivity import SensitivityMatrix

__all__ = ["new_highs", "pass_lp", "run"]

_BANNER_LOCK = threading.Lock()
_banner_done = False


def _silent_highs() -> highspy.Highs:
    """A HiGHS instance; the process's first one is made with stdout sent to /dev/null.

    HiGHS writes its copyright banner to the C stdout once per process, when the first
    instance is constructed, before any option (``output_flag``) can be set; a rule called
    every market round must not write to the user's terminal (or over a progress bar).
    The first construction therefore runs with file descriptor 1 pointed at /dev/null and
    C's buffers flushed before it is restored; later instances print nothing.
    """
    global _banner_done
    with _BANNER_LOCK:
        if _banner_done:
            return highspy.Highs()
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            highs = highspy.Highs()
            highs.setOptionValue("output_flag", False)
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _banner_done = True
        return highs


def new_highs(params: Any) -> highspy.Highs:
    highs = _silent_highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("solver", params.solver)
    highs.setOptionValue("mip_rel_gap", params.mip_rel_gap)
    highs.setOptionValue("time_limit", params.time_limit_s)
    highs.setOptionValue("random_seed", 0)
    highs.setOptionValue("threads", 1)
    return highs


def pass_lp(
    highs: highspy.Highs,
    matrix: SensitivityMatrix,
    cost: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    semicontinuous: np.ndarray | None,
) -> None:
    """Hand the LP (columns: bid parts, then one slack per request) to HiGHS.

    Each row is divided by its request's ``s_ref`` so it reads in kW at the reference bus
    (coefficients near 1, slack cost = the buyer's cap in EUR/kWh); the row duals are then
    EUR/kWh at the reference bus and :func:`_solve` divides them by ``s_ref`` again.
    """
    n_req = matrix.dv_pu.shape[0]
    n_col = cost.shape[0] + n_req
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = n_req
    lp.col_cost_ = np.concatenate([cost, matrix.value_eur_per_pu * matrix.s_ref])
    lp.col_lower_ = np.concatenate([lower, np.zeros(n_req)])
    lp.col_upper_ = np.concatenate([upper, np.full(n_req, highspy.kHighsInf)])
    lp.row_lower_ = matrix.dv_pu / matrix.s_ref
    lp.row_upper_ = np.full(n_req, highspy.kHighsInf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    slack_start = matrix.start[-1] + np.arange(1, n_req + 1)
    lp.a_matrix_.start_ = np.concatenate([matrix.start, slack_start]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate([matrix.index, np.arange(n_req)]).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate(
        [matrix.value / matrix.s_ref[matrix.index], np.ones(n_req)]
    )
    if semicontinuous is not None and semicontinuous.any():
        kinds = [highspy.HighsVarType.kContinuous] * n_col
        for j in np.flatnonzero(semicontinuous).tolist():
            kinds[j] = highspy.HighsVarType.kSemiContinuous
        lp.integrality_ = kinds
    highs.passModel(lp)


def run(highs: highspy.Highs) -> None:
    highs.run()
    status = highs.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"locational: HiGHS ended with {highs.modelStatusToString(status)}")
