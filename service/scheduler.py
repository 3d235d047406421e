"""The market scheduler: opens, clears and settles rounds as the injected clock moves.

:meth:`Scheduler.tick` does everything due at ``clock.now()`` and is idempotent, so tests call
it directly after moving a :class:`~service.clock.ManualClock`, and the service runs it in a
loop every ``tick_seconds`` of real time. After a restart the first tick finishes whatever the
dead process left: open rounds past their gate are cleared, cleared rounds past delivery are
settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from service.clock import Clock
from service.config import ServiceConfig
from service.db import Database
from service.rounds import clear_round, due_for_clearing, ensure_rounds
from service.settle import check_stale_meters, due_for_settlement, settle_round
from service.slots import floor_slot

__all__ = ["Scheduler", "TickReport"]

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did."""

    opened: int = 0
    cleared: list[int] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    stale_alerts: int = 0


class Scheduler:
    """Drives rounds from an injected clock.

    Args:
        db: the service database.
        config: timing and rule.
        clock: the source of ``now``.
    """

    def __init__(self, db: Database, config: ServiceConfig, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stale_checked_slot: datetime | None = None

    async def tick(self) -> TickReport:
        """Open, clear and settle whatever is due now."""
        async with self._lock:
            now = self.clock.now()
            report = TickReport()
            report.opened = await ensure_rounds(self.db, self.config, now)
            for round_id in await due_for_clearing(self.db, now):
                if await clear_round(self.db, self.config, round_id, now):
                    report.cleared.append(round_id)
            for round_id in await due_for_settlement(self.db, self.config, now):
                if await settle_round(self.db, self.config, round_id, now):
                    report.settled.append(round_id)
            slot_now = floor_slot(now, self.config.slot)
            if slot_now != self._stale_checked_slot:
                report.stale_alerts = await check_stale_meters(self.db, self.config, now)
                self._stale_checked_slot = slot_now
            return report

    def start(self) -> None:
        """Run :meth:`tick` every ``config.tick_seconds`` in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gridbid-scheduler")

    async def stop(self) -> None:
        """Stop the background loop (a tick in progress is cancelled and rolled back)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
            await asyncio.sleep(self.config.tick_seconds)
