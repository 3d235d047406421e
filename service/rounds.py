"""Market rounds: opening one per slot, and clearing each exactly once.

A round for slot ``[s, s + slot)`` opens ``open_ahead_slots`` ahead and closes at
``s - gate_lead``. Clearing runs in one transaction that locks the round row, reads every
request and the latest version of every bid (in chunks, so a large round does not hold up
the bids arriving meanwhile), calls the market rule, and writes the
``clearings`` row (primary key ``round_id``), the awards and the new status together (the
rule itself runs in a worker thread, so the API keeps answering meanwhile): a
crash before the commit leaves the round open to be cleared after restart; a crash after
leaves it cleared. A second clearing cannot commit.

If the rule raises, the round is marked ``failed`` with the reason (``rounds.failure``, and a
``clearing_failed`` alert) and the scheduler leaves it alone; the operator can retry it
(``POST /v1/rounds/{id}/retry``, optionally with another rule or parameters), which runs
the same clearing transaction on the failed round, so it too commits at most once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from market import Bid as MarketBid
from market import ClearingResult
from market import FlexRequest as MarketFlexRequest
from service import failpoints
from service.clearing_process import clear_in_child
from service.config import ServiceConfig
from service.db import Database
from service.market_ops import run_clearing
from service.meter import add_alert
from service.models import Award, Bid, Clearing, FlexRequest, Round
from service.slots import floor_slot

__all__ = ["FAILED", "OPEN", "clear_round", "due_for_clearing", "ensure_rounds"]

log = logging.getLogger(__name__)

OPEN, CLEARED, SETTLED = "open", "cleared", "settled"
FAILED, SETTLEMENT_FAILED = "failed", "settlement_failed"


async def ensure_rounds(db: Database, config: ServiceConfig, now: datetime) -> int:
    """Open the rounds of the next ``open_ahead_slots`` slots whose gate is still ahead.

    Safe to call concurrently or after a restart: ``rounds.slot_start`` is unique.

    Returns:
        How many rounds were opened.
    """
    first = floor_slot(now, config.slot) + config.slot
    wanted = [first + i * config.slot for i in range(config.open_ahead_slots)]
    wanted = [s for s in wanted if s - config.gate_lead > now]
    async with db.read() as session:
        have = set(
            await session.scalars(select(Round.slot_start).where(Round.slot_start.in_(wanted)))
        )
    opened = 0
    for slot_start in wanted:
        if slot_start in have:
            continue
        try:
            async with db.write() as session:
                session.add(
                    Round(
                        slot_start=slot_start,
                        slot_end=slot_start + config.slot,
                        gate_closure=slot_start - config.gate_lead,
                        rule=config.rule,
                        status=OPEN,
                        opened_at=now,
                    )
                )
            opened += 1
        except IntegrityError:
            log.debug("round for %s already opened elsewhere", slot_start)
    return opened


async def due_for_clearing(db: Database, now: datetime) -> list[int]:
    """Ids of open rounds whose gate has closed, oldest first."""
    async with db.read() as session:
        rows = await session.scalars(
            select(Round.id)
            .where(Round.status == OPEN, Round.gate_closure <= now)
            .order_by(Round.slot_start)
        )
        return list(rows)


_CHUNK = 2000
"""Bids read (and parsed, in-process) per step of :func:`_clear` (a few ms of work each)."""
CHILD_MIN_BIDS = 20_000
"""Rounds with at least this many stored bid versions are cleared in a child process."""


async def _bid_texts(session: AsyncSession, round_id: int) -> list[str]:
    """Every stored bid version of a round as its JSON text, read in chunks with the event
    loop free between them: a round can hold 10^5 bids (the load benchmark's hold more), and
    reading them as ORM rows in one go stopped this process, and every bid it was taking,
    for seconds."""
    texts: list[str] = []
    result = await session.stream(
        select(cast(Bid.body, Text))
        .where(Bid.round_id == round_id)
        .execution_options(yield_per=_CHUNK)
    )
    async for chunk in result.scalars().partitions():
        texts.extend(chunk)
        await asyncio.sleep(0)  # let the requests waiting meanwhile run
    return texts


async def _clear(
    rule: str, requests: list[MarketFlexRequest], texts: list[str], params: dict[str, Any]
) -> tuple[int, ClearingResult]:
    """Clear the latest version of every bid; returns (bids cleared, result).

    A small round is parsed here, in chunks, and cleared in a worker thread; a large one is
    handed to a child process as read (:mod:`service.clearing_process`): parsing and
    clearing it in this process would take the GIL from the event loop for seconds.
    """
    if len(texts) >= CHILD_MIN_BIDS:
        return await clear_in_child(rule, requests, texts, params)
    best: dict[tuple[str, str], MarketBid] = {}
    for start in range(0, len(texts), _CHUNK):
        for text in texts[start : start + _CHUNK]:
            bid = MarketBid.model_validate_json(text)
            key = (bid.seller_id, bid.bid_id)
            if key not in best or bid.version > best[key].version:
                best[key] = bid
        await asyncio.sleep(0)
    bids = list(best.values())  # run_clearing orders them
    return len(bids), await asyncio.to_thread(run_clearing, rule, requests, bids, params)


async def clear_round(
    db: Database,
    config: ServiceConfig,
    round_id: int,
    now: datetime,
    *,
    retry: bool = False,
    rule: str | None = None,
    rule_params: dict[str, Any] | None = None,
) -> bool:
    """Clear one round whose gate has closed, exactly once.

    Args:
        db, config, round_id, now: the round and the time.
        retry: clear a ``failed`` round (the operator's retry) instead of an ``open`` one.
        rule: the rule to use instead of the round's own (recorded on the round).
        rule_params: that rule's parameters; default the config's for the config's rule,
            none for another.

    Returns:
        ``True`` if this call cleared it, ``False`` if it was not due, already cleared, or
        the rule failed (the round is then ``failed``, with the reason).
    """
    expected = FAILED if retry else OPEN
    try:
        async with db.write() as session:
            rnd = await session.scalar(select(Round).where(Round.id == round_id).with_for_update())
            if rnd is None or rnd.status != expected or rnd.gate_closure > now:
                return False
            rule = rule or rnd.rule
            if rule_params is None:
                rule_params = config.rule_params if rule == config.rule else {}
            request_rows = (
                await session.scalars(
                    select(FlexRequest)
                    .where(FlexRequest.round_id == round_id)
                    .order_by(FlexRequest.pk)
                )
            ).all()
            requests = [MarketFlexRequest.model_validate(r.body) for r in request_rows]
            texts = await _bid_texts(session, round_id)
            try:
                n_bids, result = await _clear(rule, requests, texts, rule_params)
            except Exception as exc:  # a failing rule must not stop the scheduler
                log.exception("clearing round %s with rule %s failed", round_id, rule)
                rnd.status = FAILED
                rnd.failure = f"rule {rule}: {type(exc).__name__}: {exc}"[:2000]
                await add_alert(
                    session,
                    kind="clearing_failed",
                    subject=f"round-{round_id}",
                    slot_start=rnd.slot_start,
                    participant_id=None,
                    now=now,
                    detail=rnd.failure,
                )
                return False
            rnd.rule, rnd.failure = rule, None
            session.add(
                Clearing(
                    round_id=round_id,
                    rule=rule,
                    result=result.model_dump(mode="json"),
                    n_bids=n_bids,
                    n_requests=len(requests),
                    cleared_at=now,
                )
            )
            await session.flush()
            for seq, award in enumerate(result.awards):
                session.add(
                    Award(
                        round_id=round_id,
                        seq=seq,
                        participant_id=award.seller_id,
                        buyer_id=award.buyer_id,
                        bid_id=award.bid_id,
                        asset_id=award.asset_id,
                        body=award.model_dump(mode="json"),
                    )
                )
            rnd.status = CLEARED
            await session.flush()
            if n_bids:  # crash tests aim at a round that has something to lose
                failpoints.hit("before_clearing_commit")
    except IntegrityError:
        log.info("round %s was cleared by someone else", round_id)
        return False
    if n_bids:
        failpoints.hit("after_clearing_commit")
    log.info(
        "cleared round %s: %d bids, %d requests, %d awards",
        round_id,
        n_bids,
        len(requests),
        len(result.awards),
    )
    return True
