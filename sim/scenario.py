"""Scenario configs: YAML parsed once into strict, frozen pydantic models.

A file holds one or more named scenarios under ``scenarios:``; a scenario may ``extends:``
another of the same file and override parts of it (deep merge), so ``tiny`` can be ``base``
with one day. Unknown keys, typos and bad values fail at load time with the file, the key
path and the reason (:class:`ScenarioError`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents import PRESETS, STRATEGIES, DSOSettings, SiteSpec, Tariff
from agents.presets import deep_merge
from market import available_rules

__all__ = [
    "GridSource",
    "Population",
    "Scenario",
    "ScenarioError",
    "TimeWindow",
    "Weather",
    "load_scenario",
    "load_scenarios",
]

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSource(_Strict):
    """Where the network comes from: a simbench code or a pandapower builder name."""

    simbench: str | None = None
    pandapower: Literal["cigre_lv", "cigre_mv"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.simbench is None) == (self.pandapower is None):
            raise ValueError("give exactly one of 'simbench' (a code) or 'pandapower' (a name)")
        return self

    @property
    def name(self) -> str:
        """The code or builder name."""
        return self.simbench or self.pandapower or ""


class TimeWindow(_Strict):
    """The simulated window: ``days`` (or ``rounds`` slots) from ``start_hour`` local time.

    simbench's profiles are one year (2016); a date is mapped to the 2016 day with the
    same ISO week and weekday, so working days stay working days.

    ``horizon_slots`` is how far ahead every agent plans. ``replan_every_slots`` is its
    planning cadence: 1 re-plans the whole horizon every round; N > 1 re-plans it every N
    slots and, in between, re-decides only the next two slots from the real state and the
    latest forecast against the last plan's cost to go (much cheaper for large runs).
    """

    start: dt.date
    start_hour: int = Field(0, ge=0, le=23)
    days: int = Field(1, ge=1, le=366)
    rounds: int | None = Field(None, ge=1)
    slot_minutes: Literal[15] = 15
    horizon_slots: int = Field(96, ge=2, le=4 * 96)
    replan_every_slots: int = Field(1, ge=1, le=96)

    @model_validator(mode="after")
    def _replan_within_horizon(self) -> Self:
        if self.replan_every_slots > self.horizon_slots - 1:
            raise ValueError(
                f"replan_every_slots: {self.replan_every_slots} must be below "
                f"horizon_slots={self.horizon_slots}"
            )
        return self

    @property
    def n_rounds(self) -> int:
        """Slots simulated: ``rounds`` if given, else whole ``days``."""
        per_day = 24 * 60 // self.slot_minutes
        return self.rounds if self.rounds is not None else self.days * per_day


class Weather(_Strict):
    """Outdoor temperature: monthly means plus a daily sine (warmest at 15:00 local)."""

    monthly_mean_c: tuple[float, ...] = (
        1.1,
        3.3,
        5.6,
        10.0,
        13.9,
        19.4,
        20.6,
        20.6,
        15.6,
        11.1,
        6.1,
        2.2,
    )
    diurnal_amplitude_c: float = Field(4.0, ge=0, le=20)
    offset_c: float = Field(0.0, ge=-30, le=30)

    @model_validator(mode="after")
    def _twelve(self) -> Self:
        if len(self.monthly_mean_c) != 12:
            raise ValueError(f"monthly_mean_c: need 12 values, got {len(self.monthly_mean_c)}")
        return self


class Population(_Strict):
    """A group of sites of one preset, optionally with parameter overrides.

    Placement: ``bus`` puts every site of the group on one bus (e.g. the school);
    ``net_loads`` takes the net's own load elements in order (each becomes a site with the
    element's own simbench profile as base load); ``load_buses`` spreads the sites evenly
    over the buses that carry loads.
    """

    preset: str
    count: int = Field(1, ge=0)
    placement: Literal["bus", "net_loads", "load_buses"] = "load_buses"
    bus: int | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    strategy: str | None = None

    @model_validator(mode="after")
    def _known(self) -> Self:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; known: {sorted(PRESETS)}")
        if self.placement == "bus" and self.bus is None:
            raise ValueError("bus: required when placement is 'bus'")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown {self.strategy!r}; known: {sorted(STRATEGIES)}")
        self.spec()  # overrides must make a valid spec
        return self

    def spec(self) -> SiteSpec:
        """The preset with the overrides applied (nested dicts merge into asset specs)."""
        overrides = dict(self.overrides)
        if self.strategy is not None:
            overrides["strategy"] = self.strategy
        return PRESETS[self.preset].with_overrides(overrides)


class MarketSettings(_Strict):
    """The market rule by name and its parameters."""

    rule: str = "locational"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> Self:
        if self.rule not in available_rules():
            raise ValueError(f"rule: unknown {self.rule!r}; known: {sorted(available_rules())}")
        return self


class Scenario(_Strict):
    """One simulation scenario. See ``configs/idrija.yaml`` for a documented example.

    Attributes:
        name: the scenario's name in its file.
        grid: the network.
        time: the window.
        weather: outdoor temperature.
        tariff: the retail tariff the agents optimise against.
        populations: the agents (sites).
        pv_from_net: give each site the net's own PV (sgens) at its bus, and make every
            sgen left over a PV-only site, so all PV is owned by an agent.
        load_scale: multiplies the net's own loads that are not agents.
        market: the rule.
        dso: the DSO's settings (band, price cap, ...).
        forecast_sigma: relative forecast error of every agent (overrides presets if set).
        yardsticks: which reference runs to compute beside the market.
        violation_penalty_eur_per_pu_h: cost put on each pu·h outside the band per bus when
            comparing total costs of market, no control and the optimum.
        seed: the root seed; every random draw derives from it.
    """

    name: Identifier = "base"
    grid: GridSource
    time: TimeWindow
    weather: Weather = Weather()
    tariff: Tariff = Tariff()
    populations: tuple[Population, ...] = ()
    pv_from_net: bool = True
    load_scale: float = Field(1.0, ge=0, le=10)
    market: MarketSettings = MarketSettings()
    dso: DSOSettings = DSOSettings()
    forecast_sigma: float | None = Field(None, ge=0, le=1)
    yardsticks: tuple[Literal["no_control", "optimum"], ...] = ("no_control", "optimum")
    violation_penalty_eur_per_pu_h: float = Field(1000.0, ge=0)
    seed: int = Field(42, ge=0)

    def config_hash(self) -> str:
        """A short hash of the fully resolved scenario (for results' provenance)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _format(error: ValidationError, path: Path, name: str) -> str:
    lines = [f"{path}: scenario {name!r} is invalid:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  scenarios.{name}.{key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_scenarios(path: str | Path) -> dict[str, Scenario]:
    """Every scenario of a YAML file, resolved (``extends``) and validated."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise ScenarioError(f"{path}: no such file") from error
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict) or set(raw) != {"scenarios"}:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ScenarioError(f"{path}: the top level must be exactly 'scenarios:', got {keys}")
    blocks = raw["scenarios"]
    if not isinstance(blocks, dict) or not blocks:
        raise ScenarioError(f"{path}: scenarios: must map names to scenarios")

    def resolve(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in seen:
            raise ScenarioError(f"{path}: scenarios.{name}.extends: cycle {' -> '.join(seen)}")
        block = blocks.get(name)
        if not isinstance(block, dict):
            raise ScenarioError(f"{path}: scenarios.{name}: must be a mapping")
        block = dict(block)
        parent = block.pop("extends", None)
        if parent is None:
            return block
        if parent not in blocks:
            raise ScenarioError(
                f"{path}: scenarios.{name}.extends: unknown scenario {parent!r}; "
                f"known: {sorted(blocks)}"
            )
        return deep_merge(resolve(parent, (*seen, name)), block)

    scenarios = {}
    for name in blocks:
        data = resolve(str(name), ())
        data["name"] = str(name)
        try:
            scenarios[str(name)] = Scenario.model_validate(data)
        except ValidationError as error:
            raise ScenarioError(_format(error, path, str(name))) from None
    return scenarios


def load_scenario(path: str | Path, name: str | None = None) -> Scenario:
    """One scenario of a file: ``name``, or the first one."""
    scenarios = load_scenarios(path)
    if name is None:
        return next(iter(scenarios.values()))
    if name not in scenarios:
        raise ScenarioError(f"{path}: no scenario {name!r}; known: {sorted(scenarios)}")
    return scenarios[name]
