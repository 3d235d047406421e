"""AC power-flow kernels on a nodal model: the Jacobian and a per-scenario Newton-Raphson.

Injections here are in per unit with the *generation* sign (pypower's ``Sbus``); the public
functions in :mod:`grid.powerflow` and :mod:`grid.sensitivity` convert from consumption.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def jacobian(ybus: sp.csr_matrix, v: np.ndarray, pq: np.ndarray) -> sp.csc_matrix:
    """Power-flow Jacobian d[P; Q]/d[va; vm] restricted to the PQ nodes.

    The derivatives are MATPOWER's ``dSbus_dV`` (polar coordinates).

    Args:
        ybus: Bus admittance matrix (per unit).
        v: Complex node voltages (per unit).
        pq: Indices of the PQ nodes (rows and columns kept).

    Returns:
        The (2 n_pq x 2 n_pq) Jacobian, ordered [va_pq, vm_pq] by [P_pq, Q_pq].
    """
    i_bus = ybus @ v
    diag_v = sp.diags(v)
    diag_vnorm = sp.diags(v / np.abs(v))
    ds_dvm = diag_v @ (ybus @ diag_vnorm).conj() + sp.diags(i_bus.conj()) @ diag_vnorm
    ds_dva = 1j * diag_v @ (sp.diags(i_bus) - ybus @ diag_v).conj()
    ds_dvm = sp.csr_matrix(ds_dvm)[pq][:, pq]
    ds_dva = sp.csr_matrix(ds_dva)[pq][:, pq]
    return sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]], format="csc")


def newton(
    ybus: sp.csr_matrix,
    s_inj: np.ndarray,
    v0: np.ndarray,
    pq: np.ndarray,
    *,
    tol_pu: float,
    max_iter: int,
) -> tuple[np.ndarray, bool, int]:
    """Full Newton-Raphson for one scenario (used only where the fixed point gives up).

    Args:
        ybus: Bus admittance matrix (per unit).
        s_inj: Complex injection of every node (per unit, generation positive).
        v0: Start voltages; slack entries are kept fixed.
        pq: Indices of the PQ nodes.
        tol_pu: Convergence threshold on the largest P or Q mismatch (per unit).
        max_iter: Iteration cap.

    Returns:
        (voltages, converged, iterations).
    """
    v = v0.astype(complex).copy()
    n_pq = len(pq)
    for iteration in range(max_iter + 1):
        mismatch = v * np.conj(ybus @ v) - s_inj
        f = np.r_[mismatch[pq].real, mismatch[pq].imag]
        if not np.all(np.isfinite(f)):
            return v, False, iteration
        if np.max(np.abs(f), initial=0.0) < tol_pu:
            return v, True, iteration
        if iteration == max_iter:
            break
        try:
            dx = spla.spsolve(jacobian(ybus, v, pq), -f)
        except RuntimeError:
            return v, False, iteration
        va = np.angle(v)
        vm = np.abs(v)
        va[pq] += dx[:n_pq]
        vm[pq] += dx[n_pq:]
        v = vm * np.exp(1j * va)
    return v, False, max_iter
