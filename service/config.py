"""The coordinator's configuration: parsed once from YAML/JSON into a strict, frozen model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from service.clock import AcceleratedClock, Clock, SystemClock

__all__ = ["ClockConfig", "ServiceConfig", "load_config"]


class ClockConfig(BaseModel):
    """Which clock the service runs on.

    ``system`` is the wall clock; ``accelerated`` runs simulated time ``speed`` times faster,
    anchored at ``anchor_unix_s`` (wall-clock seconds) where simulated time equals ``start``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["system", "accelerated"] = "system"
    start: AwareDatetime | None = None
    speed: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    anchor_unix_s: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _start_needed(self) -> ClockConfig:
        if self.kind == "accelerated" and self.start is None:
            raise ValueError("clock.start is required when clock.kind is 'accelerated'")
        return self

    def build(self) -> Clock:
        """Create the clock this config describes."""
        if self.kind == "system":
            return SystemClock()
        assert self.start is not None  # noqa: S101 - guaranteed by the validator
        return AcceleratedClock(self.start, self.speed, self.anchor_unix_s)


class ServiceConfig(BaseModel):
    """Market-round timing, rule, alert thresholds and limits of one coordinator.

    Times are in minutes of (possibly simulated) clock time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = "pay_as_bid"
    rule_params: dict[str, Any] = Field(default_factory=dict)
    slot_minutes: int = Field(default=15, gt=0, le=24 * 60)
    gate_closure_minutes: int = Field(default=5, ge=0)
    open_ahead_slots: int = Field(default=4, ge=1, le=96)
    settle_after_minutes: int = Field(default=15, ge=0)
    stale_meter_slots: int = Field(default=4, ge=1)
    implausible_factor: float = Field(default=1.1, ge=1.0, allow_inf_nan=False)
    non_delivery_tolerance: float = Field(default=0.05, ge=0.0, le=1.0, allow_inf_nan=False)
    penalty_factor: float = Field(default=1.5, ge=0.0, allow_inf_nan=False)
    vm_min_pu: float = Field(default=0.95, gt=0, allow_inf_nan=False)
    vm_max_pu: float = Field(default=1.05, gt=0, allow_inf_nan=False)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    auth_cache_seconds: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    """How long an authenticated key is remembered (revocations clear it, see below)."""
    revocation_poll_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """How often each process checks for revocations made by other processes."""
    tick_seconds: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    db_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """PostgreSQL only: keep the tables in this schema (created if missing)."""

    @model_validator(mode="after")
    def _band(self) -> ServiceConfig:
        if self.vm_min_pu >= self.vm_max_pu:
            raise ValueError(f"vm_min_pu {self.vm_min_pu} must be below vm_max_pu {self.vm_max_pu}")
        if self.gate_closure_minutes >= self.slot_minutes * self.open_ahead_slots:
            raise ValueError("gate_closure_minutes must be shorter than the opening horizon")
        return self

    @property
    def slot(self) -> timedelta:
        """Length of one delivery slot."""
        return timedelta(minutes=self.slot_minutes)

    @property
    def gate_lead(self) -> timedelta:
        """How long before a slot starts its round closes."""
        return timedelta(minutes=self.gate_closure_minutes)


def load_config(path: str | Path | None) -> ServiceConfig:
    """Read a YAML (or JSON) service config; ``None`` gives the defaults.

    Raises:
        pydantic.ValidationError: naming the offending key path.
    """
    if path is None:
        return ServiceConfig()
    data = yaml.safe_load(Path(path).read_text()) or {}
    return ServiceConfig.model_validate(data)
