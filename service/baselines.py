"""Baselines: each asset's planned power per slot, declared before gate closure.

Delivered flexibility is the deviation of the metered power from the baseline, so the
baseline must be fixed before anyone knows what will be awarded or metered. A prosumer
declares it per ``(asset, slot)`` while that slot's round is open, and may change it until
the gate closes (a changed body replaces the earlier one); from gate closure on it is frozen:
the same body again still answers with the stored baseline (a replay), any other answers
409 naming ``t_start``. Settlement uses the frozen value (:mod:`service.settle`); an award
on an asset without a declared baseline counts as not delivered.

The write holds the round row like a bid does (``SELECT ... FOR SHARE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), so a declaration either commits before the gate or is
refused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.auth import Principal
from service.bids import open_round
from service.config import ServiceConfig
from service.db import Database
from service.idempotency import Accepted, body_hash
from service.meter import check_slot
from service.models import Asset, Baseline
from service.problems import ProblemError
from service.schemas import BaselineIn

__all__ = ["accept_baseline"]

_RETRIES = 3


async def accept_baseline(
    db: Database, config: ServiceConfig, principal: Principal, body: BaselineIn, now: datetime
) -> Accepted:
    """Store (or replace, before gate closure) an asset's baseline for one slot.

    Raises:
        ProblemError: 404 unknown/foreign asset, 409 gate closed (a changed baseline after
            gate closure), 422 off-slot or no open round, or beyond the asset's rating.
    """
    check_slot(body.t_start, config, None)
    digest = body_hash(body.model_dump(mode="json"))
    for attempt in range(_RETRIES):
        try:
            async with db.write() as session:
                asset = await session.get(Asset, body.asset_id)
                if asset is None or asset.participant_id != principal.id:
                    raise ProblemError.field(
                        404,
                        "Unknown asset",
                        "asset_id",
                        "no such asset registered to you",
                        body.asset_id,
                    )
                limit = asset.p_max_kw * config.implausible_factor
                if abs(body.p_kw) > limit:
                    raise ProblemError.field(
                        422,
                        "Invalid baseline",
                        "p_kw",
                        f"beyond the asset's rating of {asset.p_max_kw} kW "
                        f"(x {config.implausible_factor})",
                        body.p_kw,
                    )
                existing = await session.scalar(
                    select(Baseline).where(
                        Baseline.asset_id == asset.id, Baseline.slot_start == body.t_start
                    )
                )
                if existing is not None and existing.body_hash == digest:
                    return Accepted(existing, created=False)  # a replay, even after the gate
                # A new or changed baseline needs the round still open (409 after the gate).
                rnd = await open_round(session, body.t_start, now, "baseline")
                if existing is None:
                    existing = Baseline(
                        participant_id=principal.id,
                        asset_id=asset.id,
                        slot_start=body.t_start,
                        round_id=rnd.id,
                    )
                    session.add(existing)
                existing.p_kw = body.p_kw
                existing.body_hash = digest
                existing.declared_at = now
                await session.flush()
                return Accepted(existing, created=True)
        except IntegrityError:  # declared concurrently: look again
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
