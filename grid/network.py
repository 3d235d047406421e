"""An immutable network model (numpy arrays) built from a pandapower net.

Sign convention (written once, used everywhere in ``grid``): a bus's ``p_mw``/``q_mvar`` is
**consumption**, positive when the bus draws power from the grid (pandapower's load
convention). Per-element arrays keep pandapower's own sign for their table: ``load_p_mw`` is
consumption, ``sgen_p_mw`` is generation (positive = feeding in), ``storage_p_mw`` is charging
(positive = consumption). ``base_p_mw`` aggregates them per bus as ``load - sgen + storage``.

Impedances, taps, switches and shunts are never re-derived here: the bus admittance matrix and
the branch admittances come from pandapower's own internal conversion (``_pd2ppc`` and
``makeYbus``, run through ``pandapower.runpp`` on an unloaded copy of the net).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandapower as pp
import scipy.sparse as sp

from grid._model import NodalModel, nodal_model

#: Tables whose in-service elements the model cannot represent (PV buses, 3-winding
#: transformers, equivalents, DC and FACTS devices, voltage-dependent injections).
UNSUPPORTED_TABLES: tuple[str, ...] = (
    "gen",
    "trafo3w",
    "impedance",
    "ward",
    "xward",
    "dcline",
    "svc",
    "ssc",
    "tcsc",
    "vsc",
    "vsc_bipolar",
    "vsc_stacked",
    "motor",
    "asymmetric_load",
    "asymmetric_sgen",
    "line_dc",
    "bus_dc",
    "source_dc",
    "load_dc",
)

_ZIP_COLUMNS = ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent")


class UnsupportedElementError(ValueError):
    """The pandapower net holds an in-service element the model cannot represent."""


def _readonly(value: Any) -> Any:
    """Make a numpy array (or a scipy sparse matrix's buffers) read-only in place."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif sp.issparse(value):
        for name in ("data", "indices", "indptr"):
            getattr(value, name).setflags(write=False)
    return value


@dataclass(frozen=True, eq=False)
class Network:
    """A distribution network as read-only numpy arrays, in pandapower's bus order.

    Every per-bus array follows ``bus_ids`` (the pandapower indices of the buses that are in
    service and connected to a slack); every per-branch array follows ``branch_element_id``.
    Buses that pandapower would leave unsupplied are listed in ``unsupplied_bus_ids`` and carry
    no elements. Build with :meth:`from_pandapower` or :meth:`from_simbench`.

    Attributes:
        name: A label (the simbench code, the builder name, or the net's own name).
        bus_ids: pandapower bus index of each bus (int64), the order of every per-bus array.
        vn_kv: Nominal voltage of each bus in kV.
        slack_bus_ids: pandapower bus of each in-service external grid.
        vm_setpoint_pu: Voltage magnitude set-point of each external grid.
        va_setpoint_degree: Voltage angle set-point of each external grid.
        base_p_mw: The net's own loads, sgens and storage aggregated per bus (consumption).
        base_q_mvar: Same for reactive power (consumption).
        branch_kind: ``"line"`` or ``"trafo"`` for each in-service branch.
        branch_element_id: pandapower index of the branch in ``net.line`` / ``net.trafo``.
        branch_from_bus: From bus (line ``from_bus``, trafo ``hv_bus``).
        branch_to_bus: To bus (line ``to_bus``, trafo ``lv_bus``).
        load_ids, load_bus, load_p_mw, load_q_mvar, load_profile: In-service loads on supplied
            buses: pandapower index, bus, power (``p_mw * scaling``, consumption) and the
            simbench profile name (``""`` when the net has none).
        sgen_ids, sgen_bus, sgen_p_mw, sgen_q_mvar, sgen_profile: Same for static generators
            (generation positive, as in pandapower).
        storage_ids, storage_bus, storage_p_mw, storage_q_mvar, storage_profile: Same for
            storage (charging positive, as in pandapower).
        unsupplied_bus_ids: Buses of the net left out (out of service or isolated).
        model: The internal nodal model (Ybus and branch admittances) the solver works on.
    """

    name: str
    bus_ids: np.ndarray
    vn_kv: np.ndarray
    slack_bus_ids: np.ndarray
    vm_setpoint_pu: np.ndarray
    va_setpoint_degree: np.ndarray
    base_p_mw: np.ndarray
    base_q_mvar: np.ndarray
    branch_kind: np.ndarray
    branch_element_id: np.ndarray
    branch_from_bus: np.ndarray
    branch_to_bus: np.ndarray
    load_ids: np.ndarray
    load_bus: np.ndarray
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    load_profile: np.ndarray
    sgen_ids: np.ndarray
    sgen_bus: np.ndarray
    sgen_p_mw: np.ndarray
    sgen_q_mvar: np.ndarray
    sgen_profile: np.ndarray
    storage_ids: np.ndarray
    storage_bus: np.ndarray
    storage_p_mw: np.ndarray
    storage_q_mvar: np.ndarray
    storage_profile: np.ndarray
    unsupplied_bus_ids: np.ndarray
    model: NodalModel

    def __post_init__(self) -> None:
        for field in fields(self):
            _readonly(getattr(self, field.name))
        if len(np.unique(self.bus_ids)) != len(self.bus_ids):
            raise ValueError(f"Network {self.name!r}: bus_ids are not unique")

    @property
    def n_bus(self) -> int:
        """Number of buses (length of every per-bus array)."""
        return len(self.bus_ids)

    @property
    def n_branch(self) -> int:
        """Number of in-service branches (lines and 2-winding transformers)."""
        return len(self.branch_element_id)

    @property
    def slack_index(self) -> np.ndarray:
        """Positions of the slack buses in ``bus_ids``."""
        return self.bus_position(self.slack_bus_ids)

    def bus_position(self, bus_ids: Any) -> np.ndarray:
        """Positions of pandapower bus ids in ``bus_ids`` (the index into per-bus arrays).

        Args:
            bus_ids: One pandapower bus index or an array-like of them.

        Returns:
            int64 positions, same shape as ``bus_ids``.

        Raises:
            KeyError: Naming every id that is not a (supplied) bus of this network.
        """
        wanted = np.asarray(bus_ids, dtype=np.int64)
        order = np.argsort(self.bus_ids, kind="stable")
        sorted_ids = self.bus_ids[order]
        found = np.searchsorted(sorted_ids, wanted).clip(max=max(len(sorted_ids) - 1, 0))
        known = (sorted_ids[found] == wanted) if len(sorted_ids) else np.zeros_like(wanted, bool)
        if not np.all(known):
            unknown = np.unique(wanted[~known]).tolist()
            raise KeyError(f"bus ids {unknown} are not supplied buses of network {self.name!r}")
        return order[found]

    @classmethod
    def from_pandapower(cls, net: pp.pandapowerNet, *, name: str | None = None) -> Network:
        """Build the model from a pandapower net (the net itself is not modified).

        Args:
            net: A pandapower net with lines, 2-winding transformers, switches, shunts,
                external grids, loads, static generators and storage.
            name: Label of the network; defaults to ``net.name``.

        Returns:
            The immutable network.

        Raises:
            UnsupportedElementError: If the net has an in-service element of a table in
                :data:`UNSUPPORTED_TABLES`, a voltage-dependent (ZIP) load, or no external grid.
        """
        _check_supported(net)
        shared = [net[key] for key in ("profiles", "loadcases") if key in net]
        work = copy.deepcopy(net, memo={id(obj): obj for obj in shared})
        for table in ("load", "sgen", "storage"):
            work[table]["p_mw"] = 0.0
            work[table]["q_mvar"] = 0.0
        pp.runpp(work)
        model, node_of_pp_bus = nodal_model(work)
        supplied = net.bus.index.to_numpy()[node_of_pp_bus >= 0]
        bus_ids = np.sort(supplied).astype(np.int64)
        node_of_bus = node_of_pp_bus[net.bus.index.get_indexer(bus_ids)]
        model = model.with_buses(node_of_bus)
        eg = net.ext_grid[net.ext_grid.in_service.astype(bool)]
        elements = {t: _elements(net, t, bus_ids) for t in ("load", "sgen", "storage")}
        bus_pos = {t: np.searchsorted(bus_ids, e["bus"]) for t, e in elements.items()}
        base_p = np.zeros(len(bus_ids))
        base_q = np.zeros(len(bus_ids))
        for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
            np.add.at(base_p, bus_pos[table], sign * elements[table]["p_mw"])
            np.add.at(base_q, bus_pos[table], sign * elements[table]["q_mvar"])
        lines = net.line[net.line.in_service.astype(bool)]
        trafos = net.trafo[net.trafo.in_service.astype(bool)]
        kind = np.array(["line"] * len(lines) + ["trafo"] * len(trafos), dtype="<U5")
        keep = model.branch_kept
        return cls(
            name=name if name is not None else str(net.name or ""),
            bus_ids=bus_ids,
            vn_kv=net.bus.vn_kv.to_numpy(float)[net.bus.index.get_indexer(bus_ids)],
            slack_bus_ids=eg.bus.to_numpy(np.int64),
            vm_setpoint_pu=eg.vm_pu.to_numpy(float),
            va_setpoint_degree=eg.va_degree.to_numpy(float),
            base_p_mw=base_p,
            base_q_mvar=base_q,
            branch_kind=kind[keep],
            branch_element_id=np.r_[lines.index, trafos.index].astype(np.int64)[keep],
            branch_from_bus=np.r_[lines.from_bus, trafos.hv_bus].astype(np.int64)[keep],
            branch_to_bus=np.r_[lines.to_bus, trafos.lv_bus].astype(np.int64)[keep],
            **{f"{t}_{k}": v for t, e in elements.items() for k, v in e.items()},
            unsupplied_bus_ids=np.setdiff1d(net.bus.index.to_numpy(np.int64), bus_ids),
            model=model,
        )

    @classmethod
    def from_simbench(cls, code: str) -> Network:
        """Build the model of a simbench grid, with its transformer taps in effect.

        simbench leaves ``trafo.tap_changer_type`` empty, which pandapower >= 3 reads as "no
        tap changer" and silently ignores ``tap_pos``; :func:`grid.sources.simbench_net` sets
        it to ``"Ratio"`` where empty (simbench issue #69).

        Args:
            code: A simbench code such as ``"1-LV-rural1--0-sw"``.

        Returns:
            The immutable network, named ``code``.
        """
        from grid.sources import simbench_net

        return cls.from_pandapower(simbench_net(code), name=code)


def _check_supported(net: pp.pandapowerNet) -> None:
    """Raise :class:`UnsupportedElementError` naming the first unsupported table found."""
    for table in UNSUPPORTED_TABLES:
        if table not in net or not hasattr(net[table], "index") or len(net[table]) == 0:
            continue
        df = net[table]
        active = df.in_service.astype(bool) if "in_service" in df else np.ones(len(df), bool)
        if np.any(active):
            raise UnsupportedElementError(
                f"net.{table} has in-service elements at indices {df.index[active].tolist()}; "
                "grid.Network supports only lines, 2-winding trafos, switches, shunts, "
                "ext_grid, load, sgen and storage"
            )
    loads = net.load[net.load.in_service.astype(bool)]
    zip_cols = [c for c in _ZIP_COLUMNS if c in loads]
    if zip_cols:
        zip_loads = loads.index[(loads[zip_cols].fillna(0.0) != 0.0).any(axis=1)]
        if len(zip_loads):
            raise UnsupportedElementError(
                f"net.load has voltage-dependent (ZIP) loads at indices {zip_loads.tolist()} "
                f"({', '.join(zip_cols)} must be 0): only constant-power loads are supported"
            )
    if not net.ext_grid.in_service.astype(bool).any():
        raise UnsupportedElementError("net.ext_grid has no in-service external grid (slack)")


def _elements(net: pp.pandapowerNet, table: str, bus_ids: np.ndarray) -> dict[str, np.ndarray]:
    """In-service elements of ``table`` on supplied buses, with ``p*scaling`` and profile."""
    df = net[table]
    df = df[df.in_service.astype(bool) & df.bus.isin(bus_ids)]
    scaling = df.scaling.to_numpy(float) if "scaling" in df else np.ones(len(df))
    profile = df["profile"].fillna("").astype(str) if "profile" in df else [""] * len(df)
    return {
        "ids": df.index.to_numpy(np.int64),
        "bus": df.bus.to_numpy(np.int64),
        "p_mw": df.p_mw.to_numpy(float) * scaling,
        "q_mvar": df.q_mvar.to_numpy(float) * scaling,
        "profile": np.asarray(profile, dtype=str).reshape(len(df)),
    }
