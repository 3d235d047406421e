"""The mesa model: one ``step()`` is one market round.

:class:`FlexModel` builds the network and the agents from a scenario and steps the market
case and its no-control yardstick side by side (same agents, same seed, same weather and
meters). The numbers live in the populations' arrays (:mod:`agents`); mesa's agents here are
thin handles (identity, type, bus, row) so mesa's ``AgentSet``, data collection and
visualisation work on them.
"""

from __future__ import annotations

from collections.abc import Callable

import mesa
import numpy as np

from sim.build import Setup, build
from sim.engine import PopulationBackend, RoundEngine, RoundRecord
from sim.scenario import Scenario

__all__ = ["DSOHandle", "FlexModel", "PopulationFactory", "SiteHandle"]

PopulationFactory = Callable[[Setup, bool], PopulationBackend]
"""Makes the population backend of one case: ``factory(setup, market)``."""


class SiteHandle(mesa.Agent):
    """A site (building, battery, heating plant, PV plant) as a mesa agent.

    Attributes:
        agent_id: the site's market id.
        kind: its agent type.
        bus: the pandapower bus it is connected to.
        row: its row in the population arrays.
    """

    def __init__(self, model: FlexModel, agent_id: str, kind: str, bus: int, row: int) -> None:
        super().__init__(model)
        self.agent_id = agent_id
        self.kind = kind
        self.bus = bus
        self.row = row

    @property
    def metered_kw(self) -> float:
        """The site's metered consumption in the last market round (0 before the first)."""
        records = self.model.market.records
        return float(records[-1].metered_kw[self.row]) if records else 0.0


class DSOHandle(mesa.Agent):
    """The DSO as a mesa agent (its logic is :class:`agents.DSOAgent`)."""

    kind = "dso"


class FlexModel(mesa.Model):
    """A scenario as a mesa model; ``step()`` runs one round of every case."""

    def __init__(
        self,
        scenario: Scenario,
        setup: Setup | None = None,
        population_factory: PopulationFactory | None = None,
    ) -> None:
        """Build from ``scenario``; pass a prebuilt ``setup`` to reuse its network and data.

        ``population_factory(setup, market)`` makes each case's population backend
        (default: local populations).
        """
        super().__init__(rng=np.random.default_rng(scenario.seed))
        self.scenario = scenario
        self.setup = setup or build(scenario)

        def engine(market: bool) -> RoundEngine:
            population = population_factory(self.setup, market) if population_factory else None
            return RoundEngine(self.setup, market=market, population=population)

        self.market = engine(True)
        self.no_control = engine(False) if "no_control" in scenario.yardsticks else None
        for row, (agent_id, bus, spec) in enumerate(
            zip(self.setup.agent_ids, self.setup.bus, self.setup.specs, strict=True)
        ):
            SiteHandle(self, agent_id, spec.kind, int(bus), row)
        self.dso = DSOHandle(self)
        self.last: RoundRecord | None = None

    @property
    def done(self) -> bool:
        """Whether every round of the window has run."""
        return self.market.done

    def step(self) -> None:
        """One market round of the market case and of its no-control yardstick."""
        self.last = self.market.step()
        if self.no_control is not None:
            self.no_control.step()
        if self.market.done:
            self.running = False
