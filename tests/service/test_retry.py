"""A clearing whose rule fails: the round is marked failed with the reason, the operator
sees it and retries it, and the retry clears it exactly once.

The failure is real, not simulated: the config passes ``pay_as_bid`` a parameter it does not
know (``bogus``), which the rule refuses (its parameters forbid unknown keys).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from svc_helpers import bid_body, make_config, request_body


@pytest.fixture
def service_config():
    return make_config(rule_params={"bogus": 1})


async def _failed_round(market) -> None:
    dso, alice = market.parties["dso"].client, market.parties["alice"].client
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
    market.clock.advance(timedelta(minutes=8))  # 10:10: gate closed
    assert (await market.tick()).cleared == []


async def test_failed_clearing_is_visible_and_not_retried_by_the_scheduler(market) -> None:
    await _failed_round(market)
    op = market.parties["op"].client
    rnd = (await op.get("/v1/rounds/1")).json()
    assert rnd["status"] == "failed" and "bogus" in rnd["failure"], rnd
    alerts = (await op.get("/v1/alerts?kind=clearing_failed")).json()
    assert [a["subject"] for a in alerts] == ["round-1"] and "bogus" in alerts[0]["detail"]
    await market.tick()
    assert (await market.counts())["clearings"] == 0
    assert (await op.get("/v1/rounds/1")).json()["status"] == "failed"


async def test_operator_retries_a_failed_round_once(market) -> None:
    await _failed_round(market)
    op = market.parties["op"].client
    again = await op.post("/v1/rounds/1/retry")  # same rule, same bad parameter
    assert again.status_code == 200 and again.json()["status"] == "failed"
    assert (await market.counts())["clearings"] == 0
    assert len((await op.get("/v1/alerts?kind=clearing_failed")).json()) == 1

    fixed = {"rule": "pay_as_bid", "rule_params": {}}
    first, second = await asyncio.gather(
        op.post("/v1/rounds/1/retry", json=fixed), op.post("/v1/rounds/1/retry", json=fixed)
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.text, second.text)
    ok = first if first.status_code == 200 else second
    assert ok.json()["status"] == "cleared" and ok.json()["failure"] is None
    counts = await market.counts()
    assert counts["clearings"] == 1 and counts["awards"] == 1
    awards = (await market.parties["alice"].client.get("/v1/awards")).json()
    assert [(a["bid_id"], a["award"]["p_kw"]) for a in awards] == [("alice-b1", 4.0)]
    late = await op.post("/v1/rounds/1/retry", json=fixed)
    assert late.status_code == 409 and late.json()["errors"][0]["field"] == "round_id"
    assert (await market.counts())["clearings"] == 1


async def test_retry_refusals(market) -> None:
    op, alice = market.parties["op"].client, market.parties["alice"].client
    assert (await op.post("/v1/rounds/1/retry")).status_code == 409  # open, not failed
    assert (await op.post("/v1/rounds/999/retry")).status_code == 404
    r = await op.post("/v1/rounds/1/retry", json={"rule": "no_such_rule"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "rule"
    assert (await alice.post("/v1/rounds/1/retry")).status_code == 403
