"""The one-statement bid batch on PostgreSQL answers exactly as the general batch does.

The peer is :func:`service.bids.store_bids` (three queries and an insert, the path SQLite
uses), run on the same database state in a transaction that is rolled back. Each case is
checked alone and all together in one batch; the answers (status, title, detail, fields and
headers, or the stored row and whether it is new) must be identical, and the statement must
never disagree with its own answers (:class:`~service.bids_pg.GuardMismatchError`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from svc_helpers import SLOT, START, make_config, slot_start

import service.bids_pg as bids_pg
from market import Bid as MarketBid
from service.auth import Principal, Role
from service.batching import BidBatcher
from service.bids import PreparedBid, prepare_bid, store_bids
from service.bids_pg import GuardMismatchError, store_bids_pg
from service.clock import ManualClock
from service.db import Database
from service.models import Asset, Bid, Participant, Round
from service.participants import create_participant
from service.problems import ProblemError
from service.rounds import CLEARED, ensure_rounds

PG_ENV = "GRIDBID_TEST_POSTGRES_URL"
pytestmark = pytest.mark.skipif(
    not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: PostgreSQL tests skipped"
)
CONFIG = make_config()
NOW = START + timedelta(minutes=5)  # 10:07: the 10:15 round is open until 10:10


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    """A fresh schema with alice (bus 3, 10 kW), bob (bus 5, 6 kW), a revoked carol, open
    rounds from 10:15, the 10:45 round already cleared, and alice's stored bids."""
    database = Database(os.environ[PG_ENV], schema=f"t_{uuid.uuid4().hex[:16]}")
    await database.create_schema()
    for name in ("alice", "bob", "carol"):
        await create_participant(database, name, "prosumer", START)
    await ensure_rounds(database, CONFIG, START)
    async with database.write() as session:
        for asset, owner, bus, kw in (
            ("alice-bat", "alice", 3, 10.0),
            ("bob-hp", "bob", 5, 6.0),
            ("carol-pv", "carol", 7, 4.0),
        ):
            session.add(
                Asset(
                    id=asset,
                    participant_id=owner,
                    bus=bus,
                    kind="pv",
                    p_max_kw=kw,
                    created_at=START,
                )
            )
    stored = [
        _bid("kept", version=1),
        _bid("moved"),
        _bid("closed", t_start=slot_start(3)),
    ]
    async with database.write() as session:
        assert all(o.created for o in await store_bids(session, stored, START))
    async with database.write() as session:
        await session.execute(
            update(Participant).where(Participant.id == "carol").values(revoked_at=START)
        )
        await session.execute(
            update(Round).where(Round.slot_start == slot_start(3)).values(status=CLEARED)
        )
    try:
        yield database
    finally:
        await database.drop_schema()
        await database.dispose()


def _bid(bid_id: str, seller: str = "alice", **changes: Any) -> PreparedBid:
    asset, bus = {"alice": ("alice-bat", 3), "bob": ("bob-hp", 5), "carol": ("carol-pv", 7)}[seller]
    t0 = changes.pop("t_start", slot_start(1))
    body: dict[str, Any] = {
        "bid_id": bid_id,
        "seller_id": seller,
        "asset_id": asset,
        "bus": bus,
        "direction": "up",
        "p_kw": 4.0,
        "price_eur_per_kwh": 0.2,
        "t_start": t0,
        "t_end": t0 + SLOT,
    } | changes
    return prepare_bid(CONFIG, Principal(seller, Role.PROSUMER), MarketBid.model_validate(body))


CASES: dict[str, PreparedBid] = {
    "new": _bid("fresh"),
    "replay": _bid("kept", version=1),
    "changed body": _bid("kept", version=1, p_kw=5.0),
    "stale version": _bid("kept", version=0),
    "newer version": _bid("kept", version=2, p_kw=2.0),
    "new version, other slot": _bid("moved", version=1, t_start=slot_start(2)),
    "unknown asset": _bid("u", asset_id="nope"),
    "foreign asset": _bid("f", asset_id="bob-hp", bus=5),
    "wrong bus": _bid("w", bus=4),
    "beyond rating p": _bid("p", p_kw=10.5),
    "beyond rating q": _bid("q", p_kw=0.0, q_kvar=11.0),
    "at rating": _bid("r", p_kw=10.0, q_kvar=10.0),
    "no round": _bid("n", t_start=slot_start(40)),
    "cleared round": _bid("c", t_start=slot_start(3)),
    "replay in cleared round": _bid("closed", t_start=slot_start(3)),
    "revoked": _bid("rv", seller="carol"),
    "bob's own": _bid("b", seller="bob"),
}


def _refuse(*_args: Any) -> Any:
    raise ProblemError(409, "Refused by the test")


def _summary(outcome: Any) -> Any:
    if isinstance(outcome, ProblemError):
        errors = [e.model_dump() for e in outcome.errors]
        return ("problem", outcome.status, outcome.title, outcome.detail, errors, outcome.headers)
    return ("accepted", outcome.created, vars(outcome.row))


async def _answers(db: Database, store: Any, items: list[PreparedBid], now: Any) -> list[Any]:
    """``store``'s answers on the fixture's state, in a transaction that is rolled back."""
    async with db.engine.connect() as conn:
        transaction = await conn.begin()
        try:
            outcomes = await store(AsyncSession(bind=conn), items, now)
        finally:
            await transaction.rollback()
    return [_summary(o) for o in outcomes]


@pytest.mark.parametrize("case", list(CASES))
async def test_each_case_answers_as_the_general_batch(db: Database, case: str) -> None:
    (expected,) = await _answers(db, store_bids, [CASES[case]], NOW)
    assert await _answers(db, store_bids_pg, [CASES[case]], NOW) == [expected]


KEPT = ["replay", "changed body", "stale version", "newer version"]


@pytest.mark.parametrize("kept", KEPT)
async def test_a_mixed_batch_answers_as_the_general_batch(db: Database, kept: str) -> None:
    """Every case in one batch (one version of ``kept``: a batch never holds two)."""
    items = [bid for case, bid in CASES.items() if case not in KEPT or case == kept]
    expected = await _answers(db, store_bids, items, NOW)
    assert await _answers(db, store_bids_pg, items, NOW) == expected
    created = sum(1 for e in expected if e[0] == "accepted" and e[1])
    assert created == (4 if kept == "newer version" else 3)  # fresh, at rating, bob's own


async def test_after_the_gate_only_replays_answer_201(db: Database) -> None:
    """At 10:10 the 10:15 round's gate has closed: a new bid or version is refused, a replay
    of a stored one still gets its answer."""
    items = [CASES["new"], CASES["replay"], CASES["newer version"]]
    at_gate = START + timedelta(minutes=8)
    expected = await _answers(db, store_bids, items, at_gate)
    assert [e[0] for e in expected] == ["problem", "accepted", "problem"]
    assert await _answers(db, store_bids_pg, items, at_gate) == expected


async def _bid_count(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Bid)) or 0)


async def test_a_guard_that_disagrees_stores_nothing(db: Database, monkeypatch: Any) -> None:
    """If the statement stored a bid its answer refuses, the batch raises and rolls back."""
    monkeypatch.setattr(bids_pg, "decide_bid", _refuse)
    before = await _bid_count(db)
    with pytest.raises(GuardMismatchError):
        async with db.write() as session:
            await store_bids_pg(session, [CASES["new"], CASES["bob's own"]], NOW)
    assert await _bid_count(db) == before


async def test_batcher_falls_back_to_one_by_one_on_a_mismatch(
    db: Database, monkeypatch: Any
) -> None:
    """The batcher then stores each bid alone the general way: the right answer, once."""
    monkeypatch.setattr(bids_pg, "decide_bid", _refuse)
    batcher = BidBatcher(db, CONFIG, ManualClock(NOW))
    try:
        accepted = await batcher.submit(Principal("bob", Role.PROSUMER), CASES["bob's own"].bid)
    finally:
        await batcher.stop()
    assert accepted.created and accepted.row.bid_id == "b"
    async with db.read() as session:
        rows = (await session.execute(select(Bid.bid_id).where(Bid.participant_id == "bob"))).all()
    assert [r.bid_id for r in rows] == ["b"]
