"""The service's own wire types (market messages come from :mod:`market.messages`).

All inputs are strict: unknown keys are refused, numbers must be finite and within sane
bounds, datetimes must carry a UTC offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from market.messages import BusIndex, Identifier
from service.auth import Role

__all__ = [
    "AggregateOut",
    "AlertOut",
    "AssetIn",
    "AssetOut",
    "AwardOut",
    "BaselineIn",
    "BaselineOut",
    "BidAck",
    "FlexRequestAck",
    "MeterReadingIn",
    "MeterReadingOut",
    "ParticipantCreated",
    "ParticipantIn",
    "ParticipantOut",
    "RetryIn",
    "RoundOut",
    "SettlementOut",
    "VoltageReadingIn",
    "VoltageReadingOut",
]

Ident = Identifier
"""Identifiers of participants and assets: the market's (1–128 of ``A-Z a-z 0-9 _ -``)."""

_IN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
P_ABSURD_KW = 1e6
"""No asset in a distribution pilot comes near 1 GW; anything beyond is refused outright."""


class ParticipantIn(BaseModel):
    """An operator's request to admit a participant."""

    model_config = _IN
    id: Ident
    role: Role


class ParticipantOut(BaseModel):
    """A participant as the operator sees it (never the key or its hash)."""

    id: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


class ParticipantCreated(ParticipantOut):
    """The answer to creating a participant: the only time the API key is shown."""

    api_key: str


class AssetIn(BaseModel):
    """A prosumer registers an asset at a bus with its rating (``p_max_kw``, > 0).

    Sign convention (DESIGN.md): positive power is consumption at the bus; the rating bounds
    the magnitude in either direction.
    """

    model_config = _IN
    asset_id: Ident
    bus: BusIndex
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "other"
    p_max_kw: float = Field(gt=0, le=P_ABSURD_KW)


class AssetOut(BaseModel):
    """A registered asset."""

    asset_id: str
    participant_id: str
    bus: int
    kind: str
    p_max_kw: float


class RoundOut(BaseModel):
    """A market round and its state (open → cleared → settled)."""

    id: int
    slot_start: datetime
    slot_end: datetime
    gate_closure: datetime
    rule: str
    status: str
    failure: str | None = None
    """Why the last clearing attempt failed, while ``status`` is ``failed``."""


class RetryIn(BaseModel):
    """An operator's retry of a failed clearing, optionally with another rule or parameters
    (default: the round's rule; its parameters are the config's for the config's rule)."""

    model_config = _IN
    rule: str | None = None
    rule_params: dict[str, Any] | None = None


class BidAck(BaseModel):
    """The answer to an accepted bid version (replayed unchanged for a repeated request)."""

    bid_id: str
    version: int
    round_id: int
    asset_id: str
    accepted_at: datetime
    bid: dict[str, Any]


class FlexRequestAck(BaseModel):
    """The answer to an accepted flexibility request."""

    request_id: str
    round_id: int
    accepted_at: datetime
    request: dict[str, Any]


class AwardOut(BaseModel):
    """One award of a cleared round; ``id`` increases, use it as a polling cursor."""

    id: int
    round_id: int
    bid_id: str
    asset_id: str
    participant_id: str
    buyer_id: str
    award: dict[str, Any]


class MeterReadingIn(BaseModel):
    """A meter's mean power over one slot (positive = consumption).

    It carries no baseline: baselines are declared before gate closure
    (:class:`BaselineIn`), so that delivery is measured against a plan fixed in advance.
    """

    model_config = _IN
    asset_id: Ident
    t_start: AwareDatetime
    p_kw: float = Field(ge=-P_ABSURD_KW, le=P_ABSURD_KW)


class MeterReadingOut(BaseModel):
    """A stored meter reading."""

    asset_id: str
    t_start: datetime
    p_kw: float
    received_at: datetime


class BaselineIn(BaseModel):
    """An asset's planned mean power over one slot (positive = consumption), declared
    before that slot's gate closure; awards on the asset are settled against it."""

    model_config = _IN
    asset_id: Ident
    t_start: AwareDatetime
    p_kw: float = Field(ge=-P_ABSURD_KW, le=P_ABSURD_KW)


class BaselineOut(BaseModel):
    """A declared baseline (the latest declaration before gate closure)."""

    asset_id: str
    t_start: datetime
    p_kw: float
    round_id: int
    declared_at: datetime


class VoltageReadingIn(BaseModel):
    """The DSO's measured voltage magnitude at a bus over one slot."""

    model_config = _IN
    bus: BusIndex
    t_start: AwareDatetime
    vm_pu: float = Field(gt=0, lt=2)


class VoltageReadingOut(BaseModel):
    """A stored voltage reading."""

    bus: int
    t_start: datetime
    vm_pu: float
    received_at: datetime


class SettlementOut(BaseModel):
    """One settlement line of a settled round."""

    round_id: int
    participant_id: str
    line: dict[str, Any]


class AlertOut(BaseModel):
    """An alert: ``non_delivery``, ``stale_meter``, ``implausible_reading`` or ``voltage``."""

    id: int
    kind: str
    subject: str
    participant_id: str | None
    t_start: datetime
    detail: str
    created_at: datetime


class AggregateOut(BaseModel):
    """Anonymised per-round figures for observers: no participant, asset or bid ids."""

    round_id: int
    slot_start: datetime
    status: str
    n_bids: int
    n_bidders: int
    n_requests: int
    n_awards: int
    awarded_kw: float | None = None
