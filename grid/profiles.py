"""simbench's year of 15-minute profiles, and per-bus injections for a time window.

simbench ships one leap year (2016, 35,136 quarter-hours) of relative profiles; simbench's own
``get_absolute_values`` multiplies them by each element's ``p_mw``/``q_mvar``. simbench's time
stamps are German local time (they skip 02:00-02:45 on 27 March and repeat it on 30 October);
they are localised to Europe/Berlin and converted to UTC, which gives 35,136 strictly
consecutive UTC quarter-hours from 2015-12-31 23:00 UTC. Signs follow each element
table (load: consumption, sgen: generation, storage: charging); :func:`bus_injections` turns
them into per-bus consumption, the sign :func:`grid.powerflow` takes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simbench as sb

from grid.network import Network
from grid.sources import simbench_net

_TIME_FORMAT = "%d.%m.%Y %H:%M"
_LOCAL_ZONE = "Europe/Berlin"


@functools.lru_cache(maxsize=4)
def simbench_profiles(code: str) -> dict[str, pd.DataFrame]:
    """The absolute per-element profiles of a simbench grid (cached per code; do not mutate).

    Args:
        code: A simbench code such as ``"1-MV-urban--0-sw"``.

    Returns:
        ``{"load_p_mw", "load_q_mvar", "sgen_p_mw", "storage_p_mw"}`` (those the grid has):
        DataFrames indexed by UTC timestamps (15-minute steps), one column per element,
        labelled by its pandapower index.
    """
    net = simbench_net(code, with_profiles=True)
    local = pd.DatetimeIndex(pd.to_datetime(net.profiles["load"]["time"], format=_TIME_FORMAT))
    index = local.tz_localize(_LOCAL_ZONE, ambiguous="infer").tz_convert("UTC").rename("time")
    absolute = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    frames = {}
    for (table, column), frame in absolute.items():
        if frame.shape[1] == 0 or len(frame) != len(index):
            continue
        frames[f"{table}_{column}"] = frame.set_axis(index, axis=0)
    return frames


@dataclass(frozen=True)
class ElementInjections:
    """Per-element powers over a window, (n_slots, n_elements), each table's own sign.

    Attributes:
        time: UTC start of each slot.
        load_p_mw, load_q_mvar: Columns follow ``network.load_ids`` (consumption).
        sgen_p_mw, sgen_q_mvar: Columns follow ``network.sgen_ids`` (generation).
        storage_p_mw, storage_q_mvar: Columns follow ``network.storage_ids`` (charging).
    """

    time: pd.DatetimeIndex
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    sgen_p_mw: np.ndarray
    sgen_q_mvar: np.ndarray
    storage_p_mw: np.ndarray
    storage_q_mvar: np.ndarray


def element_injections(
    network: Network, profiles: dict[str, pd.DataFrame], start: Any, n_slots: int
) -> ElementInjections:
    """Per-element powers for ``n_slots`` quarter-hours from ``start``.

    An element without a profile column keeps its constant value from the network.

    Args:
        network: The network whose elements are wanted.
        profiles: As returned by :func:`simbench_profiles`.
        start: First slot, a timestamp in the profiles' index (naive means UTC) or an
            integer position.
        n_slots: Number of consecutive slots.

    Raises:
        ValueError: If the window is not inside the profiles.
    """
    index = next(iter(profiles.values())).index
    first = _position(index, start)
    if n_slots < 1 or first < 0 or first + n_slots > len(index):
        raise ValueError(
            f"window start={start!r}, n_slots={n_slots} is outside the {len(index)} profile slots"
        )
    window = slice(first, first + n_slots)
    values = {}
    for table in ("load", "sgen", "storage"):
        ids = getattr(network, f"{table}_ids")
        for quantity in ("p_mw", "q_mvar"):
            constant = getattr(network, f"{table}_{quantity}")
            block = np.tile(constant, (n_slots, 1))
            frame = profiles.get(f"{table}_{quantity}")
            if frame is not None and len(ids):
                present = np.isin(ids, frame.columns)
                block[:, present] = frame.iloc[window][ids[present]].to_numpy(float)
            values[f"{table}_{quantity}"] = block
    return ElementInjections(time=index[window], **values)


def bus_injections(
    network: Network, profiles: dict[str, pd.DataFrame], start: Any, n_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus consumption ``(p_mw, q_mvar)``, each (n_slots, n_bus), for a time window.

    ``p = load - sgen + storage`` aggregated per bus (load convention), ready for
    :func:`grid.powerflow`. Arguments as in :func:`element_injections`.
    """
    elements = element_injections(network, profiles, start, n_slots)
    p = np.zeros((n_slots, network.n_bus))
    q = np.zeros((n_slots, network.n_bus))
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        pos = network.bus_position(getattr(network, f"{table}_bus"))
        np.add.at(p.T, pos, sign * getattr(elements, f"{table}_p_mw").T)
        np.add.at(q.T, pos, sign * getattr(elements, f"{table}_q_mvar").T)
    return p, q


def _position(index: pd.DatetimeIndex, start: Any) -> int:
    """Integer position of ``start`` (an int or a timestamp) in ``index``."""
    if isinstance(start, int | np.integer):
        return int(start)
    stamp = pd.Timestamp(start)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    try:
        return int(index.get_loc(stamp))
    except KeyError:
        raise ValueError(
            f"start={start!r} is not a slot of the profiles ({index[0]} .. {index[-1]}, 15 min)"
        ) from None


def simbench_window(network: Network, code: str, start: Any, n_slots: int) -> ElementInjections:
    """Per-element powers for a window, computed from simbench's relative profiles directly.

    The same numbers as :func:`element_injections` on :func:`simbench_profiles` (relative
    profile x the element's ``p_mw``/``q_mvar``, as simbench's ``get_absolute_values``
    does), but only for the rows of the window: on a 9,000-bus grid with 11,000 loads the
    whole year of absolute values is ~3 GB and takes minutes, a day takes a second. Elements
    whose profile simbench does not ship keep their constant value.

    Args:
        network: A network built from the simbench ``code``.
        code: The simbench code.
        start: First slot: a timestamp (naive means UTC) or an integer position.
        n_slots: Number of consecutive slots.
    """
    relative = simbench_net(code, with_profiles=True).profiles
    local = pd.DatetimeIndex(pd.to_datetime(relative["load"]["time"], format=_TIME_FORMAT))
    index = local.tz_localize(_LOCAL_ZONE, ambiguous="infer").tz_convert("UTC")
    first = _position(index, start)
    if n_slots < 1 or first < 0 or first + n_slots > len(index):
        raise ValueError(
            f"window start={start!r}, n_slots={n_slots} is outside the {len(index)} profile slots"
        )
    window = slice(first, first + n_slots)

    def block(table: str, names: np.ndarray, constant: np.ndarray, suffix: str) -> np.ndarray:
        frame = relative.get(table)
        values = np.tile(constant, (n_slots, 1)).astype(float)
        if frame is None or len(names) == 0:
            return values
        columns = np.array([f"{name}{suffix}" for name in names], dtype=object)
        present = np.isin(columns, frame.columns)
        if present.any():
            unique, inverse = np.unique(columns[present], return_inverse=True)
            rows = frame.iloc[window][list(unique)].to_numpy(float)
            values[:, present] = rows[:, inverse] * constant[present]
        return values

    return ElementInjections(
        time=index[window],
        load_p_mw=block("load", network.load_profile, network.load_p_mw, "_pload"),
        load_q_mvar=block("load", network.load_profile, network.load_q_mvar, "_qload"),
        sgen_p_mw=block("renewables", network.sgen_profile, network.sgen_p_mw, ""),
        sgen_q_mvar=np.tile(network.sgen_q_mvar, (n_slots, 1)).astype(float),
        storage_p_mw=block("storage", network.storage_profile, network.storage_p_mw, ""),
        storage_q_mvar=np.tile(network.storage_q_mvar, (n_slots, 1)).astype(float),
    )
