"""Parameter sets of the agents' assets, and the named presets (home, school, ...).

A preset is a :class:`SiteSpec`: which assets a site owns and their parameters. There are
four agent types, each a spec that checks which assets its kind may own:

* :class:`BuildingAgent` (``building``): base load, and any of rooftop PV, a heat pump in
  a 1R1C building, an EV charger and a home battery;
* :class:`StorageAgent` (``storage``): a battery (home or community), nothing else;
* :class:`HeatingPlantAgent` (``heating_plant``): the district-heating plant's electric
  boiler or large heat pump with its hot-water tank (and optionally PV on its roof);
* ``pv_plant``: PV owned by someone without flexible load (curtailment and reactive power).

The decisions of every type come from one vectorised code path, a row of
:class:`agents.FlexPopulation`; the types differ by the assets and parameters they hold,
and the named presets differ only by parameters: a school is a building with a large PV
roof, a daytime load profile and a heat pump for a large thermal mass. Numbers come from
../shared/IDRIJA.md (H = sourced, EST = estimate, as marked there); each field says its unit.
"""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AGENT_KINDS",
    "PRESETS",
    "AgentKind",
    "BatterySpec",
    "BuildingAgent",
    "EVSpec",
    "HeatPumpSpec",
    "HeatingPlantAgent",
    "PVSpec",
    "SiteSpec",
    "StorageAgent",
    "TankSpec",
    "deep_merge",
]

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Efficiency = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Hour = Annotated[float, Field(ge=0, lt=24, allow_inf_nan=False)]
Celsius = Annotated[float, Field(ge=-50, le=60, allow_inf_nan=False)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatterySpec(_Spec):
    """A battery: home or community. Round trip 0.92 x 0.92 ≈ 0.85 AC-AC (IDRIJA.md, H)."""

    capacity_kwh: Positive = 10.0
    p_max_kw: Positive = 5.0
    eta_charge: Efficiency = 0.92
    eta_discharge: Efficiency = 0.92
    soc_min: Share = 0.1
    soc_max: Share = 0.95
    soc_init: Share = 0.5
    wear_eur_per_kwh: NonNegative = 0.07  # degradation per kWh throughput, 0.05–0.09 (EST)

    @model_validator(mode="after")
    def _soc_order(self) -> Self:
        if not self.soc_min <= self.soc_init <= self.soc_max:
            raise ValueError(
                f"soc_init={self.soc_init} must lie in [soc_min={self.soc_min}, "
                f"soc_max={self.soc_max}]"
            )
        return self


class HeatPumpSpec(_Spec):
    """An air-to-water heat pump heating a building modelled as 1R1C.

    Defaults: a partly renovated 150 m² house, UA ~0.24 kW/K, C ~9 kWh/K (time constant
    ~38 h), ~8 kW design heat load at −13 °C (IDRIJA.md, EST); heat pump ≤ 10 kW thermal,
    so 4.5 kW electric at the COP floor of 1.8 covers the design load.
    """

    p_max_kw: Positive = 4.5
    ua_kw_per_k: Positive = 0.24
    c_kwh_per_k: Positive = 9.0
    t_min_c: Celsius = 20.0
    t_max_c: Celsius = 23.0
    t_init_c: Celsius = 21.0
    gains_kw: NonNegative = 0.3  # occupants, appliances, sun (EST)
    cop_at_7c: Positive = 3.2
    cop_slope_per_k: NonNegative = 0.08
    cop_min: Positive = 1.8
    cop_max: Positive = 5.0

    @model_validator(mode="after")
    def _band(self) -> Self:
        if not self.t_min_c < self.t_max_c:
            raise ValueError(f"t_min_c={self.t_min_c} must be below t_max_c={self.t_max_c}")
        if not self.t_min_c <= self.t_init_c <= self.t_max_c:
            raise ValueError(
                f"t_init_c={self.t_init_c} must lie in [{self.t_min_c}, {self.t_max_c}]"
            )
        return self


class EVSpec(_Spec):
    """An electric car charged at home: ~40 km/day → 6–8 kWh/day, 7.4 or 11 kW chargers (H/EST)."""

    capacity_kwh: Positive = 50.0
    p_max_kw: Positive = 7.4
    eta: Efficiency = 0.92
    arrival_hour: Hour = 18.0  # local time
    departure_hour: Hour = 7.0
    trip_kwh: NonNegative = 7.0  # energy used while away each day
    target_soc: Share = 0.8  # state of charge wanted at departure
    soc_init: Share = 0.6


class TankSpec(_Spec):
    """The district-heating plant's electric boiler / heat pump and its hot-water tank.

    Defaults (IDRIJA.md, EST): a 150 m³ tank over 40 K holds 150 x 1.163 x 40 ≈ 7 MWh of heat;
    a 0.8 MW electric boiler; the electric units serve a share of the city's heat demand
    (2–4 MW peak), the fuel boilers the rest.
    """

    capacity_kwh: Positive = 7000.0
    p_max_kw: Positive = 800.0
    efficiency: Positive = 0.99  # kWh of heat per kWh of electricity (a heat pump: its COP)
    retention_per_h: Efficiency = 0.999
    electric_share: Share = 0.25
    heat_ua_kw_per_k: Positive = 110.0  # city heat demand per K below 15 °C
    heat_base_kw: NonNegative = 250.0  # hot water and losses all year
    soc_init: Share = 0.5
    soc_min: Share = 0.05
    soc_max: Share = 0.95


class PVSpec(_Spec):
    """Rooftop PV: curtailable; the inverter can absorb or inject reactive power."""

    kwp: Positive = 6.0
    inverter_kva: Positive = 6.6
    q_cost_eur_per_kvarh: NonNegative = 0.01  # inverter losses and wear (EST)


AgentKind = Literal["building", "storage", "heating_plant", "pv_plant"]
"""The agent types a site can be (reported per agent in the results)."""

AGENT_KINDS: tuple[str, ...] = ("building", "storage", "heating_plant", "pv_plant")

_ASSETS = ("pv", "heat_pump", "ev", "battery", "tank")

_MAY_OWN: dict[str, frozenset[str]] = {
    "building": frozenset({"pv", "heat_pump", "ev", "battery"}),
    "storage": frozenset({"battery"}),
    "heating_plant": frozenset({"tank", "pv"}),
    "pv_plant": frozenset({"pv"}),
}
"""Which assets each agent type may own."""

_MUST_OWN: dict[str, str] = {"storage": "battery", "heating_plant": "tank", "pv_plant": "pv"}
"""The asset without which an agent type is not that type."""


class SiteSpec(_Spec):
    """What one agent (a building, a battery, a heating plant) owns and how it behaves.

    Attributes:
        kind: agent type (``building``, ``storage``, ``heating_plant``, ``pv_plant``); it
            bounds which assets the site may own (a battery-only ``storage``, a
            ``heating_plant`` with its tank, a ``building`` with anything but a tank).
        annual_load_kwh: yearly inflexible consumption, scales the base-load profile.
        load_profile: simbench load-profile name for the base load (``H0-A`` homes,
            ``G1-B`` weekday-daytime business like a school, ``G2-A`` evening business
            like a sports centre, ``G3-A`` continuous business); empty = the net
            element's own profile.
        forecast_sigma: relative error of the agent's own load/PV forecast.
        strategy: bidding strategy name (``truthful``, ``markup``, ``learning``).
        markup: margin over cost for ``markup`` (a fraction: 0.2 = +20 %), and the starting
            margin for ``learning``.
    """

    kind: AgentKind = "building"
    annual_load_kwh: NonNegative = 4000.0
    load_profile: str = ""
    pv: PVSpec | None = None
    heat_pump: HeatPumpSpec | None = None
    ev: EVSpec | None = None
    battery: BatterySpec | None = None
    tank: TankSpec | None = None
    forecast_sigma: NonNegative = 0.1
    strategy: str = "truthful"
    markup: NonNegative = 0.0

    @model_validator(mode="after")
    def _assets_fit_kind(self) -> Self:
        owned = {name for name in _ASSETS if getattr(self, name) is not None}
        foreign = sorted(owned - _MAY_OWN[self.kind])
        if foreign:
            raise ValueError(
                f"{foreign[0]}: a {self.kind!r} agent cannot own a {foreign[0]} "
                f"(it may own {sorted(_MAY_OWN[self.kind])})"
            )
        needed = _MUST_OWN.get(self.kind)
        if needed is not None and needed not in owned:
            raise ValueError(f"{needed}: a {self.kind!r} agent needs a {needed}")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> "SiteSpec":
        """This spec with ``overrides`` applied; a nested dict updates an asset's fields
        (``{"battery": {"capacity_kwh": 20}}``), and the result is validated again as the
        same agent type."""
        return type(self).model_validate(deep_merge(self.model_dump(), overrides))


class BuildingAgent(SiteSpec):
    """A building agent: homes, the school, the sports centre.

    It owns its inflexible base load (a simbench profile scaled to ``annual_load_kwh``) and
    any of: rooftop PV (``pv``, curtailable, with an inverter that can give reactive
    power), a heat pump heating a 1R1C building within a comfort band (``heat_pump``), an
    EV charger (``ev``: arrival, departure, energy needed, charger power) and a home
    battery (``battery``). Homes, the school and the sports centre are parameter sets of
    this type (:data:`PRESETS`).
    """

    kind: Literal["building"] = "building"


class StorageAgent(SiteSpec):
    """A storage agent: a community or stand-alone home battery and nothing else.

    Its ``battery`` holds capacity, power limits, charge and discharge efficiency, state of
    charge bounds and the degradation cost per kWh of throughput (:class:`BatterySpec`).
    """

    kind: Literal["storage"] = "storage"
    annual_load_kwh: NonNegative = 0.0


class HeatingPlantAgent(SiteSpec):
    """The district-heating plant: an electric boiler or large heat pump with a tank.

    The ``tank`` serves the city's heat demand (a base plus a share per kelvin below
    15 °C) and holds the heat the electric unit stores; its electric consumption is
    flexible within the tank's limits (:class:`TankSpec`).
    """

    kind: Literal["heating_plant"] = "heating_plant"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``; nested dicts merge key by key (a new dict)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


PRESETS: dict[str, SiteSpec] = {
    # A household: ~4,000 kWh/yr (IDRIJA.md, H).
    "home": BuildingAgent(annual_load_kwh=4000.0, load_profile="H0-A"),
    "home_pv": BuildingAgent(annual_load_kwh=4000.0, load_profile="H0-A", pv=PVSpec()),
    "home_pv_battery": BuildingAgent(
        annual_load_kwh=4000.0, load_profile="H0-A", pv=PVSpec(), battery=BatterySpec()
    ),
    "home_heat_pump": BuildingAgent(
        annual_load_kwh=4000.0, load_profile="H0-A", heat_pump=HeatPumpSpec()
    ),
    "home_ev": BuildingAgent(annual_load_kwh=4000.0, load_profile="H0-A", ev=EVSpec()),
    "home_all": BuildingAgent(
        annual_load_kwh=4000.0,
        load_profile="H0-A",
        pv=PVSpec(),
        heat_pump=HeatPumpSpec(),
        ev=EVSpec(),
        battery=BatterySpec(),
    ),
    # OŠ Idrija: 100–180 MWh/yr electricity, roof PV 150–250 kWp, open Mon–Fri 07–16 (EST);
    # heat pump for part of ~7,000 m² (the rest from the district heating).
    "school": BuildingAgent(
        annual_load_kwh=140_000.0,
        load_profile="G1-B",
        pv=PVSpec(kwp=200.0, inverter_kva=220.0),
        heat_pump=HeatPumpSpec(
            p_max_kw=60.0,
            ua_kw_per_k=4.0,
            c_kwh_per_k=400.0,
            t_min_c=19.0,
            t_max_c=22.0,
            t_init_c=20.5,
            gains_kw=8.0,
        ),
        battery=BatterySpec(capacity_kwh=100.0, p_max_kw=50.0),
    ),
    # Sports centre (Modra dvorana): 1,500–2,500 m², 30–60 kWh/m² electricity, open 07–22
    # incl. weekends, roof PV 150–300 kWp (EST); a heated hall with a large thermal mass.
    "sports_centre": BuildingAgent(
        annual_load_kwh=90_000.0,
        load_profile="G2-A",
        pv=PVSpec(kwp=200.0, inverter_kva=220.0),
        heat_pump=HeatPumpSpec(
            p_max_kw=50.0,
            ua_kw_per_k=3.0,
            c_kwh_per_k=300.0,
            t_min_c=16.0,
            t_max_c=20.0,
            t_init_c=18.0,
            gains_kw=5.0,
        ),
    ),
    "heating_plant": HeatingPlantAgent(
        annual_load_kwh=20_000.0, load_profile="G3-A", tank=TankSpec()
    ),
    # PV owned by someone without flexible load (e.g. a barn roof): curtailment and Q only.
    "pv_plant": SiteSpec(kind="pv_plant", annual_load_kwh=0.0, pv=PVSpec()),
    # Community battery, 300–500 EUR/kWh installed (EST): 200 kWh / 100 kW.
    "community_battery": StorageAgent(
        battery=BatterySpec(capacity_kwh=200.0, p_max_kw=100.0, wear_eur_per_kwh=0.05),
    ),
}
