"""``AgentClient`` against the app in-process: a full round, and retries that stay idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
import pytest
from svc_helpers import request_body

from market import Award, Bid, Direction, FlexRequest
from service import AgentClient, AssetSpec, ServiceError


class ToyBattery:
    """Offers 3 kW in the direction of every request at its bus, at 0.15 EUR/kWh; delivers
    what it was awarded."""

    def __init__(self, participant_id: str, asset_id: str, bus: int) -> None:
        self.participant_id, self.asset_id, self.bus = participant_id, asset_id, bus
        self.awarded: dict[datetime, float] = {}

    def assets(self) -> Sequence[AssetSpec]:
        return [AssetSpec(self.asset_id, self.bus, 10.0, "battery")]

    def bids_for(self, requests: Sequence[FlexRequest], t_start: datetime) -> list[Bid]:
        return [
            Bid(
                bid_id=f"{self.asset_id}-{int(t_start.timestamp())}-{r.request_id}",
                seller_id=self.participant_id,
                asset_id=self.asset_id,
                bus=self.bus,
                direction=r.direction,
                p_kw=3.0,
                price_eur_per_kwh=0.15,
                t_start=r.t_start,
                t_end=r.t_end,
            )
            for r in requests
        ]

    def on_awards(self, awards: Sequence[Award]) -> None:
        for a in awards:
            sign = 1.0 if a.direction == Direction.UP else -1.0
            self.awarded[a.t_start] = self.awarded.get(a.t_start, 0.0) + sign * a.p_kw

    def baselines(self, t_start: datetime) -> dict[str, float]:
        return {self.asset_id: 1.0}

    def meter(self, t_start: datetime) -> dict[str, float]:
        return {self.asset_id: 1.0 - self.awarded.get(t_start, 0.0)}


async def test_agent_client_runs_a_round(market) -> None:
    dso = market.parties["dso"].client
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    agent = ToyBattery("alice", "alice-bat", 3)
    async with AgentClient(
        "http://test", market.parties["alice"].key, transport=market.transport
    ) as client:
        await client.register(agent.assets())
        await client.step(agent)
        bids = (await market.parties["alice"].client.get("/v1/bids")).json()
        assert [b["bid"]["p_kw"] for b in bids] == [3.0]
        declared = (await market.parties["alice"].client.get("/v1/baselines")).json()
        assert ("alice-bat", 1.0, 1) in [
            (b["asset_id"], b["p_kw"], b["round_id"]) for b in declared
        ]
        market.clock.advance(timedelta(minutes=8))
        await market.tick()
        await client.step(agent)
        assert list(agent.awarded.values()) == [3.0]
        market.clock.advance(timedelta(minutes=20))
        await client.step(agent)
        readings = (await market.parties["alice"].client.get("/v1/meter-readings")).json()
        assert [r["p_kw"] for r in readings] == [-2.0]
        market.clock.advance(timedelta(minutes=15))
        assert (await market.tick()).settled == [1]
        lines = (await market.parties["alice"].client.get("/v1/settlements")).json()
        assert [line["line"]["flag"] for line in lines] == ["ok"]


class LossyTransport(httpx.AsyncBaseTransport):
    """Fails the first ``drop`` requests: before (connect error) or after the server handled
    them (response lost), to show that retrying a bid never stores it twice."""

    def __init__(self, inner: httpx.AsyncBaseTransport, drop: int, after: bool) -> None:
        self.inner, self.drop, self.after = inner, drop, after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.drop > 0 and request.method == "POST":
            self.drop -= 1
            if self.after:
                await self.inner.handle_async_request(request)
                raise httpx.ReadError("connection reset after the request was handled")
            raise httpx.ConnectError("connection refused")
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("after", [False, True], ids=["lost-request", "lost-response"])
async def test_retries_store_a_bid_once(market, after) -> None:
    transport = LossyTransport(market.transport, drop=2, after=after)
    bid = Bid.model_validate(
        {
            "bid_id": "r1",
            "seller_id": "alice",
            "asset_id": "alice-bat",
            "bus": 3,
            "direction": "up",
            "p_kw": 2.0,
            "price_eur_per_kwh": 0.1,
            "t_start": "2026-06-01T10:15:00Z",
            "t_end": "2026-06-01T10:30:00Z",
        }
    )
    async with AgentClient(
        "http://test", market.parties["alice"].key, transport=transport, backoff_s=0.0
    ) as client:
        ack = await client.submit(bid)
    assert ack["bid_id"] == "r1"
    assert (await market.counts())["bids"] == 1


async def test_client_raises_problem_on_4xx_without_retrying(market) -> None:
    async with AgentClient(
        "http://test", market.parties["alice"].key, transport=market.transport, backoff_s=0.0
    ) as client:
        with pytest.raises(ServiceError) as err:
            await client.submit(
                Bid.model_validate(
                    {
                        "bid_id": "r2",
                        "seller_id": "alice",
                        "asset_id": "bob-hp",
                        "bus": 5,
                        "direction": "up",
                        "p_kw": 2.0,
                        "t_start": "2026-06-01T10:15:00Z",
                        "t_end": "2026-06-01T10:30:00Z",
                    }
                )
            )
    assert err.value.status == 404 and err.value.problem["errors"][0]["field"] == "asset_id"
