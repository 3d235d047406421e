"""Meter readings (prosumers, own assets) and grid voltages (DSO)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from service.auth import Principal, Role, require
from service.meter import accept_meter_reading, accept_voltage_reading
from service.models import MeterReading, VoltageReading
from service.problems import check_wire
from service.routes.bid_intake import REPLAYED
from service.schemas import (
    Ident,
    MeterReadingIn,
    MeterReadingOut,
    VoltageReadingIn,
    VoltageReadingOut,
)
from service.state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["metering"])


def _meter_out(row: MeterReading) -> MeterReadingOut:
    return MeterReadingOut(
        asset_id=row.asset_id,
        t_start=row.slot_start,
        p_kw=row.p_kw,
        received_at=row.received_at,
    )


def _voltage_out(row: VoltageReading) -> VoltageReadingOut:
    return VoltageReadingOut(
        bus=row.bus, t_start=row.slot_start, vm_pu=row.vm_pu, received_at=row.received_at
    )


@router.post("/meter-readings", status_code=201)
async def post_reading(
    *,
    body: MeterReadingIn,
    response: Response,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER))],
    state: StateDep,
) -> MeterReadingOut:
    """Report one of your assets' mean power over a past slot (its baseline was declared
    before gate closure, see ``POST /v1/baselines``)."""
    check_wire(body)
    accepted = await accept_meter_reading(
        state.db, state.config, principal, body, state.clock.now()
    )
    if not accepted.created:
        response.headers[REPLAYED] = "true"
    return _meter_out(accepted.row)


@router.get("/meter-readings")
async def list_readings(
    *,
    asset_id: Ident | None = None,
    principal: Annotated[Principal, Depends(require(Role.PROSUMER, Role.OPERATOR))],
    state: StateDep,
) -> list[MeterReadingOut]:
    """Meter readings: a prosumer's own, all for the operator."""
    query = select(MeterReading).order_by(MeterReading.pk)
    if asset_id is not None:
        query = query.where(MeterReading.asset_id == asset_id)
    if principal.role == Role.PROSUMER:
        query = query.where(MeterReading.participant_id == principal.id)
    async with state.db.read() as session:
        return [_meter_out(r) for r in await session.scalars(query)]


@router.post("/grid/voltages", status_code=201)
async def post_voltage(
    *,
    body: VoltageReadingIn,
    response: Response,
    principal: Annotated[Principal, Depends(require(Role.DSO))],
    state: StateDep,
) -> VoltageReadingOut:
    """Report a measured bus voltage over a past slot; out-of-band values raise an alert."""
    check_wire(body)
    accepted = await accept_voltage_reading(
        state.db, state.config, principal, body, state.clock.now()
    )
    if not accepted.created:
        response.headers[REPLAYED] = "true"
    return _voltage_out(accepted.row)


@router.get("/grid/voltages")
async def list_voltages(
    *,
    _p: Annotated[Principal, Depends(require(Role.DSO, Role.OPERATOR))],
    state: StateDep,
) -> list[VoltageReadingOut]:
    """Measured voltages (grid data for the DSO and the operator)."""
    async with state.db.read() as session:
        rows = await session.scalars(select(VoltageReading).order_by(VoltageReading.pk))
        return [_voltage_out(r) for r in rows]
