"""A gridbid site agent (the simulator's decision code) through the coordinator: it plans,
bids its true costs for the DSO's request, is awarded, dispatches, meters and is settled."""

from __future__ import annotations

from datetime import timedelta

from svc_helpers import request_body

from agents import PRESETS
from service import AgentClient
from service.site_agent import SiteClientAgent, typical_conditions


async def test_a_home_with_pv_and_battery_trades_through_the_coordinator(market) -> None:
    spec = PRESETS["home_pv_battery"]
    agent = SiteClientAgent("alice", 3, spec, typical_conditions(spec.annual_load_kwh))
    assert {a.asset_id for a in agent.assets()} == {"alice-battery", "alice-pv"}
    dso = market.parties["dso"].client
    body = request_body(
        direction="down", p_kw=4.0, dv_required_pu=0.004, sensitivity_pu_per_kw={"3": 0.001}
    )
    assert (await dso.post("/v1/flex-requests", json=body)).status_code == 201
    async with AgentClient(
        "http://test", market.parties["alice"].key, transport=market.transport
    ) as client:
        await client.register(agent.assets())
        await client.step(agent)
        bids = (await market.parties["alice"].client.get("/v1/bids")).json()
        assert bids, "the home offers flexibility for a down request at its bus"
        assert {b["bid"]["direction"] for b in bids} == {"down"}
        assert all(b["bid"]["price_eur_per_kwh"] >= 0 for b in bids)
        market.clock.advance(timedelta(minutes=8))
        await market.tick()
        await client.step(agent)
        awards = (await market.parties["alice"].client.get("/v1/awards")).json()
        assert awards
        market.clock.advance(timedelta(minutes=20))
        await client.step(agent)
        readings = (await market.parties["alice"].client.get("/v1/meter-readings")).json()
        assert {r["asset_id"] for r in readings} == {"alice-battery", "alice-pv"}
        market.clock.advance(timedelta(minutes=15))
        await market.tick()
        lines = (await market.parties["alice"].client.get("/v1/settlements")).json()
        assert lines
        assert sum(line["line"]["net_eur"] for line in lines) > 0
