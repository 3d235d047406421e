"""Idempotent writes: a request is identified by a key and its body's hash.

Every write the API accepts (bids, flexibility requests, baselines, meter and voltage
readings) follows one rule: look up what is stored under the request's key; if its body hash
matches, answer with the stored row again (a replay); if it differs, refuse with 409; if
nothing is stored, store it. :func:`replay_or_conflict` is that rule, written once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.problems import ProblemError

__all__ = ["Accepted", "body_hash", "canonical_json", "digest_of", "replay_or_conflict"]


@dataclass(frozen=True)
class Accepted:
    """A stored row and whether this call stored it (``False``: replayed earlier answer)."""

    row: Any
    created: bool


def canonical_json(body: dict[str, Any]) -> str:
    """A body's canonical JSON: sorted keys, no whitespace, no NaN."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest_of(canonical: str) -> str:
    """Hex SHA-256 of a canonical JSON text."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def body_hash(body: dict[str, Any]) -> str:
    """SHA-256 of a body's canonical JSON (sorted keys, no whitespace)."""
    return digest_of(canonical_json(body))


def replay_or_conflict(
    existing: Any, digest: str, conflict: Callable[[], ProblemError]
) -> Accepted | None:
    """What to answer for a request whose key already holds ``existing`` (or nothing).

    Args:
        existing: the stored row under the request's key (with a ``body_hash``), or ``None``.
        digest: the request body's :func:`body_hash`.
        conflict: builds the 409 problem naming the field that identifies the request.

    Returns:
        ``Accepted(existing, created=False)`` for a replay, ``None`` if nothing is stored.

    Raises:
        ProblemError: ``conflict()`` if a different body is stored under the key.
    """
    if existing is None:
        return None
    if existing.body_hash == digest:
        return Accepted(existing, created=False)
    raise conflict()
