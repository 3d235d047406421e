"""Ray backend: sharded populations for ``gridbid run --backend ray``, fanned-out runs for
``gridbid compare``. The only module of gridbid that imports ``ray`` (STYLE.md, rule 11).

Sharding (:class:`ShardedPopulation`): the sites are ordered by bus and cut into N blocks
of about equal planning cost (cuts moved to where the bus changes, so a bus and its
neighbourhood stay on one shard); each block lives in one coarse actor (:class:`_Shard`)
that plans, bids and delivers for all its rows in bulk. Cutting in bus order rather than in
row order gives every shard a mix of the agent types (a scenario's rows come population by
population): with 100,000 synthetic homes the row-order cut put the 5,000 EVs alone on one
shard, whose planning then ran 17.5 s against the other's 20.9 s over 16 rounds, as the
weights below only estimate each kind's cost. The actor keeps its round's plan and bids;
the driver only sees what the market needs: the announced baselines, the bids (merged into
one order book in the row order the local backend would produce, because ties in clearing
break by row order) and the meters. Rows never read each other, so the results are the
local backend's, bit for bit.

Fault tolerance: shards are restartable actors (``max_restarts``). After every delivered
round the driver keeps each shard's asset state (stores' ``e_kwh``, strategies' ``markup``)
in its mirror of the population; when a call fails because the actor died, the driver
restores that state into the restarted actor, replays the round's earlier calls
(deterministic) and calls again. When the restarts are exhausted the run fails with
:class:`ShardFailedError`, never with silently missing agents.

Experiments (:func:`run_many`): one Ray task per run, the base scenario put once, at most
``max_in_flight`` runs submitted at a time (``ray.wait``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from agents import ASSET_KINDS, BidTable, Delivery, FlexPopulation, Horizon
from market.book import OrderBook

if TYPE_CHECKING:
    from sim.build import Setup
    from sim.scenario import Scenario

__all__ = [
    "ShardFailedError",
    "ShardedFactory",
    "ShardedPopulation",
    "ray_session",
    "run_many",
    "run_sharded",
    "shard_bounds",
    "shard_rows",
]

_ASSET_ORDER = {name: i for i, name in enumerate((*ASSET_KINDS, "pv", "pvq"))}
"""Order of the asset blocks within one direction of :meth:`FlexPopulation.bids`."""


_PLAN_COST = {"site": 0.2, "battery": 1.0, "heat_pump": 1.6, "ev": 10.0, "tank": 2.0}
"""Relative cost of planning one site (forecast only) and one asset of each kind, for
balancing shards; measured per 1,000 sites with one numba thread: 0.017 ms (site), 0.088
(battery), 0.14 (heat pump), 0.87 ms (EV); the tank is a guess (one per scenario)."""


class ShardFailedError(RuntimeError):
    """A shard actor died more often than its ``max_restarts`` allow; the run is aborted."""


@contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, verbose: bool = False
) -> Iterator[dict[str, float]]:
    """Connect to Ray (``address`` or ``RAY_ADDRESS``) or start a local instance.

    A local instance is sized to this machine (or ``num_cpus``), without the dashboard,
    and shut down on exit; a session that was already initialised is reused and left
    running. Ray's own logs (and the workers' output) reach the terminal only if
    ``verbose``.

    Yields:
        The cluster's resources (``CPU``, memory, ...).
    """
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Not RAY_BACKEND_LOG_LEVEL: Ray's core prints a line to stderr saying it read it.
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
    }
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as error:
            hint = ""
            if os.environ.get("RAY_AUTH_MODE", "disabled") != "token":
                hint = (
                    "; if the cluster uses token authentication (the default for clusters "
                    "started with `ray start` since Ray 2.59), set RAY_AUTH_MODE=token and "
                    "the token (RAY_AUTH_TOKEN, or the file `ray get-auth-token` reads)"
                )
            raise ConnectionError(f"address {address!r}: {error}{hint}") from error
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


# -- sharded populations ------------------------------------------------------------------


def shard_rows(bus: np.ndarray, weight: np.ndarray, shards: int) -> list[np.ndarray]:
    """Each shard's rows (ascending): the rows in bus order, cut by :func:`shard_bounds`."""
    order = np.argsort(bus, kind="stable")
    return [np.sort(order[a:b]) for a, b in shard_bounds(bus[order], weight[order], shards)]


def shard_bounds(bus: np.ndarray, weight: np.ndarray, shards: int) -> list[tuple[int, int]]:
    """Cut rows into ``shards`` contiguous, non-empty blocks of about equal ``weight``.

    Each cut moves to the nearest row where the bus changes (so a bus area is not split)
    if that row is within a quarter of an even block's rows; every block stays non-empty.
    """
    n = len(bus)
    shards = max(1, min(shards, n))
    total = np.cumsum(weight, dtype=float)
    changes = np.flatnonzero(np.r_[False, bus[1:] != bus[:-1]])
    cuts = [0]
    for s in range(1, shards):
        target = int(np.searchsorted(total, total[-1] * s / shards)) + 1
        if changes.size:
            near = changes[np.argmin(np.abs(changes - target))]
            target = int(near) if abs(int(near) - target) <= max(1, n // (4 * shards)) else target
        target = min(max(target, cuts[-1] + 1), n - (shards - s))
        cuts.append(target)
    cuts.append(n)
    return list(itertools.pairwise(cuts))


@ray.remote
class _Shard:
    """A block of sites: plans, bids and delivers for all of them in one call each.

    The sites and their profiles arrive by :meth:`load`, not through the constructor: Ray
    re-runs the constructor of a restarted actor with its original arguments and warns on
    the terminal about constructor arguments held in the object store; the driver loads a
    restarted shard itself (:meth:`ShardedPopulation._recover`). Until loaded, every call
    answers ``None`` with the actor's incarnation, so the driver sees the restart.
    """

    def __init__(self, threads: int) -> None:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        self.population: FlexPopulation | None = None
        self.base_kw = self.pv_kw_per_kwp = np.zeros((0, 0))
        self.baseline = None
        self.bid_table: BidTable | None = None
        self.incarnation = uuid.uuid4().hex

    def load(
        self, population: FlexPopulation, base_kw: np.ndarray, pv_kw_per_kwp: np.ndarray
    ) -> tuple[str, bool]:
        """Take the shard's sites (with their state) and their rows of the profiles."""
        self.population = population
        self.base_kw = base_kw
        self.pv_kw_per_kwp = pv_kw_per_kwp
        self.baseline = self.bid_table = None
        return self.incarnation, True

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the actor's process (MB)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def restore(
        self, e_kwh: dict[str, np.ndarray], markup: np.ndarray | None
    ) -> tuple[str, bool | None]:
        """Set the assets' state (and, unless ``None``, the margins) to a checkpoint."""
        if self.population is None:
            return self.incarnation, None
        for kind, values in e_kwh.items():
            self.population.groups[kind].e_kwh = values.copy()
        if markup is not None:
            self.population.markup = markup.copy()
        self.baseline = self.bid_table = None
        return self.incarnation, None

    def plan(self, horizon: Horizon) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
        """Plan the horizon; return the announced baseline and the forecast base load."""
        if self.population is None:
            return self.incarnation, None
        k, h = horizon.first_slot, horizon.length
        self.baseline = self.population.plan(
            horizon, self.base_kw[:, k : k + h], self.pv_kw_per_kwp[:, k : k + h]
        )
        self.bid_table = None
        first = self.baseline.site_p_kw[:, :1].copy(), self.baseline.base_kw[:, :1].copy()
        return self.incarnation, first

    def bids(
        self, requests: list, t_start: datetime, t_end: datetime, round_id: int
    ) -> tuple[str, BidTable]:
        """Bid against the round's requests (kept for delivery)."""
        if self.baseline is None:  # a restarted actor: the driver sees its new incarnation
            return self.incarnation, None
        self.bid_table = self.population.bids(self.baseline, requests, t_start, t_end, round_id)
        return self.incarnation, self.bid_table

    def deliver(
        self, awarded_kw: np.ndarray | None, with_bids: bool
    ) -> tuple[str, tuple[Delivery, dict[str, np.ndarray], np.ndarray]]:
        """Deliver plan plus awards; return the meters and the new state (the checkpoint)."""
        if self.baseline is None:
            return self.incarnation, None
        k = self.baseline.horizon.first_slot
        delivery = self.population.deliver(
            self.baseline,
            self.bid_table if with_bids else None,
            awarded_kw,
            self.base_kw[:, k],
            self.pv_kw_per_kwp[:, k],
        )
        state = {kind: g.e_kwh.copy() for kind, g in self.population.groups.items()}
        return self.incarnation, (delivery, state, self.population.markup.copy())


@dataclass(frozen=True)
class ShardedBaseline:
    """What the driver holds of a round's plan: the first slot only (the rest stays in
    the shards). Shapes (n, 1)."""

    horizon: Horizon
    site_p_kw: np.ndarray
    base_kw: np.ndarray


class ShardedPopulation:
    """The setup's sites over ``shards`` Ray actors, with the interface of
    :class:`~agents.FlexPopulation` that :class:`sim.engine.RoundEngine` uses.

    Attributes:
        local: the driver's mirror of the population; its asset state is the checkpoint of
            the last delivered round.
        rows: the rows of each shard (ascending).
        actors: the shard actors.
        restarts: recoveries so far per shard.
    """

    def __init__(
        self,
        setup: Setup,
        *,
        shards: int,
        max_restarts: int = 2,
        cpus_per_shard: float = 1.0,
        restart_timeout_s: float = 300.0,
    ) -> None:
        """Build the population, cut it into shards and start one actor per shard."""
        self.setup = setup
        self.local = FlexPopulation.from_specs(
            setup.agent_ids,
            setup.bus,
            setup.specs,
            seed=setup.scenario.seed,
            replan_every=setup.scenario.time.replan_every_slots,
        )
        weight = np.full(len(self.local), _PLAN_COST["site"])
        for kind, group in self.local.groups.items():
            np.add.at(weight, group.site, _PLAN_COST.get(kind, 1.0))
        self.rows = shard_rows(self.local.bus, weight, shards)
        self.max_restarts = max_restarts
        self.restart_timeout_s = restart_timeout_s
        self.restarts = [0] * len(self.rows)
        self._group_rows = [  # per shard: the positions in each asset group of its assets
            {
                kind: positions
                for kind, g in self.local.groups.items()
                if (positions := np.flatnonzero(np.isin(g.site, rows))).size
            }
            for rows in self.rows
        ]
        options = {"max_restarts": max_restarts, "max_task_retries": 0, "num_cpus": cpus_per_shard}
        threads = max(1, int(cpus_per_shard))
        self._inputs = [  # held for the life of the actors: a restart re-reads them
            (
                ray.put(self.local.subset(rows)),
                ray.put(np.ascontiguousarray(setup.base_kw[rows])),
                ray.put(np.ascontiguousarray(setup.pv_kw_per_kwp[rows])),
            )
            for rows in self.rows
        ]
        self.actors = [_Shard.options(**options).remote(threads) for _ in self._inputs]
        self._log: list[tuple[str, list[tuple]]] = []
        self._incarnation: list[str | None] = [None] * len(self.actors)
        self._call("load", list(self._inputs))
        self._round = -1
        self._merge: tuple[np.ndarray, list[int]] | None = None
        self._anchor: tuple[ray.ObjectRef, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.local)

    @property
    def groups(self) -> dict:
        """The assets, with the state of the last delivered round."""
        return self.local.groups

    @property
    def markup(self) -> np.ndarray:
        """Each site's margin after the last delivered round."""
        return self.local.markup

    def peak_rss_mb(self) -> list[float]:
        """Peak resident memory of each shard's process (MB)."""
        return ray.get([actor.peak_rss_mb.remote() for actor in self.actors])

    def close(self) -> None:
        """Stop the shard actors."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    # -- the round -----------------------------------------------------------------------

    def plan(
        self, horizon: Horizon, base_kw_true: np.ndarray, pv_kw_per_kwp_true: np.ndarray
    ) -> ShardedBaseline:
        """Every shard plans the horizon on its rows of the setup's base load and PV.

        The shards hold the setup's arrays (put once), so the arrays passed here must be
        the setup's own, sliced at the horizon; that is checked, not re-sent.
        """
        k, h = horizon.first_slot, horizon.length
        for name, given, own in (
            ("base_kw_true", base_kw_true, self.setup.base_kw),
            ("pv_kw_per_kwp_true", pv_kw_per_kwp_true, self.setup.pv_kw_per_kwp),
        ):
            if given.shape != (len(self), h) or not np.may_share_memory(given, own):
                raise ValueError(
                    f"{name}: the sharded backend plans on the setup's own "
                    f"arrays at slot {k}; got another array {given.shape}"
                )
        self._round = k
        self._log = []
        ref = ray.put(horizon)
        if k % self.local.replan_every == 0:
            # A full plan: what a restarted shard needs to rebuild the cost to go that the
            # rounds up to the next full plan re-decide against (see _recover).
            self._anchor = (ref, {kind: g.e_kwh.copy() for kind, g in self.groups.items()})
        parts = self._call("plan", [(ref,)] * len(self.actors))
        return ShardedBaseline(
            horizon, self._gather([p[0] for p in parts]), self._gather([p[1] for p in parts])
        )

    def _gather(self, parts: list[np.ndarray]) -> np.ndarray:
        """The shards' per-site arrays (first axis: their rows) in the population's order."""
        out = np.empty((len(self), *parts[0].shape[1:]), dtype=parts[0].dtype)
        for rows, part in zip(self.rows, parts, strict=True):
            out[rows] = part
        return out

    def bids(
        self,
        baseline: ShardedBaseline,
        requests: Sequence,
        t_start: datetime,
        t_end: datetime,
        round_id: int,
    ) -> BidTable:
        """Gather the shards' bids into one table in the local backend's row order."""
        ref = ray.put(list(requests))
        tables: list[BidTable] = self._call(
            "bids", [(ref, t_start, t_end, round_id)] * len(self.actors)
        )
        site, asset_row = [], []
        for rows, positions, table in zip(self.rows, self._group_rows, tables, strict=True):
            site.append(rows[table.site])
            global_row = rows[table.asset_row]  # pv and pvq: the site row
            for kind, pos in positions.items():
                mine = table.asset == kind
                global_row[mine] = pos[table.asset_row[mine]]
            asset_row.append(global_row)
        key = np.concatenate([_segment_key(t, r) for t, r in zip(tables, asset_row, strict=True)])
        order = np.argsort(key, kind="stable")
        self._merge = (order, [len(t) for t in tables])

        def cat(values: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(values)[order]

        columns = {
            f.name: cat([getattr(t.book, f.name) for t in tables])
            for f in dataclasses.fields(OrderBook)
            if not f.name.startswith("_")
        }
        for values in columns.values():
            values.flags.writeable = False
        return BidTable(
            book=OrderBook(**columns),
            site=cat(site),
            asset=cat([t.asset for t in tables]),
            asset_row=cat(asset_row),
            sign=cat([t.sign for t in tables]),
            is_reactive=cat([t.is_reactive for t in tables]),
            cost_eur_per_kwh=cat([t.cost_eur_per_kwh for t in tables]),
        )

    def deliver(
        self,
        baseline: ShardedBaseline,
        bids: BidTable | None,
        awarded_kw: np.ndarray | None,
        base_kw_true: np.ndarray,
        pv_kw_per_kwp_true: np.ndarray,
    ) -> Delivery:
        """Scatter the awards to the shards, gather the meters, keep the checkpoint."""
        n_shards = len(self.actors)
        args: list[tuple] = [(None, False)] * n_shards
        if bids is not None and self._merge is not None:
            order, sizes = self._merge
            per_row = None
            if awarded_kw is not None:
                per_row = np.empty(len(order))
                per_row[order] = awarded_kw
            starts = np.r_[0, np.cumsum(sizes)]
            args = [
                (None if per_row is None else per_row[starts[i] : starts[i + 1]], True)
                for i in range(n_shards)
            ]
        parts = self._call("deliver", args)
        self._merge = None
        for rows, positions, (_, e_kwh, markup) in zip(
            self.rows, self._group_rows, parts, strict=True
        ):
            for kind, values in e_kwh.items():
                self.local.groups[kind].e_kwh[positions[kind]] = values
            self.local.markup[rows] = markup
        deliveries = [p[0] for p in parts]
        return Delivery(
            **{
                f.name: self._gather([getattr(d, f.name) for d in deliveries])
                for f in dataclasses.fields(Delivery)
            }
        )

    # -- calls and recovery --------------------------------------------------------------

    def _call(self, method: str, args: list[tuple]) -> list[Any]:
        """Call ``method`` on every shard in parallel; recover shards that died.

        A call fails if its actor died while it ran; one submitted after a death runs on
        the restarted actor with its initial state, which its new incarnation id reveals.
        Either way the shard is recovered and the call repeated.
        """
        refs = [
            getattr(actor, method).remote(*a) for actor, a in zip(self.actors, args, strict=True)
        ]
        results = []
        for i, ref in enumerate(refs):
            while True:
                try:
                    incarnation, value = ray.get(ref)
                except RayActorError as error:
                    ref = self._recover(i, method, args[i], error)
                    continue
                known = self._incarnation[i]
                if known is not None and incarnation != known:
                    ref = self._recover(i, method, args[i], None)
                    continue
                if value is None and method != "restore":
                    raise RuntimeError(f"shard {i}: {method} without a plan (driver bug)")
                self._incarnation[i] = incarnation
                results.append(value)
                break
        self._log.append((method, args))
        return results

    def _shard_state(self, i: int, e_kwh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Shard ``i``'s rows of per-kind asset states."""
        return {kind: e_kwh[kind][pos].copy() for kind, pos in self._group_rows[i].items()}

    def _recover(self, i: int, method: str, args: tuple, error: Exception | None) -> ray.ObjectRef:
        """Restore shard ``i`` from the checkpoint, replay this round, call again.

        Each death counts against ``max_restarts``; while Ray is still restarting the
        actor (:class:`~ray.exceptions.ActorUnavailableError`) the driver polls until
        ``restart_timeout_s``.
        """
        self._count_death(i, error)
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            actor = self.actors[i]
            e_kwh = self._shard_state(i, {kind: g.e_kwh for kind, g in self.groups.items()})
            try:
                ray.get(actor.load.remote(*self._inputs[i]))
                if self._anchor is not None and self._round % self.local.replan_every:
                    # A round that re-decides against the last full plan's cost to go:
                    # rebuild it exactly, from the state that plan started from.
                    horizon, anchor_e = self._anchor
                    ray.get(actor.restore.remote(self._shard_state(i, anchor_e), None))
                    ray.get(actor.plan.remote(horizon))
                self._incarnation[i], _ = ray.get(
                    actor.restore.remote(e_kwh, self.local.markup[self.rows[i]].copy())
                )
                for done_method, done_args in self._log:
                    ray.get(getattr(actor, done_method).remote(*done_args[i]))
                return getattr(actor, method).remote(*args)
            except ActorUnavailableError as busy:
                if time.monotonic() > deadline:
                    raise ShardFailedError(
                        f"shard {i} did not come back within {self.restart_timeout_s} s "
                        f"in round {self._round}; run aborted"
                    ) from busy
                time.sleep(0.1)
            except RayActorError as again:
                self._count_death(i, again)

    def _count_death(self, i: int, error: Exception | None) -> None:
        """Count a death of shard ``i``; fail the run once the restarts are exhausted."""
        self.restarts[i] += 1
        if self.restarts[i] > self.max_restarts:
            rows = self.rows[i]
            detail = f" (last error: {type(error).__name__}: {str(error)[:300]})" if error else ""
            raise ShardFailedError(
                f"shard {i} ({len(rows)} sites, rows {rows[0]}..{rows[-1]}) died in round "
                f"{self._round} and its restarts are exhausted "
                f"(max_restarts={self.max_restarts}); run aborted" + detail
            ) from error


def _segment_key(table: BidTable, asset_row: np.ndarray) -> np.ndarray:
    """Sort key of a shard's bid rows in the local backend's order: direction (down first),
    then asset block, then the asset's row in the whole population (``asset_row``); a stable
    sort keeps an asset's cost blocks in the order its shard wrote them."""
    try:
        asset = np.array([_ASSET_ORDER[a] for a in table.asset], dtype=np.int64)
    except KeyError as error:
        raise ValueError(
            f"bids: unknown asset block {error.args[0]!r}; known: {sorted(_ASSET_ORDER)}"
        ) from None
    block = np.where(table.sign > 0, 0, 16) + asset
    return (block << 40) + asset_row.astype(np.int64)


class ShardedFactory:
    """A :data:`sim.model.PopulationFactory` making :class:`ShardedPopulation` s.

    Args:
        shards: actors per population.
        max_restarts: restarts allowed per actor.
        cpus_per_shard: CPUs reserved per actor (may be fractional).
        population_class: the class to build (tests pass a subclass).
    """

    def __init__(
        self,
        shards: int,
        *,
        max_restarts: int = 2,
        cpus_per_shard: float = 1.0,
        population_class: type[ShardedPopulation] = ShardedPopulation,
    ) -> None:
        self.shards = shards
        self.max_restarts = max_restarts
        self.cpus_per_shard = cpus_per_shard
        self.population_class = population_class
        self.made: list[ShardedPopulation] = []

    def __call__(self, setup: Setup, market: bool) -> ShardedPopulation:
        """A sharded population of ``setup``'s sites."""
        population = self.population_class(
            setup,
            shards=self.shards,
            max_restarts=self.max_restarts,
            cpus_per_shard=self.cpus_per_shard,
        )
        self.made.append(population)
        return population

    def close(self) -> None:
        """Stop every actor made."""
        for population in self.made:
            population.close()


def run_sharded(
    scenario: Scenario,
    out: Path,
    *,
    shards: int,
    address: str | None = None,
    verbose: bool = False,
    progress: bool = True,
    report: bool = True,
    max_restarts: int = 2,
) -> dict[str, Any]:
    """:func:`sim.run.run_scenario` with every case's sites sharded over Ray actors."""
    from sim.run import run_scenario

    cases = 1 + ("no_control" in scenario.yardsticks)
    with ray_session(address, verbose=verbose) as resources:
        cpus = min(1.0, float(resources.get("CPU", 1.0)) / (shards * cases))
        factory = ShardedFactory(shards, max_restarts=max_restarts, cpus_per_shard=cpus)
        try:
            return run_scenario(
                scenario, out, progress=progress, report=report, population_factory=factory
            )
        finally:
            factory.close()


# -- experiments --------------------------------------------------------------------------


@ray.remote(num_cpus=1)
def _run_task(
    fn: Callable[[Scenario, Path], dict[str, Any]],
    base: Scenario,
    update: dict[str, Any],
    out: str,
) -> dict[str, Any]:
    from sim.scenario import Scenario

    return fn(Scenario.model_validate({**base.model_dump(), **update}), Path(out))


def run_many(
    fn: Callable[[Scenario, Path], dict[str, Any]],
    base: Scenario,
    jobs: Sequence[tuple[dict[str, Any], Path]],
    on_done: Callable[[int, dict[str, Any]], None],
    *,
    on_error: Callable[[int, BaseException], None] | None = None,
    max_in_flight: int | None = None,
) -> None:
    """Run ``fn(scenario, out)`` per job as a Ray task: ``base`` with the job's top-level
    updates, into the job's directory.

    ``fn`` must be a module-level function (tasks import it by name). At most
    ``max_in_flight`` runs are submitted at once (default: the cluster's CPUs plus one, so
    a CPU never waits for the driver); ``on_done(job_index, result)`` is called as each
    run finishes, in finishing order. A run that raises is passed to ``on_error(job_index,
    error)`` (the error's cause, with the task's traceback in its message); without
    ``on_error`` it raises here and the runs still in flight are cancelled.
    """
    if max_in_flight is None:
        max_in_flight = int(ray.cluster_resources().get("CPU", 1)) + 1
    base_ref = ray.put(base)
    pending: dict[ray.ObjectRef, int] = {}
    queue = list(enumerate(jobs))
    queue.reverse()
    try:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                index, (update, out) = queue.pop()
                pending[_run_task.remote(fn, base_ref, update, str(out))] = index
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as error:
                    if on_error is None:
                        raise
                    on_error(index, error)
                    continue
                on_done(index, result)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
