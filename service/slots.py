"""Slot arithmetic on aware UTC datetimes (slots counted from the Unix epoch, like market's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["floor_slot", "next_slot"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_slot(instant: datetime, slot: timedelta) -> datetime:
    """Start of the slot containing ``instant``."""
    return instant - ((instant - _EPOCH) % slot)


def next_slot(instant: datetime, slot: timedelta) -> datetime:
    """Start of the first slot that begins strictly after ``instant``."""
    return floor_slot(instant, slot) + slot
