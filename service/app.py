"""The app factory: ``create_app(db_url, clock=..., rule=..., slot=...)``.

The app is versioned under ``/v1``, documents itself at ``/openapi.json``, creates its schema
on start and (unless told not to) runs the scheduler in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from market import available_rules
from service.auth import KeyCache
from service.batching import BidBatcher
from service.clock import Clock
from service.config import ServiceConfig
from service.db import Database
from service.limits import BodySizeLimit
from service.problems import install_problem_handlers
from service.routes import (
    assets,
    baselines,
    bid_intake,
    market,
    meter,
    participants,
    reports,
)
from service.scheduler import Scheduler
from service.state import ServiceState

__all__ = ["create_app"]

API_VERSION = "v1"


def create_app(
    db_url: str,
    *,
    clock: Clock | None = None,
    rule: str | None = None,
    slot: timedelta | None = None,
    config: ServiceConfig | None = None,
    db_schema: str | None = None,
    run_scheduler: bool = True,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the coordinator's FastAPI app.

    Args:
        db_url: SQLAlchemy async URL (``sqlite+aiosqlite:///file`` or
            ``postgresql+asyncpg://...``).
        clock: where time comes from; defaults to the config's clock (system time).
        rule: market rule name; overrides ``config.rule``.
        slot: slot length; overrides ``config.slot_minutes``.
        config: the rest of the configuration; defaults to :class:`ServiceConfig`.
        db_schema: PostgreSQL schema to keep the tables in (tests use one per test);
            overrides ``config.db_schema``.
        run_scheduler: run the scheduler loop in the background (tests tick by hand).
        freeze_gc: once started, move every object alive then (the imported modules: numpy,
            pandas, pydantic and SQLAlchemy models, some 10^5 objects) out of the garbage
            collector's reach with :func:`gc.freeze`. Without it each full collection walks
            them all, and under load those collections came every second or two and stopped
            the event loop for 150-400 ms each. For a server process; tests leave it off, as
            frozen objects are never freed.

    Returns:
        The app; ``app.state.service`` holds its :class:`~service.state.ServiceState`.

    Raises:
        ValueError: for an unknown rule name or a slot that is not whole minutes.
    """
    config = config or ServiceConfig()
    overrides: dict[str, object] = {}
    if rule is not None:
        overrides["rule"] = rule
    if slot is not None:
        minutes, rest = divmod(slot, timedelta(minutes=1))
        if rest or minutes <= 0:
            raise ValueError(f"slot must be a positive whole number of minutes, got {slot}")
        overrides["slot_minutes"] = minutes
    if overrides:
        config = ServiceConfig.model_validate(config.model_dump() | overrides)
    if config.rule not in available_rules():
        known = ", ".join(available_rules())
        raise ValueError(f"rule: unknown clearing rule {config.rule!r}; known rules: {known}")
    db = Database(db_url, schema=db_schema or config.db_schema)
    clock = clock or config.clock.build()
    state = ServiceState(
        db=db,
        config=config,
        clock=clock,
        scheduler=Scheduler(db, config, clock),
        key_cache=KeyCache(config.auth_cache_seconds),
        bids=BidBatcher(db, config, clock),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await db.create_schema()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        if run_scheduler:
            state.scheduler.start()
        watch = asyncio.create_task(
            state.key_cache.watch(db, config.revocation_poll_seconds), name="gridbid-key-watch"
        )
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await state.scheduler.stop()
            await state.bids.stop()
            await db.dispose()

    app = FastAPI(
        title="gridbid coordinator",
        version=API_VERSION,
        summary="Local flexibility market for a distribution pilot: bids, awards, settlement.",
        lifespan=lifespan,
        # No OpenTelemetry here: without this, FastAPI looks up the global providers (an
        # os.environ probe each) on every request, ~7% of a bid's server CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = state
    install_problem_handlers(app)
    for module in (market, participants, assets, baselines, meter, reports):
        app.include_router(module.router, prefix=f"/{API_VERSION}")
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = bid_intake.document(fastapi_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers (no auth, no database)."""
        return {"status": "ok", "now": state.clock.now().isoformat()}

    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    # Outermost of ours: POST /v1/bids is answered there (see service/routes/bid_intake.py).
    app.add_middleware(bid_intake.BidIntake, state=state)
    return app
