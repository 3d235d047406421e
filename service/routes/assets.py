"""Assets: prosumers register and read their own; the DSO and operator read all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.auth import Principal, Role, require
from service.models import Asset
from service.problems import ProblemError
from service.schemas import AssetIn, AssetOut, Ident
from service.state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["assets"])
_prosumer = require(Role.PROSUMER)
_readers = require(Role.PROSUMER, Role.DSO, Role.OPERATOR)


def _out(row: Asset) -> AssetOut:
    return AssetOut(
        asset_id=row.id,
        participant_id=row.participant_id,
        bus=row.bus,
        kind=row.kind,
        p_max_kw=row.p_max_kw,
    )


def _taken(asset_id: str) -> ProblemError:
    return ProblemError.field(
        409, "Asset id taken", "asset_id", "already registered with other details", asset_id
    )


@router.post("/assets", status_code=201)
async def register(
    *,
    body: AssetIn,
    response: Response,
    principal: Annotated[Principal, Depends(_prosumer)],
    state: StateDep,
) -> AssetOut:
    """Register an asset (idempotent: the same body again returns the same asset)."""
    try:
        async with state.db.write() as session:
            row = await session.get(Asset, body.asset_id)
            if row is not None:
                same = (row.participant_id, row.bus, row.kind, row.p_max_kw) == (
                    principal.id,
                    body.bus,
                    body.kind,
                    body.p_max_kw,
                )
                if not same:
                    raise _taken(body.asset_id)
                response.headers["Idempotent-Replayed"] = "true"
                return _out(row)
            row = Asset(
                id=body.asset_id,
                participant_id=principal.id,
                bus=body.bus,
                kind=body.kind,
                p_max_kw=body.p_max_kw,
                created_at=state.clock.now(),
            )
            session.add(row)
    except IntegrityError as exc:
        raise _taken(body.asset_id) from exc
    return _out(row)


@router.get("/assets")
async def list_assets(
    *, principal: Annotated[Principal, Depends(_readers)], state: StateDep
) -> list[AssetOut]:
    """A prosumer's own assets; all assets for the DSO and the operator."""
    query = select(Asset).order_by(Asset.id)
    if principal.role == Role.PROSUMER:
        query = query.where(Asset.participant_id == principal.id)
    async with state.db.read() as session:
        return [_out(r) for r in await session.scalars(query)]


@router.get("/assets/{asset_id}")
async def get_asset(
    *,
    asset_id: Ident,
    principal: Annotated[Principal, Depends(_readers)],
    state: StateDep,
) -> AssetOut:
    """One asset; another prosumer's asset answers 404, as if it did not exist."""
    async with state.db.read() as session:
        row = await session.get(Asset, asset_id)
    if row is None or (principal.role == Role.PROSUMER and row.participant_id != principal.id):
        raise ProblemError.field(404, "Not found", "asset_id", "no such asset", asset_id)
    return _out(row)
