"""Kill-and-restart: the coordinator runs as a uvicorn subprocess and is SIGKILLed.

Simulated time runs 300x faster than wall time (a 15-minute slot lasts 3 s; gates close 1 s
before the slot), anchored to a fixed wall-clock instant so a restarted server continues
the same timeline. Claims checked against the database afterwards:

* every bid the server acknowledged (2xx) is stored, whatever happened after;
* every round whose gate has passed is cleared exactly once, and its clearing saw every
  bid stored for it (``clearings.n_bids`` = distinct bids of the round);
* a crash between the clearing's computation and its commit (fail point) leaves the round
  open, and the restarted server clears it once; a crash right after the commit does not
  lead to a second clearing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from service.db import Database
from service.models import Bid, Clearing, Round
from service.participants import create_participant

pytestmark = pytest.mark.slow

SPEED = 300.0
SLOT = timedelta(minutes=15)
SIM_START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
N_AGENTS = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A coordinator subprocess on loopback that can be SIGKILLed and restarted."""

    def __init__(self, url: str, config: Path, log: Path, workers: int = 1) -> None:
        self.url, self.config, self.log, self.workers = url, config, log, workers
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, failpoints: str = "", *, wait_ready: bool = True) -> None:
        """Start the server; unless ``wait_ready`` is false, wait until /health answers.

        A server started with a fail point that it hits while starting up (an overdue round
        cleared at once) may die before it ever answers, so such starts do not wait.
        """
        env = os.environ | {"GRIDBID_FAILPOINTS": failpoints}
        cmd = [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--db",
            self.url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
            "--workers",
            str(self.workers),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)  # noqa: S603
        if not wait_ready:
            return
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=self.base, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        raise TimeoutError(f"server did not answer: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: with several workers, the supervisor stops them too)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        raise TimeoutError("server did not exit")


@pytest.fixture
async def crash_env(
    db_target: Any, tmp_path: Path
) -> AsyncIterator[tuple[Server, Database, dict[str, str]]]:
    """A config on an accelerated clock, participants with keys, and a stopped server."""
    config = {
        "rule": "pay_as_bid",
        "slot_minutes": 15,
        "gate_closure_minutes": 5,
        "open_ahead_slots": 3,
        "tick_seconds": 0.05,
        "db_schema": db_target.schema,
        "clock": {
            "kind": "accelerated",
            "start": SIM_START.isoformat(),
            "speed": SPEED,
            "anchor_unix_s": time.time(),
        },
    }
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(config))
    db = Database(db_target.url, schema=db_target.schema)
    await db.create_schema()
    keys = {}
    now = datetime.now(UTC)
    for i in range(N_AGENTS):
        _, keys[f"p{i}"] = await create_participant(db, f"p{i}", "prosumer", now)
    server = Server(db_target.url, path, tmp_path / "server.log")
    try:
        yield server, db, keys
    finally:
        if server.proc is not None and server.proc.poll() is None:
            # SIGKILL would orphan the workers of a multi-worker server: stop it instead.
            server.stop() if server.workers > 1 else server.kill()
        await db.dispose()


def _sim_now() -> datetime:
    """The simulated time, as the server computes it (same anchor within a few ms)."""
    return SIM_START + (time.time() - _ANCHOR[0]) * SPEED * timedelta(seconds=1)


_ANCHOR: list[float] = [0.0]


async def _register(server: Server, keys: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=5) as client:
        for i, (pid, key) in enumerate(keys.items()):
            r = await client.post(
                "/v1/assets",
                headers={"Authorization": f"Bearer {key}"},
                json={"asset_id": f"{pid}-a", "bus": i, "p_max_kw": 10.0},
            )
            assert r.status_code == 201, r.text


async def _agent(
    server: Server, pid: str, key: str, acked: list[tuple[str, str, int]], stop: asyncio.Event
) -> None:
    """Bid for the slot after next, again and again; retry a bid until answered."""
    n = 0
    async with httpx.AsyncClient(timeout=2.0, headers={"Authorization": f"Bearer {key}"}) as c:
        while not stop.is_set():
            target = _floor(_sim_now()) + 2 * SLOT
            n += 1
            body = {
                "bid_id": f"{pid}-{n}",
                "seller_id": pid,
                "asset_id": f"{pid}-a",
                "bus": int(pid[1:]),
                "direction": "up",
                "p_kw": 1.0 + n % 5,
                "price_eur_per_kwh": 0.1 + (n % 7) / 100,
                "t_start": target.isoformat(),
                "t_end": (target + SLOT).isoformat(),
                "version": 0,
            }
            while not stop.is_set():
                try:
                    r = await c.post(f"{server.base}/v1/bids", json=body)
                except httpx.TransportError:
                    await asyncio.sleep(0.1)  # server down: retry the same (idempotent) bid
                    continue
                if r.status_code == 201:
                    acked.append((pid, body["bid_id"], 0))
                else:
                    assert r.status_code in (409, 422), r.text  # gate passed while down
                break


def _floor(instant: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return instant - (instant - epoch) % SLOT


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


async def _rounds_past_gate_cleared(db: Database) -> bool:
    now = _sim_now()
    async with db.read() as s:
        pending = await s.scalar(
            select(func.count())
            .select_from(Round)
            .where(Round.gate_closure <= now, Round.status == "open")
        )
    return pending == 0


async def _rounds_with_bids_cleared(db: Database) -> bool:
    async with db.read() as s:
        pending = await s.scalar(
            select(func.count())
            .select_from(Round)
            .where(Round.status == "open", Round.id.in_(select(Bid.round_id)))
        )
    return pending == 0


async def _check_invariants(db: Database, acked: list[tuple[str, str, int]]) -> int:
    async with db.read() as s:
        stored = set((await s.execute(select(Bid.participant_id, Bid.bid_id, Bid.version))).all())
        lost = [a for a in acked if a not in stored]
        assert lost == [], f"{len(lost)} acknowledged bids lost: {lost[:5]}"
        cleared = (
            await s.scalars(select(Round).where(Round.status.in_(["cleared", "settled"])))
        ).all()
        clearings = (await s.scalars(select(Clearing))).all()
        assert sorted(c.round_id for c in clearings) == sorted(r.id for r in cleared)
        per_round = dict(
            (
                await s.execute(
                    select(
                        Bid.round_id,
                        func.count(func.distinct(Bid.participant_id + "/" + Bid.bid_id)),
                    ).group_by(Bid.round_id)
                )
            ).all()
        )
        for c in clearings:
            assert c.n_bids == per_round.get(c.round_id, 0), (c.round_id, c.n_bids)
        return len(clearings)


async def test_sigkill_during_rounds_loses_no_bid_and_clears_once(crash_env) -> None:
    server, db, keys = crash_env
    _ANCHOR[0] = yaml.safe_load(server.config.read_text())["clock"]["anchor_unix_s"]
    await server.start()
    await _register(server, keys)
    acked: list[tuple[str, str, int]] = []
    stop = asyncio.Event()
    agents = [
        asyncio.create_task(_agent(server, pid, key, acked, stop)) for pid, key in keys.items()
    ]
    for _ in range(2):  # two kills at arbitrary moments of the rounds
        await _until(_count_more(acked, 30), 30, "agents made no progress")
        server.kill()
        await server.start()
    await _until(_count_more(acked, 30), 30, "agents made no progress after restart")
    stop.set()
    await asyncio.gather(*agents)
    await _until(lambda: _rounds_with_bids_cleared(db), 30, "rounds with bids not cleared")
    await _until(lambda: _rounds_past_gate_cleared(db), 30, "rounds not cleared")
    n_clearings = await _check_invariants(db, acked)
    assert n_clearings >= 1 and len(acked) >= 90
    server.kill()


def _count_more(acked: list[Any], more: int) -> Any:
    target = len(acked) + more

    async def grown() -> bool:
        return len(acked) >= target

    return grown


async def _bid_on_first_round(server: Server, keys: dict[str, str]) -> tuple[int, list[Any]]:
    """Every agent bids once on the earliest open round (whose gate is >= 1 s away)."""
    acked = []
    async with httpx.AsyncClient(base_url=server.base, timeout=5) as c:
        headers = {"Authorization": f"Bearer {next(iter(keys.values()))}"}
        rounds = (await c.get("/v1/rounds?status=open", headers=headers)).json()
        soon = _sim_now() + timedelta(seconds=SPEED)
        first = min(
            (r for r in rounds if datetime.fromisoformat(r["gate_closure"]) >= soon),
            key=lambda r: r["slot_start"],
        )
        target = datetime.fromisoformat(first["slot_start"])
        for pid, key in keys.items():
            body = {
                "bid_id": f"{pid}-x",
                "seller_id": pid,
                "asset_id": f"{pid}-a",
                "bus": int(pid[1:]),
                "direction": "up",
                "p_kw": 2.0,
                "price_eur_per_kwh": 0.1,
                "t_start": target.isoformat(),
                "t_end": (target + SLOT).isoformat(),
            }
            r = await c.post("/v1/bids", json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 201, r.text
            acked.append((pid, f"{pid}-x", 0))
    return int(first["id"]), acked


async def test_crash_between_gate_closure_and_publication(crash_env) -> None:
    """Die inside the first clearing before its commit, then right after it, then recover."""
    server, db, keys = crash_env
    _ANCHOR[0] = yaml.safe_load(server.config.read_text())["clock"]["anchor_unix_s"]
    await server.start(failpoints="before_clearing_commit")
    await _register(server, keys)
    round_id, acked = await _bid_on_first_round(server, keys)
    assert await server.wait_exit(30) == 86  # died inside the clearing, before commit
    async with db.read() as s:
        assert await s.get(Clearing, round_id) is None
        assert (await s.get(Round, round_id)).status == "open"  # type: ignore[union-attr]

    # The round's gate has passed, so the restarted server clears it at once and may die
    # before it answers /health: do not wait for it to be ready.
    await server.start(failpoints="after_clearing_commit", wait_ready=False)
    assert await server.wait_exit(30) == 86  # died right after committing the clearing
    async with db.read() as s:
        clearing = await s.get(Clearing, round_id)
        assert clearing is not None and clearing.n_bids == N_AGENTS

    await server.start()
    await _until(lambda: _rounds_past_gate_cleared(db), 30, "rounds not cleared")
    await _check_invariants(db, acked)
    async with db.read() as s:
        again = await s.get(Clearing, round_id)
    assert again is not None and again.cleared_at == clearing.cleared_at  # not re-cleared
    server.kill()


async def test_two_workers_clear_each_round_once(crash_env) -> None:
    """``serve --workers 2``: both processes run the scheduler; the database lets exactly
    one of them clear each round, and no acknowledged bid is lost."""
    server, db, keys = crash_env
    server.workers = 2
    _ANCHOR[0] = yaml.safe_load(server.config.read_text())["clock"]["anchor_unix_s"]
    await server.start()
    await _register(server, keys)
    acked: list[tuple[str, str, int]] = []
    stop = asyncio.Event()
    agents = [
        asyncio.create_task(_agent(server, pid, key, acked, stop)) for pid, key in keys.items()
    ]

    async def two_rounds_cleared() -> bool:
        async with db.read() as s:
            return int(await s.scalar(select(func.count()).select_from(Clearing)) or 0) >= 2

    await _until(two_rounds_cleared, 60, "two rounds not cleared")
    stop.set()
    await asyncio.gather(*agents)
    await _until(lambda: _rounds_with_bids_cleared(db), 30, "rounds with bids not cleared")
    assert await _check_invariants(db, acked) >= 2 and len(acked) >= 30
    server.stop()
