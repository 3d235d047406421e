"""Each agent's own forecast of its own profiles, with seeded, per-row error.

An agent forecasts its base load and PV as the truth times ``1 + sigma * eps`` (a noisy
perfect forecast), clipped at zero. ``eps`` is standard normal noise drawn from a
counter-based generator keyed by the agent's own seed, the slot forecast and the slot the
forecast was made in. So a row's forecast never depends on which other rows share its
population (a population of one decides as that row does among thousands), the same seed
always gives the same forecast, and no global random state is touched.

Why not one ``numpy.random.Generator`` per agent: 10,000 generators advanced per round cost
milliseconds each round and make a row's stream depend on how often it was asked; the hash
below is stateless. :func:`standard_normal` evaluates it compiled (numba), one pass without
temporaries; the numpy functions ``_splitmix64``/``_uniform`` are its reference (the tests
check that both give the same bits).
"""

import hashlib

import numba
import numpy as np

__all__ = ["agent_seeds", "noisy_forecast", "standard_normal", "standard_normal_reference"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def agent_seeds(root_seed: int, agent_ids: np.ndarray | list[str]) -> np.ndarray:
    """A 64-bit seed per agent, from the scenario's seed and the agent's id only."""
    seeds = np.empty(len(agent_ids), dtype=np.uint64)
    for i, agent_id in enumerate(agent_ids):
        digest = hashlib.blake2b(f"{root_seed}:{agent_id}".encode(), digest_size=8).digest()
        seeds[i] = np.uint64(int.from_bytes(digest, "little"))
    return seeds


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _uniform(seeds: np.ndarray, *counters: np.ndarray) -> np.ndarray:
    state = seeds.astype(np.uint64)
    for counter in counters:
        state = _splitmix64(state ^ _splitmix64(np.asarray(counter).astype(np.uint64)))
    # 53 random bits -> (0, 1), never exactly 0 so the logarithm below is finite.
    return ((state >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def standard_normal(
    seeds: np.ndarray, target_slot: np.ndarray, issued_slot: int, stream: int
) -> np.ndarray:
    """Standard normal noise per (agent, target slot), shape (n_agents, n_slots).

    Args:
        seeds: one seed per agent, shape (n,).
        target_slot: absolute index of each slot forecast, shape (h,).
        issued_slot: absolute index of the slot in which the forecast is made.
        stream: which quantity (0 = base load, 1 = PV, ...), so they are independent.
    """
    return _normal_kernel(
        np.ascontiguousarray(seeds, dtype=np.uint64),
        np.ascontiguousarray(target_slot, dtype=np.int64).reshape(-1),
        np.int64(issued_slot),
        np.int64(2 * stream),
    )


def standard_normal_reference(
    seeds: np.ndarray, target_slot: np.ndarray, issued_slot: int, stream: int
) -> np.ndarray:
    """:func:`standard_normal` in plain numpy (the reference of the compiled version)."""
    seeds = np.asarray(seeds, dtype=np.uint64)[:, None]
    target = np.asarray(target_slot, dtype=np.int64)[None, :]
    u1 = _uniform(seeds, target, np.int64(issued_slot), np.int64(2 * stream))
    u2 = _uniform(seeds, target, np.int64(issued_slot), np.int64(2 * stream + 1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@numba.njit(cache=True)
def _mix(x: np.uint64) -> np.uint64:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, parallel=True)
def _normal_kernel(
    seeds: np.ndarray, targets: np.ndarray, issued: np.int64, stream2: np.int64
) -> np.ndarray:
    n, h = seeds.shape[0], targets.shape[0]
    out = np.empty((n, h))
    c_issued = _mix(np.uint64(issued))
    c_first = _mix(np.uint64(stream2))
    c_second = _mix(np.uint64(stream2 + 1))
    c_target = np.empty(h, dtype=np.uint64)
    for j in range(h):
        c_target[j] = _mix(np.uint64(targets[j]))
    scale = 1.0 / float(1 << 53)
    for i in numba.prange(n):
        for j in range(h):
            state = _mix(_mix(seeds[i] ^ c_target[j]) ^ c_issued)
            a = _mix(state ^ c_first)
            b = _mix(state ^ c_second)
            u1 = (float(a >> np.uint64(11)) + 0.5) * scale
            u2 = (float(b >> np.uint64(11)) + 0.5) * scale
            out[i, j] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


def noisy_forecast(
    truth: np.ndarray,
    sigma: np.ndarray | float,
    seeds: np.ndarray,
    first_slot: int,
    stream: int,
) -> np.ndarray:
    """Forecast ``truth`` (shape (n, h), non-negative) made at slot ``first_slot``.

    The relative error ``sigma`` (per row or scalar) applies to every slot of the horizon,
    including the first: the delivery slot is still a forecast when the agent bids.
    """
    n, h = truth.shape
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float).reshape(-1), (n,))
    # Noise only where it changes something: a row with no PV (truth 0) or no error keeps
    # its truth, and each row's noise does not depend on which other rows are drawn.
    rows = np.flatnonzero((sigma != 0.0) & (truth != 0.0).any(axis=1))
    forecast = np.array(truth, dtype=float, copy=True)
    if len(rows):
        eps = standard_normal(
            np.asarray(seeds)[rows], np.arange(first_slot, first_slot + h), first_slot, stream
        )
        forecast[rows] = truth[rows] * (1.0 + sigma[rows, None] * eps)
    return np.clip(forecast, 0.0, None)
