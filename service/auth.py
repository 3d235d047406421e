"""API keys and roles.

A key is 32 random bytes (URL-safe base64) with a ``gbk_`` prefix, shown once when issued
and stored only as its SHA-256 hash. A plain hash (no salt, no slow KDF) is adequate because
keys are high-entropy random tokens, not passwords; it also makes the lookup an index probe.
Requests carry the key as ``Authorization: Bearer <key>``. Missing, unknown or revoked keys
answer 401; a known key with the wrong role answers 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, select

from service.models import Participant
from service.problems import ProblemError

__all__ = [
    "KeyCache",
    "Principal",
    "Role",
    "authenticate",
    "bearer_token",
    "hash_key",
    "new_api_key",
    "require",
    "resolve_key",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "gbk_"
_bearer = HTTPBearer(auto_error=False)


class Role(StrEnum):
    """What a participant may do."""

    PROSUMER = "prosumer"
    DSO = "dso"
    OPERATOR = "operator"
    OBSERVER = "observer"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    id: str
    role: Role


def new_api_key() -> str:
    """Return a fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of an API key, the only form in which it is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """Resolve the bearer key to a participant, or answer 401."""
    return await resolve_key(request.app.state.service, _token(credentials))


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


def bearer_token(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (as FastAPI's ``HTTPBearer``
    reads it), or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def resolve_key(state: Any, key: str | None) -> Principal:
    """The participant of a bearer key: from the cache, else one indexed lookup.

    Raises:
        ProblemError: 401 for a missing, unknown or revoked key.
    """
    if not key:
        raise _unauthorized("missing bearer API key")
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise _unauthorized("unknown API key")
    digest = hash_key(key)
    cached = state.key_cache.get(digest)
    if cached is not None:
        return cached
    async with state.db.read() as session:
        row = (
            await session.execute(
                select(Participant.id, Participant.role, Participant.revoked_at).where(
                    Participant.key_hash == digest
                )
            )
        ).first()
    if row is None:
        raise _unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise _unauthorized("revoked API key")
    principal = Principal(id=row.id, role=Role(row.role))
    state.key_cache.put(digest, principal)
    return principal


class KeyCache:
    """Recently authenticated keys (by hash), so a busy agent costs no lookup per request.

    Entries live between half of ``ttl_s`` and ``ttl_s`` seconds of monotonic time, the share
    fixed by the key's hash: agents that connected together (all of them, after a restart)
    would otherwise fall out of the cache in the same second, and their lookups queue up
    behind each other and in front of the bids. Revoking a participant through the API
    clears the cache of the process that served it at once; every process also runs
    :meth:`watch`, which clears its cache within ``poll_s`` of a revocation committed by any
    other process (another worker, the admin command), so no revoked key is honoured for
    longer than that. Bids also re-check revocation inside their own transaction.

    Args:
        ttl_s: lifetime of an entry; 0 disables the cache.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str) -> Principal | None:
        """The cached principal for a key hash, if fresh."""
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal) -> None:
        """Remember a freshly authenticated key."""
        if self.ttl_s > 0:
            if len(self._entries) > 100_000:
                self._entries.clear()
            share = 0.5 + 0.5 * int(digest[:8], 16) / 0xFFFFFFFF
            self._entries[digest] = (principal, time.monotonic() + self.ttl_s * share)

    def clear(self) -> None:
        """Forget everything (after a revocation)."""
        self._entries.clear()

    async def watch(self, db: Any, poll_s: float) -> None:
        """Clear the cache whenever the set of revoked participants changes (runs forever).

        One small query per ``poll_s``, whatever the request rate. The first poll clears it
        as well: a key cached before it may belong to a participant revoked before it, which
        the later polls would not see as a change.
        """
        seen: tuple[int, Any] | None = None
        while True:
            try:
                async with db.read() as session:
                    row = (
                        await session.execute(
                            select(func.count(), func.max(Participant.revoked_at)).where(
                                Participant.revoked_at.is_not(None)
                            )
                        )
                    ).one()
                current = (int(row[0]), row[1])
                if current != seen:  # on the first poll too (seen is None)
                    self.clear()
                seen = current
            except Exception:  # a database hiccup must not end the watch
                log.warning("key-cache revocation watch failed; retrying", exc_info=True)
                self.clear()
            await asyncio.sleep(poll_s)


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and admits only ``roles`` (403 otherwise).

    One dependency level (not one wrapping :func:`authenticate`): each level costs FastAPI
    measurable time per request.
    """
    allowed = frozenset(roles)

    async def _dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Principal:
        principal = await resolve_key(request.app.state.service, _token(credentials))
        if principal.role not in allowed:
            names = ", ".join(sorted(allowed))
            raise ProblemError(403, "Forbidden", f"role {principal.role} may not do this ({names})")
        return principal

    return _dependency
