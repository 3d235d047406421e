"""Group commit for bids: many concurrent bids share one transaction and one commit.

Under load a bid's cost is dominated by its commit (an fsync on SQLite, a WAL flush on
PostgreSQL) and, on SQLite, by waiting for the single writer. :class:`BidBatcher` queues
checked bids and a single worker stores up to ``max_batch`` of them per transaction, with
one guarded statement for the whole batch on PostgreSQL (:func:`~service.bids_pg.store_bids_pg`)
or three queries and one multi-row insert on SQLite (:func:`~service.bids.store_bids`);
each bid gets exactly the checks it gets alone; a
refused bid adds no row and gets its problem; the others commit together, and only then are
their answers released. So every acknowledged bid is durable, and the answers are the same
as without batching.

Two versions of the same ``(participant, bid_id)`` never share a batch, nor sit in two
batches in flight at once (the later waits for the next one), so each bid's checks see
exactly the rows committed before it. If the batch itself fails to commit (a constraint
raced by another process, a lost connection), each of its bids is retried alone with
:func:`~service.bids.accept_bid`.

On PostgreSQL up to ``max_inflight`` batches run at once on separate connections: a batch
costs three round trips (``BEGIN``, the statement, ``COMMIT`` with its WAL flush), each of
which waits its turn on a busy event loop, and a bid arriving just after a batch started
would otherwise wait for that whole batch before its own. (On SQLite the writes are
serialised anyway, so one batch at a time.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from market import Bid as MarketBid
from service.auth import Principal
from service.bids import Accepted, PreparedBid, prepare_bid, store_bids, store_prepared
from service.bids_pg import store_bids_pg
from service.clock import Clock
from service.config import ServiceConfig
from service.db import Database
from service.problems import ProblemError

__all__ = ["BidBatcher"]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    prepared: PreparedBid
    done: asyncio.Future[Accepted] = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.prepared.key


class BidBatcher:
    """Stores bids in group-committed batches.

    Args:
        db: the database.
        config: the service config (bid checks).
        clock: the time each batch's gate checks use (taken when the batch runs).
        max_batch: most bids per transaction.
        max_inflight: most batches being stored at once (PostgreSQL; 1 on SQLite).
    """

    def __init__(
        self,
        db: Database,
        config: ServiceConfig,
        clock: Clock,
        max_batch: int = 256,
        max_inflight: int = 3,
    ) -> None:
        self.db, self.config, self.clock, self.max_batch = db, config, clock, max_batch
        self.max_inflight = 1 if db.is_sqlite else max_inflight
        self._store_batch = store_bids if db.is_sqlite else store_bids_pg
        self._pending: deque[_Item] = deque()
        self._inflight: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, principal: Principal, bid: MarketBid) -> Accepted:
        """Store one bid (or replay its earlier answer); returns after the commit.

        Raises:
            ProblemError: as :func:`~service.bids.accept_bid`.
        """
        prepared = prepare_bid(self.config, principal, bid)
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(prepared, future))
        self._wake.set()
        if len(self._tasks) < self.max_inflight or any(t.done() for t in self._tasks):
            # Start the workers on first use; replace any that ended (never a live one:
            # cancelling a worker mid-batch would leave its bids unanswered).
            live = [t for t in self._tasks if not t.done()]
            self._tasks = live + [
                asyncio.create_task(self._run(), name="gridbid-bid-batcher")
                for _ in range(self.max_inflight - len(live))
            ]
        return await future

    async def stop(self) -> None:
        """Stop the worker; bids still queued fail (their clients retry)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while self._pending:
            item = self._pending.popleft()
            if not item.done.done():
                item.done.set_exception(ProblemError(503, "Shutting down", "retry later"))

    async def _run(self) -> None:
        while True:
            batch = self._take() if self._pending else []
            if not batch:  # nothing queued, or only versions of bids in flight
                self._wake.clear()  # no await since _take: no wake-up is lost
                await self._wake.wait()
                continue
            keys = {item.key for item in batch}
            self._inflight |= keys
            try:
                await self._store(batch)
            except Exception:  # the batch failed as a whole: retry each bid alone
                log.debug("batch of %d failed; storing one by one", len(batch), exc_info=True)
                await self._one_by_one(batch)
            finally:
                self._inflight -= keys
                if self._pending:
                    self._wake.set()

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        keys: set[tuple[str, str]] = set()
        deferred: list[_Item] = []
        while self._pending and len(batch) < self.max_batch:
            item = self._pending.popleft()
            if item.done.done():
                continue  # the request was cancelled (client went away)
            if item.key in keys or item.key in self._inflight:
                deferred.append(item)
            else:
                keys.add(item.key)
                batch.append(item)
        self._pending.extendleft(reversed(deferred))
        return batch

    async def _store(self, batch: list[_Item]) -> None:
        async with self.db.write() as session:
            outcomes = await self._store_batch(
                session, [i.prepared for i in batch], self.clock.now()
            )
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.done.done():
                continue
            if isinstance(outcome, ProblemError):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)

    async def _one_by_one(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.done.done():
                continue
            try:
                accepted = await store_prepared(self.db, item.prepared, self.clock.now())
            except (ProblemError, IntegrityError) as exc:
                item.done.set_exception(exc)
            except Exception as exc:
                item.done.set_exception(exc)
            else:
                item.done.set_result(accepted)
