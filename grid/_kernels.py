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

#: Scenarios solved per pass over the LU factors. Wide is fast: on the 9,104-bus grid one
#: sweep of 96 scenarios took 16 ms in one block of 96, 50 ms in blocks of 16 and 120 ms in
#: blocks of 4 (index loads and loop overhead are paid once per block); the cap bounds the
#: scratch memory for very large batches.
BLOCK = 128

#: Fast-math flags that allow FMA and reassociation but keep NaN/inf semantics (the mismatch
#: test must see a diverging scenario's NaN).
_FAST = {"contract", "reassoc", "nsz", "arcp"}


@njit(cache=True, fastmath=_FAST)
def sweep(
    v: np.ndarray,
    s_conj: np.ndarray,
    abs_s2: np.ndarray,
    v_noload: np.ndarray,
    perm_r: np.ndarray,
    perm_c: np.ndarray,
    l_ptr: np.ndarray,
    l_idx: np.ndarray,
    l_re: np.ndarray,
    l_im: np.ndarray,
    u_ptr: np.ndarray,
    u_idx: np.ndarray,
    u_re: np.ndarray,
    u_im: np.ndarray,
    u_inv_re: np.ndarray,
    u_inv_im: np.ndarray,
    wr: np.ndarray,
    wi: np.ndarray,
    mismatch: np.ndarray,
) -> None:
    """One fixed-point sweep ``v <- v_noload + Y_LL^-1 conj(s / v)`` for every column, in place.

    ``Y_LL = Pr^T L U Pc^T`` is SuperLU's factorisation: ``L`` unit lower, strict triangles
    in CSC split into real and imaginary parts, ``u_inv`` the reciprocal of U's diagonal.
    ``wr``/``wi`` are scratch of shape (n, block): real arithmetic on separate arrays lets
    LLVM vectorise the inner loops over scenarios. ``abs_s2`` is ``|s|**2``. ``mismatch[k]``
    receives the largest ``|s_i| |dv_i| / |v_i|`` of column k, which is the exact P/Q mismatch
    at the new voltages.
    """
    n, n_col = v.shape
    block = wr.shape[1]
    for k in range(n_col):
        mismatch[k] = 0.0
    for k0 in range(0, n_col, block):
        width = min(k0 + block, n_col) - k0
        for i in range(n):
            row = perm_r[i]
            for k in range(width):
                x = v[i, k0 + k]
                sc = s_conj[i, k0 + k]
                inv = 1.0 / (x.real * x.real + x.imag * x.imag)
                wr[row, k] = (sc.real * x.real - sc.imag * x.imag) * inv
                wi[row, k] = (sc.real * x.imag + sc.imag * x.real) * inv
        for j in range(n):
            for p in range(l_ptr[j], l_ptr[j + 1]):
                i = l_idx[p]
                ar = l_re[p]
                ai = l_im[p]
                for k in range(width):
                    wr[i, k] -= ar * wr[j, k] - ai * wi[j, k]
                    wi[i, k] -= ar * wi[j, k] + ai * wr[j, k]
        for j in range(n - 1, -1, -1):
            dr = u_inv_re[j]
            di = u_inv_im[j]
            for k in range(width):
                xr = wr[j, k]
                xi = wi[j, k]
                wr[j, k] = xr * dr - xi * di
                wi[j, k] = xr * di + xi * dr
            for p in range(u_ptr[j], u_ptr[j + 1]):
                i = u_idx[p]
                ar = u_re[p]
                ai = u_im[p]
                for k in range(width):
                    wr[i, k] -= ar * wr[j, k] - ai * wi[j, k]
                    wi[i, k] -= ar * wi[j, k] + ai * wr[j, k]
        for i in range(n):
            src = perm_c[i]
            v0 = v_noload[i]
            for k in range(width):
                old = v[i, k0 + k]
                new_re = wr[src, k] + v0.real
                new_im = wi[src, k] + v0.imag
                d_re = new_re - old.real
                d_im = new_im - old.imag
                err = (
                    abs_s2[i, k0 + k]
                    * (d_re * d_re + d_im * d_im)
                    / (old.real * old.real + old.imag * old.imag)
                )
                if not err <= mismatch[k0 + k]:
                    mismatch[k0 + k] = err
                v[i, k0 + k] = complex(new_re, new_im)
    for k in range(n_col):
        mismatch[k] = math.sqrt(mismatch[k])


@njit(cache=True)
def aggregate(
    p_mw: np.ndarray, q_mvar: np.ndarray, bus_pq: np.ndarray, n_pq: int, base_mva: float
) -> tuple[np.ndarray, np.ndarray]:
    """``conj(s)`` per PQ node (n_pq, scenarios), per unit with generation sign, and ``|s|**2``.

    ``p_mw``/``q_mvar`` are (buses, scenarios) consumption, C order; ``bus_pq`` is each bus's
    PQ-node position, -1 for buses on a slack node (their injection goes to the slack).
    """
    n_bus, n_scen = p_mw.shape
    s_conj = np.zeros((n_pq, n_scen), dtype=np.complex128)
    scale = -1.0 / base_mva
    for b in range(n_bus):
        node = bus_pq[b]
        if node < 0:
            continue
        for k in range(n_scen):
            s_conj[node, k] += complex(scale * p_mw[b, k], -scale * q_mvar[b, k])
    abs_s2 = np.empty((n_pq, n_scen))
    for i in range(n_pq):
        for k in range(n_scen):
            x = s_conj[i, k]
            abs_s2[i, k] = x.real * x.real + x.imag * x.imag
    return s_conj, abs_s2


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
            lf = (sf.real * sf.real + sf.imag * sf.imag) / (vf.real * vf.real + vf.imag * vf.imag)
            lt = (st.real * st.real + st.imag * st.imag) / (vt.real * vt.real + vt.imag * vt.imag)
            loading[s, b] = max(math.sqrt(lf) * scale_f[b], math.sqrt(lt) * scale_t[b])
            p_from[s, b] = sf.real
            total += sf.real + st.real
        losses[s] = total
    return loading, p_from, losses
