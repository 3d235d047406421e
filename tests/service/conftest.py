"""Fixtures for the coordinator tests: one app per test, on SQLite and on PostgreSQL.

Each test gets a fresh database: a SQLite file in ``tmp_path``, or a fresh PostgreSQL schema
(dropped afterwards) in the database named by ``GRIDBID_TEST_POSTGRES_URL``. Without that
variable the PostgreSQL cases are skipped with a message. Time comes from a
:class:`~service.clock.ManualClock`; the scheduler does not run in the background, tests call
``tick()`` after moving the clock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from svc_helpers import START, make_config

from service import ManualClock, ServiceConfig, create_app
from service.db import Database
from service.models import Base
from service.participants import create_participant
from service.state import ServiceState

PG_ENV = "GRIDBID_TEST_POSTGRES_URL"


def backend_params() -> list[Any]:
    """``sqlite`` always; ``postgresql`` skipped (with the reason) without the env variable."""
    skip = pytest.mark.skipif(
        not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: PostgreSQL tests skipped"
    )
    return [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", marks=skip, id="pg")]


@dataclass
class DbTarget:
    """Where one test's database lives."""

    url: str
    schema: str | None


@pytest.fixture(params=backend_params())
async def db_target(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[DbTarget]:
    """A fresh, empty database for one test (SQLite file or PostgreSQL schema)."""
    if request.param == "sqlite":
        yield DbTarget(f"sqlite+aiosqlite:///{tmp_path / 'gridbid.sqlite'}", None)
        return
    target = DbTarget(os.environ[PG_ENV], f"t_{uuid.uuid4().hex[:16]}")
    yield target
    db = Database(target.url, schema=target.schema)
    await db.drop_schema()
    await db.dispose()


@dataclass
class Party:
    """A participant with its key, and a client that sends it."""

    id: str
    role: str
    key: str
    client: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Harness:
    """One running app with its clock and an unauthenticated client."""

    state: ServiceState
    clock: ManualClock
    anon: httpx.AsyncClient
    transport: httpx.ASGITransport
    parties: dict[str, Party] = field(default_factory=dict)

    async def add(self, participant_id: str, role: str) -> Party:
        """Create a participant directly (as the admin command does) and return it."""
        _, key = await create_participant(self.state.db, participant_id, role, self.clock.now())
        client = httpx.AsyncClient(
            transport=self.transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {key}"},
        )
        party = Party(participant_id, role, key, client)
        self.parties[participant_id] = party
        return party

    async def tick(self) -> Any:
        """Run the scheduler once at the clock's now."""
        return await self.state.scheduler.tick()

    async def counts(self) -> dict[str, int]:
        """Row count of every table (to prove a refused request changed nothing)."""
        out: dict[str, int] = {}
        async with self.state.db.read() as session:
            for table in Base.metadata.sorted_tables:
                out[table.name] = int(
                    await session.scalar(select(func.count()).select_from(table)) or 0
                )
        return out


@pytest.fixture
def service_config() -> ServiceConfig:
    """Override in a test module to change the config."""
    return make_config()


@pytest.fixture
async def harness(
    db_target: DbTarget, service_config: ServiceConfig, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    """A started app (schema created, rounds opened by one tick) on a fresh database.

    On PostgreSQL a bid batch that disagrees with its own checks is rolled back and stored
    one by one, so its answers are right anyway; the test fails all the same if that ever
    happened (the one-statement batch's guard and ``decide_bid`` must agree).
    """
    clock = ManualClock(START)
    app = create_app(
        db_target.url,
        clock=clock,
        config=service_config,
        db_schema=db_target.schema,
        run_scheduler=False,
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        anon = httpx.AsyncClient(transport=transport, base_url="http://test")
        h = Harness(app.state.service, clock, anon, transport)
        await h.tick()
        try:
            yield h
        finally:
            for party in h.parties.values():
                await party.client.aclose()
            await anon.aclose()
    mismatches = [r.getMessage() for r in caplog.records if r.name == "service.bids_pg"]
    assert not mismatches, mismatches


@pytest.fixture
async def market(harness: Harness) -> Harness:
    """The harness with an operator, a DSO, an observer and two prosumers with one asset each.

    ``alice`` owns ``alice-bat`` (bus 3, 10 kW); ``bob`` owns ``bob-hp`` (bus 5, 6 kW).
    """
    await harness.add("op", "operator")
    await harness.add("dso", "dso")
    await harness.add("obs", "observer")
    for name, asset, bus, kw in (("alice", "alice-bat", 3, 10.0), ("bob", "bob-hp", 5, 6.0)):
        party = await harness.add(name, "prosumer")
        r = await party.client.post(
            "/v1/assets", json={"asset_id": asset, "bus": bus, "kind": "battery", "p_max_kw": kw}
        )
        assert r.status_code == 201, r.text
    return harness
