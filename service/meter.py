"""Meter and voltage readings, and the alerts raised when they arrive.

Readings are idempotent by ``(asset, slot)`` / ``(bus, slot)``: the same body again returns
the stored reading, a different one is a conflict (409; corrections go through the operator).
A reading beyond the asset's rating x ``implausible_factor`` is stored (it is what the meter
said) and raises an ``implausible_reading`` alert; a voltage outside the configured band
raises a ``voltage`` alert.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import Principal
from service.config import ServiceConfig
from service.db import Database
from service.idempotency import Accepted, body_hash, replay_or_conflict
from service.models import Alert, Asset, MeterReading, VoltageReading
from service.problems import ProblemError
from service.schemas import MeterReadingIn, VoltageReadingIn
from service.slots import floor_slot

__all__ = ["accept_meter_reading", "accept_voltage_reading", "add_alert", "check_slot"]


async def add_alert(
    session: AsyncSession,
    *,
    kind: str,
    subject: str,
    slot_start: datetime,
    detail: str,
    participant_id: str | None,
    now: datetime,
) -> bool:
    """Raise an alert once per ``(kind, subject, slot)``; return whether it is new."""
    exists = await session.scalar(
        select(Alert.pk).where(
            Alert.kind == kind, Alert.subject == subject, Alert.slot_start == slot_start
        )
    )
    if exists is not None:
        return False
    session.add(
        Alert(
            participant_id=participant_id,
            kind=kind,
            subject=subject,
            slot_start=slot_start,
            detail=detail,
            created_at=now,
        )
    )
    return True


def check_slot(t_start: datetime, config: ServiceConfig, now: datetime | None) -> None:
    """``t_start`` must start a slot; with ``now``, that slot must have ended.

    Raises:
        ProblemError: 422 naming ``t_start``.
    """
    if floor_slot(t_start, config.slot) != t_start:
        raise ProblemError.field(
            422,
            "Not on market slots",
            "t_start",
            f"must start a {config.slot_minutes}-minute slot",
            t_start.isoformat(),
        )
    if now is not None and t_start + config.slot > now:
        raise ProblemError.field(
            422,
            "Reading from the future",
            "t_start",
            f"the slot has not ended yet (now {now.isoformat()})",
            t_start.isoformat(),
        )


async def accept_meter_reading(
    db: Database,
    config: ServiceConfig,
    principal: Principal,
    reading: MeterReadingIn,
    now: datetime,
) -> Accepted:
    """Store a prosumer's meter reading for its own asset.

    Raises:
        ProblemError: 404 unknown/foreign asset, 409 conflicting replay, 422 bad slot.
    """
    check_slot(reading.t_start, config, now)
    digest = body_hash(reading.model_dump(mode="json"))
    try:
        async with db.write() as session:
            asset = await session.get(Asset, reading.asset_id)
            if asset is None or asset.participant_id != principal.id:
                raise ProblemError.field(
                    404,
                    "Unknown asset",
                    "asset_id",
                    "no such asset registered to you",
                    reading.asset_id,
                )
            existing = await session.scalar(
                select(MeterReading).where(
                    MeterReading.asset_id == asset.id,
                    MeterReading.slot_start == reading.t_start,
                )
            )
            replay = replay_or_conflict(
                existing,
                digest,
                lambda: ProblemError.field(
                    409,
                    "Reading exists",
                    "t_start",
                    "a different reading for this slot is stored",
                    reading.t_start.isoformat(),
                ),
            )
            if replay is not None:
                return replay
            row = MeterReading(
                participant_id=principal.id,
                asset_id=asset.id,
                slot_start=reading.t_start,
                p_kw=reading.p_kw,
                body_hash=digest,
                received_at=now,
            )
            session.add(row)
            limit = asset.p_max_kw * config.implausible_factor
            worst = abs(reading.p_kw)
            if worst > limit:
                await add_alert(
                    session,
                    kind="implausible_reading",
                    subject=asset.id,
                    slot_start=reading.t_start,
                    participant_id=principal.id,
                    now=now,
                    detail=f"|p_kw| {worst} exceeds rating {asset.p_max_kw} kW x "
                    f"{config.implausible_factor}",
                )
            await session.flush()
            return Accepted(row, created=True)
    except IntegrityError as exc:
        raise ProblemError.field(
            409, "Reading exists", "t_start", "stored concurrently", reading.t_start.isoformat()
        ) from exc


async def accept_voltage_reading(
    db: Database,
    config: ServiceConfig,
    principal: Principal,
    reading: VoltageReadingIn,
    now: datetime,
) -> Accepted:
    """Store a DSO's voltage reading; alert if it is outside the configured band.

    Raises:
        ProblemError: 409 conflicting replay, 422 bad slot.
    """
    check_slot(reading.t_start, config, now)
    digest = body_hash(reading.model_dump(mode="json"))
    try:
        async with db.write() as session:
            existing = await session.scalar(
                select(VoltageReading).where(
                    VoltageReading.bus == reading.bus,
                    VoltageReading.slot_start == reading.t_start,
                )
            )
            replay = replay_or_conflict(
                existing,
                digest,
                lambda: ProblemError.field(
                    409,
                    "Reading exists",
                    "t_start",
                    "a different voltage for this bus and slot is stored",
                    reading.t_start.isoformat(),
                ),
            )
            if replay is not None:
                return replay
            row = VoltageReading(
                participant_id=principal.id,
                bus=reading.bus,
                slot_start=reading.t_start,
                vm_pu=reading.vm_pu,
                body_hash=digest,
                received_at=now,
            )
            session.add(row)
            if not config.vm_min_pu <= reading.vm_pu <= config.vm_max_pu:
                await add_alert(
                    session,
                    kind="voltage",
                    subject=f"bus-{reading.bus}",
                    slot_start=reading.t_start,
                    participant_id=principal.id,
                    now=now,
                    detail=f"vm_pu {reading.vm_pu} outside "
                    f"[{config.vm_min_pu}, {config.vm_max_pu}] at bus {reading.bus}",
                )
            await session.flush()
            return Accepted(row, created=True)
    except IntegrityError as exc:
        raise ProblemError.field(
            409, "Reading exists", "t_start", "stored concurrently", reading.t_start.isoformat()
        ) from exc
