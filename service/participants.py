"""Admitting and revoking participants (used by the operator API and the admin command)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError

from service.auth import Role, hash_key, new_api_key
from service.db import Database
from service.models import Participant
from service.problems import ProblemError

__all__ = ["create_participant", "revoke_participant"]


async def create_participant(
    db: Database, participant_id: str, role: Role | str, now: datetime
) -> tuple[Participant, str]:
    """Create a participant and return it with its API key (the only time it exists in clear).

    Raises:
        ProblemError: 409 if the id is taken.
    """
    key = new_api_key()
    row = Participant(
        id=participant_id, role=Role(role).value, key_hash=hash_key(key), created_at=now
    )
    try:
        async with db.write() as session:
            if await session.get(Participant, participant_id) is not None:
                raise _taken(participant_id)
            session.add(row)
    except IntegrityError as exc:
        raise _taken(participant_id) from exc
    return row, key


async def revoke_participant(db: Database, participant_id: str, now: datetime) -> Participant:
    """Revoke a participant's key (idempotent: a second revocation keeps the first time).

    Raises:
        ProblemError: 404 if there is no such participant.
    """
    async with db.write() as session:
        row = await session.get(Participant, participant_id)
        if row is None:
            raise ProblemError.field(
                404, "Not found", "participant_id", "no such participant", participant_id
            )
        if row.revoked_at is None:
            row.revoked_at = now
    return row


def _taken(participant_id: str) -> ProblemError:
    return ProblemError.field(
        409, "Conflict", "id", "participant id already exists", participant_id
    )
