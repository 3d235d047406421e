"""API keys and roles.

A key is 32 random bytes (URL-safe base64) with a ``gbk_`` prefix, shown once when issued
and stored only as its SHA-256 hash. A plain hash (no salt, no slow KDF) is adequate because
keys are high-entropy random tokens, not passwords; it also makes the lookup an index probe.
Requests carry the key as ``Authorization: Bearer <key>``. Missing, unknown or revoked keys
answer 401; a known key with the wrong role answers 403.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from service.models import Participant
from service.problems import ProblemError

__all__ = ["KeyCache", "Principal", "Role", "hash_key", "new_api_key", "require"]

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
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing bearer API key")
    key = credentials.credentials
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise _unauthorized("unknown API key")
    state = request.app.state.service
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

    Entries live ``ttl_s`` seconds of monotonic time; revoking a participant through the API
    clears the cache at once, so a revocation takes effect on the next request. (A key
    revoked directly in the database by another process is honoured within ``ttl_s``.)

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
            self._entries[digest] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        """Forget everything (after a revocation)."""
        self._entries.clear()


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and admits only ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    async def _dependency(principal: Principal = Depends(authenticate)) -> Principal:  # noqa: B008
        if principal.role not in allowed:
            names = ", ".join(sorted(allowed))
            raise ProblemError(403, "Forbidden", f"role {principal.role} may not do this ({names})")
        return principal

    return _dependency
