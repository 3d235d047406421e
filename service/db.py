"""Database access: one async engine, read and write sessions, schema creation.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is used by URL. Both give
the same behaviour:

* SQLite runs in WAL mode with ``synchronous=FULL`` so a committed transaction survives a
  killed process, and write transactions start with ``BEGIN IMMEDIATE`` so a read-then-write
  check (is the round still open?) cannot be overtaken by another writer. In-process writers
  queue on an :class:`asyncio.Lock` rather than in SQLite's busy handler.
* PostgreSQL write transactions lock the round row they depend on (see ``rounds.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.models import Base

__all__ = ["Database", "RawJSON", "default_sqlite_url"]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WRITE = "gridbid_write"


class RawJSON(str):
    """A JSON column value that is already serialised: stored as is, not encoded again."""

    __slots__ = ()


def _json_serializer(value: Any) -> str:
    return value if isinstance(value, RawJSON) else json.dumps(value)


def default_sqlite_url(path: str = "gridbid.sqlite") -> str:
    """Return the aiosqlite URL of a database file."""
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """The service's database: engine, sessions and schema.

    Args:
        url: SQLAlchemy URL, ``sqlite+aiosqlite:///file`` or ``postgresql+asyncpg://...``.
        schema: PostgreSQL only: keep all tables in this schema (created if missing); tests
            use one schema per test so runs never collide.
        pool_size: PostgreSQL connection-pool size.
    """

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 20) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.schema = schema
        kwargs: dict[str, Any] = {"json_serializer": _json_serializer}
        if self.is_sqlite:
            if schema is not None:
                raise ValueError("schema is only supported on PostgreSQL")
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
            if schema is not None:
                if not _SCHEMA_NAME.match(schema):
                    raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
                kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = async_sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    async def create_schema(self) -> None:
        """Create the tables (and the PostgreSQL schema) if they do not exist."""
        async with self.engine.begin() as conn:
            if self.schema is not None:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await conn.run_sync(Base.metadata.create_all)

    async def drop_schema(self) -> None:
        """Drop everything this database object created (tests only)."""
        async with self.engine.begin() as conn:
            if self.schema is not None:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            else:
                await conn.run_sync(Base.metadata.drop_all)

    async def dispose(self) -> None:
        """Close all pooled connections."""
        await self.engine.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, committed (durably) when the block exits without error."""
        if self._write_lock is None:
            async with self._writer() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._writer() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (its transaction is rolled back at the end)."""
        async with self._reader() as session:
            yield session


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, full fsync, foreign keys, and ``BEGIN IMMEDIATE`` for write sessions."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
