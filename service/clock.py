"""Injected clocks: the scheduler never reads the wall clock directly.

Every time the service acts on (gate closure, delivery, staleness) comes from a
:class:`Clock`. Production uses :class:`SystemClock`; the pilot demo and crash tests use
:class:`AcceleratedClock` (simulated time running faster than real time, anchored to a
fixed wall-clock instant so a restarted process continues the same timeline); unit tests
use :class:`ManualClock` and move it by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["AcceleratedClock", "Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        ...


class SystemClock:
    """The wall clock in UTC."""

    def now(self) -> datetime:
        """Return ``datetime.now(UTC)``."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when a test moves it.

    Args:
        start: the initial instant; must be timezone-aware.
    """

    def __init__(self, start: datetime) -> None:
        _require_aware(start, "start")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """Return the instant the clock was last set to."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` (never backwards) and return the new instant."""
        if delta < timedelta(0):
            raise ValueError(f"delta must not be negative, got {delta}")
        self._now += delta
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant`` (aware, not earlier than now)."""
        _require_aware(instant, "instant")
        if instant < self._now:
            raise ValueError(f"instant {instant} is before the clock's now {self._now}")
        self._now = instant.astimezone(UTC)


class AcceleratedClock:
    """Simulated time that runs ``speed`` times faster than the wall clock.

    ``now() = start + (wall_now - anchor_unix_s) * speed``. Because the anchor is a wall-clock
    instant (not process start), a process restarted with the same parameters continues the
    same simulated timeline.

    Args:
        start: simulated instant at the anchor; must be timezone-aware.
        speed: simulated seconds per wall-clock second (> 0).
        anchor_unix_s: the wall-clock anchor in Unix seconds; defaults to now.
    """

    def __init__(self, start: datetime, speed: float, anchor_unix_s: float | None = None) -> None:
        _require_aware(start, "start")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start = start.astimezone(UTC)
        self.speed = float(speed)
        self.anchor_unix_s = time.time() if anchor_unix_s is None else float(anchor_unix_s)

    def now(self) -> datetime:
        """Return the simulated instant for the current wall-clock time."""
        elapsed = (time.time() - self.anchor_unix_s) * self.speed
        return self.start + timedelta(seconds=elapsed)


def _require_aware(instant: datetime, name: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {instant!r}")
