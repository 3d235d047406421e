"""The coordinator service: HTTP API, database, auth, market scheduler, agent client.

Build the app with :func:`create_app`; drive time with a :class:`~service.clock.Clock`.
"""

from service.app import create_app
from service.auth import Role
from service.clock import AcceleratedClock, Clock, ManualClock, SystemClock
from service.config import ServiceConfig, load_config
from service.scheduler import Scheduler

__all__ = [
    "AcceleratedClock",
    "Clock",
    "ManualClock",
    "Role",
    "Scheduler",
    "ServiceConfig",
    "SystemClock",
    "create_app",
    "load_config",
]
