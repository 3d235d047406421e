"""Market slots: the slot length and the check that an interval sits on slot boundaries.

Slots are counted from the Unix epoch (1970-01-01T00:00Z), so with the default 15 minutes
every interval must start and end at :00, :15, :30 or :45 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["MarketConfig", "check_aligned", "field_error", "is_aligned"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MarketConfig(BaseModel):
    """Market-wide settings that messages are checked against.

    Attributes:
        slot_minutes: Slot length in minutes; must divide a day (1440 minutes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    slot_minutes: Annotated[int, Field(gt=0, le=1440)] = 15

    def model_post_init(self, context: object, /) -> None:
        """Refuse a slot length that does not divide a day."""
        if 1440 % self.slot_minutes:
            raise ValueError(f"slot_minutes={self.slot_minutes} must divide 1440 (a day)")

    @property
    def slot(self) -> timedelta:
        """The slot length as a timedelta."""
        return timedelta(minutes=self.slot_minutes)


class _HasInterval(Protocol):
    t_start: datetime
    t_end: datetime


_M = TypeVar("_M", bound=_HasInterval)


def field_error(title: str, errors: list[tuple[str, object, str]]) -> ValidationError:
    """Build a :class:`pydantic.ValidationError` whose ``loc`` names each offending field.

    Raised from inside a model validator, pydantic keeps the field locations, so a check
    that needs several fields still names the one that is wrong.

    Args:
        title: Model name shown in the error.
        errors: ``(field, value, message)`` triples.
    """
    return ValidationError.from_exception_data(
        title,
        [
            {"type": "value_error", "loc": (field,), "input": value, "ctx": {"error": message}}
            for field, value, message in errors
        ],
    )


def is_aligned(moment: datetime, config: MarketConfig) -> bool:
    """Whether an aware datetime falls exactly on a slot boundary."""
    return (moment - _EPOCH) % config.slot == timedelta(0)


def check_aligned(message: _M, config: MarketConfig) -> _M:
    """Return ``message`` unchanged if its interval is on slot boundaries, else raise.

    Args:
        message: Anything with aware ``t_start`` and ``t_end`` (a request, bid or award).
        config: The market's settings (slot length).

    Returns:
        The same message, so the call can be chained.

    Raises:
        pydantic.ValidationError: naming ``t_start`` and/or ``t_end`` and the value, so a
            service can answer it the same way as any other invalid field.
    """
    errors = [
        (
            field,
            getattr(message, field),
            f"{field}={getattr(message, field).isoformat()} is not aligned to the "
            f"{config.slot_minutes}-minute market slots",
        )
        for field in ("t_start", "t_end")
        if not is_aligned(getattr(message, field), config)
    ]
    if errors:
        raise field_error(type(message).__name__, errors)
    return message
