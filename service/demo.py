"""``gridbid pilot-demo``: a coordinator and a small pilot's agents on loopback, one day.

The coordinator runs on a temporary SQLite file with an accelerated clock (a 15-minute slot
lasts a second by default). Clients connect over HTTP with :class:`AgentClient` exactly
as real building controllers would: a DSO stand-in publishes a request for downward
flexibility (absorb PV) in the midday slots, and home batteries bid, deliver and report
meter values. The agents here are stand-ins behind the :class:`~service.client.ClientAgent`
protocol, until the ``agents`` package's populations are wired in as clients.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn

from market import Award, Bid, Direction, FlexRequest
from service.app import create_app
from service.auth import Role
from service.client import AgentClient, AssetSpec, ServiceError
from service.clock import AcceleratedClock
from service.config import ClockConfig, ServiceConfig
from service.db import Database
from service.participants import create_participant

__all__ = ["DemoBattery", "run_demo"]

log = logging.getLogger(__name__)

DAY_START = datetime(2026, 6, 1, tzinfo=UTC)
SLOT = timedelta(minutes=15)


class DemoBattery:
    """A home battery that offers to charge (``down``) when the DSO asks, at a price that
    grows with its bus index (farther homes ask more), and delivers ``delivery`` of its
    awards."""

    def __init__(self, participant_id: str, bus: int, delivery: float = 1.0) -> None:
        self.participant_id, self.bus, self.delivery = participant_id, bus, delivery
        self.asset_id = f"{participant_id}-bat"
        self.awarded_kw: dict[datetime, float] = {}

    def assets(self) -> Sequence[AssetSpec]:
        """One 5 kW battery."""
        return [AssetSpec(self.asset_id, self.bus, 5.0, "battery")]

    def bids_for(self, requests: Sequence[FlexRequest], t_start: datetime) -> list[Bid]:
        """One 4 kW offer per downward request of the slot."""
        return [
            Bid(
                bid_id=f"{self.asset_id}-{r.request_id}",
                seller_id=self.participant_id,
                asset_id=self.asset_id,
                bus=self.bus,
                direction=Direction.DOWN,
                p_kw=4.0,
                price_eur_per_kwh=0.04 + 0.005 * self.bus,
                t_start=r.t_start,
                t_end=r.t_end,
            )
            for r in requests
            if r.direction == Direction.DOWN
        ]

    def on_awards(self, awards: Sequence[Award]) -> None:
        """Remember what to deliver."""
        for a in awards:
            self.awarded_kw[a.t_start] = self.awarded_kw.get(a.t_start, 0.0) + a.p_kw

    def baselines(self, t_start: datetime) -> dict[str, float]:
        """A flat 0.5 kW plan."""
        return {self.asset_id: 0.5}

    def meter(self, t_start: datetime) -> dict[str, float]:
        """The plan; charging adds the delivered award (``down`` raises consumption)."""
        return {self.asset_id: 0.5 + self.delivery * self.awarded_kw.get(t_start, 0.0)}


async def _dso(base: str, key: str, buses: list[int], until: datetime) -> None:
    async with AgentClient(base, key) as client:
        posted: set[int] = set()
        while await client.now() < until:
            for rnd in await client.open_rounds():
                start = datetime.fromisoformat(rnd["slot_start"])
                if rnd["id"] in posted or not 10 <= start.hour < 15:
                    continue
                request = FlexRequest(
                    request_id=f"pv-{int(start.timestamp())}",
                    buyer_id="dso",
                    bus=buses[-1],
                    direction=Direction.DOWN,
                    p_kw=12.0,
                    max_price_eur_per_kwh=0.12,
                    sensitivity_pu_per_kw={b: 0.001 * (1 + i) for i, b in enumerate(buses)},
                    t_start=start,
                    t_end=start + SLOT,
                )
                posted.add(rnd["id"])
                try:
                    await client.request(
                        "POST", "/v1/flex-requests", request.model_dump(mode="json")
                    )
                except ServiceError as exc:  # e.g. the gate closed while we decided
                    log.warning("request for %s refused: %s", start, exc)
            await asyncio.sleep(0.05)


async def _demo(homes: int, slot_seconds: float, hours: float, workdir: Path) -> dict[str, object]:
    speed = SLOT.total_seconds() / slot_seconds
    anchor = time.time() + 3.0  # simulated midnight three seconds from now
    clock_cfg = ClockConfig(kind="accelerated", start=DAY_START, speed=speed, anchor_unix_s=anchor)
    config = ServiceConfig(
        rule="pay_as_bid",
        gate_closure_minutes=5,
        open_ahead_slots=2,
        settle_after_minutes=15,
        tick_seconds=min(0.1, slot_seconds / 5),
        clock=clock_cfg,
    )
    url = f"sqlite+aiosqlite:///{workdir / 'pilot.sqlite'}"
    db = Database(url)
    await db.create_schema()
    now = datetime.now(UTC)
    _, dso_key = await create_participant(db, "dso", Role.DSO, now)
    _, op_key = await create_participant(db, "operator", Role.OPERATOR, now)
    agents, keys = [], []
    for i in range(homes):
        _, key = await create_participant(db, f"home{i:03d}", Role.PROSUMER, now)
        delivery = 0.5 if i % 5 == 4 else 1.0  # every fifth home under-delivers
        agents.append(DemoBattery(f"home{i:03d}", bus=1 + i % 10, delivery=delivery))
        keys.append(key)
    await db.dispose()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(url, config=config, clock=AcceleratedClock(DAY_START, speed, anchor))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    until = DAY_START + timedelta(hours=hours)
    buses = sorted({a.bus for a in agents})

    async def home(agent: DemoBattery, key: str) -> None:
        async with AgentClient(base, key) as client:
            await client.run(agent, until=until, poll_s=slot_seconds / 4, bid_before_gate_s=10 * 60)

    try:
        await asyncio.gather(
            _dso(base, dso_key, buses, until),
            *(home(a, k) for a, k in zip(agents, keys, strict=True)),
        )
        async with AgentClient(base, op_key) as op:
            deadline = time.monotonic() + 10 * slot_seconds
            while time.monotonic() < deadline:
                if not await op.request("GET", "/v1/rounds?status=cleared"):
                    break
                await asyncio.sleep(slot_seconds / 4)
            rounds = await op.request("GET", "/v1/rounds?limit=1000")
            awards = await op.request("GET", "/v1/awards")
            lines = await op.request("GET", "/v1/settlements")
            alerts = await op.request("GET", "/v1/alerts")
    finally:
        server.should_exit = True
        await serving
    return {
        "rounds": Counter(r["status"] for r in rounds),
        "awards": len(awards),
        "awarded_kwh": sum(a["award"]["p_kw"] for a in awards) * SLOT.total_seconds() / 3600,
        "paid_eur": sum(line["line"]["net_eur"] for line in lines),
        "flags": Counter(line["line"]["flag"] for line in lines),
        "alerts": Counter(a["kind"] for a in alerts),
    }


def run_demo(homes: int = 12, slot_seconds: float = 1.0, hours: float = 24.0) -> dict[str, object]:
    """Run the demo day and print a summary; returns the figures.

    Args:
        homes: number of home batteries.
        slot_seconds: wall-clock seconds per 15-minute slot (1 s: a day in 96 s).
        hours: simulated hours from midnight.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_demo(homes, slot_seconds, hours, Path(tmp)))
    print(f"pilot demo: {homes} homes, 1 DSO, {hours:g} h at {slot_seconds} s per slot")
    for name, value in result.items():
        print(f"  {name}: {dict(value) if isinstance(value, Counter) else value}")
    return result
