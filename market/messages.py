"""Market messages: the pydantic models that cross process and trust boundaries.

Every model is frozen and forbids unknown fields; floats must be finite; datetimes must be
timezone-aware and are normalised to UTC; identifiers match ``^[A-Za-z0-9_-]{1,128}$``.
A bad value raises :class:`pydantic.ValidationError` whose ``loc`` names the field.

Sign convention and units are stated once, in :mod:`market` (see its docstring).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from market.slots import MarketConfig, check_aligned, field_error

__all__ = [
    "Award",
    "Bid",
    "BusIndex",
    "ClearingResult",
    "Direction",
    "FlexRequest",
    "Identifier",
    "SettlementLine",
    "SettlementReport",
]

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


def _reject_bool(value: Any) -> Any:
    """Refuse ``True``/``False`` where an integer index is meant (pydantic would coerce)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def _to_utc(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC so equal instants compare and hash equal."""
    return value.astimezone(UTC)


Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""An id: 1–128 characters from ``A-Z a-z 0-9 _ -``."""

BusIndex = Annotated[int, BeforeValidator(_reject_bool), Field(ge=0)]
"""A pandapower bus index (non-negative integer)."""

UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, stored in UTC; naive datetimes are rejected."""

NonNegative = Annotated[float, Field(ge=0.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Direction(StrEnum):
    """Direction of flexibility, seen from the grid (see :mod:`market` for the sign convention).

    ``UP`` is more injection / less consumption at the seller's bus; ``DOWN`` is less
    injection / more consumption.
    """

    UP = "up"
    DOWN = "down"


class _Message(BaseModel):
    """Common configuration of every market message."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _Interval(_Message):
    """A delivery interval ``[t_start, t_end)`` in UTC, optionally checked against slots.

    Slot alignment is checked when the caller passes a market config in the validation
    context, e.g. ``Bid.model_validate(data, context={"market": MarketConfig()})``, or
    afterwards with :func:`market.slots.check_aligned`.
    """

    t_start: UtcDatetime
    t_end: UtcDatetime

    @model_validator(mode="after")
    def _interval_is_ordered(self, info: ValidationInfo) -> Self:
        if self.t_end <= self.t_start:
            message = f"must be after t_start ({self.t_start.isoformat()})"
            raise field_error(type(self).__name__, [("t_end", self.t_end, message)])
        context = info.context if isinstance(info.context, dict) else {}
        config = context.get("market")
        if isinstance(config, MarketConfig):
            check_aligned(self, config)
        return self

    @property
    def duration_h(self) -> float:
        """Length of the delivery interval in hours."""
        return (self.t_end - self.t_start).total_seconds() / 3600.0


class FlexRequest(_Interval):
    """A buyer's (normally the DSO's) request for flexibility where its grid needs it.

    Attributes:
        request_id: Unique id of the request.
        buyer_id: Who pays for the flexibility.
        bus: pandapower bus index where the need is.
        zone: Optional zone label; merit-order rules may match bids by zone (rule params).
        direction: ``up`` or ``down``.
        p_kw: Active power wanted (>= 0) if delivered at ``bus`` itself.
        q_kvar: Reactive power wanted (>= 0), if any (merit-order rules).
        max_price_eur_per_kwh: The most the buyer pays per kWh delivered at ``bus``.
        max_price_eur_per_kvarh: The most it pays per kvarh; ``None`` means the kWh cap
            (merit-order rules; the sensitivity rules price Q by its voltage effect).
        dv_required_pu: Voltage change (>= 0) needed at ``bus`` in ``direction``; used by
            the ``locational`` and ``iterative_price`` rules.
        sensitivity_pu_per_kw: bus -> voltage change at ``bus`` per kW of flexibility in
            ``direction`` delivered at that bus; positive helps.
        sensitivity_pu_per_kvar: The same per kvar of reactive flexibility.
    """

    request_id: Identifier
    buyer_id: Identifier
    bus: BusIndex
    zone: Identifier | None = None
    direction: Direction
    p_kw: NonNegative
    q_kvar: NonNegative | None = None
    max_price_eur_per_kwh: NonNegative
    max_price_eur_per_kvarh: NonNegative | None = None
    dv_required_pu: NonNegative = 0.0
    sensitivity_pu_per_kw: dict[BusIndex, float] = Field(default_factory=dict)
    sensitivity_pu_per_kvar: dict[BusIndex, float] = Field(default_factory=dict)

    @property
    def kvar_cap_eur_per_kvarh(self) -> float:
        """The effective reactive price cap (falls back to the kWh cap)."""
        if self.max_price_eur_per_kvarh is None:
            return self.max_price_eur_per_kwh
        return self.max_price_eur_per_kvarh


class Bid(_Interval):
    """A seller's offer to deviate from its baseline in one direction over an interval.

    Attributes:
        bid_id: Id of the bid, unique per seller; a newer ``version`` replaces an older one.
        seller_id: The agent that offers.
        asset_id: The asset that would deliver (battery, heat pump...).
        bus: pandapower bus index of the asset.
        direction: ``up`` or ``down``.
        p_kw: Active power offered (>= 0).
        q_kvar: Reactive power offered (>= 0); at least one of ``p_kw``/``q_kvar`` > 0.
        price_eur_per_kwh: Asked price for active energy (>= 0); with a ``curve``, the
            price of its first step.
        price_eur_per_kvarh: Asked price for reactive energy (>= 0).
        min_fraction: Smallest accepted share of each offered quantity; 0 is divisible,
            1 is all-or-nothing. With a curve it applies to ``p_kw`` and must fit in the
            first step.
        curve: Optional piecewise offer ``[(quantity_kw, price_eur_per_kwh), ...]``: step
            quantities > 0 summing to ``p_kw``, prices strictly increasing.
        version: Non-negative revision number; the highest version of a
            ``(seller_id, bid_id)`` wins in an :class:`~market.book.OrderBook`.
    """

    bid_id: Identifier
    seller_id: Identifier
    asset_id: Identifier
    bus: BusIndex
    direction: Direction
    p_kw: NonNegative = 0.0
    q_kvar: NonNegative = 0.0
    price_eur_per_kwh: NonNegative = 0.0
    price_eur_per_kvarh: NonNegative = 0.0
    min_fraction: Fraction = 0.0
    curve: tuple[tuple[Annotated[float, Field(gt=0.0)], NonNegative], ...] | None = None
    version: Annotated[int, BeforeValidator(_reject_bool), Field(ge=0)] = 0

    @model_validator(mode="after")
    def _quantities_and_curve(self) -> Self:
        if self.p_kw <= 0.0 and self.q_kvar <= 0.0:
            message = "p_kw or q_kvar must be > 0 (a bid must offer something)"
            raise field_error("Bid", [("p_kw", self.p_kw, message)])
        if self.curve is not None:
            problem = self._curve_problem(self.curve)
            if problem:
                raise field_error("Bid", [("curve", self.curve, problem)])
        return self

    def _curve_problem(self, curve: tuple[tuple[float, float], ...]) -> str | None:
        """Describe what is wrong with a price-quantity curve, or ``None`` if it is valid."""
        if not curve:
            return "must have at least one step when given"
        prices = [price for _, price in curve]
        if any(b <= a for a, b in pairwise(prices)):
            return f"step prices must strictly increase, got {prices}"
        total_kw = sum(q for q, _ in curve)
        if abs(total_kw - self.p_kw) > 1e-9 * max(1.0, self.p_kw):
            return f"step quantities sum to {total_kw} kW, p_kw is {self.p_kw}"
        if prices[0] != self.price_eur_per_kwh:
            return (
                f"first step price {prices[0]} must equal price_eur_per_kwh "
                f"{self.price_eur_per_kwh}"
            )
        if self.min_fraction * self.p_kw > curve[0][0] + 1e-12:
            return (
                f"the minimum accepted quantity {self.min_fraction * self.p_kw} kW "
                f"(min_fraction x p_kw) must fit in the first step ({curve[0][0]} kW)"
            )
        return None


class Award(_Interval):
    """An accepted (part of a) bid, for one request, with the price the seller is paid.

    ``book_row`` is the row of the :class:`~market.book.OrderBook` the award came from, so
    a simulator can aggregate awards with numpy. A curve bid can yield one award per step.
    The interval is the request's interval.
    """

    bid_id: Identifier
    seller_id: Identifier
    asset_id: Identifier
    bus: BusIndex
    request_id: Identifier
    buyer_id: Identifier
    book_row: Annotated[int, Field(ge=0)]
    direction: Direction
    p_kw: NonNegative
    q_kvar: NonNegative = 0.0
    price_eur_per_kwh: NonNegative
    price_eur_per_kvarh: NonNegative = 0.0

    @property
    def cost_eur(self) -> float:
        """What the buyer owes if the award is delivered in full."""
        energy = self.p_kw * self.price_eur_per_kwh + self.q_kvar * self.price_eur_per_kvarh
        return energy * self.duration_h


class ClearingResult(_Message):
    """What a clearing rule returns.

    Attributes:
        rule: Registered name of the rule that produced it.
        params: The rule parameters actually used (defaults filled in).
        awards: Accepted bids, ordered by request order then rule-specific order.
        prices: request id -> price in EUR/kWh for active power delivered at the request's
            bus (pay-as-clear: the uniform clearing price; pay-as-bid: the highest accepted
            price; locational / iterative: the locational price at the request's bus).
            Requests with nothing accepted are absent.
        prices_q: The same for reactive power, in EUR/kvarh.
        bus_prices: bus -> locational price in EUR/kWh (locational and iterative rules).
        unserved_p_kw: request id -> active power still missing (>= 0).
        unserved_q_kvar: request id -> reactive power still missing (>= 0).
        unserved_dv_pu: request id -> voltage need still missing (sensitivity rules).
        rounds: Rounds used (iterative rules; 1 for one-shot rules).
        converged: Whether an iterative rule met every need (``True`` for one-shot rules).
    """

    rule: str
    params: dict[str, Any] = Field(default_factory=dict)
    awards: tuple[Award, ...] = ()
    prices: dict[str, float] = Field(default_factory=dict)
    prices_q: dict[str, float] = Field(default_factory=dict)
    bus_prices: dict[int, float] = Field(default_factory=dict)
    unserved_p_kw: dict[str, NonNegative] = Field(default_factory=dict)
    unserved_q_kvar: dict[str, NonNegative] = Field(default_factory=dict)
    unserved_dv_pu: dict[str, NonNegative] = Field(default_factory=dict)
    rounds: Annotated[int, Field(ge=0)] = 1
    converged: bool = True

    @property
    def cost_eur(self) -> float:
        """Total the buyers owe if every award is delivered in full."""
        return sum(award.cost_eur for award in self.awards)

    def award_arrays(self) -> dict[str, np.ndarray]:
        """Awards as numpy columns, for aggregating by book row in a simulator.

        Returns:
            ``book_row`` (int64), ``p_kw``, ``q_kvar``, ``price_eur_per_kwh`` and
            ``price_eur_per_kvarh`` (float64), one element per award, in award order.
        """
        n = len(self.awards)
        columns: dict[str, np.ndarray] = {
            "book_row": np.fromiter((a.book_row for a in self.awards), np.int64, n)
        }
        for name in ("p_kw", "q_kvar", "price_eur_per_kwh", "price_eur_per_kvarh"):
            columns[name] = np.fromiter((getattr(a, name) for a in self.awards), np.float64, n)
        return columns


SettlementFlag = Literal["ok", "under", "over"]


class SettlementLine(_Interval):
    """Settlement of one award against metered delivery.

    Delivered quantities are measured against the seller's baseline in the award's
    direction; payment covers delivered volume up to the awarded volume at the award
    price; shortfall costs ``penalty_factor`` x award price per missing unit.

    Attributes:
        flag: ``under``/``over`` if delivery missed the award by more than the tolerance.
        net_eur: ``payment_eur - penalty_eur``: the seller's revenue, the buyer's cost.
    """

    bid_id: Identifier
    seller_id: Identifier
    asset_id: Identifier
    buyer_id: Identifier
    request_id: Identifier
    book_row: Annotated[int, Field(ge=0)]
    direction: Direction
    awarded_p_kw: NonNegative
    delivered_p_kw: float
    awarded_q_kvar: NonNegative = 0.0
    delivered_q_kvar: float = 0.0
    shortfall_kwh: NonNegative
    shortfall_kvarh: NonNegative = 0.0
    payment_eur: NonNegative
    penalty_eur: NonNegative
    net_eur: float
    flag: SettlementFlag


class SettlementReport(_Message):
    """Settlement of a set of awards: lines, each buyer's budget and each seller's revenue.

    Budget balance: ``sum(buyer_cost_eur.values()) == sum(seller_revenue_eur.values())``.
    """

    lines: tuple[SettlementLine, ...] = ()
    buyer_cost_eur: dict[str, float] = Field(default_factory=dict)
    seller_revenue_eur: dict[str, float] = Field(default_factory=dict)
    flagged: tuple[str, ...] = ()
