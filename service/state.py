"""The per-app service state that routes reach through ``request.app.state.service``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.auth import KeyCache
from service.batching import BidBatcher
from service.clock import Clock
from service.config import ServiceConfig
from service.db import Database
from service.scheduler import Scheduler

__all__ = ["ServiceState", "StateDep", "get_state"]


@dataclass
class ServiceState:
    """Everything a request handler needs: database, config, clock and scheduler."""

    db: Database
    config: ServiceConfig
    clock: Clock
    scheduler: Scheduler
    key_cache: KeyCache
    bids: BidBatcher


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the app's :class:`ServiceState` (async: a plain ``def``
    dependency would cost a thread-pool hop per request)."""
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
"""Route parameter type that injects the :class:`ServiceState`."""
