"""The coordinator service: HTTP API, database, auth, market scheduler, agent client.

Build the app with :func:`create_app`; drive time with a :class:`~service.clock.Clock`.
"""

from service.app import create_app
from service.auth import Role
from service.client import AgentClient, AssetSpec, ClientAgent, ServiceError
from service.clock import AcceleratedClock, Clock, ManualClock, SystemClock
from service.config import ServiceConfig, load_config
from service.scheduler import Scheduler

__all__ = [
    "AcceleratedClock",
    "AgentClient",
    "AssetSpec",
    "ClientAgent",
    "Clock",
    "ManualClock",
    "Role",
    "Scheduler",
    "ServiceConfig",
    "ServiceError",
    "SystemClock",
    "create_app",
    "load_config",
]
