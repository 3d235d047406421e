"""Market rounds, flexibility requests, bids, awards and anonymised aggregates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from market import FlexRequest as MarketFlexRequest
from market import available_rules
from service.auth import Principal, Role, authenticate, require
from service.bids import accept_request
from service.models import Award, Bid, Clearing, FlexRequest, Round
from service.problems import ProblemError, check_wire
from service.rounds import FAILED, clear_round
from service.routes.bid_intake import REPLAYED, bid_ack
from service.scheduler import TickReport
from service.schemas import AggregateOut, BidAck, FlexRequestAck, Ident, RetryIn, RoundOut
from service.state import StateDep

__all__ = ["award_query", "router"]

router = APIRouter(tags=["market"])
_prosumer = require(Role.PROSUMER)
_dso = require(Role.DSO)
_operator = require(Role.OPERATOR)


def _round_out(row: Round) -> RoundOut:
    return RoundOut(
        id=row.id,
        slot_start=row.slot_start,
        slot_end=row.slot_end,
        gate_closure=row.gate_closure,
        rule=row.rule,
        status=row.status,
        failure=row.failure,
    )


@router.get("/rounds")
async def list_rounds(
    *,
    status: str | None = None,
    limit: int = 200,
    _p: Annotated[Principal, Depends(authenticate)],
    state: StateDep,
) -> list[RoundOut]:
    """Rounds, newest slot first (public market information for every role)."""
    query = select(Round).order_by(Round.slot_start.desc()).limit(max(1, min(limit, 1000)))
    if status is not None:
        query = query.where(Round.status == status)
    async with state.db.read() as session:
        return [_round_out(r) for r in await session.scalars(query)]


@router.get("/rounds/{round_id}")
async def get_round(
    *, round_id: int, _p: Annotated[Principal, Depends(authenticate)], state: StateDep
) -> RoundOut:
    """One round."""
    async with state.db.read() as session:
        row = await session.get(Round, round_id)
    if row is None:
        raise ProblemError.field(404, "Not found", "round_id", "no such round", round_id)
    return _round_out(row)


@router.post("/rounds/{round_id}/retry")
async def retry_round(
    *,
    round_id: int,
    body: RetryIn | None = None,
    _p: Annotated[Principal, Depends(_operator)],
    state: StateDep,
) -> RoundOut:
    """Clear a ``failed`` round again (operator): with its rule, or another one.

    Answers the round afterwards: ``cleared``, or still ``failed`` with the new reason. A
    round that is not ``failed`` answers 409; the clearing commits at most once whatever
    happens (the ``clearings`` primary key).
    """
    body = body or RetryIn()
    if body.rule is not None and body.rule not in available_rules():
        known = ", ".join(available_rules())
        raise ProblemError.field(
            422, "Unknown rule", "rule", f"not a registered rule ({known})", body.rule
        )
    async with state.db.read() as session:
        row = await session.get(Round, round_id)
    if row is None:
        raise ProblemError.field(404, "Not found", "round_id", "no such round", round_id)
    if row.status != FAILED:
        raise ProblemError.field(
            409, "Round not failed", "round_id", f"round is {row.status}, not failed", round_id
        )
    cleared = await clear_round(
        state.db,
        state.config,
        round_id,
        state.clock.now(),
        retry=True,
        rule=body.rule,
        rule_params=body.rule_params,
    )
    async with state.db.read() as session:
        row = await session.get(Round, round_id)
    assert row is not None  # noqa: S101 - rounds are never deleted
    if not cleared and row.status != FAILED:  # a concurrent retry cleared it first
        raise ProblemError.field(
            409, "Round not failed", "round_id", f"round is {row.status}, not failed", round_id
        )
    return _round_out(row)


@router.post("/scheduler/tick")
async def tick(
    *, _p: Annotated[Principal, Depends(_operator)], state: StateDep
) -> dict[str, object]:
    """Run the scheduler once now (the background loop does this every few seconds)."""
    report: TickReport = await state.scheduler.tick()
    return {
        "opened": report.opened,
        "cleared": report.cleared,
        "settled": report.settled,
        "stale_alerts": report.stale_alerts,
    }


@router.post("/flex-requests", status_code=201)
async def post_request(
    *,
    body: MarketFlexRequest,
    response: Response,
    principal: Annotated[Principal, Depends(_dso)],
    state: StateDep,
) -> FlexRequestAck:
    """Publish a flexibility request for an open round (idempotent by ``request_id``)."""
    check_wire(body)
    accepted = await accept_request(state.db, state.config, principal, body, state.clock.now())
    if not accepted.created:
        response.headers[REPLAYED] = "true"
    row = accepted.row
    return FlexRequestAck(
        request_id=row.request_id,
        round_id=row.round_id,
        accepted_at=row.created_at,
        request=row.body,
    )


@router.get("/flex-requests")
async def list_requests(
    *,
    round_id: int | None = None,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER, Role.DSO, Role.OPERATOR))],
    state: StateDep,
) -> list[FlexRequestAck]:
    """Requests (all for prosumers, who bid against them, and the operator; own for a DSO)."""
    query = select(FlexRequest).order_by(FlexRequest.pk)
    if round_id is not None:
        query = query.where(FlexRequest.round_id == round_id)
    if principal.role == Role.DSO:
        query = query.where(FlexRequest.participant_id == principal.id)
    async with state.db.read() as session:
        return [
            FlexRequestAck(
                request_id=r.request_id,
                round_id=r.round_id,
                accepted_at=r.created_at,
                request=r.body,
            )
            for r in await session.scalars(query)
        ]


@router.get("/bids")
async def list_bids(
    *,
    round_id: int | None = None,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER, Role.OPERATOR))],
    state: StateDep,
) -> list[BidAck]:
    """Every stored bid version (own for a prosumer, all for the operator)."""
    query = select(Bid).order_by(Bid.pk)
    if round_id is not None:
        query = query.where(Bid.round_id == round_id)
    if principal.role == Role.PROSUMER:
        query = query.where(Bid.participant_id == principal.id)
    async with state.db.read() as session:
        return [bid_ack(r) for r in await session.scalars(query)]


@router.get("/bids/{bid_id}")
async def get_bid(
    *,
    bid_id: Ident,
    principal: Annotated[Principal, Depends(_prosumer)],
    state: StateDep,
) -> BidAck:
    """The latest version of one of your bids; another's bid answers 404."""
    async with state.db.read() as session:
        row = await session.scalar(
            select(Bid)
            .where(Bid.participant_id == principal.id, Bid.bid_id == bid_id)
            .order_by(Bid.version.desc())
            .limit(1)
        )
    if row is None:
        raise ProblemError.field(404, "Not found", "bid_id", "no such bid of yours", bid_id)
    return bid_ack(row)


def award_query(principal: Principal, round_id: int | None, after: int | None):
    """Awards visible to ``principal``: own as seller (prosumer) or buyer (DSO); all else."""
    query = select(Award).order_by(Award.pk)
    if round_id is not None:
        query = query.where(Award.round_id == round_id)
    if after is not None:
        query = query.where(Award.pk > after)
    if principal.role == Role.PROSUMER:
        query = query.where(Award.participant_id == principal.id)
    elif principal.role == Role.DSO:
        query = query.where(Award.buyer_id == principal.id)
    return query


@router.get("/aggregates")
async def aggregates(
    *,
    limit: int = 96,
    _p: Annotated[Principal, Depends(require(Role.OBSERVER, Role.OPERATOR, Role.DSO))],
    state: StateDep,
) -> list[AggregateOut]:
    """Anonymised per-round figures (counts and cleared volume; no ids), newest first."""
    _bid_key = Bid.participant_id + "/" + Bid.bid_id
    async with state.db.read() as session:
        rounds = (
            await session.scalars(
                select(Round).order_by(Round.slot_start.desc()).limit(max(1, min(limit, 1000)))
            )
        ).all()
        ids = [r.id for r in rounds]
        bids = await _count_by_round(session, Bid.round_id, func.distinct(_bid_key), ids)
        bidders = await _count_by_round(
            session, Bid.round_id, func.distinct(Bid.participant_id), ids
        )
        requests = await _count_by_round(session, FlexRequest.round_id, FlexRequest.pk, ids)
        clearings = {
            c.round_id: c
            for c in await session.scalars(select(Clearing).where(Clearing.round_id.in_(ids)))
        }
    out = []
    for r in rounds:
        clearing = clearings.get(r.id)
        awards = clearing.result.get("awards", []) if clearing else []
        out.append(
            AggregateOut(
                round_id=r.id,
                slot_start=r.slot_start,
                status=r.status,
                n_bids=bids.get(r.id, 0),
                n_bidders=bidders.get(r.id, 0),
                n_requests=requests.get(r.id, 0),
                n_awards=len(awards),
                awarded_kw=sum(a["p_kw"] for a in awards) if clearing else None,
            )
        )
    return out


async def _count_by_round(
    session: AsyncSession, round_col: Any, counted: Any, ids: list[int]
) -> dict[int, int]:
    """``round id -> count(counted)`` over rows whose ``round_col`` is in ``ids``."""
    rows = await session.execute(
        select(round_col, func.count(counted)).where(round_col.in_(ids)).group_by(round_col)
    )
    return {int(round_id): int(n) for round_id, n in rows}
