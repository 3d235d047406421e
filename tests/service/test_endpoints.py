"""Every endpoint's happy path, on SQLite and PostgreSQL, with a hand-driven clock.

Timeline (UTC, 2026-06-01): the clock starts at 10:02; the 10:15 slot's round closes at
10:10; delivery runs 10:15–10:30; meters report after 10:30; settlement runs at 10:45
(``settle_after_minutes`` = 15).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from svc_helpers import SLOT, bid_body, request_body, slot_start

from service import create_app


async def test_health_and_openapi(market) -> None:
    assert (await market.anon.get("/health")).json()["status"] == "ok"
    spec = (await market.anon.get("/openapi.json")).json()
    for path in (
        "/v1/bids",
        "/v1/flex-requests",
        "/v1/awards",
        "/v1/meter-readings",
        "/v1/settlements",
        "/v1/alerts",
        "/v1/aggregates",
        "/v1/assets",
    ):
        assert path in spec["paths"], path
    post_bid = spec["paths"]["/v1/bids"]["post"]  # served by BidIntake, documented by hand
    body_schema = post_bid["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/Bid"}
    assert "p_kw" in spec["components"]["schemas"]["Bid"]["properties"]
    assert {"201", "409", "422"} <= set(post_bid["responses"])


async def test_me_answers_each_role(market) -> None:
    for name, role in (
        ("op", "operator"),
        ("dso", "dso"),
        ("obs", "observer"),
        ("alice", "prosumer"),
    ):
        body = (await market.parties[name].client.get("/v1/me")).json()
        assert (body["id"], body["role"]) == (name, role)


async def test_operator_admits_lists_and_revokes(market) -> None:
    op = market.parties["op"].client
    r = await op.post("/v1/participants", json={"id": "carol", "role": "prosumer"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    carol = {"Authorization": f"Bearer {key}"}
    assert (await market.anon.get("/v1/me", headers=carol)).json()["id"] == "carol"
    ids = [p["id"] for p in (await op.get("/v1/participants")).json()]
    assert ids == sorted(["op", "dso", "obs", "alice", "bob", "carol"])
    assert all(
        "api_key" not in p and "key_hash" not in p
        for p in (await op.get("/v1/participants")).json()
    )
    assert (await op.post("/v1/participants/carol/revoke")).json()["revoked_at"] is not None
    r = await market.anon.get("/v1/me", headers=carol)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


async def test_assets_register_replay_list_get(market) -> None:
    alice = market.parties["alice"].client
    body = {"asset_id": "alice-pv", "bus": 3, "kind": "pv", "p_max_kw": 7.5}
    first = await alice.post("/v1/assets", json=body)
    again = await alice.post("/v1/assets", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert [a["asset_id"] for a in (await alice.get("/v1/assets")).json()] == [
        "alice-bat",
        "alice-pv",
    ]
    assert (await alice.get("/v1/assets/alice-pv")).json()["p_max_kw"] == 7.5
    all_assets = (await market.parties["dso"].client.get("/v1/assets")).json()
    assert {a["asset_id"] for a in all_assets} == {"alice-bat", "alice-pv", "bob-hp"}


async def test_rounds_open_ahead_of_the_clock(market) -> None:
    rounds = (await market.parties["obs"].client.get("/v1/rounds")).json()
    starts = sorted(r["slot_start"] for r in rounds)
    assert starts[0] == "2026-06-01T10:15:00Z" and len(starts) == 4
    assert all(r["status"] == "open" for r in rounds)
    one = (await market.parties["obs"].client.get(f"/v1/rounds/{rounds[0]['id']}")).json()
    assert one == rounds[0]


async def test_bid_replay_and_new_version(market) -> None:
    alice = market.parties["alice"].client
    first = await alice.post("/v1/bids", json=bid_body())
    replay = await alice.post("/v1/bids", json=bid_body())
    assert first.status_code == replay.status_code == 201
    assert first.json() == replay.json()
    assert "idempotent-replayed" not in first.headers
    assert replay.headers["idempotent-replayed"] == "true"
    newer = await alice.post("/v1/bids", json=bid_body(version=1, p_kw=6.0))
    assert newer.status_code == 201, newer.text
    latest = (await alice.get("/v1/bids/alice-b1")).json()
    assert (latest["version"], latest["bid"]["p_kw"]) == (1, 6.0)
    assert [b["version"] for b in (await alice.get("/v1/bids")).json()] == [0, 1]


async def test_full_round_clear_meter_settle(market) -> None:
    """Hand-worked pay-as-bid: the DSO wants 5 kW up at bus 3 for at most 0.5 EUR/kWh; alice
    offers 4 kW at 0.2 (replaced by version 1: 3 kW at 0.25), bob 6 kW at 0.3. Merit order
    accepts alice's 3 kW at 0.25 and 2 of bob's 6 kW at 0.3."""
    dso, alice, bob, op = (market.parties[n].client for n in ("dso", "alice", "bob", "op"))
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
    v1 = bid_body(version=1, p_kw=3.0, price_eur_per_kwh=0.25)
    assert (await alice.post("/v1/bids", json=v1)).status_code == 201
    r = await bob.post("/v1/bids", json=bid_body("bob", p_kw=6.0, price_eur_per_kwh=0.3))
    assert r.status_code == 201, r.text
    requests = (await alice.get("/v1/flex-requests")).json()
    assert [q["request_id"] for q in requests] == ["req-1"]
    t0 = slot_start(1).isoformat()
    for client, asset, p_kw in ((alice, "alice-bat", 2.0), (bob, "bob-hp", 4.0)):
        body = {"asset_id": asset, "t_start": t0, "p_kw": p_kw}
        assert (await client.post("/v1/baselines", json=body)).status_code == 201
    assert [b["p_kw"] for b in (await alice.get("/v1/baselines")).json()] == [2.0]

    market.clock.advance(timedelta(minutes=8))  # 10:10, gate closure of the 10:15 round
    report = await market.tick()
    assert report.cleared == [1]
    assert (await market.tick()).cleared == []
    assert (await market.counts())["clearings"] == 1
    assert (await op.get("/v1/rounds/1")).json()["status"] == "cleared"

    mine = (await alice.get("/v1/awards")).json()
    assert [(a["bid_id"], a["award"]["p_kw"], a["award"]["price_eur_per_kwh"]) for a in mine] == [
        ("alice-b1", 3.0, 0.25)
    ]
    bobs = (await bob.get("/v1/awards")).json()
    assert [(a["award"]["p_kw"], a["award"]["price_eur_per_kwh"]) for a in bobs] == [(2.0, 0.3)]
    assert len((await dso.get("/v1/awards")).json()) == 2

    market.clock.advance(timedelta(minutes=20))  # 10:30: delivery slot over
    reading = {"asset_id": "alice-bat", "t_start": t0, "p_kw": -1.0}
    assert (await alice.post("/v1/meter-readings", json=reading)).status_code == 201
    bob_reading = {"asset_id": "bob-hp", "t_start": t0, "p_kw": 4.0}
    assert (await bob.post("/v1/meter-readings", json=bob_reading)).status_code == 201
    assert len((await alice.get("/v1/meter-readings")).json()) == 1
    volt = {"bus": 3, "t_start": t0, "vm_pu": 1.07}
    assert (await dso.post("/v1/grid/voltages", json=volt)).status_code == 201
    assert [v["vm_pu"] for v in (await dso.get("/v1/grid/voltages")).json()] == [1.07]

    market.clock.advance(timedelta(minutes=15))  # 10:45
    assert (await market.tick()).settled == [1]
    lines = (await alice.get("/v1/settlements")).json()
    assert len(lines) == 1 and lines[0]["line"]["flag"] == "ok"
    assert lines[0]["line"]["delivered_p_kw"] == 3.0
    bob_lines = (await bob.get("/v1/settlements")).json()
    assert bob_lines[0]["line"]["flag"] == "under"
    assert len((await dso.get("/v1/settlements")).json()) == 2

    kinds = {(a["kind"], a["subject"]) for a in (await op.get("/v1/alerts")).json()}
    assert ("non_delivery", "bob/bob-b1") in kinds
    assert ("voltage", "bus-3") in kinds
    assert [a["kind"] for a in (await bob.get("/v1/alerts")).json()] == ["non_delivery"]
    assert (await alice.get("/v1/alerts")).json() == []

    agg = (await market.parties["obs"].client.get("/v1/aggregates")).json()
    first = next(a for a in agg if a["round_id"] == 1)
    assert (first["n_bids"], first["n_bidders"], first["n_requests"], first["n_awards"]) == (
        2,
        2,
        1,
        2,
    )
    assert first["awarded_kw"] == 5.0
    assert "alice" not in str(agg) and "bob" not in str(agg)


@pytest.mark.parametrize("where", ["in-process", "child process"])
async def test_clearing_keeps_the_latest_version_across_chunks(market, monkeypatch, where) -> None:
    """The round's bids are read in chunks (here one bid each), and cleared in this process
    or (a large round; here any) in a child: either way the clearing sees each bid's latest
    version only. Merit order as in the hand-worked case above: alice's version 2 (1 kW at
    0.1), then 4 of bob's 6 kW at 0.3, for the DSO's 5 kW."""
    monkeypatch.setattr("service.rounds._CHUNK", 1)
    if where == "child process":
        monkeypatch.setattr("service.rounds.CHILD_MIN_BIDS", 1)
    dso, alice, bob = (market.parties[n].client for n in ("dso", "alice", "bob"))
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    for body in (bid_body(), bid_body(version=2, p_kw=1.0, price_eur_per_kwh=0.1)):
        r = await alice.post("/v1/bids", json=body)
        assert r.status_code == 201, r.text
    r = await bob.post("/v1/bids", json=bid_body("bob", p_kw=6.0, price_eur_per_kwh=0.3))
    assert r.status_code == 201, r.text
    market.clock.advance(timedelta(minutes=8))  # 10:10, gate closure of the 10:15 round
    assert (await market.tick()).cleared == [1]
    mine = (await alice.get("/v1/awards")).json()
    assert [(a["award"]["p_kw"], a["award"]["price_eur_per_kwh"]) for a in mine] == [(1.0, 0.1)]
    bobs = (await bob.get("/v1/awards")).json()
    assert [(a["award"]["p_kw"], a["award"]["price_eur_per_kwh"]) for a in bobs] == [(4.0, 0.3)]


async def test_settlement_uses_the_baseline_declared_before_the_gate(market) -> None:
    """Alice declares 2 kW, then 1 kW (replacing it) before the gate; after the gate she
    tries 5 kW (refused, 409). She is awarded 3 kW up (pay-as-bid, as above) and meters
    -1 kW: against the frozen 1 kW that is 2 kW delivered, short by 1 kW, so ``under``.
    Bob never declares a baseline: his award counts as not delivered, with that reason."""
    dso, alice, bob = (market.parties[n].client for n in ("dso", "alice", "bob"))
    t0 = slot_start(1).isoformat()
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    assert (await alice.post("/v1/bids", json=bid_body(p_kw=3.0))).status_code == 201
    r = await bob.post("/v1/bids", json=bid_body("bob", p_kw=2.0, price_eur_per_kwh=0.3))
    assert r.status_code == 201
    for p_kw in (2.0, 1.0):
        body = {"asset_id": "alice-bat", "t_start": t0, "p_kw": p_kw}
        assert (await alice.post("/v1/baselines", json=body)).status_code == 201
    market.clock.advance(timedelta(minutes=8))  # 10:10: gate closed
    assert (await market.tick()).cleared == [1]
    late = {"asset_id": "alice-bat", "t_start": t0, "p_kw": 5.0}
    r = await alice.post("/v1/baselines", json=late)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "t_start"
    assert [b["p_kw"] for b in (await alice.get("/v1/baselines")).json()] == [1.0]
    market.clock.advance(timedelta(minutes=20))
    for client, asset, p_kw in ((alice, "alice-bat", -1.0), (bob, "bob-hp", 0.0)):
        body = {"asset_id": asset, "t_start": t0, "p_kw": p_kw}
        assert (await client.post("/v1/meter-readings", json=body)).status_code == 201
    market.clock.advance(timedelta(minutes=15))
    assert (await market.tick()).settled == [1]
    (line,) = [x["line"] for x in (await alice.get("/v1/settlements")).json()]
    assert (line["delivered_p_kw"], line["flag"]) == (2.0, "under")
    (bob_line,) = [x["line"] for x in (await bob.get("/v1/settlements")).json()]
    assert (bob_line["delivered_p_kw"], bob_line["flag"]) == (0.0, "under")
    (alert,) = (await bob.get("/v1/alerts")).json()
    assert alert["kind"] == "non_delivery" and "no baseline" in alert["detail"]


async def test_implausible_and_stale_meter_alerts(market) -> None:
    alice = market.parties["alice"].client
    market.clock.advance(timedelta(minutes=28))  # 10:30
    t0 = slot_start(1).isoformat()
    absurd = {"asset_id": "alice-bat", "t_start": t0, "p_kw": 50.0}  # rating 10 kW
    assert (await alice.post("/v1/meter-readings", json=absurd)).status_code == 201
    alerts = (await alice.get("/v1/alerts")).json()
    assert [a["kind"] for a in alerts] == ["implausible_reading"]
    # bob never reports: stale once 4 slots (10:15..11:00) have ended, i.e. at 11:15.
    market.clock.advance(timedelta(minutes=44))  # 11:14
    await market.tick()
    assert (await market.parties["bob"].client.get("/v1/alerts")).json() == []
    market.clock.advance(timedelta(minutes=1))  # 11:15
    await market.tick()
    stale = (await market.parties["bob"].client.get("/v1/alerts")).json()
    assert [(a["kind"], a["subject"]) for a in stale] == [("stale_meter", "bob-hp")]
    market.clock.advance(SLOT)
    await market.tick()
    assert len((await market.parties["bob"].client.get("/v1/alerts")).json()) == 1


async def test_operator_tick_endpoint(market) -> None:
    market.clock.advance(timedelta(minutes=8))
    body = (await market.parties["op"].client.post("/v1/scheduler/tick")).json()
    assert body["cleared"] == [1]


def test_create_app_refuses_unknown_rule_and_odd_slot(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite'}"
    with pytest.raises(ValueError, match="no_such_rule"):
        create_app(url, rule="no_such_rule")
    with pytest.raises(ValueError, match="slot"):
        create_app(url, slot=timedelta(seconds=90))
