"""Invariants of the batched power flow, on cases hypothesis draws.

Peers: the same scenarios solved one at a time (a batch must not change a scenario's answer,
1e-9 pu) and physics (passive branches never create active power: losses >= 0).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grid

SCALINGS = st.lists(st.tuples(st.floats(0.0, 2.5), st.floats(-1.0, 2.5)), min_size=1, max_size=6)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scalings=SCALINGS, seed=st.integers(0, 2**32 - 1))
def test_batch_equals_one_by_one_and_losses_are_non_negative(case, scalings, seed) -> None:
    """Peer: one-scenario calls (1e-9 pu) and losses >= 0, on CIGRE MV (with DER) under
    random load/PV scalings per scenario, in a random order."""
    _, network = case("cigre_mv")
    load_part = np.maximum(network.base_p_mw, 0.0)
    gen_part = np.minimum(network.base_p_mw, 0.0)
    p_mw = np.array([a * load_part + b * gen_part for a, b in scalings])
    q_mvar = np.array([a * network.base_q_mvar for a, _ in scalings])
    batch = grid.powerflow(network, p_mw, q_mvar)
    order = np.random.default_rng(seed).permutation(len(scalings))
    shuffled = grid.powerflow(network, p_mw[order], q_mvar[order])
    np.testing.assert_array_equal(shuffled.converged, batch.converged[order])
    for k in range(len(scalings)):
        single = grid.powerflow(network, p_mw[k], q_mvar[k])
        assert bool(single.converged) == bool(batch.converged[k])
        if single.converged:
            np.testing.assert_allclose(batch.vm_pu[k], single.vm_pu, rtol=0, atol=1e-9)
            assert batch.losses_mw[k] >= -1e-12
        else:
            assert np.isnan(batch.vm_pu[k]).all()
    np.testing.assert_allclose(shuffled.vm_pu, batch.vm_pu[order], rtol=0, atol=1e-9)
