"""Database tables (SQLAlchemy 2 ORM).

The uniqueness constraints carry the service's safety promises, so that they hold even if
the process dies at any point or two schedulers race:

* ``clearings.round_id`` is the primary key: a round can be cleared at most once;
* ``settlement_runs.round_id`` likewise: a round is settled at most once;
* ``bids (participant_id, bid_id, version)``: a bid version is stored once, so a replayed
  request can only ever find its earlier answer;
* ``rounds.slot_start``: one round per delivery slot.

Market messages are stored as their JSON wire form in ``body`` next to the columns the
service queries on, and are re-validated with the market's models when read back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Alert",
    "Asset",
    "Award",
    "Base",
    "Baseline",
    "Bid",
    "Clearing",
    "FlexRequest",
    "MeterReading",
    "Participant",
    "Round",
    "SettlementLine",
    "SettlementRun",
    "UTCDateTime",
    "VoltageReading",
]

ID_LEN = 128


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite has no time zones).

    Stored as naive UTC; read back with ``tzinfo=UTC``. Naive input is refused: by the time a
    value reaches the database the API has already rejected naive datetimes.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class Participant(Base):
    """A market participant; its API key is kept only as a SHA-256 hash."""

    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Asset(Base):
    """A prosumer's registered asset at a bus, with its rating."""

    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    bus: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    p_max_kw: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Round(Base):
    """One market round: the bids for one delivery slot, closed at ``gate_closure``."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime(), unique=True)
    slot_end: Mapped[datetime] = mapped_column(UTCDateTime())
    gate_closure: Mapped[datetime] = mapped_column(UTCDateTime())
    rule: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the last clearing attempt failed (status ``failed``), for the operator."""


class FlexRequest(Base):
    """A DSO's flexibility request in a round (market ``FlexRequest`` as JSON)."""

    __tablename__ = "flex_requests"
    __table_args__ = (UniqueConstraint("participant_id", "request_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    request_id: Mapped[str] = mapped_column(String(ID_LEN))
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    body_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Bid(Base):
    """One version of a prosumer's bid (market ``Bid`` as JSON)."""

    __tablename__ = "bids"
    __table_args__ = (
        UniqueConstraint("participant_id", "bid_id", "version"),
        Index("ix_bids_round_participant", "round_id", "participant_id"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    bid_id: Mapped[str] = mapped_column(String(ID_LEN))
    version: Mapped[int] = mapped_column(Integer)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    body_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Clearing(Base):
    """The one clearing of a round; its primary key makes a second clearing impossible."""

    __tablename__ = "clearings"

    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_bids: Mapped[int] = mapped_column(Integer)
    n_requests: Mapped[int] = mapped_column(Integer)
    cleared_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Award(Base):
    """One award of a clearing, addressed to the bid's owner."""

    __tablename__ = "awards"
    __table_args__ = (UniqueConstraint("round_id", "seq"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("clearings.round_id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    buyer_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    bid_id: Mapped[str] = mapped_column(String(ID_LEN))
    asset_id: Mapped[str] = mapped_column(String(ID_LEN))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class MeterReading(Base):
    """An asset's measured mean power over one slot, as reported by its owner."""

    __tablename__ = "meter_readings"
    __table_args__ = (UniqueConstraint("asset_id", "slot_start"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime())
    p_kw: Mapped[float] = mapped_column(Float)
    body_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Baseline(Base):
    """An asset's declared baseline (its planned mean power) over one slot.

    Declared before the slot's gate closure and frozen from then on: delivery is settled
    against it, so it cannot be chosen after the fact.
    """

    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("asset_id", "slot_start"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime())
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    p_kw: Mapped[float] = mapped_column(Float)
    body_hash: Mapped[str] = mapped_column(String(64))
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VoltageReading(Base):
    """A voltage magnitude measured by the DSO at a bus over one slot."""

    __tablename__ = "voltage_readings"
    __table_args__ = (UniqueConstraint("bus", "slot_start"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    bus: Mapped[int] = mapped_column(Integer)
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime())
    vm_pu: Mapped[float] = mapped_column(Float)
    body_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SettlementRun(Base):
    """Marks a round as settled; the primary key makes a second settlement impossible."""

    __tablename__ = "settlement_runs"

    round_id: Mapped[int] = mapped_column(ForeignKey("clearings.round_id"), primary_key=True)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SettlementLine(Base):
    """One settlement line (market ``SettlementLine`` as JSON) for one participant."""

    __tablename__ = "settlement_lines"
    __table_args__ = (UniqueConstraint("round_id", "seq"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.round_id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    buyer_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class Alert(Base):
    """An operational alert; (kind, subject, slot_start) is raised at most once."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("kind", "subject", "slot_start"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str | None] = mapped_column(
        ForeignKey("participants.id"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(2 * ID_LEN + 1))
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
