"""The distribution system operator as an agent: it sees its grid, asks for flexibility.

The DSO owns a :class:`grid.Network`. Each round it runs a power flow on the baselines the
other agents announced (forecast net load per bus, plus the loads it does not contract
with), finds buses whose voltage would leave the planning band and branches that would be
overloaded, and publishes :class:`market.FlexRequest` s.

Zones (``request_per="zone"``, the default). The violated buses of one direction are
grouped into zones: two violated buses are in the same zone when a line joins them, or a
chain of lines through violated buses does (buses fused by closed bus-bus switches count
as one). Transformers bound zones, so each LV grid behind its MV/LV transformer has its
own zones, and two feeders whose common bus bar is in band give two zones. Buses held by
an external grid are left out: no flexibility moves their voltage. A bus that kW at the
zone's worst bus would bring into band only with more than ``_COUPLING`` (2) times the kW
the worst bus needs itself (a bus near the transformer, or on another branch, weakly moved
by the feeder end) is split off into a zone of its own, with its own worst bus; so no
request asks for much more than its worst bus's own need. Each zone and direction gets ONE
request, placed at the zone's worst bus ``w`` (largest distance outside the band):

* direction: ``down`` (more consumption / less injection) for overvoltage, ``up`` for
  undervoltage;
* ``p_kw``: the kW that, delivered at ``w``, brings every bus ``b`` of the zone back into
  the band with the safety margin: ``max_b need_b / c_bw``, where ``need_b`` is the bus's
  distance to the band plus ``margin_pu`` and ``c_bw`` is the voltage change at ``b`` per
  kW at ``w``: a column of the sensitivity matrix, where :func:`grid.sensitivities` gives
  rows. A first estimate takes the row ``s_w.`` for the column (on a radial feeder the
  matrix is nearly symmetric: within 15 % on CIGRE LV at 1.15 pu); then the DSO measures
  the column itself, running a power flow with that many kW added at ``w`` (one batch,
  one scenario per zone of more than one bus), and recomputes ``p_kw`` from it; twice
  (``_SIZING_FLOWS``). A scenario without a solution keeps the previous estimate. The
  measured column includes the curvature over the step: on CIGRE LV from 1.09 pu down
  to 0.90 pu the zone then lands within 1 mV of ``v_max - margin`` (``v_min + margin``);
  when most of a zone's drop lies upstream of it (CIGRE LV at 1.5x its base load) the kW
  at ``w`` is many times the local load and the sizing misses by tens of mV. When a bus
  upstream of ``w`` sets ``p_kw``, ``w`` itself ends well inside the band (on the
  9,104-bus scale grid its zones end between 1.018 and 1.048 pu);
* ``dv_required_pu``: ``max(p_kw x s_ww, need_w)``, what ``p_kw`` at ``w`` does at ``w``
  by the published sensitivities, for the rules that clear in pu (``locational``,
  ``iterative_price``). On a radial feeder, with sensitivities equal to the resistance
  of the common path to the slack, meeting this ``dv`` at ``w`` with flexibility at any
  buses also keeps every other zone bus in band (linearised); it overshoots when a bus
  upstream of ``w`` sets ``p_kw`` and the flexibility sits upstream too;
* sensitivities: row ``w`` of :func:`grid.sensitivities` at the forecast operating point
  (one row per zone), per kW (kvar) in the request's direction; buses whose effect is below
  ``min_sensitivity_share`` of the strongest are left out;
* the maximum price: the DSO's alternative (curtailing PV or accepting the violation),
  configurable.

Cost per call: one sparse LU of the Jacobian and one row per zone, two batched power
flows, and a map per request built from a numpy selection; the requests are validated
once (a template) and copied with the per-zone values, which are finite numbers from
validated inputs (the tests check each equals its validated self).

``request_per="bus"`` publishes one request per violated bus instead (each its own zone;
then ``p_kw = need_w / s_ww`` and ``dv_required_pu = need_w``): exact per-bus constraints
for the LP of ``locational``, at one sensitivity row and one map per violated bus (about
2-8 ms a row on the 9,104-bus grid, where a round can have 600 violated buses). The
merit-order rules (``pay_as_bid``, ``pay_as_clear``) then buy the same feeder's need once
per bus, so use it only with the sensitivity rules. ``locational`` is cheaper with it: on
configs/compare_rules.yaml's tiny scenario (seeds 0-2) it cost the DSO 0.25-0.27 EUR per
bus against 0.42-0.46 EUR per zone, with the same violation minutes (0, 15, 0; the 15 in
a round whose forecast was in band); a zone's single constraint overshoots when a bus
upstream of ``w`` sets ``p_kw`` (above).

Congestion (``manage_congestion``, on by default). Each overloaded branch with a side behind
it (radial) gets one request of its own for the kW less (or more) through it that brings its
loading ``loading_margin_percent`` under the limit, with every bus behind it counting
one-for-one (:mod:`agents.congestion`). On the Idrija pilot's quick day the feeder's MV/LV
transformer reaches 109 % at 00:00 local time (batteries and EVs starting at the cheap tariff
block) and 157 % at 05:45 (the heating plant's boiler and the homes' heat pumps).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.sparse.csgraph import connected_components

from agents.congestion import congestion_requests
from grid import Network, PowerFlowResult, powerflow, sensitivities
from market import Direction, FlexRequest

__all__ = ["DSOAgent", "DSOSettings", "GridAssessment"]

_EFFECT_FLOOR_PU_PER_KW = 1e-9
"""A bus that kW at the worst bus moves by less than this (pu per kW) does not size the
request: no feasible delivery at ``w`` would fix it (it lies across a transformer or a
slack)."""

_COUPLING = 2.0
"""A zone keeps the buses that kW at its worst bus brings into band with at most this many
times the kW the worst bus itself needs; the others get zones of their own (see
``_split_weakly_coupled``), so no request asks for more than about this multiple of its
worst bus's own need."""

_MAX_SPLITS = 1
"""Passes of zone splitting per call (each pass: one batch of sensitivity rows). One pass
gives the weakly coupled buses of a zone a request of their own; what is weakly coupled
to that one's worst bus does not size it (``_kw_for``) and waits for the next round. More
passes multiplied the requests (405 in one noon round of 100,000 homes on the scale grid,
2.4 s of sensitivities and sizing flows)."""

_SIZING_FLOWS = 2
"""Secant steps of the zone sizing (batched power flows per call). On CIGRE LV at up to
1.09 pu, one step left the binding bus 2.3 mV off its target, two left < 0.5 mV."""


class DSOSettings(BaseModel):
    """The DSO's private settings.

    Attributes:
        buyer_id: the DSO's market id.
        v_min_pu, v_max_pu: planning voltage band (default 0.95–1.05 pu).
        margin_pu: extra voltage asked beyond the band edge, so that forecast error does
            not leave the bus just outside.
        max_price_eur_per_kwh: the most the DSO pays per kWh; its alternative. Default
            0.30 EUR/kWh, in the 100–500 EUR/MWh utilisation range DSOs pay (IDRIJA.md).
        max_price_eur_per_kvarh: the most it pays per kvarh of reactive support.
        use_reactive: whether requests carry reactive sensitivities (inverters may help).
        min_sensitivity_share: drop buses whose sensitivity is below this share of the
            request's strongest one. The merit-order rules count a kW anywhere in the map
            one-for-one, so this share bounds how little a kW they buy may be worth at the
            request's bus. Default 0.3: with zone requests on configs/compare_rules.yaml's
            tiny scenario (seeds 0-2), 0.05 let ``pay_as_bid`` buy kW worth 7 % of a kW at
            the worst bus and leave 105-120 violation minutes; 0.3 left 0-15, the same as
            ``locational``, whose cost moved by under 4 %.
        loading_max_percent: branch loading above which a branch counts as overloaded.
        manage_congestion: whether overloaded branches get requests (module docstring).
        loading_margin_percent: how far under ``loading_max_percent`` a congestion request
            aims, in percentage points (forecast error, the voltage's own change).
        request_per: ``"zone"`` (default): one request per zone of connected violated
            buses and direction, sized so that kW at its worst bus fixes the whole zone;
            suits every rule. ``"bus"``: one request per violated bus; exact per-bus
            constraints for ``locational``/``iterative_price``, but merit-order rules then
            buy a feeder's need once per bus. See the module docstring.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    buyer_id: str = Field("dso", pattern=r"^[A-Za-z0-9_-]{1,128}$")
    v_min_pu: float = Field(0.95, gt=0.5, lt=1.5, allow_inf_nan=False)
    v_max_pu: float = Field(1.05, gt=0.5, lt=1.5, allow_inf_nan=False)
    margin_pu: float = Field(0.002, ge=0, le=0.05, allow_inf_nan=False)
    max_price_eur_per_kwh: float = Field(0.30, ge=0, allow_inf_nan=False)
    max_price_eur_per_kvarh: float = Field(0.03, ge=0, allow_inf_nan=False)
    use_reactive: bool = True
    min_sensitivity_share: float = Field(0.3, ge=0, le=1, allow_inf_nan=False)
    loading_max_percent: float = Field(100.0, gt=0, allow_inf_nan=False)
    manage_congestion: bool = True
    loading_margin_percent: float = Field(2.0, ge=0, lt=50, allow_inf_nan=False)
    request_per: Literal["zone", "bus"] = "zone"

    @model_validator(mode="after")
    def _band(self) -> "DSOSettings":
        if self.v_min_pu >= self.v_max_pu:
            raise ValueError(f"v_min_pu={self.v_min_pu} must be below v_max_pu={self.v_max_pu}")
        return self


@dataclass(frozen=True)
class GridAssessment:
    """What the DSO sees in one operating point.

    Attributes:
        result: the power flow.
        over_bus_ids, under_bus_ids: buses above / below the band.
        overloaded_branches: positions of branches above the loading limit.
        worst_deviation_pu: largest distance outside the band (0 if none).
        p_mw, q_mvar: the per-bus consumption the power flow ran on (``None`` if unknown;
            the zone sizing then uses the row for the column, see the module docstring).
    """

    result: PowerFlowResult
    over_bus_ids: np.ndarray
    under_bus_ids: np.ndarray
    overloaded_branches: np.ndarray
    worst_deviation_pu: float
    p_mw: np.ndarray | None = None
    q_mvar: np.ndarray | None = None

    @property
    def violated(self) -> bool:
        """Whether any bus is outside the band."""
        return bool(len(self.over_bus_ids) or len(self.under_bus_ids))


@dataclass(frozen=True)
class _Zones:
    """Zones of one call: worst bus position, direction sign and member positions."""

    worst: np.ndarray
    sign: np.ndarray
    members: list[np.ndarray]


class DSOAgent:
    """The DSO: assesses its grid and publishes flexibility requests."""

    def __init__(self, network: Network, settings: DSOSettings | None = None) -> None:
        """Create the DSO for ``network`` with ``settings`` (defaults if ``None``)."""
        self.network = network
        self.settings = settings or DSOSettings()
        model = network.model
        line = network.branch_kind == "line"
        self._line_from = model.branch_from_node[line]
        self._line_to = model.branch_to_node[line]
        self._movable = np.ones(network.n_bus, dtype=bool)
        self._movable[network.slack_index] = False
        self._movable &= ~np.isin(model.node_of_bus, model.slack_nodes)

    def assess(self, p_mw: np.ndarray, q_mvar: np.ndarray) -> GridAssessment:
        """Power flow on per-bus consumption (load convention) and the band check."""
        s = self.settings
        result = powerflow(self.network, p_mw, q_mvar)
        if not bool(np.all(result.converged)):
            raise RuntimeError(
                "DSO power flow did not converge on the given per-bus injections; "
                "the injections are outside what the grid can carry"
            )
        vm = result.vm_pu
        over = vm > s.v_max_pu
        under = vm < s.v_min_pu
        deviation = np.maximum(vm - s.v_max_pu, s.v_min_pu - vm)
        return GridAssessment(
            result=result,
            over_bus_ids=self.network.bus_ids[over],
            under_bus_ids=self.network.bus_ids[under],
            overloaded_branches=np.flatnonzero(result.loading_percent > s.loading_max_percent),
            worst_deviation_pu=float(max(0.0, deviation.max(initial=0.0))),
            p_mw=np.array(p_mw, dtype=np.float64),
            q_mvar=np.array(q_mvar, dtype=np.float64),
        )

    def requests(
        self,
        assessment: GridAssessment,
        t_start: datetime,
        t_end: datetime,
        round_id: int,
    ) -> list[FlexRequest]:
        """Voltage requests, one per zone and direction (or per bus), then one congestion
        request per overloaded radial branch; see the module docstring."""
        s = self.settings
        template = FlexRequest(
            request_id="template",
            buyer_id=s.buyer_id,
            bus=0,
            t_start=t_start,
            t_end=t_end,
            direction=Direction.DOWN,
            p_kw=0.0,
            max_price_eur_per_kwh=s.max_price_eur_per_kwh,
            max_price_eur_per_kvarh=s.max_price_eur_per_kvarh,
        )
        requests = self._voltage_requests(assessment, template, round_id)
        if (
            s.manage_congestion
            and len(assessment.overloaded_branches)
            and assessment.p_mw is not None
            and assessment.q_mvar is not None
        ):
            requests += congestion_requests(
                self.network,
                assessment.result,
                assessment.overloaded_branches,
                assessment.p_mw,
                assessment.q_mvar,
                loading_max_percent=s.loading_max_percent,
                loading_margin_percent=s.loading_margin_percent,
                template=template,
                round_id=round_id,
            )
        return requests

    def _voltage_requests(
        self, assessment: GridAssessment, template: FlexRequest, round_id: int
    ) -> list[FlexRequest]:
        """One request per zone and direction (or per bus), see the module docstring."""
        s = self.settings
        vm = assessment.result.vm_pu
        need = np.maximum(vm - s.v_max_pu, s.v_min_pu - vm) + s.margin_pu
        zones = self._zones(assessment, need)
        if len(zones.worst) == 0:
            return []
        bus_ids = self.network.bus_ids
        zones, per_kw, per_kvar = self._split_weakly_coupled(assessment, zones, need)
        rows = np.arange(len(zones.worst))
        self_kw = per_kw[rows, zones.worst]
        if (self_kw <= 0.0).any():
            bad = bus_ids[zones.worst[self_kw <= 0.0]].tolist()
            raise RuntimeError(f"DSO: buses {bad} have no positive voltage sensitivity to kW")
        p_kw = self._zone_p_kw(assessment, zones, need, per_kw)
        dv = np.maximum(p_kw * self_kw, need[zones.worst])
        requests = []
        for row, (w, sign) in enumerate(
            zip(zones.worst.tolist(), zones.sign.tolist(), strict=True)
        ):
            bus = int(bus_ids[w])
            kvar_map = (
                _significant(bus_ids, per_kvar[row], s.min_sensitivity_share)
                if s.use_reactive
                else {}
            )
            requests.append(
                template.model_copy(
                    update={
                        "request_id": f"r{int(round_id)}-b{bus}",
                        "bus": bus,
                        "direction": Direction.DOWN if sign > 0 else Direction.UP,
                        "p_kw": float(p_kw[row]),
                        "dv_required_pu": float(dv[row]),
                        "sensitivity_pu_per_kw": _significant(
                            bus_ids, per_kw[row], s.min_sensitivity_share
                        ),
                        "sensitivity_pu_per_kvar": kvar_map,
                    }
                )
            )
        return requests

    def _rows(self, assessment: GridAssessment, worst: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sensitivity rows (pu per kW and per kvar, in the helping direction) of ``worst``."""
        sens = sensitivities(self.network, assessment.result, buses=self.network.bus_ids[worst])
        # dV/dP_consumption is negative; either direction moves V by -dV/dP per kW.
        per_kw = -sens.dv_dp_pu_per_mw / 1000.0
        per_kvar = -sens.dv_dq_pu_per_mvar / 1000.0
        if not (np.isfinite(per_kw).all() and np.isfinite(per_kvar).all()):
            raise RuntimeError("DSO: voltage sensitivities are not finite at this operating point")
        return per_kw, per_kvar

    def _split_weakly_coupled(
        self, assessment: GridAssessment, zones: _Zones, need: np.ndarray
    ) -> tuple[_Zones, np.ndarray, np.ndarray]:
        """Zones whose every bus kW at the worst bus brings into band with at most
        ``_COUPLING`` times the kW the worst bus needs itself (by the worst bus's row, as in
        the first sizing estimate); the other buses form zones of their own (their own worst
        bus and sensitivity row), until none is left or after ``_MAX_SPLITS`` passes.

        Without this, a zone bus near the transformer (moved 30x less than the feeder end,
        and still 0.004 pu over) would size the whole zone's request, and the DSO would buy
        a tenfold voltage change at the feeder end (seen on the Idrija feeder: 0.103 pu
        asked for a 0.0103 pu need, buses pushed down to 0.926 pu).
        """
        worst, sign, members = list(zones.worst), list(zones.sign), list(zones.members)
        per_kw, per_kvar = self._rows(assessment, zones.worst)
        kw_rows, kvar_rows = list(per_kw), list(per_kvar)
        pending = list(range(len(worst)))
        for _ in range(_MAX_SPLITS):
            split = []
            for row in pending:
                effect = kw_rows[row][members[row]]
                own = need[worst[row]] / kw_rows[row][worst[row]]
                with np.errstate(divide="ignore"):
                    kw_each = np.where(effect > 0.0, need[members[row]] / effect, np.inf)
                weak = kw_each > _COUPLING * own
                if weak.any() and not weak.all():
                    rest = members[row][weak]
                    members[row] = members[row][~weak]
                    rest = rest[np.argsort(-need[rest], kind="stable")]
                    worst.append(int(rest[0]))
                    sign.append(sign[row])
                    members.append(rest)
                    split.append(len(worst) - 1)
            if not split:
                break
            new_kw, new_kvar = self._rows(assessment, np.array([worst[r] for r in split]))
            kw_rows.extend(new_kw)
            kvar_rows.extend(new_kvar)
            pending = split
        return (
            _Zones(np.array(worst, dtype=np.int64), np.array(sign), members),
            np.array(kw_rows),
            np.array(kvar_rows),
        )

    def _zones(self, assessment: GridAssessment, need: np.ndarray) -> _Zones:
        """Group violated movable buses per direction (down first), worst bus first."""
        positions = [
            self.network.bus_position(assessment.over_bus_ids),
            self.network.bus_position(assessment.under_bus_ids),
        ]
        worst, sign, members = [], [], []
        for direction_sign, violated in zip((1, -1), positions, strict=True):
            violated = violated[self._movable[violated]]
            if violated.size == 0:
                continue
            label = (
                np.arange(violated.size)
                if self.settings.request_per == "bus"
                else self._components(violated)
            )
            order = np.lexsort((-need[violated], label))
            label, ordered = label[order], violated[order]
            starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
            for group in np.split(ordered, starts[1:]):
                worst.append(int(group[0]))
                sign.append(direction_sign)
                members.append(group)
        return _Zones(np.array(worst, dtype=np.int64), np.array(sign), members)

    def _components(self, violated: np.ndarray) -> np.ndarray:
        """Zone label of each violated bus: connected through lines between violated nodes."""
        model = self.network.model
        nodes = model.node_of_bus[violated]
        on = np.zeros(model.n_node, dtype=bool)
        on[nodes] = True
        keep = on[self._line_from] & on[self._line_to]
        graph = sp.coo_matrix(
            (np.ones(int(keep.sum())), (self._line_from[keep], self._line_to[keep])),
            shape=(model.n_node, model.n_node),
        )
        _, label = connected_components(graph, directed=False)
        return label[nodes]

    def _zone_p_kw(
        self, assessment: GridAssessment, zones: _Zones, need: np.ndarray, per_kw: np.ndarray
    ) -> np.ndarray:
        """kW at each zone's worst bus that brings all its buses into band (module docstring).

        First with the row ``s_w.`` standing in for the column; then, for zones of more than
        one bus, the column is measured by a power flow with that kW added at ``w`` (all
        such zones in one batch, started from the assessed operating point: 8 instead of 12
        sweeps on the 9,104-bus grid) and the kW recomputed from it, ``_SIZING_FLOWS``
        times.
        """
        p_kw = np.array([_kw_for(need[m], per_kw[row, m]) for row, m in enumerate(zones.members)])
        multi = np.flatnonzero([m.size > 1 for m in zones.members])
        if multi.size == 0 or assessment.p_mw is None or assessment.q_mvar is None:
            return p_kw
        vm0 = assessment.result.vm_pu
        for _ in range(_SIZING_FLOWS):
            p = np.repeat(assessment.p_mw[None, :], multi.size, axis=0)
            q = np.repeat(assessment.q_mvar[None, :], multi.size, axis=0)
            worst, sign = zones.worst[multi], zones.sign[multi]
            p[np.arange(multi.size), worst] += sign * p_kw[multi] / 1000.0
            trial = powerflow(self.network, p, q, v_start=assessment.result.v_node_pu)
            for i, zone in enumerate(multi.tolist()):
                if trial.converged[i]:
                    members = zones.members[zone]
                    moved = (vm0[members] - trial.vm_pu[i, members]) * zones.sign[zone]
                    p_kw[zone] = _kw_for(need[members], moved / p_kw[zone])
        return p_kw


def _kw_for(need: np.ndarray, effect: np.ndarray) -> float:
    """``max_b need_b / effect_b`` over the zone's buses (worst bus first) that kW at the
    worst bus moves at all and would bring into band with at most ``_COUPLING`` times the
    worst bus's own kW (a bus beyond that is left to its own zone, or to the next round)."""
    helped = effect > _EFFECT_FLOOR_PU_PER_KW
    kw_each = np.full(need.shape, np.inf)
    kw_each[helped] = need[helped] / effect[helped]
    own = kw_each[0]
    if not np.isfinite(own):
        return float(kw_each[helped].max())
    return float(kw_each[kw_each <= _COUPLING * own * (1.0 + 1e-9)].max())


def _significant(bus_ids: np.ndarray, values: np.ndarray, share: float) -> dict[int, float]:
    """Buses whose (positive) sensitivity is at least ``share`` of the largest one."""
    top = float(values.max(initial=0.0))
    if top <= 0.0:
        return {}
    keep = np.flatnonzero(values >= share * top)
    return dict(zip(bus_ids[keep].tolist(), values[keep].tolist(), strict=True))
