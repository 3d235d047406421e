"""Awards (poll or server-sent events), settlements and alerts, each scoped to the caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select

from service.auth import Principal, Role, require
from service.models import Alert, Award, SettlementLine
from service.routes.market import award_query
from service.schemas import AlertOut, AwardOut, SettlementOut
from service.state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["reports"])
_parties = require(Role.PROSUMER, Role.DSO, Role.OPERATOR)


def _award_out(row: Award) -> AwardOut:
    return AwardOut(
        id=row.pk,
        round_id=row.round_id,
        bid_id=row.bid_id,
        asset_id=row.asset_id,
        participant_id=row.participant_id,
        buyer_id=row.buyer_id,
        award=row.body,
    )


@router.get("/awards")
async def list_awards(
    *,
    round_id: int | None = None,
    after: int | None = None,
    principal: Annotated[Principal, Depends(_parties)],
    state: StateDep,
) -> list[AwardOut]:
    """Awards: a prosumer's own, a DSO's as buyer, all for the operator."""
    async with state.db.read() as session:
        return [
            _award_out(r) for r in await session.scalars(award_query(principal, round_id, after))
        ]


@router.get("/awards/stream", response_class=StreamingResponse)
async def stream_awards(
    *,
    request: Request,
    after: int = 0,
    principal: Annotated[Principal, Depends(_parties)],
    state: StateDep,
) -> StreamingResponse:
    """Server-sent events: one ``award`` event per new visible award (``id`` = cursor).

    Reconnect with ``?after=<last id>`` (or ``Last-Event-ID``) to resume without gaps.
    """
    last_event = request.headers.get("last-event-id", "")
    cursor = int(last_event) if last_event.isdigit() else after

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        yield b": connected\n\n"
        while not await request.is_disconnected():
            async with state.db.read() as session:
                rows = (await session.scalars(award_query(principal, None, cursor))).all()
            for row in rows:
                cursor = row.pk
                data = json.dumps(_award_out(row).model_dump(mode="json"))
                yield f"id: {row.pk}\nevent: award\ndata: {data}\n\n".encode()
            await asyncio.sleep(state.config.tick_seconds)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


@router.get("/settlements")
async def list_settlements(
    *,
    round_id: int | None = None,
    principal: Annotated[Principal, Depends(_parties)],
    state: StateDep,
) -> list[SettlementOut]:
    """Settlement lines: a prosumer's as seller, a DSO's as buyer, all for the operator."""
    query = select(SettlementLine).order_by(SettlementLine.pk)
    if round_id is not None:
        query = query.where(SettlementLine.round_id == round_id)
    if principal.role == Role.PROSUMER:
        query = query.where(SettlementLine.participant_id == principal.id)
    elif principal.role == Role.DSO:
        query = query.where(SettlementLine.buyer_id == principal.id)
    async with state.db.read() as session:
        return [
            SettlementOut(round_id=r.round_id, participant_id=r.participant_id, line=r.body)
            for r in await session.scalars(query)
        ]


@router.get("/alerts")
async def list_alerts(
    *,
    kind: str | None = None,
    principal: Annotated[Principal, Depends(_parties)],
    state: StateDep,
) -> list[AlertOut]:
    """Alerts: a prosumer's own; a DSO's own and the unaddressed ones; all for the operator."""
    query = select(Alert).order_by(Alert.pk)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    if principal.role == Role.PROSUMER:
        query = query.where(Alert.participant_id == principal.id)
    elif principal.role == Role.DSO:
        query = query.where(
            or_(Alert.participant_id == principal.id, Alert.participant_id.is_(None))
        )
    async with state.db.read() as session:
        return [
            AlertOut(
                id=r.pk,
                kind=r.kind,
                subject=r.subject,
                participant_id=r.participant_id,
                t_start=r.slot_start,
                detail=r.detail,
                created_at=r.created_at,
            )
            for r in await session.scalars(query)
        ]
