"""A population of self-optimising, bidding sites: buildings, batteries, heating plants.

Every non-DSO agent is a *site* at a bus with an inflexible base load, optional rooftop PV
and up to one asset of each kind in :data:`~agents.assets.ASSET_KINDS` (a heat pump in a
1R1C building, an EV charger, a battery, a heating plant's tank). The population holds one
row per site and one row per asset; every decision is vectorised over rows, and no row ever
reads another: a site decides from its own parameters, state and forecast and from the
public market messages only. So a population of one (a real building's controller) decides
exactly as the same row does among thousands.

One round, from the site's side:

1. :meth:`FlexPopulation.plan`: forecast own base load and PV (:mod:`agents.forecast`), then
   plan the assets against the tariff, each kind against the site's net load including the
   kinds planned before it (sequential self-optimisation: exact for a site with one
   flexible asset, a heuristic for several; a site-wide joint DP would be exponential in
   the number of assets). The first slot of the plan is the site's announced baseline.
   With ``replan_every`` = N > 1 a site solves its whole horizon only every N slots (its
   planning cadence) and keeps the cost to go of that plan; in the rounds between, it
   re-decides the next two slots exactly from its real state and its latest forecast
   against that cost to go (:func:`agents.store.replan_first_slots`). N = 1 (the default)
   re-plans the whole horizon every round.
2. :meth:`FlexPopulation.bids`: for the directions and buses the public requests ask for,
   offer deviations from the baseline at a price set by the site's strategy from its true
   cost (:mod:`agents.bidding`).
3. :meth:`FlexPopulation.deliver`: dispatch baseline plus awards against the real base load
   and PV, advance every asset's state, return what the meters see.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from agents.assets import ASSET_KINDS, AssetGroup, Horizon
from agents.bidding import (
    STRATEGY_CODES,
    CostBlocks,
    hull_blocks,
    learning_update,
    strategy_price,
)
from agents.forecast import agent_seeds, noisy_forecast
from agents.presets import SiteSpec
from agents.store import CostToGo, StorePlan, plan_stores, replan_first_slots, site_cost_eur
from market import Direction, FlexRequest
from market.book import OrderBook

__all__ = ["Baseline", "BidTable", "Delivery", "FlexPopulation"]

_STREAM_LOAD = 0
_STREAM_PV = 1
_Q_ASSET = "pvq"
_PV_ASSET = "pv"


@dataclass(frozen=True)
class Baseline:
    """A population's plan for a horizon.

    Attributes:
        horizon: the exogenous inputs the plan was made with.
        base_kw: each site's forecast base load, shape (n, h).
        pv_kw: each site's forecast PV output, shape (n, h).
        site_p_kw: planned net consumption of each site (load convention), shape (n, h);
            ``site_p_kw[:, 0]`` is the baseline the site announces for the delivery slot.
            In a round that only re-decides the first slots (``replan_every`` > 1), these
            arrays cover those two slots: shape (n, 2).
        store_plans: the plan of each asset kind present.
        other_kw: per kind, the site net load each asset planned against, shape (m, h).
    """

    horizon: Horizon
    base_kw: np.ndarray
    pv_kw: np.ndarray
    site_p_kw: np.ndarray
    store_plans: dict[str, StorePlan]
    other_kw: dict[str, np.ndarray]


@dataclass(frozen=True)
class BidTable:
    """The bids of one round as columns, ready for :meth:`market.OrderBook.from_arrays`.

    ``site``, ``asset`` (a kind, ``pv`` or ``pvq``), ``asset_row`` (row within its
    :class:`~agents.assets.AssetGroup`, or the site row for PV) and ``sign`` (+1 down =
    more consumption, −1 up) say which asset delivers each row.
    """

    book: OrderBook
    site: np.ndarray
    asset: np.ndarray
    asset_row: np.ndarray
    sign: np.ndarray
    is_reactive: np.ndarray
    cost_eur_per_kwh: np.ndarray

    def __len__(self) -> int:
        return len(self.site)


@dataclass(frozen=True)
class Delivery:
    """What happened at each site in the delivery slot.

    Attributes:
        p_kw: metered net active consumption per site, shape (n,).
        q_kvar: metered reactive consumption per site from flexibility (awards only), (n,).
        bill_eur: each site's realised energy bill and wear in the slot, shape (n,); summed
            over a run and compared with a run without a market it gives the sites' true
            cost of flexibility (deviations move cost between slots, so a single slot's
            bill difference is not that cost).
        flex_cost_eur: each site's own estimate of the cost of what it was awarded (awarded
            quantity x its truthful cost per kWh, before any markup), shape (n,).
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    bill_eur: np.ndarray
    flex_cost_eur: np.ndarray


@dataclass
class FlexPopulation:
    """Sites of any kind, as rows. Build with :meth:`from_specs`.

    Attributes:
        agent_ids: unique id per site, shape (n,).
        bus: pandapower bus index per site, shape (n,).
        kind: agent type per site (``building``, ``storage``, ``heating_plant``), (n,).
        specs: the pydantic spec of each site (its private parameters).
        groups: asset kind -> the population's assets of that kind.
        seeds: each site's own random seed (forecast noise), shape (n,).
        markup: each site's current margin (strategies ``markup`` and ``learning``), (n,).
    """

    agent_ids: np.ndarray
    bus: np.ndarray
    kind: np.ndarray
    specs: list[SiteSpec]
    groups: dict[str, AssetGroup]
    seeds: np.ndarray
    markup: np.ndarray
    strategy_code: np.ndarray = field(repr=False)
    pv_kwp: np.ndarray = field(repr=False)
    pv_kva: np.ndarray = field(repr=False)
    q_cost_eur_per_kvarh: np.ndarray = field(repr=False)
    forecast_sigma: np.ndarray = field(repr=False)
    n_levels: int | None = None
    max_blocks: int = 3
    replan_every: int = 1
    bid_versions: dict[int, int] = field(default_factory=dict, repr=False)
    tables: dict[str, tuple[int, CostToGo]] = field(default_factory=dict, repr=False)
    asset_id_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_specs(
        cls,
        agent_ids: Sequence[str],
        bus: Sequence[int],
        specs: Sequence[SiteSpec],
        *,
        seed: int,
        n_levels: int | None = None,
        max_blocks: int = 3,
        replan_every: int = 1,
    ) -> "FlexPopulation":
        """Build a population; each site's seed comes from ``seed`` and its id only.

        ``replan_every``: the sites' planning cadence in slots (see the module docstring).
        """
        n = len(agent_ids)
        if int(replan_every) != replan_every or replan_every < 1:
            raise ValueError(f"replan_every: must be a whole number >= 1, got {replan_every!r}")
        if len(bus) != n or len(specs) != n:
            raise ValueError(
                f"agent_ids, bus, specs: lengths differ ({n}, {len(bus)}, {len(specs)})"
            )
        if len(set(agent_ids)) != n:
            dupes = sorted({a for a in agent_ids if list(agent_ids).count(a) > 1})[:5]
            raise ValueError(f"agent_ids: duplicate ids {dupes}")
        unknown = sorted({s.strategy for s in specs} - set(STRATEGY_CODES))
        if unknown:
            raise ValueError(f"strategy: unknown {unknown}; known: {sorted(STRATEGY_CODES)}")
        specs = list(specs)
        groups = {}
        for kind in ASSET_KINDS:
            owners = [i for i, s in enumerate(specs) if getattr(s, kind) is not None]
            if owners:
                groups[kind] = AssetGroup.from_specs(
                    kind, np.array(owners), [getattr(specs[i], kind) for i in owners]
                )
        pv = [s.pv for s in specs]
        return cls(
            agent_ids=np.array(agent_ids, dtype=object),
            bus=np.asarray(bus, dtype=np.int64),
            kind=np.array([s.kind for s in specs], dtype=object),
            specs=specs,
            groups=groups,
            seeds=agent_seeds(seed, list(agent_ids)),
            markup=np.array([s.markup for s in specs], dtype=float),
            strategy_code=np.array([STRATEGY_CODES[s.strategy] for s in specs]),
            pv_kwp=np.array([p.kwp if p else 0.0 for p in pv]),
            pv_kva=np.array([p.inverter_kva if p else 0.0 for p in pv]),
            q_cost_eur_per_kvarh=np.array([p.q_cost_eur_per_kvarh if p else 0.0 for p in pv]),
            forecast_sigma=np.array([s.forecast_sigma for s in specs], dtype=float),
            n_levels=n_levels,
            max_blocks=max_blocks,
            replan_every=int(replan_every),
        )

    def __len__(self) -> int:
        return len(self.agent_ids)

    def subset(self, rows: np.ndarray) -> "FlexPopulation":
        """The sites at ``rows`` (and their assets, with their current state) as a population."""
        rows = np.asarray(rows, dtype=np.intp)
        mask = np.zeros(len(self), dtype=bool)
        mask[rows] = True
        site_map = np.full(len(self), -1, dtype=np.intp)
        site_map[np.flatnonzero(mask)] = np.arange(mask.sum())
        keep = np.flatnonzero(mask)
        groups = {
            kind: group.subset(mask, site_map)
            for kind, group in self.groups.items()
            if mask[group.site].any()
        }
        tables = {
            kind: (anchor, table.subset(mask[self.groups[kind].site]))
            for kind, (anchor, table) in self.tables.items()
            if kind in groups
        }
        return FlexPopulation(
            agent_ids=self.agent_ids[keep],
            bus=self.bus[keep],
            kind=self.kind[keep],
            specs=[self.specs[i] for i in keep],
            groups=groups,
            seeds=self.seeds[keep],
            markup=self.markup[keep].copy(),
            strategy_code=self.strategy_code[keep],
            pv_kwp=self.pv_kwp[keep],
            pv_kva=self.pv_kva[keep],
            q_cost_eur_per_kvarh=self.q_cost_eur_per_kvarh[keep],
            forecast_sigma=self.forecast_sigma[keep],
            n_levels=self.n_levels,
            max_blocks=self.max_blocks,
            replan_every=self.replan_every,
            tables=tables,
        )

    # -- 1. self-optimisation -------------------------------------------------------------

    def plan(
        self, horizon: Horizon, base_kw_true: np.ndarray, pv_kw_per_kwp_true: np.ndarray
    ) -> Baseline:
        """Forecast, then plan every asset for the horizon (see the module docstring).

        Args:
            horizon: the slots, prices and temperature forecast.
            base_kw_true: each site's real base load per slot, shape (n, h); the site sees
                only its own noisy forecast of it.
            pv_kw_per_kwp_true: real PV output per kWp per slot, shape (n, h) or (h,).
        """
        n, h = len(self), horizon.length
        k = horizon.first_slot
        anchor = k - k % self.replan_every
        redecide = (
            self.replan_every > 1
            and k > anchor
            and all(self.tables.get(kind, (None,))[0] == anchor for kind in self.groups)
            and all(k - anchor < self.tables[kind][1].n_keep for kind in self.groups)
        )
        width = 2 if redecide else h
        truth = np.asarray(base_kw_true, dtype=float)[:, :width]
        pv_true = self.pv_kwp[:, None] * np.broadcast_to(pv_kw_per_kwp_true, (n, h))[:, :width]
        base = noisy_forecast(truth, self.forecast_sigma, self.seeds, k, _STREAM_LOAD)
        pv = noisy_forecast(pv_true, self.forecast_sigma, self.seeds, k, _STREAM_PV)
        pv = np.minimum(pv, self.pv_kva[:, None])
        net = base - pv
        plans: dict[str, StorePlan] = {}
        others: dict[str, np.ndarray] = {}
        for kind, group in self.groups.items():
            other = net[group.site]
            rows = group.store_rows(horizon)
            if redecide:
                plan = replan_first_slots(
                    rows,
                    group.e_kwh,
                    other,
                    horizon.import_eur_per_kwh[:2],
                    horizon.export_eur_per_kwh[:2],
                    dt_h=horizon.dt_h,
                    tables=self.tables[kind][1],
                    shift=k - anchor,
                )
            else:
                plan = plan_stores(
                    rows,
                    group.e_kwh,
                    other,
                    horizon.import_eur_per_kwh,
                    horizon.export_eur_per_kwh,
                    dt_h=horizon.dt_h,
                    n_levels=self.n_levels,
                    n_keep=min(self.replan_every, h - 1),
                )
                if self.replan_every > 1 and plan.tables is not None:
                    self.tables[kind] = (k, plan.tables)
            np.add.at(net, group.site, plan.p_kw)
            plans[kind] = plan
            others[kind] = other
        return Baseline(horizon, base, pv, net, plans, others)

    # -- 2. bidding -----------------------------------------------------------------------

    def bids(
        self,
        baseline: Baseline,
        requests: Sequence[FlexRequest],
        t_start: datetime,
        t_end: datetime,
        round_id: int,
    ) -> BidTable:
        """Offer flexibility for the delivery slot (the plan's first slot).

        A site bids in a direction only if a public request of that direction lists a
        positive sensitivity at the site's bus (active or reactive respectively). Bid ids
        depend on the round, the asset, the direction and the block only; bidding again in
        the same round (after new requests or a new plan) raises the bids' version, so the
        newer bid replaces the older one in the order book.
        """
        version = self.bid_versions.get(round_id, -1) + 1
        self.bid_versions = {round_id: version}
        wanted_p = {d: set() for d in Direction}
        wanted_q = {d: set() for d in Direction}
        for request in requests:
            wanted_p[request.direction].update(
                b for b, s in request.sensitivity_pu_per_kw.items() if s > 0
            )
            wanted_q[request.direction].update(
                b for b, s in request.sensitivity_pu_per_kvar.items() if s > 0
            )
        dt = baseline.horizon.dt_h
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("site", "asset", "asset_row", "sign", "qty", "cost", "react", "block")
        }

        def add(site, asset, asset_row, sign, blocks, reactive):
            qty, cost = blocks.quantity_kw, blocks.cost_eur_per_kwh
            rows, cols_b = np.nonzero(qty > 1e-6)
            cols["site"].append(site[rows])
            cols["asset"].append(np.full(len(rows), asset, dtype=object))
            cols["asset_row"].append(asset_row[rows])
            cols["sign"].append(np.full(len(rows), sign, dtype=np.int8))
            cols["qty"].append(qty[rows, cols_b])
            cols["cost"].append(cost[rows, cols_b])
            cols["react"].append(np.full(len(rows), reactive))
            cols["block"].append(cols_b)

        for direction, sign in ((Direction.DOWN, 1), (Direction.UP, -1)):
            buses = np.array(sorted(wanted_p[direction]), dtype=np.int64)
            site_ok = np.isin(self.bus, buses)
            if site_ok.any():
                for kind, plan in baseline.store_plans.items():
                    group = self.groups[kind]
                    alt = plan.alternatives
                    m = np.arange(len(group))
                    p_star = alt.p_kw[m, alt.chosen]
                    deviation = sign * (alt.p_kw - p_star[:, None])
                    ok = site_ok[group.site] & plan.feasible
                    # An infeasible row's chosen cost is inf (inf - inf): it offers nothing.
                    chosen_cost = np.where(ok, alt.cost_eur[m, alt.chosen], 0.0)
                    extra = alt.cost_eur - chosen_cost[:, None]
                    deviation = np.where(ok[:, None], deviation, 0.0)
                    blocks = hull_blocks(deviation, extra, dt, self.max_blocks)
                    add(group.site, kind, m, sign, blocks, False)
                if direction is Direction.DOWN:
                    add_pv = site_ok & (baseline.pv_kw[:, 0] > 1e-6)
                    blocks = self._curtailment_blocks(baseline, add_pv)
                    add(np.arange(len(self)), _PV_ASSET, np.arange(len(self)), sign, blocks, False)
            q_buses = np.array(sorted(wanted_q[direction]), dtype=np.int64)
            q_ok = np.isin(self.bus, q_buses) & (self.pv_kva > 0)
            if q_ok.any():
                q_max = np.sqrt(np.clip(self.pv_kva**2 - baseline.pv_kw[:, 0] ** 2, 0.0, None))
                q_blocks = np.where(q_ok, q_max, 0.0)[:, None]
                blocks = CostBlocks(q_blocks, self.q_cost_eur_per_kvarh[:, None] + 0.0 * q_blocks)
                add(np.arange(len(self)), _Q_ASSET, np.arange(len(self)), sign, blocks, True)

        site = np.concatenate(cols["site"]) if cols["site"] else np.zeros(0, np.intp)
        asset = np.concatenate(cols["asset"]) if cols["asset"] else np.zeros(0, object)
        asset_row = np.concatenate(cols["asset_row"]) if cols["asset_row"] else np.zeros(0, int)
        sign = np.concatenate(cols["sign"]) if cols["sign"] else np.zeros(0, np.int8)
        qty = np.concatenate(cols["qty"]) if cols["qty"] else np.zeros(0)
        cost = np.concatenate(cols["cost"]) if cols["cost"] else np.zeros(0)
        react = np.concatenate(cols["react"]) if cols["react"] else np.zeros(0, bool)
        block = np.concatenate(cols["block"]) if cols["block"] else np.zeros(0, int)
        price = strategy_price(self.strategy_code[site], cost[:, None], self.markup[site])[:, 0]
        ids = self.agent_ids[site]
        direction_col = np.where(sign > 0, "down", "up")
        # Ids repeat over few (asset, direction, block) combinations and (site, asset)
        # pairs: format each distinct one once.
        kinds, kind_code = np.unique(asset.astype(str), return_inverse=True)
        width = int(block.max(initial=0)) + 1
        combo = (kind_code * 2 + (sign > 0)) * width + block
        distinct, which = np.unique(combo, return_inverse=True)
        labels = np.array(
            [
                f"r{round_id}-{kinds[c // (2 * width)]}-"
                f"{'down' if (c // width) % 2 else 'up'}-{c % width}"
                for c in distinct.tolist()
            ],
            dtype=object,
        )
        bid_id = labels[which] if len(site) else np.zeros(0, dtype=object)
        asset_id = np.empty(len(site), dtype=object)
        for code, kind in enumerate(kinds.tolist()):
            rows = kind_code == code
            asset_id[rows] = self._asset_ids(kind)[site[rows]]
        book = OrderBook.from_arrays(
            bid_id,
            ids,
            self.bus[site],
            direction_col,
            np.where(react, 0.0, qty),
            np.where(react, 0.0, price),
            q_kvar=np.where(react, qty, 0.0),
            price_eur_per_kvarh=np.where(react, price, 0.0),
            asset_id=asset_id,
            version=np.full(len(site), version, dtype=np.int64),
            t_start=np.full(len(site), _epoch_s(t_start, "t_start"), dtype=np.int64),
            t_end=np.full(len(site), _epoch_s(t_end, "t_end"), dtype=np.int64),
        )
        return BidTable(book, site, asset, asset_row, sign, react, cost)

    def _asset_ids(self, kind: str) -> np.ndarray:
        """``"{agent id}-{kind}"`` for every site (formatted once per kind)."""
        cached = self.asset_id_cache.get(kind)
        if cached is None:
            cached = np.array([f"{a}-{kind}" for a in self.agent_ids.tolist()], dtype=object)
            self.asset_id_cache[kind] = cached
        return cached

    def _curtailment_blocks(self, baseline: Baseline, ok: np.ndarray):
        """PV curtailment in the delivery slot: the bill difference, first at the export
        price while the site still exports, then at the import price."""
        h0 = baseline.horizon
        pv = np.where(ok, baseline.pv_kw[:, 0], 0.0)
        net = baseline.site_p_kw[:, 0]
        export_part = np.clip(np.minimum(pv, -net), 0.0, None)
        points_x = np.stack([np.zeros_like(pv), export_part, pv], axis=1)
        imp = h0.import_eur_per_kwh[0]
        exp = h0.export_eur_per_kwh[0]
        points_c = site_cost_eur(net[:, None] + points_x, imp, exp, h0.dt_h) - site_cost_eur(
            net[:, None], imp, exp, h0.dt_h
        )
        return hull_blocks(points_x, points_c, h0.dt_h, max_blocks=2)

    # -- 3. delivery ----------------------------------------------------------------------

    def deliver(
        self,
        baseline: Baseline,
        bids: BidTable | None,
        awarded_kw: np.ndarray | None,
        base_kw_true: np.ndarray,
        pv_kw_per_kwp_true: np.ndarray | float,
    ) -> Delivery:
        """Dispatch plan plus awards in the delivery slot and advance every asset's state.

        Args:
            baseline: this round's plan.
            bids: this round's bids (``None`` if none were made).
            awarded_kw: awarded quantity per bid row (kW or kvar), shape (len(bids),).
            base_kw_true: real base load per site in the slot, shape (n,).
            pv_kw_per_kwp_true: real PV output per kWp in the slot, shape (n,) or scalar.
        """
        n = len(self)
        dt = baseline.horizon.dt_h
        h0 = baseline.horizon
        pv_true = np.minimum(self.pv_kwp * pv_kw_per_kwp_true, self.pv_kva)
        extra = {kind: np.zeros(len(g)) for kind, g in self.groups.items()}
        curtail = np.zeros(n)
        q = np.zeros(n)
        offered = np.zeros(n, dtype=bool)
        awarded_any = np.zeros(n, dtype=bool)
        if bids is not None and len(bids):
            award = np.asarray(awarded_kw, dtype=float)
            offered[bids.site] = True
            awarded_any[bids.site[award > 1e-9]] = True
            signed = bids.sign * award
            for kind in extra:
                rows = bids.asset == kind
                np.add.at(extra[kind], bids.asset_row[rows], signed[rows])
            rows = bids.asset == _PV_ASSET
            np.add.at(curtail, bids.asset_row[rows], award[rows])
            rows = bids.asset == _Q_ASSET
            np.add.at(q, bids.asset_row[rows], signed[rows])
        pv_out = np.clip(pv_true - curtail, 0.0, None)
        net = base_kw_true - pv_out
        wear = np.zeros(n)
        for kind, group in self.groups.items():
            rows = group.store_rows(_first_slot(h0))
            p = baseline.store_plans[kind].p_kw[:, 0] + extra[kind]
            p = np.clip(p, rows.p_min_kw[:, 0], rows.p_max_kw[:, 0])
            e_next = rows.next_state(group.e_kwh, p, 0, dt)
            group.e_kwh = np.where(rows.spill, np.minimum(e_next, rows.e_max_kwh[:, 1]), e_next)
            np.add.at(net, group.site, p)
            np.add.at(wear, group.site, rows.wear_eur_per_kwh * np.abs(p) * dt)
        bill = site_cost_eur(net, h0.import_eur_per_kwh[0], h0.export_eur_per_kwh[0], dt) + wear
        bill += self.q_cost_eur_per_kvarh * np.abs(q) * dt
        flex_cost = np.zeros(n)
        if bids is not None and len(bids):
            np.add.at(flex_cost, bids.site, award * bids.cost_eur_per_kwh * dt)
        learning = self.strategy_code == STRATEGY_CODES["learning"]
        if learning.any():
            updated = learning_update(self.markup, offered, awarded_any)
            self.markup = np.where(learning, updated, self.markup)
        return Delivery(p_kw=net, q_kvar=q, bill_eur=bill, flex_cost_eur=flex_cost)


def _epoch_s(value: datetime, name: str) -> int:
    """Whole seconds since the Unix epoch of an aware datetime (the order book's time)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name}={value!r} must be a timezone-aware datetime")
    return int(value.timestamp())


def _first_slot(horizon: Horizon) -> Horizon:
    """The horizon cut to its first slot (for the one-slot dynamics of delivery)."""
    return Horizon(
        first_slot=horizon.first_slot,
        dt_h=horizon.dt_h,
        local_hour=horizon.local_hour[:1],
        t_out_c=horizon.t_out_c[:1],
        import_eur_per_kwh=horizon.import_eur_per_kwh[:1],
        export_eur_per_kwh=horizon.export_eur_per_kwh[:1],
    )
