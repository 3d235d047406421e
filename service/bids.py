"""Accepting bids and flexibility requests: checks, idempotency and durability.

A bid is identified by ``(participant, bid_id, version)``. The same body again returns the
stored answer unchanged; a different body under the same id and version is a conflict (409);
a higher version replaces the lower ones until gate closure; a lower version is stale (409).
The acceptance check and the insert run in one write transaction that holds the round row
(``SELECT ... FOR SHARE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so a bid either
commits before the round's clearing reads the book or is refused after it. Nothing is stored
unless every check passes, and the answer is sent only after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ARRAY, String, any_, bindparam, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from market import Bid as MarketBid
from market import FlexRequest as MarketFlexRequest
from market import MarketConfig, check_aligned
from service.auth import Principal
from service.config import ServiceConfig
from service.db import Database, RawJSON
from service.idempotency import (
    Accepted,
    body_hash,
    canonical_json,
    digest_of,
    replay_or_conflict,
)
from service.models import Asset, Bid, FlexRequest, Participant, Round
from service.problems import FieldError, ProblemError
from service.rounds import OPEN

__all__ = [
    "Accepted",
    "OwnedAsset",
    "PreparedBid",
    "StoredBid",
    "accept_bid",
    "accept_request",
    "body_hash",
    "decide_bid",
    "open_round",
    "prepare_bid",
    "store_bids",
    "store_prepared",
]

_RETRIES = 3


@dataclass(frozen=True)
class StoredBid:
    """One stored bid version, as the checks and the answers need it (a plain record: the
    ORM's per-object bookkeeping costs more than the rest of a bid's checks)."""

    participant_id: str
    bid_id: str
    version: int
    round_id: int
    asset_id: str
    body: dict[str, Any]
    body_hash: str
    created_at: datetime


@dataclass(frozen=True)
class OwnedAsset:
    """An asset a bid names, as its checks need it (only ever one the caller owns)."""

    id: str
    participant_id: str
    bus: int
    p_max_kw: float


_STORED_COLUMNS = (
    Bid.participant_id,
    Bid.bid_id,
    Bid.version,
    Bid.round_id,
    Bid.asset_id,
    Bid.body,
    Bid.body_hash,
    Bid.created_at,
)


@dataclass(frozen=True)
class PreparedBid:
    """A bid that passed the database-free checks, with its JSON body, that body's canonical
    serialisation (stored as is, so it is serialised once) and its hash."""

    principal: Principal
    bid: MarketBid
    body: dict[str, Any]
    body_json: str
    digest: str

    @property
    def key(self) -> tuple[str, str]:
        """``(participant, bid_id)``: the bid's identity across its versions."""
        return (self.principal.id, self.bid.bid_id)


def prepare_bid(config: ServiceConfig, principal: Principal, bid: MarketBid) -> PreparedBid:
    """The checks that need no database.

    Raises:
        ProblemError: 422 for interval, slot or seller problems.
    """
    _check_interval(bid, config)
    if bid.seller_id != principal.id:
        raise ProblemError.field(
            422, "Invalid bid", "seller_id", "must be your own participant id", bid.seller_id
        )
    body = bid.model_dump(mode="json")
    body_json = canonical_json(body)
    return PreparedBid(principal, bid, body, body_json, digest_of(body_json))


async def accept_bid(
    db: Database, config: ServiceConfig, principal: Principal, bid: MarketBid, now: datetime
) -> Accepted:
    """Store a prosumer's bid version in its own transaction, or refuse it naming the field.

    Raises:
        ProblemError: 404 unknown/foreign asset, 409 replay conflict / stale version / gate
            closed, 422 seller, bus, rating, interval or slot problems.
    """
    return await store_prepared(db, prepare_bid(config, principal, bid), now)


async def store_prepared(db: Database, prepared: PreparedBid, now: datetime) -> Accepted:
    """Store one prepared bid in its own transaction (retried on a raced constraint).

    Raises:
        ProblemError: as :func:`accept_bid`.
    """
    for attempt in range(_RETRIES):
        try:
            async with db.write() as session:
                (outcome,) = await store_bids(session, [prepared], now)
            if isinstance(outcome, ProblemError):
                raise outcome
            return outcome
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def store_bids(
    session: AsyncSession, items: list[PreparedBid], now: datetime
) -> list[Accepted | ProblemError]:
    """Check many prepared bids with three queries in all, and add the accepted ones.

    Only the callers' own assets are read: another participant's asset looks exactly like
    one that does not exist (404), as tenant isolation requires.

    No two items may share ``(participant, bid_id)`` (the batcher guarantees it), so each
    item's checks see exactly the rows committed before the batch.

    Returns:
        Per item, its :class:`Accepted` (new or replayed) or the problem refusing it.
    """
    conn = await session.connection()  # Core statements: no ORM work per row
    pg = conn.dialect.name == "postgresql"
    pairs = sorted({(i.principal.id, i.bid.bid_id) for i in items})
    principals = sorted({p for p, _ in pairs})
    # One query for the callers' revocation and their assets: each caller's participant
    # row, joined to the requested assets it owns (if any).
    revoked: set[str] = set()
    assets: dict[str, Any] = {}
    for row in await conn.execute(
        select(Participant.id, Participant.revoked_at, Asset.id, Asset.bus, Asset.p_max_kw)
        .outerjoin(
            Asset,
            (Asset.participant_id == Participant.id)
            & _among(Asset.id, {i.bid.asset_id for i in items}, pg),
        )
        .where(_among(Participant.id, principals, pg))
    ):
        owner, revoked_at, asset_id, bus, p_max_kw = row
        if revoked_at is not None:
            revoked.add(owner)
        if asset_id is not None:
            assets[asset_id] = OwnedAsset(asset_id, owner, bus, p_max_kw)
    versions: dict[tuple[str, str], list[StoredBid]] = {}
    if pg:  # the pairs as two aligned arrays, zipped back by unnest
        zipped = select(
            func.unnest(_array([p for p, _ in pairs], keep_order=True)),
            func.unnest(_array([b for _, b in pairs], keep_order=True)),
        )
        stored = tuple_(Bid.participant_id, Bid.bid_id).in_(zipped)
    else:
        stored = tuple_(Bid.participant_id, Bid.bid_id).in_(pairs)
    for row in await conn.execute(select(*_STORED_COLUMNS).where(stored)):
        versions.setdefault((row.participant_id, row.bid_id), []).append(StoredBid(*row))
    rounds = {
        r.slot_start: r
        for r in await conn.execute(
            select(Round.id, Round.slot_start, Round.status, Round.gate_closure)
            .where(Round.slot_start.in_(sorted({i.bid.t_start for i in items})))
            .with_for_update(read=True)
        )
    }
    outcomes: list[Accepted | ProblemError] = []
    new_rows: list[dict[str, Any]] = []
    for item in items:
        try:
            if item.principal.id in revoked:
                raise ProblemError(
                    401, "Unauthorized", "revoked API key", headers={"WWW-Authenticate": "Bearer"}
                )
            stored_versions = versions.get((item.principal.id, item.bid.bid_id), [])
            outcome = decide_bid(
                item,
                next((r for r in stored_versions if r.version == item.bid.version), None),
                max(stored_versions, key=lambda r: r.version, default=None),
                assets.get(item.bid.asset_id),
                rounds.get(item.bid.t_start),
                now,
            )
        except ProblemError as problem:
            outcomes.append(problem)
            continue
        if outcome.created:
            new_rows.append(outcome.row.__dict__ | {"body": RawJSON(item.body_json)})
        outcomes.append(outcome)
    if new_rows:  # one multi-row Core INSERT, without the ORM's per-row bookkeeping
        await conn.execute(insert(Bid.__table__), new_rows)
    return outcomes


def _array(values: Any, keep_order: bool = False) -> Any:
    return bindparam(None, list(values) if keep_order else sorted(values), type_=ARRAY(String()))


def _among(column: Any, values: Any, pg: bool) -> Any:
    """``column IN values``; on PostgreSQL ``column = ANY($1)``, one statement text whatever
    the number of values (an ``IN`` list gives one text per length, and asyncpg prepares
    each text anew once its statement cache of 100 overflows: an extra round trip)."""
    return column == any_(_array(values)) if pg else column.in_(sorted(values))


def decide_bid(
    item: PreparedBid,
    same: StoredBid | None,
    latest: Any,
    asset: Any,
    rnd: Any,
    now: datetime,
) -> Accepted:
    """Every database-backed check of one bid, given the rows it depends on.

    Args:
        item: the prepared bid.
        same: the stored version with the bid's own version number, if any.
        latest: the stored version with the highest version number (``version`` and
            ``round_id``), if any.
        asset: the requested asset if the caller owns it (``id``, ``participant_id``,
            ``bus``, ``p_max_kw``), else ``None``.
        rnd: the round of the bid's slot (``id``, ``status``, ``gate_closure``), if any.
        now: the time the gate check uses.

    Returns:
        The replayed answer, or ``Accepted(row, created=True)`` with the row to store.

    Raises:
        ProblemError: the refusal, naming the field.
    """
    principal, bid, digest = item.principal, item.bid, item.digest
    replay = replay_or_conflict(
        same,
        digest,
        lambda: ProblemError.field(
            409,
            "Bid id reused",
            "version",
            f"bid {bid.bid_id!r} version {bid.version} was accepted with a different body; "
            "send a higher version to replace it",
            bid.version,
        ),
    )
    if replay is not None:
        return replay
    if asset is None or asset.participant_id != principal.id:
        raise ProblemError.field(
            404, "Unknown asset", "asset_id", "no such asset registered to you", bid.asset_id
        )
    if bid.bus != asset.bus:
        raise ProblemError.field(
            422,
            "Invalid bid",
            "bus",
            f"asset {asset.id!r} is registered at bus {asset.bus}",
            bid.bus,
        )
    for field in ("p_kw", "q_kvar"):
        value = getattr(bid, field)
        if value > asset.p_max_kw:
            raise ProblemError.field(
                422,
                "Invalid bid",
                field,
                f"exceeds the asset's rating of {asset.p_max_kw} kW",
                value,
            )
    if latest is not None and bid.version < latest.version:
        raise ProblemError.field(
            409,
            "Stale bid version",
            "version",
            f"version {latest.version} is already accepted",
            bid.version,
        )
    rnd = _check_round(rnd, bid.t_start, now, "bid")
    if latest is not None and latest.round_id != rnd.id:
        raise ProblemError.field(
            409,
            "Bid id reused",
            "t_start",
            "a new version must keep its slot",
            bid.t_start.isoformat(),
        )
    row = StoredBid(
        participant_id=principal.id,
        bid_id=bid.bid_id,
        version=bid.version,
        round_id=rnd.id,
        asset_id=asset.id,
        body=item.body,
        body_hash=digest,
        created_at=now,
    )
    return Accepted(row, created=True)


async def accept_request(
    db: Database,
    config: ServiceConfig,
    principal: Principal,
    request: MarketFlexRequest,
    now: datetime,
) -> Accepted:
    """Store a DSO's flexibility request (idempotent by ``request_id``, never replaced).

    Raises:
        ProblemError: 409 replay conflict / gate closed, 422 buyer, interval or slot problems.
    """
    _check_interval(request, config)
    if request.buyer_id != principal.id:
        raise ProblemError.field(
            422, "Invalid request", "buyer_id", "must be your own participant id", request.buyer_id
        )
    body = request.model_dump(mode="json")
    digest = body_hash(body)
    for attempt in range(_RETRIES):
        try:
            async with db.write() as session:
                existing = await session.scalar(
                    select(FlexRequest).where(
                        FlexRequest.participant_id == principal.id,
                        FlexRequest.request_id == request.request_id,
                    )
                )
                replay = replay_or_conflict(
                    existing,
                    digest,
                    lambda: ProblemError.field(
                        409,
                        "Request id reused",
                        "request_id",
                        "was accepted with a different body",
                        request.request_id,
                    ),
                )
                if replay is not None:
                    return replay
                rnd = await open_round(session, request.t_start, now, "request")
                row = FlexRequest(
                    participant_id=principal.id,
                    request_id=request.request_id,
                    round_id=rnd.id,
                    body=body,
                    body_hash=digest,
                    created_at=now,
                )
                session.add(row)
                await session.flush()
                return Accepted(row, created=True)
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@lru_cache(maxsize=8)
def _market_config(slot_minutes: int) -> MarketConfig:
    return MarketConfig(slot_minutes=slot_minutes)


def _check_interval(message: MarketBid | MarketFlexRequest, config: ServiceConfig) -> None:
    """The interval must be exactly one market slot."""
    try:
        check_aligned(message, _market_config(config.slot_minutes))
    except ValidationError as exc:
        errors = [
            FieldError(
                field=".".join(map(str, e["loc"])), message=e["msg"], value=str(e.get("input"))
            )
            for e in exc.errors()
        ]
        raise ProblemError(422, "Not on market slots", errors[0].message, errors) from exc
    if message.t_end - message.t_start != config.slot:
        raise ProblemError.field(
            422,
            "Not one slot",
            "t_end",
            f"the interval must be exactly {config.slot_minutes} minutes",
            message.t_end.isoformat(),
        )


async def open_round(session: AsyncSession, t_start: datetime, now: datetime, what: str) -> Round:
    """The round for ``t_start``, locked for share, if it accepts input at ``now``."""
    rnd = await session.scalar(
        select(Round).where(Round.slot_start == t_start).with_for_update(read=True)
    )
    return _check_round(rnd, t_start, now, what)


def _check_round(rnd: Any, t_start: datetime, now: datetime, what: str) -> Any:
    """``rnd`` if it exists and accepts input at ``now``; otherwise the problem to answer."""
    if rnd is None:
        raise ProblemError.field(
            422,
            "No open round",
            "t_start",
            f"no market round is open for this slot; {what}s are accepted "
            "for the rounds listed at /v1/rounds",
            t_start.isoformat(),
        )
    if rnd.status != OPEN or now >= rnd.gate_closure:
        raise ProblemError.field(
            409,
            "Gate closed",
            "t_start",
            f"round {rnd.id} closed at {rnd.gate_closure.isoformat()}",
            t_start.isoformat(),
        )
    return rnd
