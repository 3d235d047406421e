"""A batch of bids on PostgreSQL in one guarded statement.

:func:`service.bids.store_bids` checks a batch with three queries and inserts it with a
fourth; with ``BEGIN`` and ``COMMIT`` that is six round trips, and under load each one waits
for its turn on a busy event loop. :func:`store_bids_pg` does the same in one statement
(three round trips with ``BEGIN`` and ``COMMIT``): it locks the batch's rounds for share,
reads every row the checks depend on, inserts the bids that pass them, and returns, per bid,
those rows and whether it was inserted.

The answers still come from :func:`service.bids.decide_bid`, on the rows the statement read,
so they are the same as on SQLite. The statement's guard is the acceptance condition of
``decide_bid`` written in SQL; before the commit each bid's answer is compared with what the
statement did, and if they ever differ the transaction is rolled back and
:class:`GuardMismatchError` raised (the batcher then stores each bid alone the general way).
So a bid is stored exactly when it is answered 201, and nothing is committed otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.bids import OwnedAsset, PreparedBid, StoredBid, decide_bid
from service.idempotency import Accepted
from service.problems import ProblemError
from service.rounds import OPEN

__all__ = ["GuardMismatchError", "store_bids_pg"]

log = logging.getLogger(__name__)

# $1..$10: the batch as aligned arrays; $11: now (naive UTC, as the tables store time);
# $12: the status of a round that takes bids.
# Every CTE is evaluated once (a CTE that is referenced twice or locks is materialised), so
# the insert and the answer see the same checked rows. Inserted rows are matched back by
# their unique key (participant, bid id, version), which no two bids of a batch share.
_SQL = """
WITH item AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
        $6::float8[], $7::float8[], $8::timestamp[], $9::text[], $10::text[]
    ) WITH ORDINALITY AS t(
        participant_id, bid_id, version, asset_id, bus,
        p_kw, q_kvar, t_start, body, body_hash, n
    )
),
rnd AS MATERIALIZED (
    SELECT id, slot_start, status, gate_closure FROM rounds
    WHERE slot_start = ANY($8::timestamp[])
    FOR SHARE
),
checked AS MATERIALIZED (
    SELECT
        item.*,
        p.revoked_at IS NOT NULL AS revoked,
        a.id AS a_id, a.bus AS a_bus, a.p_max_kw AS a_p_max_kw,
        r.id AS r_id, r.status AS r_status, r.gate_closure AS r_gate_closure,
        s.body_hash AS s_body_hash, s.round_id AS s_round_id, s.asset_id AS s_asset_id,
        s.body AS s_body, s.created_at AS s_created_at,
        l.version AS l_version, l.round_id AS l_round_id
    FROM item
    LEFT JOIN participants p ON p.id = item.participant_id
    LEFT JOIN assets a ON a.id = item.asset_id AND a.participant_id = item.participant_id
    LEFT JOIN rnd r ON r.slot_start = item.t_start
    LEFT JOIN bids s ON s.participant_id = item.participant_id
        AND s.bid_id = item.bid_id AND s.version = item.version
    LEFT JOIN LATERAL (
        SELECT b.version, b.round_id FROM bids b
        WHERE b.participant_id = item.participant_id AND b.bid_id = item.bid_id
        ORDER BY b.version DESC LIMIT 1
    ) l ON true
),
ins AS (
    INSERT INTO bids
        (participant_id, bid_id, version, round_id, asset_id, body, body_hash, created_at)
    SELECT participant_id, bid_id, version, r_id, asset_id, body::json, body_hash, $11::timestamp
    FROM checked
    WHERE NOT revoked
        AND s_body_hash IS NULL
        AND a_id IS NOT NULL AND bus = a_bus AND p_kw <= a_p_max_kw AND q_kvar <= a_p_max_kw
        AND (l_version IS NULL OR (version > l_version AND l_round_id = r_id))
        AND r_id IS NOT NULL AND r_status = $12 AND $11::timestamp < r_gate_closure
    RETURNING participant_id, bid_id, version
)
SELECT
    revoked, a_id, a_bus, a_p_max_kw, r_id, r_status, r_gate_closure,
    s_body_hash, s_round_id, s_asset_id, s_body, s_created_at, l_version, l_round_id,
    ins.bid_id IS NOT NULL AS inserted
FROM checked LEFT JOIN ins USING (participant_id, bid_id, version)
ORDER BY n
"""


class GuardMismatchError(RuntimeError):
    """The statement's guard and :func:`~service.bids.decide_bid` disagreed on a bid."""


@dataclass(frozen=True)
class _Round:
    id: int
    status: str
    gate_closure: datetime


@dataclass(frozen=True)
class _Latest:
    version: int
    round_id: int


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


async def store_bids_pg(
    session: AsyncSession, items: list[PreparedBid], now: datetime
) -> list[Accepted | ProblemError]:
    """Check and store a batch of prepared bids with one statement (PostgreSQL only).

    Same contract as :func:`service.bids.store_bids`: no two items share
    ``(participant, bid_id)``; returns, per item, its :class:`Accepted` (new or replayed) or
    the problem refusing it.

    Raises:
        GuardMismatchError: the statement stored a bid that is refused, or did not store one
            that is accepted (a bug; the caller's transaction must not commit).
    """
    conn = await session.connection()
    bids = [i.bid for i in items]
    params = (
        [i.principal.id for i in items],
        [b.bid_id for b in bids],
        [b.version for b in bids],
        [b.asset_id for b in bids],
        [b.bus for b in bids],
        [b.p_kw for b in bids],
        [b.q_kvar for b in bids],
        [_naive_utc(b.t_start) for b in bids],
        [i.body_json for i in items],
        [i.digest for i in items],
        _naive_utc(now),
        OPEN,
    )
    rows = (await conn.exec_driver_sql(_SQL, params)).all()
    outcomes: list[Accepted | ProblemError] = []
    for item, row in zip(items, rows, strict=True):
        outcome = _answer(item, row, now)
        created = isinstance(outcome, Accepted) and outcome.created
        if created != row.inserted:
            log.error(
                "bid guard mismatch for %s: stored %s, answer %r", item.key, row.inserted, outcome
            )
            raise GuardMismatchError(f"bid {item.key}: stored {row.inserted}, answer {outcome!r}")
        outcomes.append(outcome)
    return outcomes


def _answer(item: PreparedBid, row: Any, now: datetime) -> Accepted | ProblemError:
    """The bid's answer from the rows the statement read (as :func:`store_bids` gives)."""
    if row.revoked:
        return ProblemError(
            401, "Unauthorized", "revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    bid = item.bid
    same = None
    if row.s_body_hash is not None:
        same = StoredBid(
            participant_id=item.principal.id,
            bid_id=bid.bid_id,
            version=bid.version,
            round_id=row.s_round_id,
            asset_id=row.s_asset_id,
            body=row.s_body,
            body_hash=row.s_body_hash,
            created_at=_aware(row.s_created_at),  # type: ignore[arg-type]
        )
    latest = _Latest(row.l_version, row.l_round_id) if row.l_version is not None else None
    asset = (
        OwnedAsset(row.a_id, item.principal.id, row.a_bus, row.a_p_max_kw)
        if row.a_id is not None
        else None
    )
    rnd = (
        _Round(row.r_id, row.r_status, _aware(row.r_gate_closure))  # type: ignore[arg-type]
        if row.r_id is not None
        else None
    )
    try:
        return decide_bid(item, same, latest, asset, rnd, now)
    except ProblemError as problem:
        return problem
