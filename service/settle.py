"""Settlement of cleared rounds, and the alerts that delivery and metering raise.

A cleared round is settled once its slot has ended plus ``settle_after_minutes`` (time for
the meters to report). Each award is settled by the market's settlement against the asset's
metered power and the baseline its owner declared before gate closure
(:mod:`service.baselines`); an asset with no reading, or with no declared baseline, counts
as not having delivered. ``settlement_runs.round_id`` makes a second
settlement impossible. Alerts: ``non_delivery`` for an award settled ``under`` (or unmetered),
``stale_meter`` when an asset has sent no reading for ``stale_meter_slots`` slots.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from market import Award as MarketAward
from market import MeterReading as MarketMeterReading
from service.config import ServiceConfig
from service.db import Database
from service.market_ops import run_settlement
from service.meter import add_alert
from service.models import (
    Asset,
    Award,
    Baseline,
    MeterReading,
    Round,
    SettlementLine,
    SettlementRun,
)
from service.rounds import CLEARED, SETTLED, SETTLEMENT_FAILED
from service.slots import floor_slot

__all__ = ["check_stale_meters", "due_for_settlement", "settle_round"]

log = logging.getLogger(__name__)


async def due_for_settlement(db: Database, config: ServiceConfig, now: datetime) -> list[int]:
    """Ids of cleared rounds whose slot ended at least ``settle_after_minutes`` ago."""
    cutoff = now - timedelta(minutes=config.settle_after_minutes)
    async with db.read() as session:
        rows = await session.scalars(
            select(Round.id)
            .where(Round.status == CLEARED, Round.slot_end <= cutoff)
            .order_by(Round.slot_start)
        )
        return list(rows)


async def settle_round(db: Database, config: ServiceConfig, round_id: int, now: datetime) -> bool:
    """Settle one cleared round exactly once; return whether this call settled it."""
    try:
        async with db.write() as session:
            rnd = await session.scalar(select(Round).where(Round.id == round_id).with_for_update())
            if rnd is None or rnd.status != CLEARED:
                return False
            award_rows = (
                await session.scalars(
                    select(Award).where(Award.round_id == round_id).order_by(Award.seq)
                )
            ).all()
            awards = [MarketAward.model_validate(a.body) for a in award_rows]
            assets = sorted({a.asset_id for a in awards})
            readings = {
                r.asset_id: r
                for r in await session.scalars(
                    select(MeterReading).where(
                        MeterReading.asset_id.in_(assets),
                        MeterReading.slot_start == rnd.slot_start,
                    )
                )
            }
            baselines = {
                b.asset_id: b.p_kw
                for b in await session.scalars(
                    select(Baseline).where(
                        Baseline.asset_id.in_(assets), Baseline.slot_start == rnd.slot_start
                    )
                )
            }
            metered = [
                MarketMeterReading(
                    asset_id=asset_id,
                    t_start=rnd.slot_start,
                    t_end=rnd.slot_end,
                    metered_p_kw=r.p_kw,
                    baseline_p_kw=baselines[asset_id],
                )
                for asset_id, r in readings.items()
                if asset_id in baselines
            ]
            try:
                report = run_settlement(awards, metered, config)
            except Exception as exc:  # a failing settlement must not stop the scheduler
                log.exception("settling round %s failed", round_id)
                rnd.status = SETTLEMENT_FAILED
                await add_alert(
                    session,
                    kind="settlement_failed",
                    subject=f"round-{round_id}",
                    slot_start=rnd.slot_start,
                    participant_id=None,
                    now=now,
                    detail=f"{type(exc).__name__}: {exc}"[:2000],
                )
                return False
            session.add(SettlementRun(round_id=round_id, settled_at=now))
            await session.flush()
            for seq, line in enumerate(report.lines):
                session.add(
                    SettlementLine(
                        round_id=round_id,
                        seq=seq,
                        participant_id=line.seller_id,
                        buyer_id=line.buyer_id,
                        body=line.model_dump(mode="json"),
                    )
                )
                if line.asset_id not in readings:
                    reason = "no meter reading"
                elif line.asset_id not in baselines:
                    reason = "no baseline declared before gate closure"
                elif line.flag == "under":
                    reason = f"delivered {line.delivered_p_kw:.3f} of {line.awarded_p_kw:.3f} kW"
                else:
                    reason = ""
                if reason:
                    await add_alert(
                        session,
                        kind="non_delivery",
                        subject=f"{line.seller_id}/{line.bid_id}",
                        slot_start=rnd.slot_start,
                        participant_id=line.seller_id,
                        now=now,
                        detail=f"award for bid {line.bid_id} on asset {line.asset_id}: {reason}",
                    )
            rnd.status = SETTLED
    except IntegrityError:
        log.info("round %s was settled by someone else", round_id)
        return False
    return True


async def check_stale_meters(db: Database, config: ServiceConfig, now: datetime) -> int:
    """Alert once per episode for assets without a reading for ``stale_meter_slots`` slots.

    The last complete slot is the one before the current; an asset is stale when the slots
    since its last reading (or since it was registered) reach the threshold. The alert's
    slot is the first slot of the gap plus the threshold, so an episode alerts once.

    Returns:
        How many new alerts were raised.
    """
    last_complete = floor_slot(now, config.slot) - config.slot
    async with db.read() as session:
        rows = (
            await session.execute(
                select(
                    Asset.id,
                    Asset.participant_id,
                    Asset.created_at,
                    func.max(MeterReading.slot_start),
                )
                .outerjoin(MeterReading, MeterReading.asset_id == Asset.id)
                .group_by(Asset.id, Asset.participant_id, Asset.created_at)
            )
        ).all()
    stale: list[tuple[str, str, datetime, datetime | None]] = []
    for asset_id, owner, created_at, last in rows:
        first_expected = (
            last + config.slot
            if last is not None
            else (floor_slot(created_at, config.slot) + config.slot)
        )
        alert_slot = first_expected + (config.stale_meter_slots - 1) * config.slot
        if alert_slot <= last_complete:
            stale.append((asset_id, owner, alert_slot, last))
    if not stale:
        return 0
    raised = 0
    try:
        async with db.write() as session:
            for asset_id, owner, alert_slot, last in stale:
                since = last.isoformat() if last is not None else "never"
                raised += await add_alert(
                    session,
                    kind="stale_meter",
                    subject=asset_id,
                    slot_start=alert_slot,
                    participant_id=owner,
                    now=now,
                    detail=f"no reading for {config.stale_meter_slots} slots (last: {since})",
                )
    except IntegrityError:  # another worker raised them first (the unique key holds)
        log.info("stale-meter alerts raised concurrently by another process")
        return 0
    return raised
