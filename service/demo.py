"""``gridbid pilot-demo``: the Idrija pilot's agents against a coordinator on loopback.

The coordinator runs on a temporary SQLite file with an accelerated clock (a 15-minute slot
lasts ``slot_seconds`` of wall time). The sites of ``configs/idrija.yaml`` (scenario
``summer``) connect over HTTP with :class:`~service.client.AgentClient`, exactly as their
building controllers would, each running the simulator's own decision code
(:class:`~service.site_agent.SiteClientAgent`: plan against the tariff, declare the plan as
baseline, bid truthful costs, dispatch awards, meter): the primary school, the sports
centre, the heating plant and the community battery on their buses, with the scenario's
overrides, and a few homes of each of the scenario's two home populations.

What the demo does not have is the feeder: the homes sit on fixed buses rather than the
simbench grid's loads, the sites see :func:`~service.site_agent.typical_conditions` rather
than the grid's profiles, and the DSO is a stand-in that does not run a power flow: it asks
for downward flexibility (absorb PV) around midday and upward flexibility (relieve the
evening peak) at every site's bus, with the scenario's price cap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from agents import PRESETS, SiteSpec
from market import Direction, FlexRequest
from service.auth import Role
from service.client import AgentClient, ServiceError
from service.config import ClockConfig, ServiceConfig
from service.db import Database
from service.participants import create_participant
from service.site_agent import SiteClientAgent, typical_conditions

__all__ = ["DemoSite", "idrija_sites", "run_demo"]

log = logging.getLogger(__name__)

SLOT = timedelta(minutes=15)
IDRIJA = Path(__file__).resolve().parents[1] / "configs" / "idrija.yaml"
HOME_BUSES = (12, 24, 44, 56, 72, 84, 100, 110)
"""Where the demo's homes sit (the scenario places them on the simbench grid's loads)."""


@dataclass(frozen=True)
class DemoSite:
    """One site of the pilot: participant id, bus and its preset with overrides applied."""

    participant_id: str
    bus: int
    preset: str
    spec: SiteSpec


def idrija_sites(
    path: Path = IDRIJA, scenario: str = "summer", homes_per_population: int = 2
) -> tuple[list[DemoSite], dict[str, Any]]:
    """The sites of an Idrija scenario, and the scenario's own settings.

    Sites placed on a bus (school, sports centre, heating plant, community battery) keep
    their bus; of each home population the first ``homes_per_population`` are placed on
    :data:`HOME_BUSES`.

    Raises:
        ValueError: if the file or the scenario cannot be read, naming it.
    """
    try:
        scenarios = yaml.safe_load(path.read_text())["scenarios"]
        settings = scenarios[scenario]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: no scenario {scenario!r} ({error})") from None
    sites: list[DemoSite] = []
    home_buses = iter(HOME_BUSES)
    for population in settings["populations"]:
        preset = population["preset"]
        spec = PRESETS[preset].with_overrides(population.get("overrides", {}))
        if population.get("placement") == "bus":
            sites.append(DemoSite(preset, int(population["bus"]), preset, spec))
            continue
        for i in range(min(homes_per_population, int(population["count"]))):
            sites.append(DemoSite(f"{preset}_{i + 1}", next(home_buses), preset, spec))
    return sites, settings


async def _dso(base: str, key: str, buses: list[int], until: datetime, max_price: float) -> None:
    """Publish one request per open round: down 10:00–15:00 (PV), up 17:00–20:00 (peak)."""
    sensitivity = {b: 0.0004 * (1 + i % 4) for i, b in enumerate(buses)}
    async with AgentClient(base, key) as client:
        posted: set[int] = set()
        while await client.now() < until:
            for rnd in await client.open_rounds():
                start = datetime.fromisoformat(rnd["slot_start"])
                hour = start.hour + start.minute / 60
                if rnd["id"] in posted:
                    continue
                posted.add(rnd["id"])
                if 10 <= hour < 15:
                    direction, p_kw = Direction.DOWN, 150.0
                elif 17 <= hour < 20:
                    direction, p_kw = Direction.UP, 60.0
                else:
                    continue
                request = FlexRequest(
                    request_id=f"{direction.value}-{int(start.timestamp())}",
                    buyer_id="dso",
                    bus=buses[-1],
                    direction=direction,
                    p_kw=p_kw,
                    max_price_eur_per_kwh=max_price,
                    sensitivity_pu_per_kw=sensitivity,
                    t_start=start,
                    t_end=start + SLOT,
                )
                try:
                    await client.request(
                        "POST", "/v1/flex-requests", request.model_dump(mode="json")
                    )
                except ServiceError as exc:  # e.g. the gate closed while we decided
                    log.warning("request for %s refused: %s", start, exc)
            await asyncio.sleep(0.05)


async def _wait_ready(base: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until the coordinator answers ``/health`` (or fail with its log)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"coordinator exited: {log_path.read_text()[-2000:]}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise TimeoutError(f"coordinator did not start: {log_path.read_text()[-2000:]}")


async def _demo(
    sites: list[DemoSite],
    settings: dict[str, Any],
    slot_seconds: float,
    hours: float,
    workdir: Path,
) -> dict[str, Any]:
    day = datetime.fromisoformat(str(settings["time"]["start"])).replace(tzinfo=UTC)
    speed = SLOT.total_seconds() / slot_seconds
    anchor = time.time() + 6.0  # simulated midnight: after the coordinator has started
    clock_cfg = ClockConfig(kind="accelerated", start=day, speed=speed, anchor_unix_s=anchor)
    config = ServiceConfig(
        rule="pay_as_bid",
        gate_closure_minutes=5,
        open_ahead_slots=2,
        settle_after_minutes=45,  # meters report within three slots (1.5 s of wall time)
        stale_meter_slots=8,
        tick_seconds=min(0.1, slot_seconds / 5),
        clock=clock_cfg,
    )
    url = f"sqlite+aiosqlite:///{workdir / 'pilot.sqlite'}"
    db = Database(url)
    await db.create_schema()
    now = datetime.now(UTC)
    _, dso_key = await create_participant(db, "dso", Role.DSO, now)
    _, op_key = await create_participant(db, "operator", Role.OPERATOR, now)
    keys = {}
    for site in sites:
        _, keys[site.participant_id] = await create_participant(
            db, site.participant_id, Role.PROSUMER, now
        )
    await db.dispose()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # The coordinator runs in its own process, as in the pilot: the sites' planning here
    # and the service there each get a core.
    config_path = workdir / "coordinator.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    server_log = workdir / "coordinator.log"
    with server_log.open("wb") as log_file:
        server = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--db",
                url,
                "--port",
                str(port),
                "--config",
                str(config_path),
            ],
            stdout=log_file,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    await _wait_ready(base, server, server_log)
    until = day + timedelta(hours=hours)
    max_price = float(settings.get("dso", {}).get("max_price_eur_per_kwh", 0.30))

    async def site_client(site: DemoSite, seed: int) -> None:
        agent = SiteClientAgent(
            site.participant_id,
            site.bus,
            site.spec,
            typical_conditions(site.spec.annual_load_kwh),
            seed=seed,
            horizon_slots=32,
        )
        async with AgentClient(base, keys[site.participant_id], timeout_s=30.0) as client:
            # Half an hour past the day, to meter its last slots (it also bids in the
            # rounds that open meanwhile; the summary counts the day's rounds only).
            await client.run(
                agent,
                until=until + 2 * SLOT,
                poll_s=slot_seconds / 2,
                bid_before_gate_s=20 * 60,
            )

    try:
        await asyncio.gather(
            _dso(base, dso_key, sorted({s.bus for s in sites}), until, max_price),
            *(site_client(site, seed) for seed, site in enumerate(sites)),
        )
        async with AgentClient(base, op_key) as op:
            deadline = time.monotonic() + 10 * slot_seconds
            while time.monotonic() < deadline:  # until the day's rounds are all settled
                rounds = [
                    r
                    for r in await op.request("GET", "/v1/rounds?limit=1000")
                    if day <= datetime.fromisoformat(r["slot_start"]) < until
                ]
                if all(r["status"] in ("settled", "failed") for r in rounds):
                    break
                await asyncio.sleep(slot_seconds / 4)
            day_rounds = {r["id"] for r in rounds}
            awards = _of(day_rounds, await op.request("GET", "/v1/awards"))
            lines = _of(day_rounds, await op.request("GET", "/v1/settlements"))
            declared = _of(day_rounds, await op.request("GET", "/v1/baselines"))
            bids = _of(day_rounds, await op.request("GET", "/v1/bids"))
            alerts = [
                a
                for a in await op.request("GET", "/v1/alerts")
                if day <= datetime.fromisoformat(a["t_start"]) < until
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    revenue: dict[str, float] = defaultdict(float)
    for line in lines:
        revenue[line["participant_id"]] += line["line"]["net_eur"]
    return {
        "rounds": Counter(r["status"] for r in rounds),
        "baselines declared": len(declared),
        "bids": len(bids),
        "awards": len(awards),
        "awarded kWh": round(sum(a["award"]["p_kw"] for a in awards) * SLOT.seconds / 3600, 1),
        "DSO paid EUR": round(sum(line["line"]["net_eur"] for line in lines), 2),
        "revenue EUR by site": {k: round(v, 2) for k, v in sorted(revenue.items())},
        "settlement flags": Counter(line["line"]["flag"] for line in lines),
        "alerts": Counter(a["kind"] for a in alerts),
        "non-delivery reasons": Counter(
            _reason(a["detail"]) for a in alerts if a["kind"] == "non_delivery"
        ),
        "stale meters": Counter(a["subject"] for a in alerts if a["kind"] == "stale_meter"),
    }


def _reason(detail: str) -> str:
    """The kind of a non-delivery alert (see :mod:`service.settle`)."""
    for reason in ("no meter reading", "no baseline declared before gate closure"):
        if reason in detail:
            return reason
    return "delivered short of the award"


def _of(round_ids: set[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that belong to the given rounds."""
    return [r for r in rows if r["round_id"] in round_ids]


def run_demo(
    homes_per_population: int = 1,
    slot_seconds: float = 0.5,
    hours: float = 24.0,
    scenario_file: Path = IDRIJA,
) -> dict[str, Any]:
    """Run the demo day and print a summary; returns the figures.

    Args:
        homes_per_population: homes taken from each of the scenario's home populations.
        slot_seconds: wall-clock seconds per 15-minute slot (0.5 s: a day in 48 s).
        hours: simulated hours from midnight.
        scenario_file: the Idrija scenario file.
    """
    sites, settings = idrija_sites(scenario_file, homes_per_population=homes_per_population)
    # A site that misses a gate is logged by the client; the summary counts what it cost.
    logging.getLogger("service.client").setLevel(logging.ERROR)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_demo(sites, settings, slot_seconds, hours, Path(tmp)))
    names = ", ".join(f"{s.participant_id}@{s.bus}" for s in sites)
    print(
        f"pilot demo: {len(sites)} Idrija sites ({names}) and a stand-in DSO, "
        f"{hours:g} h of {settings['time']['start']} at {slot_seconds} s per slot "
        f"({time.monotonic() - started:.0f} s wall time)"
    )
    for name, value in result.items():
        print(f"  {name}: {dict(value) if isinstance(value, Counter) else value}")
    return result
