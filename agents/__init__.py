"""Autonomous agents: buildings and their assets, storage, the heating plant, the DSO.

Every non-DSO agent is a *site* (a row of a :class:`FlexPopulation`): a
:class:`BuildingAgent` with its base load, PV, heat pump, EV charger and battery; a
:class:`StorageAgent` (a community or home battery); the :class:`HeatingPlantAgent`, the
district-heating plant with its electric boiler and tank. An agent type is a spec of what
the site owns; homes, the school and the sports centre are parameter sets of the building
type (:data:`PRESETS`), and every type decides with the same vectorised code. Each site
self-optimises against the tariff with its own forecast, bids its true cost of deviating
(or more, by strategy) and delivers. The :class:`DSOAgent` owns the grid and asks for
flexibility where voltages leave the band.

The agents' logic never imports mesa, Ray or the service: the simulator and the pilot's
coordinator wrap it.
"""

from agents.assets import ASSET_KINDS, AssetGroup, Horizon
from agents.bidding import STRATEGIES, CostBlocks, hull_blocks
from agents.dso import DSOAgent, DSOSettings, GridAssessment
from agents.forecast import agent_seeds, noisy_forecast
from agents.population import Baseline, BidTable, Delivery, FlexPopulation
from agents.presets import (
    AGENT_KINDS,
    PRESETS,
    AgentKind,
    BatterySpec,
    BuildingAgent,
    EVSpec,
    HeatingPlantAgent,
    HeatPumpSpec,
    PVSpec,
    SiteSpec,
    StorageAgent,
    TankSpec,
)
from agents.store import StorePlan, StoreRows, plan_stores
from agents.tariff import Tariff

__all__ = [
    "AGENT_KINDS",
    "ASSET_KINDS",
    "PRESETS",
    "STRATEGIES",
    "AgentKind",
    "AssetGroup",
    "Baseline",
    "BatterySpec",
    "BidTable",
    "BuildingAgent",
    "CostBlocks",
    "DSOAgent",
    "DSOSettings",
    "Delivery",
    "EVSpec",
    "FlexPopulation",
    "GridAssessment",
    "HeatPumpSpec",
    "HeatingPlantAgent",
    "Horizon",
    "PVSpec",
    "SiteSpec",
    "StorageAgent",
    "StorePlan",
    "StoreRows",
    "TankSpec",
    "Tariff",
    "agent_seeds",
    "hull_blocks",
    "noisy_forecast",
    "plan_stores",
]
