"""Sites as agents: limits, energy balance, truthful prices, autonomy, population of one."""

from datetime import datetime, timedelta

import numpy as np
import pytest
from agent_fixtures import MIX, SLOTS, base_load, day_horizon, make_population, pv_per_kwp
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from agents import PRESETS, FlexPopulation, Horizon
from agents.forecast import noisy_forecast, standard_normal, standard_normal_reference
from agents.store import plan_stores
from market import Direction, FlexRequest

TOL = 1e-6


def slot_times(horizon: Horizon) -> tuple[datetime, datetime]:
    """UTC start and end of the horizon's first slot (days in tests start 2026-01-13)."""
    start = datetime.fromisoformat("2026-01-12T23:00:00+00:00")
    t0 = start + timedelta(hours=horizon.first_slot * horizon.dt_h)
    return t0, t0 + timedelta(hours=horizon.dt_h)


def requests_everywhere(pop: FlexPopulation, horizon: Horizon) -> list[FlexRequest]:
    """An up and a down request that list every site's bus (active and reactive)."""
    t0, t1 = slot_times(horizon)
    sens = {int(b): 1e-4 for b in pop.bus}
    return [
        FlexRequest(
            request_id=f"{d.value}",
            buyer_id="dso",
            bus=int(pop.bus[0]),
            t_start=t0,
            t_end=t1,
            direction=d,
            p_kw=100.0,
            max_price_eur_per_kwh=10.0,
            dv_required_pu=0.01,
            sensitivity_pu_per_kw=sens,
            sensitivity_pu_per_kvar=sens,
        )
        for d in Direction
    ]


def shifted(horizon: Horizon, day_horizon_next: Horizon, k: int) -> Horizon:
    """The rolling horizon starting ``k`` slots into a two-day window."""
    cat = lambda a, b: np.concatenate([a, b])[k : k + SLOTS]  # noqa: E731
    return Horizon(
        first_slot=horizon.first_slot + k,
        dt_h=horizon.dt_h,
        local_hour=cat(horizon.local_hour, day_horizon_next.local_hour),
        t_out_c=cat(horizon.t_out_c, day_horizon_next.t_out_c),
        import_eur_per_kwh=cat(horizon.import_eur_per_kwh, day_horizon_next.import_eur_per_kwh),
        export_eur_per_kwh=cat(horizon.export_eur_per_kwh, day_horizon_next.export_eur_per_kwh),
    )


def check_limits(pop: FlexPopulation, horizon: Horizon, before: dict, baseline, delivered_p):
    """After one delivery: every store within its bounds at the slot's end, every power
    within limits (the power is recovered from the state change)."""
    for kind, group in pop.groups.items():
        rows = group.store_rows(horizon)
        e = group.e_kwh
        assert (e >= rows.e_min_kwh[:, 1] - TOL).all(), (kind, e, rows.e_min_kwh[:, 1])
        assert (e <= rows.e_max_kwh[:, 1] + TOL).all(), (kind, e, rows.e_max_kwh[:, 1])
        if kind != "heat_pump":  # no spill: the state change gives the power exactly
            p = rows.power_for(before[kind], e, 0, horizon.dt_h)
            assert (p >= rows.p_min_kw[:, 0] - TOL).all() and (p <= rows.p_max_kw[:, 0] + TOL).all()


@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(
    seed=st.integers(0, 2**31 - 1),
    start=st.integers(0, 88),
    summer=st.booleans(),
)
def test_limits_hold_after_any_sequence_of_plans_and_awards(seed, start, summer) -> None:
    """Random award fractions on every offered block, random forecast error in the real load
    and PV, eight rounds: SoC, comfort band, EV energy at departure, tank and power limits
    hold after every delivery."""
    rng = np.random.default_rng(seed)
    pop = make_population(MIX, seed=seed % 1000)
    day = "2026-07-14" if summer else "2026-01-13"
    t_mean = 20.6 if summer else 1.1
    d1 = day_horizon(day, t_mean_c=t_mean)
    d2 = day_horizon(day.replace("-14", "-15").replace("-13", "-14"), SLOTS, t_mean_c=t_mean)
    base2 = np.tile(base_load(pop), 3)
    pv2 = np.tile(pv_per_kwp(), 3)
    for k in range(start, start + 8):
        horizon = shifted(d1, d2, k)
        baseline = pop.plan(horizon, base2[:, k : k + SLOTS], pv2[k : k + SLOTS])
        for plan in baseline.store_plans.values():
            assert plan.feasible.all()
        bids = pop.bids(baseline, requests_everywhere(pop, horizon), *slot_times(horizon), k)
        awarded = rng.uniform(0, 1, len(bids)) * rng.integers(0, 2, len(bids))
        before = {kind: g.e_kwh.copy() for kind, g in pop.groups.items()}
        real_base = base2[:, k] * rng.uniform(0.7, 1.3, len(pop))
        real_pv = pv2[k] * rng.uniform(0.5, 1.2, len(pop))
        delivery = pop.deliver(
            baseline,
            bids,
            awarded * bids.book.p_kw + awarded * bids.book.q_kvar,
            real_base,
            real_pv,
        )
        check_limits(pop, horizon, before, baseline, delivery.p_kw)


def test_ev_reaches_its_target_before_leaving(winter: Horizon) -> None:
    """A day of rounds without awards: the car has its target energy at departure (07:00)."""
    pop = make_population(["home_ev"])
    ev = pop.groups["ev"]
    target = ev.params["target_soc"][0] * ev.params["capacity_kwh"][0]
    nxt = day_horizon("2026-01-14", SLOTS)
    base = np.tile(base_load(pop), 2)
    departure_slot = 7 * 4
    for k in range(departure_slot):
        horizon = shifted(winter, nxt, k)
        baseline = pop.plan(horizon, base[:, k : k + SLOTS], 0.0 * base[:, k : k + SLOTS])
        pop.deliver(baseline, None, None, base[:, k], 0.0)
    assert ev.e_kwh[0] >= target - TOL


def test_energy_balance_of_every_site_over_a_day(winter: Horizon) -> None:
    """Without awards, over a day: metered = base − PV + Σ asset power per slot, and each
    battery's, EV's and tank's energy change equals its charged minus discharged energy
    minus its drain (the heat pump may also spill heat: its balance is an inequality)."""
    pop = make_population(MIX)
    nxt = day_horizon("2026-01-14", SLOTS)
    base = np.tile(base_load(pop), 2)
    pv = np.tile(pv_per_kwp(), 2)
    start = {kind: g.e_kwh.copy() for kind, g in pop.groups.items()}
    stored = {kind: np.zeros(len(g)) for kind, g in pop.groups.items()}
    for k in range(SLOTS):
        horizon = shifted(winter, nxt, k)
        baseline = pop.plan(horizon, base[:, k : k + SLOTS], pv[k : k + SLOTS])
        e_before = {kind: g.e_kwh.copy() for kind, g in pop.groups.items()}
        delivery = pop.deliver(baseline, None, None, base[:, k], pv[k])
        site_sum = base[:, k] - np.minimum(pop.pv_kwp * pv[k], pop.pv_kva)
        for kind, group in pop.groups.items():
            p = baseline.store_plans[kind].p_kw[:, 0]
            np.add.at(site_sum, group.site, p)
            rows = group.store_rows(horizon)
            gain = np.where(p >= 0, p * rows.eta_in[:, 0], p / rows.eta_out) * horizon.dt_h
            stored[kind] += group.e_kwh - (rows.retention * e_before[kind] - rows.drain_kwh[:, 0])
            expected = rows.retention * e_before[kind] + gain - rows.drain_kwh[:, 0]
            if kind == "heat_pump":
                assert (group.e_kwh <= expected + TOL).all()
            else:
                np.testing.assert_allclose(group.e_kwh, expected, atol=TOL)
        np.testing.assert_allclose(delivery.p_kw, site_sum, atol=TOL)
    for kind, group in pop.groups.items():
        assert np.isfinite(group.e_kwh - start[kind]).all()


@pytest.mark.parametrize("names", [["community_battery"], ["home_pv_battery"], ["home_heat_pump"]])
@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_truthful_price_is_the_cost_of_the_forced_deviation(names, direction) -> None:
    """Re-plan the day with the first block's deviation forced in slot 0 and compare the
    total cost with the plan's: the difference equals the bid's price x its quantity x the
    slot length (a block ends on a hull vertex of the agent's cost curve). A cold day
    (mean −5 °C), so the heat pump runs and can offer both ways."""
    winter = day_horizon("2026-01-13", t_mean_c=-5.0)
    pop = make_population(names)
    base = base_load(pop)
    baseline = pop.plan(winter, base, pv_per_kwp())
    bids = pop.bids(baseline, requests_everywhere(pop, winter), *slot_times(winter), 0)
    kind = next(iter(pop.groups))
    group = pop.groups[kind]
    rows_of = np.flatnonzero(
        (bids.asset == kind) & (bids.sign == (1 if direction is Direction.DOWN else -1))
    )
    assert len(rows_of) > 0, f"{names[0]} offers no {direction.value} flexibility"
    first = rows_of[0]
    qty = bids.book.p_kw[first]
    plan = baseline.store_plans[kind]
    rows = group.store_rows(winter)
    p_forced = plan.p_kw[0, 0] + bids.sign[first] * qty
    replanned = plan_stores(
        rows,
        group.e_kwh,
        baseline.other_kw[kind],
        winter.import_eur_per_kwh,
        winter.export_eur_per_kwh,
        dt_h=winter.dt_h,
        n_levels=plan.n_levels,
        p0_kw=np.array([p_forced]),
    )
    replanned_cost = replanned.cost_eur[0]
    extra_cost = replanned_cost - plan.cost_eur[0]
    assert extra_cost == pytest.approx(bids.cost_eur_per_kwh[first] * qty * winter.dt_h, abs=1e-9)
    # truthful: the asked price is the cost
    assert bids.book.price_eur_per_kwh[first] == pytest.approx(bids.cost_eur_per_kwh[first])


def test_autonomy_one_agents_private_data_never_moves_another(winter: Horizon) -> None:
    """Change site 2's battery size and state and its heat pump's comfort band: every other
    site's plan and bids are unchanged to the bit."""
    from agents import PRESETS, BatterySpec, HeatPumpSpec

    names = MIX
    pop_a = make_population(names)
    specs = [PRESETS[n] for n in names]
    specs[2] = specs[2].model_copy(
        update={
            "battery": BatterySpec(capacity_kwh=3.0, p_max_kw=1.0, soc_init=0.9),
            "heat_pump": HeatPumpSpec(t_min_c=18.0, t_max_c=25.0, t_init_c=24.0),
        }
    )
    pop_b = FlexPopulation.from_specs(list(pop_a.agent_ids), list(pop_a.bus), specs, seed=7)
    base = base_load(pop_a)
    plan_a = pop_a.plan(winter, base, pv_per_kwp())
    plan_b = pop_b.plan(winter, base, pv_per_kwp())
    others = np.arange(len(pop_a)) != 2
    np.testing.assert_array_equal(plan_a.site_p_kw[others], plan_b.site_p_kw[others])
    assert not np.array_equal(plan_a.site_p_kw[2], plan_b.site_p_kw[2])
    reqs = requests_everywhere(pop_a, winter)
    bids_a = pop_a.bids(plan_a, reqs, *slot_times(winter), 0)
    bids_b = pop_b.bids(plan_b, reqs, *slot_times(winter), 0)
    keep_a, keep_b = bids_a.site != 2, bids_b.site != 2
    np.testing.assert_array_equal(bids_a.book.p_kw[keep_a], bids_b.book.p_kw[keep_b])
    np.testing.assert_array_equal(
        bids_a.book.price_eur_per_kwh[keep_a], bids_b.book.price_eur_per_kwh[keep_b]
    )


def test_a_population_of_one_decides_as_its_row_among_thousands(winter: Horizon) -> None:
    """2,000 sites of every preset; each of a few rows, taken alone, plans and bids the same."""
    names = [MIX[i % len(MIX)] for i in range(2000)]
    big = make_population(names)
    base = base_load(big)
    plan_big = big.plan(winter, base, pv_per_kwp())
    reqs = requests_everywhere(big, winter)
    bids_big = big.bids(plan_big, reqs, *slot_times(winter), 0)
    for row in (0, 2, 6, 8, 9, 1237):
        one = big.subset(np.array([row]))
        plan_one = one.plan(winter, base[row : row + 1], pv_per_kwp())
        np.testing.assert_array_equal(plan_one.site_p_kw[0], plan_big.site_p_kw[row])
        bids_one = one.bids(plan_one, reqs, *slot_times(winter), 0)
        mine = bids_big.site == row
        np.testing.assert_array_equal(bids_one.book.p_kw, bids_big.book.p_kw[mine])
        np.testing.assert_array_equal(
            bids_one.book.price_eur_per_kwh, bids_big.book.price_eur_per_kwh[mine]
        )


def test_an_undersized_heat_pump_heats_flat_out_and_offers_nothing() -> None:
    """At a mean of −25 °C the home's heat pump (4.5 kW, COP floor 1.8 → 8.1 kW of heat)
    cannot hold 20 °C against 0.24 kW/K: the plan says infeasible, the pump runs at full
    power (the action that ends closest to the comfort band), and no bid is made."""
    cold = day_horizon("2026-01-13", t_mean_c=-25.0)
    pop = make_population(["home_heat_pump"])
    pop.groups["heat_pump"].e_kwh[:] = 0.0  # at the bottom of the band
    baseline = pop.plan(cold, base_load(pop), pv_per_kwp())
    plan = baseline.store_plans["heat_pump"]
    assert not plan.feasible[0]
    assert plan.p_kw[0, 0] == pytest.approx(4.5)
    bids = pop.bids(baseline, requests_everywhere(pop, cold), *slot_times(cold), 0)
    assert not (bids.asset == "heat_pump").any()


def test_a_rebid_in_the_same_round_replaces_the_older_bid(winter: Horizon) -> None:
    """Bidding twice in one round gives the same bid ids with version 1; an order book of
    both rounds of bids keeps only the newer version of each (market's replacement rule)."""
    from market import OrderBook

    pop = make_population(["home_pv_battery", "community_battery"])
    baseline = pop.plan(winter, base_load(pop), pv_per_kwp())
    reqs = requests_everywhere(pop, winter)
    first = pop.bids(baseline, reqs, *slot_times(winter), 5).book
    second = pop.bids(baseline, reqs, *slot_times(winter), 5).book
    assert len(first) > 0
    assert list(first.bid_id) == list(second.bid_id)
    assert set(first.version) == {0} and set(second.version) == {1}
    column = lambda name: np.concatenate([getattr(first, name), getattr(second, name)])  # noqa: E731
    merged = OrderBook.from_arrays(
        column("bid_id"),
        column("seller_id"),
        column("bus"),
        column("direction"),
        column("p_kw"),
        column("price_eur_per_kwh"),
        q_kvar=column("q_kvar"),
        price_eur_per_kvarh=column("price_eur_per_kvarh"),
        asset_id=column("asset_id"),
        version=column("version"),
    )
    assert len(merged) == len(second) and set(merged.version) == {1}
    assert pop.bids(baseline, reqs, *slot_times(winter), 6).book.version.max() == 0


def test_a_site_replanning_every_four_slots_still_meets_its_ev_target(winter: Horizon) -> None:
    """With a planning cadence of 4 slots (re-deciding only the next two slots in between),
    a day of rounds without awards still charges the car for its 07:00 departure, and the
    rounds between full plans announce two-slot baselines."""
    pop = FlexPopulation.from_specs(["ev-0"], [1], [PRESETS["home_ev"]], seed=7, replan_every=4)
    ev = pop.groups["ev"]
    target = ev.params["target_soc"][0] * ev.params["capacity_kwh"][0]
    nxt = day_horizon("2026-01-14", SLOTS)
    base = np.tile(base_load(pop), 2)
    widths = []
    for k in range(7 * 4):
        horizon = shifted(winter, nxt, k)
        baseline = pop.plan(horizon, base[:, k : k + SLOTS], 0.0 * base[:, k : k + SLOTS])
        widths.append(baseline.site_p_kw.shape[1])
        pop.deliver(baseline, None, None, base[:, k], 0.0)
    assert ev.e_kwh[0] >= target - TOL
    assert widths[:5] == [SLOTS, 2, 2, 2, SLOTS]


def test_a_sub_population_redecides_exactly_as_its_rows_in_the_whole(winter: Horizon) -> None:
    """Rows never read each other, also through the kept cost to go: after a full plan, a
    subset of the sites (as a shard would hold them) re-decides the next slot exactly as
    the same rows of the whole population do."""
    pop = make_population(MIX)
    pop.replan_every = 4
    nxt = day_horizon("2026-01-14", SLOTS)
    base = np.tile(base_load(pop), 2)
    pv = np.tile(pv_per_kwp(), 2)
    baseline = pop.plan(winter, base[:, :SLOTS], pv[:SLOTS])
    pop.deliver(baseline, None, None, base[:, 0], pv[0])
    keep = np.array([1, 2, 5, 6, 8, 9])
    part = pop.subset(keep)
    horizon = shifted(winter, nxt, 1)
    whole = pop.plan(horizon, base[:, 1 : 1 + SLOTS], pv[1 : 1 + SLOTS])
    mine = part.plan(horizon, base[keep, 1 : 1 + SLOTS], pv[1 : 1 + SLOTS])
    assert whole.site_p_kw.shape[1] == 2 and mine.site_p_kw.shape[1] == 2
    np.testing.assert_array_equal(mine.site_p_kw, whole.site_p_kw[keep])
    for kind, plan in mine.store_plans.items():
        rows = np.isin(pop.groups[kind].site, keep)
        width = plan.alternatives.cost_eur.shape[1]  # the whole pads to its widest grid
        theirs = whole.store_plans[kind].alternatives.cost_eur[rows]
        np.testing.assert_array_equal(plan.alternatives.cost_eur, theirs[:, :width])
        assert np.isinf(theirs[:, width:]).all()


def test_a_planning_cadence_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="replan_every"):
        FlexPopulation.from_specs(["h"], [1], [PRESETS["home"]], seed=1, replan_every=0)


def test_compiled_forecast_noise_is_the_reference_hash_bit_for_bit() -> None:
    seeds = np.array([0, 1, 2**63 + 5, 2**64 - 1, 123456789], dtype=np.uint64)
    targets = np.arange(37, 37 + 96)
    for issued, stream in ((37, 0), (40, 1), (0, 3)):
        np.testing.assert_array_equal(
            standard_normal(seeds, targets, issued, stream),
            standard_normal_reference(seeds, targets, issued, stream),
        )


def test_forecast_noise_of_a_row_does_not_depend_on_the_rows_skipped() -> None:
    """Rows without PV (truth 0) or without error are not drawn; the others get exactly the
    noise they would get in a population of one."""
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.5, 2.0, (6, 10))
    truth[[1, 4]] = 0.0
    sigma = np.array([0.1, 0.1, 0.0, 0.2, 0.1, 0.1])
    seeds = np.arange(6, dtype=np.uint64) * 977
    both = noisy_forecast(truth, sigma, seeds, 12, 1)
    for row in range(6):
        one = slice(row, row + 1)
        alone = noisy_forecast(truth[one], sigma[one], seeds[one], 12, 1)
        np.testing.assert_array_equal(both[row], alone[0])
    np.testing.assert_array_equal(both[[1, 2, 4]], truth[[1, 2, 4]])
    eps = standard_normal_reference(seeds[[0]], np.arange(12, 22), 12, 1)
    np.testing.assert_array_equal(both[0], np.clip(truth[0] * (1 + 0.1 * eps[0]), 0, None))
