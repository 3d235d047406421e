"""Autonomous agents: buildings and their assets, storage, the heating plant, the DSO.

Every non-DSO agent is a *site* (a row of a :class:`FlexPopulation`): a building with its
base load, PV, heat pump, EV charger and battery; a community battery; the district-heating
plant with its electric boiler and tank. Agent types are parameter sets
(:data:`PRESETS`), not subclasses. Each site self-optimises against the tariff with its own
forecast, bids its true cost of deviating (or more, by strategy) and delivers. The
:class:`DSOAgent` owns the grid and asks for flexibility where voltages leave the band.

The agents' logic never imports mesa, Ray or the service: the simulator and the pilot's
coordinator wrap it.
"""

from agents.assets import ASSET_KINDS, AssetGroup, Horizon
from agents.bidding import STRATEGIES, CostBlocks, hull_blocks
from agents.dso import DSOAgent, DSOSettings, GridAssessment
from agents.forecast import agent_seeds, noisy_forecast
from agents.population import Baseline, BidTable, Delivery, FlexPopulation
from agents.presets import (
    PRESETS,
    BatterySpec,
    EVSpec,
    HeatPumpSpec,
    PVSpec,
    SiteSpec,
    TankSpec,
)
from agents.store import StorePlan, StoreRows, plan_stores
from agents.tariff import Tariff

__all__ = [
    "ASSET_KINDS",
    "PRESETS",
    "STRATEGIES",
    "AssetGroup",
    "Baseline",
    "BatterySpec",
    "BidTable",
    "CostBlocks",
    "DSOAgent",
    "DSOSettings",
    "Delivery",
    "EVSpec",
    "FlexPopulation",
    "GridAssessment",
    "HeatPumpSpec",
    "Horizon",
    "PVSpec",
    "SiteSpec",
    "StorePlan",
    "StoreRows",
    "TankSpec",
    "Tariff",
    "agent_seeds",
    "hull_blocks",
    "noisy_forecast",
    "plan_stores",
]
