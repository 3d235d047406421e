"""Baselines: prosumers declare each asset's plan per slot before gate closure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from service.auth import Principal, Role, require
from service.baselines import accept_baseline
from service.models import Baseline
from service.routes.bid_intake import REPLAYED
from service.schemas import BaselineIn, BaselineOut, Ident
from service.state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["metering"])


def _out(row: Baseline) -> BaselineOut:
    return BaselineOut(
        asset_id=row.asset_id,
        t_start=row.slot_start,
        p_kw=row.p_kw,
        round_id=row.round_id,
        declared_at=row.declared_at,
    )


@router.post("/baselines", status_code=201)
async def post_baseline(
    *,
    body: BaselineIn,
    response: Response,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER))],
    state: StateDep,
) -> BaselineOut:
    """Declare one of your assets' planned mean power over a slot whose round is open.

    A changed declaration replaces the earlier one until gate closure; after it the
    baseline is frozen (the same body answers again, another answers 409). Awards on the
    asset are settled against it; without one they count as not delivered.
    """
    accepted = await accept_baseline(state.db, state.config, principal, body, state.clock.now())
    if not accepted.created:
        response.headers[REPLAYED] = "true"
    return _out(accepted.row)


@router.get("/baselines")
async def list_baselines(
    *,
    asset_id: Ident | None = None,
    round_id: int | None = None,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER, Role.DSO, Role.OPERATOR))],
    state: StateDep,
) -> list[BaselineOut]:
    """Declared baselines: a prosumer's own; all for the DSO (grid planning) and operator."""
    query = select(Baseline).order_by(Baseline.pk)
    if asset_id is not None:
        query = query.where(Baseline.asset_id == asset_id)
    if round_id is not None:
        query = query.where(Baseline.round_id == round_id)
    if principal.role == Role.PROSUMER:
        query = query.where(Baseline.participant_id == principal.id)
    async with state.db.read() as session:
        return [_out(r) for r in await session.scalars(query)]
