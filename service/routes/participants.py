"""Participants: who am I (everyone), admit / list / revoke (operator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from service.auth import Principal, Role, authenticate, require
from service.models import Participant
from service.participants import create_participant, revoke_participant
from service.problems import ProblemError
from service.schemas import Ident, ParticipantCreated, ParticipantIn, ParticipantOut
from service.state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["participants"])
_operator = require(Role.OPERATOR)


def _out(row: Participant) -> ParticipantOut:
    return ParticipantOut(
        id=row.id, role=Role(row.role), created_at=row.created_at, revoked_at=row.revoked_at
    )


@router.get("/me")
async def me(
    *, principal: Annotated[Principal, Depends(authenticate)], state: StateDep
) -> ParticipantOut:
    """The calling participant."""
    async with state.db.read() as session:
        row = await session.get(Participant, principal.id)
    if row is None:  # pragma: no cover - authenticate just found it
        raise ProblemError(401, "Unauthorized", "participant vanished")
    return _out(row)


@router.post("/participants", status_code=201, response_model=ParticipantCreated)
async def admit(
    *,
    body: ParticipantIn,
    _p: Annotated[Principal, Depends(_operator)],
    state: StateDep,
) -> ParticipantCreated:
    """Admit a participant; the answer carries its API key, shown this once only."""
    row, key = await create_participant(state.db, body.id, body.role, state.clock.now())
    return ParticipantCreated(**_out(row).model_dump(), api_key=key)


@router.get("/participants")
async def list_participants(
    *, _p: Annotated[Principal, Depends(_operator)], state: StateDep
) -> list[ParticipantOut]:
    """All participants (never their keys)."""
    async with state.db.read() as session:
        rows = await session.scalars(select(Participant).order_by(Participant.id))
        return [_out(r) for r in rows]


@router.post("/participants/{participant_id}/revoke")
async def revoke(
    *,
    participant_id: Ident,
    _p: Annotated[Principal, Depends(_operator)],
    state: StateDep,
) -> ParticipantOut:
    """Revoke a participant's key: its requests answer 401 from now on."""
    row = await revoke_participant(state.db, participant_id, state.clock.now())
    state.key_cache.clear()
    return _out(row)
