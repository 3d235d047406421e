"""numba kernels of the batched power flow: one Z-bus sweep and the result extraction.

Arrays of the sweep are (nodes, scenarios) in C order, so every inner loop runs over the
scenarios of one node: the triangular solves of all scenarios of a batch share one pass over
the LU factors. (SuperLU's own multi-right-hand-side solve took ~1 ms per scenario on the
9,104-bus simbench grid; this pass takes a fraction of that.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Scenarios per cache block: a block's work array (nodes x BLOCK complex) stays in cache
#: through the four passes of a sweep instead of streaming the whole batch four times.
BLOCK = 16


@njit(cache=True)
def sweep(
    v: np.ndarray,
    s_conj: np.ndarray,
    abs_s2: np.ndarray,
    v_noload: np.ndarray,
    perm_r: np.ndarray,
    perm_c: np.ndarray,
    l_ptr: np.ndarray,
    l_idx: np.ndarray,
    l_val: np.ndarray,
    l_diag: np.ndarray,
    u_ptr: np.ndarray,
    u_idx: np.ndarray,
    u_val: np.ndarray,
    u_diag: np.ndarray,
    work: np.ndarray,
    mismatch: np.ndarray,
) -> None:
    """One fixed-point sweep ``v <- v_noload + Y_LL^-1 conj(s / v)`` for every column, in place.

    ``Y_LL = Pr^T L U Pc^T`` is SuperLU's factorisation (strict triangles in CSC, diagonals
    apart). ``work`` is scratch of shape (n, BLOCK); ``abs_s2`` is ``|s|**2``. ``mismatch[k]``
    receives the largest ``|s_i| |dv_i| / |v_i|`` of column k, which is the exact P/Q mismatch
    at the new voltages.
    """
    n, n_col = v.shape
    for k in range(n_col):
        mismatch[k] = 0.0
    for k0 in range(0, n_col, BLOCK):
        k1 = min(k0 + BLOCK, n_col)
        width = k1 - k0
        for i in range(n):
            row = perm_r[i]
            for k in range(width):
                x = v[i, k0 + k]
                inv = 1.0 / (x.real * x.real + x.imag * x.imag)
                work[row, k] = s_conj[i, k0 + k] * (x * inv)
        for j in range(n):
            d = l_diag[j]
            if d != 1.0:
                for k in range(width):
                    work[j, k] /= d
            for p in range(l_ptr[j], l_ptr[j + 1]):
                i = l_idx[p]
                lij = l_val[p]
                for k in range(width):
                    work[i, k] -= lij * work[j, k]
        for j in range(n - 1, -1, -1):
            d = 1.0 / u_diag[j]
            for k in range(width):
                work[j, k] *= d
            for p in range(u_ptr[j], u_ptr[j + 1]):
                i = u_idx[p]
                uij = u_val[p]
                for k in range(width):
                    work[i, k] -= uij * work[j, k]
        for i in range(n):
            src = perm_c[i]
            for k in range(width):
                old = v[i, k0 + k]
                new = work[src, k] + v_noload[i]
                dv = new - old
                err = (
                    abs_s2[i, k0 + k]
                    * (dv.real * dv.real + dv.imag * dv.imag)
                    / (old.real * old.real + old.imag * old.imag)
                )
                if not err <= mismatch[k0 + k]:
                    mismatch[k0 + k] = err
                v[i, k0 + k] = new
    for k in range(n_col):
        mismatch[k] = math.sqrt(mismatch[k])


@njit(cache=True)
def bus_polar(v_node: np.ndarray, node_of_bus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude (pu) and angle (degrees) of each bus, (scenarios, buses)."""
    n_scen = v_node.shape[0]
    n_bus = node_of_bus.shape[0]
    vm = np.empty((n_scen, n_bus))
    va = np.empty((n_scen, n_bus))
    to_deg = 180.0 / math.pi
    for s in range(n_scen):
        for b in range(n_bus):
            x = v_node[s, node_of_bus[b]]
            vm[s, b] = abs(x)
            va[s, b] = math.atan2(x.imag, x.real) * to_deg
    return vm, va


@njit(cache=True)
def branch_flows(
    v_node: np.ndarray,
    f_node: np.ndarray,
    t_node: np.ndarray,
    y_ff: np.ndarray,
    y_ft: np.ndarray,
    y_tf: np.ndarray,
    y_tt: np.ndarray,
    scale_f: np.ndarray,
    scale_t: np.ndarray,
    base_mva: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loading (percent), from-end active power (MW) and total losses (MW) per scenario."""
    n_scen = v_node.shape[0]
    n_br = f_node.shape[0]
    loading = np.empty((n_scen, n_br))
    p_from = np.empty((n_scen, n_br))
    losses = np.zeros(n_scen)
    for s in range(n_scen):
        total = 0.0
        for b in range(n_br):
            vf = v_node[s, f_node[b]]
            vt = v_node[s, t_node[b]]
            sf = base_mva * vf * (y_ff[b] * vf + y_ft[b] * vt).conjugate()
            st = base_mva * vt * (y_tf[b] * vf + y_tt[b] * vt).conjugate()
            loading[s, b] = max(abs(sf) / abs(vf) * scale_f[b], abs(st) / abs(vt) * scale_t[b])
            p_from[s, b] = sf.real
            total += sf.real + st.real
        losses[s] = total
    return loading, p_from, losses
