"""Bad input gets the right 4xx, a problem body naming the field, and changes no row.

Each case sends one request and compares the row count of every table before and after.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from svc_helpers import SLOT, bid_body, request_body, slot_start

T1 = slot_start(1)

BID_CASES: list[tuple[str, Any, int, str]] = [
    ("malformed json", '{"bid_id": "x", ', 422, "body"),
    ("wrong type", bid_body(p_kw="lots"), 422, "p_kw"),
    ("nan", json.dumps(bid_body()).replace('"p_kw": 4.0', '"p_kw": NaN'), 422, "p_kw"),
    ("infinity", json.dumps(bid_body()).replace('"p_kw": 4.0', '"p_kw": Infinity'), 422, "p_kw"),
    ("negative", bid_body(p_kw=-1.0), 422, "p_kw"),
    ("beyond rating", bid_body(p_kw=1e9), 422, "p_kw"),
    ("naive datetime", bid_body(t_start=T1.replace(tzinfo=None).isoformat()), 422, "t_start"),
    (
        "off-slot start",
        bid_body(
            t_start=(T1 + timedelta(minutes=1)).isoformat(),
            t_end=(T1 + SLOT + timedelta(minutes=1)).isoformat(),
        ),
        422,
        "t_start",
    ),
    ("two slots", bid_body(t_end=(T1 + 2 * SLOT).isoformat()), 422, "t_end"),
    (
        "no open round",
        bid_body(t_start=slot_start(40).isoformat(), t_end=(slot_start(40) + SLOT).isoformat()),
        422,
        "t_start",
    ),
    ("unknown asset", bid_body(asset_id="nope"), 404, "asset_id"),
    ("foreign asset", bid_body(asset_id="bob-hp", bus=5), 404, "asset_id"),
    ("wrong bus", bid_body(bus=4), 422, "bus"),
    ("someone else's seller id", bid_body(seller_id="bob"), 422, "seller_id"),
    ("unknown field", bid_body(colour="red"), 422, "colour"),
    ("missing field", {k: v for k, v in bid_body().items() if k != "direction"}, 422, "direction"),
    ("bad direction", bid_body(direction="sideways"), 422, "direction"),
    ("nothing offered", bid_body(p_kw=0.0), 422, "p_kw"),
]


def _send(client: Any, path: str, body: Any) -> Any:
    if isinstance(body, str):
        return client.post(path, content=body, headers={"Content-Type": "application/json"})
    return client.post(path, json=body)


def _field_named(problem: dict[str, Any], field: str) -> bool:
    return any(
        e["field"].split(".")[-1] == field or e["field"] == field for e in problem.get("errors", [])
    )


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), BID_CASES, ids=[c[0] for c in BID_CASES]
)
async def test_bad_bid_is_refused_naming_the_field(market, case, body, status, field) -> None:
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/bids", json=bid_body(bid_id="ok-1"))).status_code == 201
    before = await market.counts()
    r = await _send(alice, "/v1/bids", body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert _field_named(problem, field), problem
    assert await market.counts() == before


async def test_replayed_id_with_changed_body_is_409_and_keeps_the_first(market) -> None:
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
    before = await market.counts()
    r = await alice.post("/v1/bids", json=bid_body(price_eur_per_kwh=0.9))
    assert r.status_code == 409 and _field_named(r.json(), "version")
    assert await market.counts() == before
    assert (await alice.get("/v1/bids/alice-b1")).json()["bid"]["price_eur_per_kwh"] == 0.2


async def test_stale_version_and_slot_change_are_409(market) -> None:
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/bids", json=bid_body(version=2))).status_code == 201
    before = await market.counts()
    r = await alice.post("/v1/bids", json=bid_body(version=1))
    assert r.status_code == 409 and _field_named(r.json(), "version")
    t2 = slot_start(2)
    moved = bid_body(version=3, t_start=t2.isoformat(), t_end=(t2 + SLOT).isoformat())
    r = await alice.post("/v1/bids", json=moved)
    assert r.status_code == 409 and _field_named(r.json(), "t_start")
    assert await market.counts() == before


async def test_bid_after_gate_closure_is_409_but_replay_still_answers(market) -> None:
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
    market.clock.advance(timedelta(minutes=8))  # 10:10: gate of the 10:15 round
    before = await market.counts()
    late = await alice.post("/v1/bids", json=bid_body(bid_id="late"))
    assert late.status_code == 409 and _field_named(late.json(), "t_start")
    newer = await alice.post("/v1/bids", json=bid_body(version=1, p_kw=2.0))
    assert newer.status_code == 409
    replay = await alice.post("/v1/bids", json=bid_body())
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert await market.counts() == before


async def test_oversize_body_is_413(market) -> None:
    alice = market.parties["alice"].client
    before = await market.counts()
    body = bid_body(bid_id="big", padding="x" * (market.state.config.max_body_bytes + 1))
    r = await alice.post("/v1/bids", json=body)
    assert r.status_code == 413 and r.json()["title"] == "Payload too large"

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        yield b"{" + b" " * 40_000
        yield b" " * 40_000 + b"}"

    streamed = await alice.post(
        "/v1/bids", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await market.counts() == before


REQUEST_CASES: list[tuple[str, Any, int, str]] = [
    ("negative", request_body(p_kw=-5), 422, "p_kw"),
    (
        "nan price",
        json.dumps(request_body()).replace(
            '"max_price_eur_per_kwh": 0.5', '"max_price_eur_per_kwh": NaN'
        ),
        422,
        "max_price_eur_per_kwh",
    ),
    ("naive", request_body(t_end=(T1 + SLOT).replace(tzinfo=None).isoformat()), 422, "t_end"),
    ("other buyer", request_body(buyer_id="dso2"), 422, "buyer_id"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES]
)
async def test_bad_flex_request_is_refused(market, case, body, status, field) -> None:
    before = await market.counts()
    r = await _send(market.parties["dso"].client, "/v1/flex-requests", body)
    assert r.status_code == status and _field_named(r.json(), field), r.text
    assert await market.counts() == before


async def test_changed_request_under_same_id_is_409(market) -> None:
    dso = market.parties["dso"].client
    assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
    before = await market.counts()
    r = await dso.post("/v1/flex-requests", json=request_body(p_kw=9.0))
    assert r.status_code == 409 and _field_named(r.json(), "request_id")
    assert await market.counts() == before


def _reading(**changes: Any) -> dict[str, Any]:
    body = {"asset_id": "alice-bat", "t_start": T1.isoformat(), "p_kw": 1.0}
    return body | changes


METER_CASES: list[tuple[str, Any, int, str]] = [
    ("nan", json.dumps(_reading()).replace('"p_kw": 1.0', '"p_kw": NaN'), 422, "p_kw"),
    ("absurd", _reading(p_kw=1e12), 422, "p_kw"),
    ("naive", _reading(t_start=T1.replace(tzinfo=None).isoformat()), 422, "t_start"),
    ("slot not over", _reading(t_start=slot_start(2).isoformat()), 422, "t_start"),
    ("off slot", _reading(t_start=(T1 + timedelta(minutes=3)).isoformat()), 422, "t_start"),
    ("foreign asset", _reading(asset_id="bob-hp"), 404, "asset_id"),
    ("unknown asset", _reading(asset_id="ghost"), 404, "asset_id"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), METER_CASES, ids=[c[0] for c in METER_CASES]
)
async def test_bad_meter_reading_is_refused(market, case, body, status, field) -> None:
    market.clock.advance(timedelta(minutes=28))  # 10:30: the 10:15 slot is over
    before = await market.counts()
    r = await _send(market.parties["alice"].client, "/v1/meter-readings", body)
    assert r.status_code == status and _field_named(r.json(), field), r.text
    assert await market.counts() == before


async def test_changed_meter_reading_is_409(market) -> None:
    market.clock.advance(timedelta(minutes=28))
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/meter-readings", json=_reading())).status_code == 201
    again = await alice.post("/v1/meter-readings", json=_reading())
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    before = await market.counts()
    r = await alice.post("/v1/meter-readings", json=_reading(p_kw=2.0))
    assert r.status_code == 409 and _field_named(r.json(), "t_start")
    assert await market.counts() == before


def _baseline(**changes: Any) -> dict[str, Any]:
    return {"asset_id": "alice-bat", "t_start": T1.isoformat(), "p_kw": 1.0} | changes


BASELINE_CASES: list[tuple[str, Any, int, str]] = [
    ("nan", json.dumps(_baseline()).replace('"p_kw": 1.0', '"p_kw": NaN'), 422, "p_kw"),
    ("beyond rating", _baseline(p_kw=-11.5), 422, "p_kw"),  # 10 kW x 1.1
    ("naive", _baseline(t_start=T1.replace(tzinfo=None).isoformat()), 422, "t_start"),
    ("off slot", _baseline(t_start=(T1 + timedelta(minutes=3)).isoformat()), 422, "t_start"),
    ("no open round", _baseline(t_start=slot_start(40).isoformat()), 422, "t_start"),
    ("foreign asset", _baseline(asset_id="bob-hp"), 404, "asset_id"),
    ("unknown field", _baseline(kind="plan"), 422, "kind"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), BASELINE_CASES, ids=[c[0] for c in BASELINE_CASES]
)
async def test_bad_baseline_is_refused(market, case, body, status, field) -> None:
    before = await market.counts()
    r = await _send(market.parties["alice"].client, "/v1/baselines", body)
    assert r.status_code == status and _field_named(r.json(), field), r.text
    assert await market.counts() == before


async def test_baseline_is_frozen_at_gate_closure(market) -> None:
    """Before the gate a changed baseline replaces the earlier one; from the gate on the
    stored one answers a replay and refuses any change (409), changing no row."""
    alice = market.parties["alice"].client
    assert (await alice.post("/v1/baselines", json=_baseline())).status_code == 201
    changed = await alice.post("/v1/baselines", json=_baseline(p_kw=2.0))
    assert changed.status_code == 201 and changed.json()["p_kw"] == 2.0
    assert (await market.counts())["baselines"] == 1
    market.clock.advance(timedelta(minutes=8))  # 10:10: gate of the 10:15 round
    before = await market.counts()
    late = await alice.post("/v1/baselines", json=_baseline(p_kw=3.0))
    assert late.status_code == 409 and _field_named(late.json(), "t_start")
    replay = await alice.post("/v1/baselines", json=_baseline(p_kw=2.0))
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    first_late = await market.parties["bob"].client.post(
        "/v1/baselines", json=_baseline(asset_id="bob-hp", p_kw=0.0)
    )
    assert first_late.status_code == 409 and _field_named(first_late.json(), "t_start")
    assert await market.counts() == before
    assert [b["p_kw"] for b in (await alice.get("/v1/baselines")).json()] == [2.0]


async def test_meter_reading_cannot_carry_a_baseline(market) -> None:
    """The baseline is declared before the gate; a reading that brings one is refused."""
    market.clock.advance(timedelta(minutes=28))
    before = await market.counts()
    r = await market.parties["alice"].client.post(
        "/v1/meter-readings", json=_reading(baseline_p_kw=3.0)
    )
    assert r.status_code == 422 and _field_named(r.json(), "baseline_p_kw")
    assert await market.counts() == before


async def test_asset_registration_conflicts(market) -> None:
    bob = market.parties["bob"].client
    before = await market.counts()
    taken = await bob.post(
        "/v1/assets", json={"asset_id": "alice-bat", "bus": 3, "kind": "battery", "p_max_kw": 10.0}
    )
    assert taken.status_code == 409 and _field_named(taken.json(), "asset_id")
    for bad, field in (
        ({"p_max_kw": 0}, "p_max_kw"),
        ({"bus": -1}, "bus"),
        ({"asset_id": "a b"}, "asset_id"),
    ):
        body = {"asset_id": "bob-new", "bus": 5, "kind": "pv", "p_max_kw": 3.0} | bad
        r = await bob.post("/v1/assets", json=body)
        assert r.status_code == 422 and _field_named(r.json(), field), r.text
    assert await market.counts() == before


async def test_concurrent_replays_and_conflicts_store_each_bid_once(market) -> None:
    """40 bids sent concurrently, each twice, plus a changed body for every fourth: each id
    is stored once, replays get the same answer, and of two different bodies under one id
    exactly one is acknowledged (201) and stored, the other answers 409."""
    alice = market.parties["alice"].client
    sends = []
    for i in range(40):
        body = bid_body(bid_id=f"c{i}", p_kw=1.0 + i % 5)
        sends += [("same", i, body), ("same", i, body)]
        if i % 4 == 0:
            sends.append(("changed", i, bid_body(bid_id=f"c{i}", p_kw=9.5)))
    answers = await asyncio.gather(*(alice.post("/v1/bids", json=b) for _, _, b in sends))
    assert (await market.counts())["bids"] == 40
    stored = {b["bid_id"]: b["bid"] for b in (await alice.get("/v1/bids")).json()}
    for (_, i, body), r in zip(sends, answers, strict=True):
        if r.status_code == 201:
            assert r.json()["bid"] == stored[f"c{i}"]
            assert stored[f"c{i}"]["p_kw"] == body["p_kw"]
        else:
            assert r.status_code == 409 and stored[f"c{i}"]["p_kw"] != body["p_kw"]
