"""The distribution system operator as an agent: it sees its grid, asks for flexibility.

The DSO owns a :class:`grid.Network`. Each round it runs a power flow on the baselines the
other agents announced (forecast net load per bus, plus the loads it does not contract
with), finds buses whose voltage would leave the planning band and branches that would be
overloaded, and turns each violated bus into a :class:`market.FlexRequest`:

* direction: ``down`` (more consumption / less injection) for overvoltage, ``up`` for
  undervoltage;
* ``dv_required_pu``: the distance to the band plus a safety margin;
* sensitivities: how much a kW (kvar) at each bus moves that bus's voltage in the needed
  direction, from :func:`grid.sensitivities` at the forecast operating point; buses whose
  effect is below ``min_sensitivity_share`` of the strongest are left out;
* ``p_kw``: the need expressed as kW delivered at the violated bus itself;
* the maximum price: the DSO's alternative (curtailing PV or accepting the violation),
  configurable.

Branch overloads are found and reported, but not yet turned into requests (a stated
simplification: the pilot's problem is voltage, see DESIGN.md's field notes).
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grid import Network, PowerFlowResult, powerflow, sensitivities
from market import Direction, FlexRequest

__all__ = ["DSOAgent", "DSOSettings", "GridAssessment"]


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
            request's strongest one.
        loading_max_percent: branch loading above which a branch counts as overloaded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    buyer_id: str = Field("dso", pattern=r"^[A-Za-z0-9_-]{1,128}$")
    v_min_pu: float = Field(0.95, gt=0.5, lt=1.5, allow_inf_nan=False)
    v_max_pu: float = Field(1.05, gt=0.5, lt=1.5, allow_inf_nan=False)
    margin_pu: float = Field(0.002, ge=0, le=0.05, allow_inf_nan=False)
    max_price_eur_per_kwh: float = Field(0.30, ge=0, allow_inf_nan=False)
    max_price_eur_per_kvarh: float = Field(0.03, ge=0, allow_inf_nan=False)
    use_reactive: bool = True
    min_sensitivity_share: float = Field(0.05, ge=0, le=1, allow_inf_nan=False)
    loading_max_percent: float = Field(100.0, gt=0, allow_inf_nan=False)

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
    """

    result: PowerFlowResult
    over_bus_ids: np.ndarray
    under_bus_ids: np.ndarray
    overloaded_branches: np.ndarray
    worst_deviation_pu: float

    @property
    def violated(self) -> bool:
        """Whether any bus is outside the band."""
        return bool(len(self.over_bus_ids) or len(self.under_bus_ids))


class DSOAgent:
    """The DSO: assesses its grid and publishes flexibility requests."""

    def __init__(self, network: Network, settings: DSOSettings | None = None) -> None:
        """Create the DSO for ``network`` with ``settings`` (defaults if ``None``)."""
        self.network = network
        self.settings = settings or DSOSettings()

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
        )

    def requests(
        self,
        assessment: GridAssessment,
        t_start: datetime,
        t_end: datetime,
        round_id: int,
    ) -> list[FlexRequest]:
        """One request per violated bus, with the sensitivities that say where flex helps."""
        s = self.settings
        violated = np.concatenate([assessment.over_bus_ids, assessment.under_bus_ids])
        if len(violated) == 0:
            return []
        sens = sensitivities(self.network, assessment.result, buses=violated)
        position = self.network.bus_position(violated)
        vm = assessment.result.vm_pu[position]
        bus_ids = self.network.bus_ids
        requests = []
        for row, bus in enumerate(violated):
            over = vm[row] > s.v_max_pu
            direction = Direction.DOWN if over else Direction.UP
            need = (vm[row] - s.v_max_pu if over else s.v_min_pu - vm[row]) + s.margin_pu
            # dV/dP_consumption is negative; either direction moves V by -dV/dP per kW.
            per_kw = -sens.dv_dp_pu_per_mw[row] / 1000.0
            per_kvar = -sens.dv_dq_pu_per_mvar[row] / 1000.0
            self_kw = per_kw[position[row]]
            requests.append(
                FlexRequest(
                    request_id=f"r{round_id}-b{int(bus)}",
                    buyer_id=s.buyer_id,
                    bus=int(bus),
                    t_start=t_start,
                    t_end=t_end,
                    direction=direction,
                    p_kw=float(need / self_kw) if self_kw > 0 else 0.0,
                    max_price_eur_per_kwh=s.max_price_eur_per_kwh,
                    max_price_eur_per_kvarh=s.max_price_eur_per_kvarh,
                    dv_required_pu=float(need),
                    sensitivity_pu_per_kw=_significant(bus_ids, per_kw, s.min_sensitivity_share),
                    sensitivity_pu_per_kvar=(
                        _significant(bus_ids, per_kvar, s.min_sensitivity_share)
                        if s.use_reactive
                        else {}
                    ),
                )
            )
        return requests


def _significant(bus_ids: np.ndarray, values: np.ndarray, share: float) -> dict[int, float]:
    """Buses whose (positive) sensitivity is at least ``share`` of the largest one."""
    top = float(values.max(initial=0.0))
    if top <= 0.0:
        return {}
    keep = values >= share * top
    return {int(b): float(v) for b, v in zip(bus_ids[keep], values[keep], strict=True)}
