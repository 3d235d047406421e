"""Auth and tenant isolation as a matrix: each role x each resource x own / foreign.

Callers: no key, a malformed key, an unknown key, a revoked key (401); each role (403 where
the role may not act, otherwise admitted). Prosumers see only their own rows; another
prosumer's asset or bid answers 404 as if it did not exist; a DSO sees awards and
settlements only of its own requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from svc_helpers import bid_body, make_config, request_body, slot_start

from service import create_app
from service.auth import KeyCache, Principal, Role, hash_key

ALL = {"operator", "dso", "observer", "prosumer"}

# (method, path, body, roles admitted)
ENDPOINTS: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/v1/me", None, ALL),
    ("GET", "/v1/rounds", None, ALL),
    ("GET", "/v1/rounds/1", None, ALL),
    ("POST", "/v1/participants", {"id": "newbie", "role": "observer"}, {"operator"}),
    ("GET", "/v1/participants", None, {"operator"}),
    ("POST", "/v1/participants/zed/revoke", None, {"operator"}),
    ("POST", "/v1/scheduler/tick", None, {"operator"}),
    ("POST", "/v1/assets", {"asset_id": "m-1", "bus": 1, "p_max_kw": 1.0}, {"prosumer"}),
    ("GET", "/v1/assets", None, {"prosumer", "dso", "operator"}),
    ("GET", "/v1/assets/alice-bat", None, {"prosumer", "dso", "operator"}),
    ("POST", "/v1/flex-requests", request_body(), {"dso"}),
    ("GET", "/v1/flex-requests", None, {"prosumer", "dso", "operator"}),
    ("POST", "/v1/bids", bid_body(), {"prosumer"}),
    ("GET", "/v1/bids", None, {"prosumer", "operator"}),
    ("GET", "/v1/bids/alice-b1", None, {"prosumer"}),
    ("GET", "/v1/awards", None, {"prosumer", "dso", "operator"}),
    (
        "POST",
        "/v1/baselines",
        {"asset_id": "alice-bat", "t_start": slot_start(1).isoformat(), "p_kw": 1.0},
        {"prosumer"},
    ),
    ("GET", "/v1/baselines", None, {"prosumer", "dso", "operator"}),
    (
        "POST",
        "/v1/meter-readings",
        {"asset_id": "alice-bat", "t_start": slot_start(-1).isoformat(), "p_kw": 1.0},
        {"prosumer"},
    ),
    ("GET", "/v1/meter-readings", None, {"prosumer", "operator"}),
    (
        "POST",
        "/v1/grid/voltages",
        {"bus": 3, "t_start": slot_start(-1).isoformat(), "vm_pu": 1.0},
        {"dso"},
    ),
    ("GET", "/v1/grid/voltages", None, {"dso", "operator"}),
    ("GET", "/v1/settlements", None, {"prosumer", "dso", "operator"}),
    ("GET", "/v1/alerts", None, {"prosumer", "dso", "operator"}),
    ("GET", "/v1/aggregates", None, {"observer", "dso", "operator"}),
]


async def test_role_matrix(market) -> None:
    await market.add("zed", "observer")
    revoked = await market.add("gone", "prosumer")
    await market.parties["op"].client.post("/v1/participants/gone/revoke")
    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "malformed": {"Authorization": "Basic abc"},
        "unknown": {"Authorization": "Bearer gbk_not-a-real-key"},
        "revoked": revoked.headers,
    }
    by_role = {"operator": "op", "dso": "dso", "observer": "obs", "prosumer": "alice"}
    wrong: list[str] = []
    for method, path, body, admitted in ENDPOINTS:
        for caller, headers in callers.items():
            before = await market.counts()
            r = await market.anon.request(method, path, json=body, headers=headers)
            if r.status_code != 401 or await market.counts() != before:
                wrong.append(f"{caller} {method} {path}: {r.status_code}")
            elif r.headers.get("www-authenticate") != "Bearer":
                wrong.append(f"{caller} {method} {path}: no WWW-Authenticate")
        for role, name in by_role.items():
            before = await market.counts()
            r = await market.parties[name].client.request(method, path, json=body)
            if role in admitted:
                if r.status_code in (401, 403) or r.status_code >= 500:
                    wrong.append(f"{role} {method} {path}: {r.status_code} {r.text[:80]}")
            elif r.status_code != 403 or await market.counts() != before:
                wrong.append(f"{role} {method} {path}: {r.status_code}, expected 403")
    assert wrong == []


async def _play_one_round(market) -> None:
    """Both prosumers bid, meter and get settled; the DSO asks; bob triggers alerts."""
    dso, alice, bob = (market.parties[n].client for n in ("dso", "alice", "bob"))
    assert (await dso.post("/v1/flex-requests", json=request_body(p_kw=20.0))).status_code == 201
    assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
    assert (await bob.post("/v1/bids", json=bid_body("bob"))).status_code == 201
    t0 = slot_start(1).isoformat()
    for client, asset in ((alice, "alice-bat"), (bob, "bob-hp")):
        body = {"asset_id": asset, "t_start": t0, "p_kw": 0.0}
        assert (await client.post("/v1/baselines", json=body)).status_code == 201
    market.clock.advance(timedelta(minutes=8))
    assert (await market.tick()).cleared == [1]
    market.clock.advance(timedelta(minutes=20))
    for client, asset, p in ((alice, "alice-bat", -1.0), (bob, "bob-hp", 60.0)):
        body = {"asset_id": asset, "t_start": t0, "p_kw": p}
        assert (await client.post("/v1/meter-readings", json=body)).status_code == 201
    market.clock.advance(timedelta(minutes=15))
    assert (await market.tick()).settled == [1]


def _owners(rows: list[dict[str, Any]]) -> set[str]:
    keys = ("participant_id", "seller_id")
    found = set()
    for row in rows:
        for key in keys:
            if key in row:
                found.add(row[key])
        for nested in ("line", "award", "bid"):
            if nested in row and "seller_id" in row[nested]:
                found.add(row[nested]["seller_id"])
    return found


async def test_tenant_isolation_own_versus_foreign(market) -> None:
    await _play_one_round(market)
    dso2 = await market.add("dso2", "dso")
    alice, bob, dso, op = (market.parties[n].client for n in ("alice", "bob", "dso", "op"))

    for path in (
        "/v1/assets",
        "/v1/bids",
        "/v1/awards",
        "/v1/baselines",
        "/v1/meter-readings",
        "/v1/settlements",
        "/v1/alerts",
    ):
        mine = (await alice.get(path)).json()
        theirs = (await bob.get(path)).json()
        everyone = (await op.get(path)).json()
        assert mine and theirs, path
        assert _owners(mine) <= {"alice"} and _owners(theirs) <= {"bob"}, path
        assert "bob" not in str(mine) and "alice" not in str(theirs), path
        assert len(everyone) >= len(mine) + len(theirs), path
    assert len((await alice.get("/v1/meter-readings?asset_id=bob-hp")).json()) == 0

    r = await alice.post(
        "/v1/baselines",
        json={"asset_id": "bob-hp", "t_start": slot_start(3).isoformat(), "p_kw": 1.0},
    )
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "asset_id"
    for path in ("/v1/assets/bob-hp", "/v1/bids/bob-b1"):
        assert (await bob.get(path)).status_code == 200, path
        r = await alice.get(path)
        assert r.status_code == 404, path
        assert "bob" not in r.json()["detail"].replace("bob-hp", "").replace("bob-b1", "")

    assert _owners((await dso.get("/v1/awards")).json()) == {"alice", "bob"}
    assert len((await dso.get("/v1/settlements")).json()) == 2
    for path in ("/v1/awards", "/v1/settlements", "/v1/flex-requests", "/v1/alerts"):
        assert (await dso2.client.get(path)).json() == [], path
    bob_alerts = {a["kind"] for a in (await bob.get("/v1/alerts")).json()}
    assert bob_alerts == {"implausible_reading", "non_delivery"}


@asynccontextmanager
async def _other_worker(market, db_target, poll_s: float) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database (another worker process), as alice."""
    other = create_app(
        db_target.url,
        clock=market.clock,
        config=make_config(revocation_poll_seconds=poll_s),
        db_schema=db_target.schema,
        run_scheduler=False,
    )
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other),
            base_url="http://test",
            headers=market.parties["alice"].headers,
        ) as client,
    ):
        assert (await client.get("/v1/me")).status_code == 200  # key now cached there
        yield client


async def test_revoked_key_cached_elsewhere_cannot_store_a_bid(market, db_target) -> None:
    """The other worker will not look for revocations for an hour and has alice's key
    cached; after the operator revokes her through the first, her bid there is refused
    inside its own transaction (401) and nothing is stored."""
    async with _other_worker(market, db_target, poll_s=3600) as client:
        r = await market.parties["op"].client.post("/v1/participants/alice/revoke")
        assert r.status_code == 200
        before = await market.counts()
        late = await client.post("/v1/bids", json=bid_body(bid_id="after-revoke"))
        assert late.status_code == 401 and late.headers["www-authenticate"] == "Bearer"
        assert await market.counts() == before


async def test_revocation_reaches_other_workers_within_the_poll(market, db_target) -> None:
    async with _other_worker(market, db_target, poll_s=0.1) as client:
        r = await market.parties["op"].client.post("/v1/participants/alice/revoke")
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while (await client.get("/v1/me")).status_code != 401:
            assert time.monotonic() < deadline, "revocation not seen by the other worker"
            await asyncio.sleep(0.05)


def test_key_cache_spreads_expiry_over_the_second_half_of_its_ttl(monkeypatch) -> None:
    """Keys cached in the same second leave the cache spread over [ttl/2, ttl], not at once."""
    now = [1000.0]
    monkeypatch.setattr("service.auth.time.monotonic", lambda: now[0])
    cache = KeyCache(60.0)
    digests = [hash_key(f"gbk_{i}") for i in range(200)]
    for digest in digests:
        cache.put(digest, Principal(digest[:8], Role.PROSUMER))
    now[0] = 1000.0 + 29.9
    assert all(cache.get(d) is not None for d in digests)
    now[0] = 1000.0 + 45.0
    assert 50 < sum(cache.get(d) is not None for d in digests) < 150
    now[0] = 1000.0 + 60.1
    assert all(cache.get(d) is None for d in digests)
