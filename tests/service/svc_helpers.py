"""Helpers shared by the coordinator tests: the test clock's start and valid bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service import ServiceConfig

START = datetime(2026, 6, 1, 10, 2, tzinfo=UTC)
"""Test clock start: 10:02 UTC, so the 10:15 slot's round is open until its 10:10 gate."""
SLOT = timedelta(minutes=15)


def make_config(**changes: Any) -> ServiceConfig:
    """The tests' service config: defaults, ``pay_as_bid``, plus ``changes``."""
    base: dict[str, Any] = {"rule": "pay_as_bid", "stale_meter_slots": 4}
    return ServiceConfig.model_validate(base | changes)


def slot_start(offset: int = 1) -> datetime:
    """Start of the slot ``offset`` slots after the one containing ``START``."""
    return datetime(2026, 6, 1, 10, 0, tzinfo=UTC) + offset * SLOT


def bid_body(seller: str = "alice", **changes: Any) -> dict[str, Any]:
    """A valid bid for the next slot from ``seller``'s asset, as JSON."""
    asset, bus = {"alice": ("alice-bat", 3), "bob": ("bob-hp", 5)}.get(seller, ("x", 0))
    t0 = slot_start(1)
    body: dict[str, Any] = {
        "bid_id": f"{seller}-b1",
        "seller_id": seller,
        "asset_id": asset,
        "bus": bus,
        "direction": "up",
        "p_kw": 4.0,
        "price_eur_per_kwh": 0.2,
        "t_start": t0.isoformat(),
        "t_end": (t0 + SLOT).isoformat(),
    }
    body.update(changes)
    return body


def request_body(**changes: Any) -> dict[str, Any]:
    """A valid DSO request for the next slot, as JSON."""
    t0 = slot_start(1)
    body: dict[str, Any] = {
        "request_id": "req-1",
        "buyer_id": "dso",
        "bus": 3,
        "direction": "up",
        "p_kw": 5.0,
        "max_price_eur_per_kwh": 0.5,
        "sensitivity_pu_per_kw": {"3": 0.01, "5": 0.005},
        "t_start": t0.isoformat(),
        "t_end": (t0 + SLOT).isoformat(),
    }
    body.update(changes)
    return body
