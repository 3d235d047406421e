"""The coordinator's command functions (wired into ``gridbid`` by the gridbid package)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from service.auth import hash_key
from service.cli import app
from service.db import Database
from service.models import Participant


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite'}"


async def _stored(url: str) -> list[tuple[str, str, str]]:
    db = Database(url)
    async with db.read() as session:
        rows = (
            await session.execute(select(Participant.id, Participant.role, Participant.key_hash))
        ).all()
    await db.dispose()
    return [tuple(r) for r in rows]


def test_create_participant_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    url = _url(tmp_path)
    result = CliRunner().invoke(
        app, ["create-participant", "school", "--role", "prosumer", "--db", url]
    )
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("gbk_") and len(key) > 40
    stored = asyncio.run(_stored(url))
    assert stored == [("school", "prosumer", hash_key(key))]
    assert key not in str(stored)
    again = CliRunner().invoke(app, ["create-participant", "school", "--db", url])
    assert again.exit_code == 1 and "already exists" in again.output


def test_create_participant_refuses_bad_role_and_id(tmp_path: Path) -> None:
    url = _url(tmp_path)
    result = CliRunner().invoke(app, ["create-participant", "a b", "--role", "king", "--db", url])
    assert result.exit_code == 2
    assert "id:" in result.output and "role:" in result.output
