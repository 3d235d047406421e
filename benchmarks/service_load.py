"""Load test of the coordinator: N concurrent simulated agents bidding on loopback.

Starts the coordinator as a uvicorn subprocess (``gridbid serve``, ``--workers`` processes;
SQLite file, then PostgreSQL in a fresh schema), admits N prosumers, registers one asset
each, and lets every agent submit bids over its own keep-alive connection for ``--seconds``.
Every bid has a fresh id, targets the next round whose gate is still ahead, and must be
answered 201. Afterwards every acknowledged bid is looked up in the database ("lost" =
acknowledged but not stored).

Two ways to load it:

* ``--rate R`` (default 2000): open loop. The agents together offer R bids/s, each agent on
  its own fixed schedule (R / N bids/s, random phase). Latency is measured from the moment
  a bid was *due*, so a server that falls behind shows it in p99 (no coordinated omission).
* ``--rate 0``: closed loop, each agent bidding back-to-back: the capacity. Its latency is
  not a service level: with N requests always in flight, mean latency = N / throughput
  (Little's law), e.g. 1,000 agents at 2,000 bids/s wait 500 ms on average.

Peer, measured in the same run: the same agents calling ``GET /health`` (no auth, no
database) back-to-back for a few seconds: the HTTP ceiling of the server on this machine.

The CPU time of the server processes, of this load generator and of PostgreSQL during the
load is printed per bid: on a small machine the generator and the database share the cores
with the server, and those figures say where the cores went. The load generator is a
minimal HTTP/1.1 client on raw asyncio streams, so that it costs far less CPU than the
server it measures (httpx would saturate first).

Usage::

    python benchmarks/service_load.py                     # 5 min per backend, 2000 bids/s
    python benchmarks/service_load.py --seconds 30 --runs 3 --backends postgresql
    python benchmarks/service_load.py --seconds 30 --rate 0   # capacity (closed loop)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy import func, select

from service.db import Database
from service.models import Bid, Clearing
from service.participants import create_participant

SLOT = timedelta(minutes=15)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GATE_MARGIN = timedelta(seconds=60)
"""Bids target a slot whose gate is at least this far ahead (more than any queueing delay),
so a "gate closed" answer cannot come from a bid that merely waited in a queue past it."""


@dataclass
class Stats:
    """What the agents saw."""

    latencies_s: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    """Per bid sent on time: how late the generator sent it after it fell due."""
    behind: int = 0
    """Bids that fell due while the agent's previous bid was still unanswered (sent late
    because of the server, not the generator; their latency still counts from when due)."""
    loop_lag_s: list[float] = field(default_factory=list)
    """The generator's event loop: how late a 10 ms timer fired, sampled during the load."""
    errors: dict[str, int] = field(default_factory=dict)
    acked: list[tuple[str, str]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Connection:
    """One keep-alive HTTP/1.1 connection with just enough protocol for JSON APIs."""

    def __init__(self, port: int, key: str | None) -> None:
        self.port, self.key = port, key
        self.auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            status, _ = await Connection(port, None).request("GET", "/health")
            if status == 200:
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError("server did not become healthy")


async def _admit(db: Database, n: int, now: datetime) -> dict[str, str]:
    keys = {}
    for i in range(n):
        _, keys[f"agent{i:05d}"] = await create_participant(db, f"agent{i:05d}", "prosumer", now)
    return keys


async def _register(port: int, keys: dict[str, str]) -> None:
    async def one(i: int, pid: str, key: str) -> None:
        conn = Connection(port, key)
        body = json.dumps({"asset_id": f"{pid}-a", "bus": i % 200, "p_max_kw": 50.0}).encode()
        status, text = await conn.request("POST", "/v1/assets", body)
        conn.close()
        if status != 201:
            raise RuntimeError(f"asset registration failed: {status} {text[:200]!r}")

    items = list(keys.items())
    for start in range(0, len(items), 100):
        await asyncio.gather(
            *(one(start + j, pid, key) for j, (pid, key) in enumerate(items[start : start + 100]))
        )


def _target_slot(gate_lead: timedelta, margin: timedelta) -> datetime:
    """The first slot whose gate is at least ``margin`` ahead of now."""
    now = datetime.now(UTC)
    slot = now - (now - EPOCH) % SLOT + SLOT
    while slot - gate_lead - margin <= now:
        slot += SLOT
    return slot


async def _agent(
    conn: Connection,
    pid: str,
    until: float,
    stats: Stats,
    gate_lead: timedelta,
    interval_s: float,
    phase: float,
) -> None:
    """Bid until ``until``: every ``interval_s`` from ``phase`` (open loop), or back-to-back
    if ``interval_s`` is 0; latency counts from when the bid was due."""
    n = 0
    due = time.perf_counter() + phase * interval_s
    try:
        while time.monotonic() < until:
            if interval_s:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() >= until:
                    break
                if wait > 0:
                    stats.send_lag_s.append(time.perf_counter() - due)
                else:
                    stats.behind += 1
            else:
                due = time.perf_counter()
            n += 1
            slot = _target_slot(gate_lead, GATE_MARGIN)
            bid_id = f"{pid}-{n}"
            body = json.dumps(
                {
                    "bid_id": bid_id,
                    "seller_id": pid,
                    "asset_id": f"{pid}-a",
                    "bus": int(pid[5:]) % 200,
                    "direction": "up" if n % 2 else "down",
                    "p_kw": 1.0 + n % 20,
                    "price_eur_per_kwh": round(0.05 + (n % 30) / 100, 2),
                    "t_start": slot.isoformat(),
                    "t_end": (slot + SLOT).isoformat(),
                }
            ).encode()
            try:
                status, text = await conn.request("POST", "/v1/bids", body)
            except (OSError, asyncio.IncompleteReadError) as exc:
                stats.error(type(exc).__name__)
                conn.close()
                conn = Connection(conn.port, conn.key)
                due += interval_s
                continue
            stats.latencies_s.append(time.perf_counter() - due)
            due += interval_s
            if status == 201:
                stats.acked.append((pid, bid_id))
            else:
                stats.error(f"HTTP {status}: {text[:80]!r}")
    finally:
        conn.close()


async def _connected(port: int, key: str) -> Connection:
    """A connection that has made one authenticated request (``GET /v1/me``).

    Agents are long-lived controllers: they connect once and keep the connection, and the
    server has seen their key before. The measured load starts after every agent is
    connected, so it measures bidding, not 1,000 simultaneous TCP handshakes and first
    key lookups.
    """
    conn = Connection(port, key)
    status, text = await conn.request("GET", "/v1/me")
    if status != 200:
        raise RuntimeError(f"warm-up request failed: {status} {text[:200]!r}")
    return conn


async def _peer(port: int, n_agents: int, seconds: float) -> tuple[float, float, float]:
    """The HTTP ceiling: ``GET /health`` from every agent; returns (req/s, p50, p99)."""
    latencies: list[float] = []
    until = time.monotonic() + seconds

    async def one() -> None:
        conn = Connection(port, None)
        while time.monotonic() < until:
            t0 = time.perf_counter()
            await conn.request("GET", "/health")
            latencies.append(time.perf_counter() - t0)
        conn.close()

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n_agents)))
    elapsed = time.monotonic() - start
    lat = np.array(latencies)
    return len(lat) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


async def _watch_loop(stats: Stats, until: float, period_s: float = 0.01) -> None:
    """Sample the generator's own event-loop lag (a timer's lateness) until ``until``."""
    while time.monotonic() < until:
        t0 = time.perf_counter()
        await asyncio.sleep(period_s)
        stats.loop_lag_s.append(time.perf_counter() - t0 - period_s)


def _workers(backend: str, args: argparse.Namespace) -> int:
    """Server processes: ``--workers``, else 1 on SQLite (one writer at a time: a second
    process only waits for the file lock, polling, which cost ~2 s at p99 in a 20 s run)
    and 2 on PostgreSQL (one per core of these machines)."""
    if args.workers is not None:
        return int(args.workers)
    return 1 if backend == "sqlite" else 2


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and its live descendants (the uvicorn workers)."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += _cpu_s(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


def _postgres_cpu_s() -> float:
    """CPU seconds of PostgreSQL: every live process named ``postgres`` plus the children
    they have reaped (the postmaster's ``cutime``/``cstime`` keep the CPU of backends and
    autovacuum workers that exited, which a sum over live processes would lose)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def run_backend(
    name: str, url: str, schema: str | None, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Start a server on ``url``, load it, check durability, stop it; return the figures."""
    gate_lead = timedelta(minutes=5)
    config = {
        "rule": "pay_as_bid",
        "slot_minutes": 15,
        "gate_closure_minutes": 5,
        "open_ahead_slots": 8,
        "db_schema": schema,
    }
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    db = Database(url, schema=schema)
    await db.create_schema()
    keys = await _admit(db, args.agents, datetime.now(UTC))
    port = _free_port()
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
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
            "--workers",
            str(_workers(name, args)),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        await _wait_healthy(port, proc)
        await _register(port, keys)
        stats = Stats()
        interval = args.agents / args.rate if args.rate else 0.0
        rng = np.random.default_rng(7)
        limiter = asyncio.Semaphore(100)

        async def connect(key: str) -> Connection:
            async with limiter:  # 100 handshakes at a time
                return await _connected(port, key)

        conns = await asyncio.gather(*(connect(key) for key in keys.values()))
        # The generator's own full collections would walk every object imported and made so
        # far (and the growing list of acknowledged ids) in the middle of the load.
        gc.collect()
        gc.freeze()
        cpu0 = (_tree_cpu_s(proc.pid), _own_cpu_s(), _postgres_cpu_s())
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        started_at = datetime.now(UTC)
        until = start + args.seconds
        await asyncio.gather(
            _watch_loop(stats, until),
            *(
                _agent(conn, pid, until, stats, gate_lead, interval, rng.random())
                for conn, pid in zip(conns, keys, strict=True)
            ),
        )
        elapsed = time.monotonic() - start
        cpu1 = (_tree_cpu_s(proc.pid), _own_cpu_s(), _postgres_cpu_s())
        load_after = os.getloadavg()[0]
        peer = await _peer(port, args.agents, args.peer_seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    async with db.read() as session:
        stored = set((await session.execute(select(Bid.participant_id, Bid.bid_id))).all())
        # A gate that closes during the load makes a server clear that round (every bid
        # sent to it so far) while it takes the next round's bids: say when that happened.
        clearings = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Clearing.n_bids), 0)).where(
                    Clearing.cleared_at >= started_at
                )
            )
        ).one()
    lost = sum(1 for a in stats.acked if a not in stored)
    if schema is not None:
        await db.drop_schema()
    await db.dispose()
    lat = np.array(stats.latencies_s) if stats.latencies_s else np.array([np.nan])
    per_bid_us = [(b - a) / max(len(stats.acked), 1) * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "backend": name,
        "agents": args.agents,
        "offered": f"{args.rate:.0f} bids/s" if args.rate else "closed loop",
        "workers": _workers(name, args),
        "cpu_us_per_bid": per_bid_us,
        "seconds": round(elapsed, 1),
        "bids_acked": len(stats.acked),
        "bids_per_s": len(stats.acked) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) * 1e3,
        "p99_ms": float(np.percentile(lat, 99)) * 1e3,
        "errors": sum(stats.errors.values()),
        "error_kinds": stats.errors,
        "lost": lost,
        "send_lag_p99_ms": (
            float(np.percentile(stats.send_lag_s, 99)) * 1e3 if stats.send_lag_s else None
        ),
        "behind": stats.behind,
        "clearings": (int(clearings[0]), int(clearings[1])),
        "load_before": load_before,
        "load_after": load_after,
        "loop_lag_p99_ms": float(np.percentile(stats.loop_lag_s, 99)) * 1e3,
        "loop_lag_max_ms": float(np.max(stats.loop_lag_s)) * 1e3,
        "peer_health_req_per_s": peer[0],
        "peer_p50_ms": peer[1] * 1e3,
        "peer_p99_ms": peer[2] * 1e3,
    }


def _print(row: dict[str, Any]) -> None:
    server, generator, postgres = row["cpu_us_per_bid"]
    print(
        f"{row['backend']:>10}: {row['agents']} agents, {row['offered']}, "
        f"{row['workers']} worker(s), {row['seconds']} s: "
        f"{row['bids_per_s']:.0f} bids/s ({row['bids_acked']} acknowledged), "
        f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, errors {row['errors']}, "
        f"lost {row['lost']} | CPU per bid: server {server:.0f} us, generator "
        f"{generator:.0f} us, postgres {postgres:.0f} us | peer GET /health: "
        f"{row['peer_health_req_per_s']:.0f} req/s, "
        f"p50 {row['peer_p50_ms']:.1f} ms, p99 {row['peer_p99_ms']:.1f} ms"
    )
    if row["send_lag_p99_ms"] is not None:
        print(
            f"{'':>12}generator: p99 {row['send_lag_p99_ms']:.1f} ms between a bid falling due "
            f"and its send (included in the latencies above); {row['behind']} bids fell due "
            "before their agent's previous answer came; event-loop lag p99 "
            f"{row['loop_lag_p99_ms']:.1f} ms, max {row['loop_lag_max_ms']:.1f} ms"
        )
    print(
        f"{'':>12}load average (1 min) {row['load_before']:.2f} before, "
        f"{row['load_after']:.2f} after; rounds cleared meanwhile: {row['clearings'][0]} "
        f"({row['clearings'][1]} bids)"
    )
    if row["error_kinds"]:
        print(f"{'':>12}error kinds: {row['error_kinds']}")


def _print_median(rows: list[dict[str, Any]]) -> None:
    """Medians over repeated runs of one backend."""
    med = {k: float(np.median([r[k] for r in rows])) for k in ("bids_per_s", "p50_ms", "p99_ms")}
    print(
        f"{rows[0]['backend']:>10}: median of {len(rows)} runs: {med['bids_per_s']:.0f} bids/s, "
        f"p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms, "
        f"errors {sum(r['errors'] for r in rows)}, lost {sum(r['lost'] for r in rows)} (totals)"
    )


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="load per run")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="offered bids/s in all; 0 = back-to-back"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server worker processes (default: 1 on SQLite, 2 on PostgreSQL)",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat and print the medians")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("GRIDBID_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--peer-seconds", type=float, default=10.0)
    parser.add_argument(
        "--generator-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="the load generator's event loop (default uvloop, which uvicorn[standard] installs)",
    )
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    """Run each backend, print one line per run (and the medians of repeated runs)."""
    load = f"{args.rate:.0f} bids/s offered" if args.rate else "back-to-back (closed loop)"
    print(
        f"service_load: {args.agents} concurrent agents on loopback, {load}, "
        f"{args.seconds:.0f} s per run, {args.runs} run(s) per backend, "
        f"{args.workers or 'default'} server worker(s), generator on {args.generator_loop}, "
        f"{os.cpu_count()} CPUs (shared with the generator "
        "and the database); targets (PostgreSQL): >= 2000 bids/s, p99 <= 50 ms, 0 errors, 0 lost"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for backend in args.backends.split(","):
            rows = []
            for run in range(args.runs):
                if backend == "sqlite":
                    url = f"sqlite+aiosqlite:///{workdir / f'load{run}.sqlite'}"
                    row = await run_backend("sqlite", url, None, args, workdir)
                elif backend == "postgresql":
                    schema = f"bench_{uuid.uuid4().hex[:12]}"
                    row = await run_backend("postgresql", args.pg_url, schema, args, workdir)
                else:
                    raise SystemExit(f"--backends: unknown backend {backend!r}")
                _print(row)
                rows.append(row)
            if len(rows) > 1:
                _print_median(rows)


if __name__ == "__main__":
    options = _options()
    if options.generator_loop == "uvloop":
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
