"""Settlement: pay delivered flexibility at the award price, penalise shortfall, flag misses.

Delivered flexibility is measured against the seller's baseline in the award's direction
(sign convention in :mod:`market`): ``up`` delivers ``baseline - metered``, ``down``
delivers ``metered - baseline``. For every award:

* payment = ``min(max(delivered, 0), awarded) x hours x price`` (over-delivery is not paid);
* shortfall = ``max(awarded - max(delivered, 0), 0) x hours``, penalised at
  ``penalty_factor x price`` per kWh (kvarh), paid back to the buyer;
* the line is flagged ``under`` (``over``) when delivery falls short of (exceeds) the award
  by more than ``max(tolerance x awarded, tolerance_kw)``;
* net = payment - penalty: the seller's revenue and the buyer's cost, so the buyers' total
  cost equals the sellers' total revenue (budget balance).

:func:`settle_arrays` does this for the simulator on aligned numpy arrays;
:func:`settle` does it for awards and :class:`MeterReading` messages (the service).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from market.messages import (
    Award,
    Direction,
    Identifier,
    SettlementLine,
    SettlementReport,
    _Interval,
)

__all__ = ["FLAG_CODES", "MeterReading", "SettlementArrays", "settle", "settle_arrays"]

FloatArray = npt.NDArray[np.float64]
FLAG_CODES = {0: "ok", -1: "under", 1: "over"}
"""Meaning of :attr:`SettlementArrays.flag`."""


class MeterReading(_Interval):
    """One asset's baseline and metered power over an interval (positive = consumption).

    Q fields are optional; without them reactive awards count as not delivered.
    """

    asset_id: Identifier
    baseline_p_kw: float
    metered_p_kw: float
    baseline_q_kvar: float | None = None
    metered_q_kvar: float | None = None


@dataclass(frozen=True)
class SettlementArrays:
    """Per-award settlement results, aligned with the input arrays.

    Attributes:
        paid_kwh: Energy paid for (P plus Q energy in kvarh).
        shortfall_kwh, shortfall_kvarh: Undelivered energy.
        payment_eur, penalty_eur, net_eur: Money per award; ``net = payment - penalty``.
        flag: 0 ok, -1 under-delivered, +1 over-delivered (see :data:`FLAG_CODES`).
    """

    paid_kwh: FloatArray
    shortfall_kwh: FloatArray
    shortfall_kvarh: FloatArray
    payment_eur: FloatArray
    penalty_eur: FloatArray
    net_eur: FloatArray
    flag: npt.NDArray[np.int8]


def _product(
    awarded: FloatArray,
    delivered: FloatArray,
    price: FloatArray,
    hours: FloatArray,
    penalty_factor: float,
    tolerance: float,
    tolerance_kw: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.int8]]:
    """Settle one product: (paid energy, shortfall energy, payment, penalty, flag)."""
    useful = np.clip(delivered, 0.0, awarded)
    paid = useful * hours
    shortfall = (awarded - useful) * hours
    band = np.maximum(tolerance * awarded, tolerance_kw)
    flag = np.where(delivered < awarded - band, -1, np.where(delivered > awarded + band, 1, 0))
    return paid, shortfall, paid * price, penalty_factor * shortfall * price, flag.astype(np.int8)


def settle_arrays(
    awarded_p_kw: npt.ArrayLike,
    delivered_p_kw: npt.ArrayLike,
    price_eur_per_kwh: npt.ArrayLike,
    duration_h: npt.ArrayLike,
    *,
    awarded_q_kvar: npt.ArrayLike | None = None,
    delivered_q_kvar: npt.ArrayLike | None = None,
    price_eur_per_kvarh: npt.ArrayLike | None = None,
    penalty_factor: float = 1.5,
    tolerance: float = 0.05,
    tolerance_kw: float = 0.01,
) -> SettlementArrays:
    """Settle many awards at once (one array element per award).

    Args:
        awarded_p_kw: Awarded active power (>= 0).
        delivered_p_kw: Delivered active power in the award's direction (may be negative
            if the seller moved the wrong way).
        price_eur_per_kwh: Award price.
        duration_h: Interval length in hours (scalar or per award).
        awarded_q_kvar, delivered_q_kvar, price_eur_per_kvarh: The same for reactive
            power; default none awarded.
        penalty_factor: Shortfall penalty as a multiple of the award price (>= 0).
        tolerance: Relative band around the award inside which delivery is ``ok``.
        tolerance_kw: Absolute floor of that band, in kW (kvar).

    Raises:
        ValueError: on non-finite inputs, mismatched lengths or a negative factor.
    """
    if penalty_factor < 0 or tolerance < 0 or tolerance_kw < 0:
        raise ValueError("penalty_factor, tolerance and tolerance_kw must be >= 0")
    a_p = np.asarray(awarded_p_kw, dtype=np.float64)
    n = a_p.shape[0]
    zeros = np.zeros(n)
    names = ("delivered_p_kw", "price_eur_per_kwh", "duration_h")
    d_p, price_p, hours = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()
        for v in (delivered_p_kw, price_eur_per_kwh, duration_h)
    )
    a_q, d_q, price_q = (
        zeros if v is None else np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
        for v in (awarded_q_kvar, delivered_q_kvar, price_eur_per_kvarh)
    )
    all_names = ("awarded_p_kw", *names, "awarded_q_kvar", "delivered_q_kvar", "price_q")
    for name, values in zip(all_names, (a_p, d_p, price_p, hours, a_q, d_q, price_q), strict=True):
        if not np.isfinite(values).all():
            raise ValueError(f"{name}: values must be finite")
    paid_p, short_p, pay_p, pen_p, flag_p = _product(
        a_p, d_p, price_p, hours, penalty_factor, tolerance, tolerance_kw
    )
    paid_q, short_q, pay_q, pen_q, flag_q = _product(
        a_q, d_q, price_q, hours, penalty_factor, tolerance, tolerance_kw
    )
    has_q = a_q > 0.0
    flag = np.where(
        (flag_p == -1) | (has_q & (flag_q == -1)),
        -1,
        np.where((flag_p == 1) | (has_q & (flag_q == 1)), 1, 0),
    ).astype(np.int8)
    payment = pay_p + pay_q
    penalty = pen_p + pen_q
    return SettlementArrays(
        paid_kwh=paid_p + paid_q,
        shortfall_kwh=short_p,
        shortfall_kvarh=short_q,
        payment_eur=payment,
        penalty_eur=penalty,
        net_eur=payment - penalty,
        flag=flag,
    )


def _delivered(awards: Sequence[Award], readings: Sequence[MeterReading]) -> FloatArray:
    """Delivered (P, Q) per award: the asset's measured deviation, shared pro rata.

    An asset's deviation in an interval is split over its awards in that interval in
    proportion to the awarded quantity. An award without a reading of exactly its asset
    and interval counts as not delivered. Raises if an asset has awards in both
    directions in one interval (they cannot be told apart on one meter).
    """
    by_key = {(m.asset_id, m.t_start, m.t_end): m for m in readings}
    if len(by_key) != len(readings):
        raise ValueError("readings: two readings for the same asset and interval")
    groups: dict[tuple[str, object, object], list[int]] = defaultdict(list)
    for i, award in enumerate(awards):
        groups[(award.asset_id, award.t_start, award.t_end)].append(i)
    out = np.zeros((len(awards), 2))
    for key, members in groups.items():
        reading = by_key.get(key)
        if reading is None:
            continue
        directions = {awards[i].direction for i in members}
        if len(directions) > 1:
            raise ValueError(f"awards: asset {key[0]!r} has up and down awards in one interval")
        sign = 1.0 if directions.pop() is Direction.UP else -1.0
        deviation_p = sign * (reading.baseline_p_kw - reading.metered_p_kw)
        deviation_q = 0.0
        if reading.baseline_q_kvar is not None and reading.metered_q_kvar is not None:
            deviation_q = sign * (reading.baseline_q_kvar - reading.metered_q_kvar)
        total_p = sum(awards[i].p_kw for i in members)
        total_q = sum(awards[i].q_kvar for i in members)
        for i in members:
            out[i, 0] = deviation_p * awards[i].p_kw / total_p if total_p > 0 else 0.0
            out[i, 1] = deviation_q * awards[i].q_kvar / total_q if total_q > 0 else 0.0
    return out


def settle(
    awards: Sequence[Award],
    readings: Sequence[MeterReading],
    *,
    penalty_factor: float = 1.5,
    tolerance: float = 0.05,
    tolerance_kw: float = 0.01,
) -> SettlementReport:
    """Settle awards against meter readings; see the module docstring for the rules.

    Args:
        awards: Awards to settle (e.g. ``ClearingResult.awards``).
        readings: One reading per (asset, interval) that has awards.
        penalty_factor: Shortfall penalty as a multiple of the award price.
        tolerance: Relative band inside which delivery is ``ok``.
        tolerance_kw: Absolute floor of that band.

    Returns:
        Lines in award order, each buyer's cost and each seller's revenue (sums of net),
        and the ``request_id/bid_id`` of flagged lines.
    """
    delivered = _delivered(awards, readings)
    arrays = settle_arrays(
        [a.p_kw for a in awards],
        delivered[:, 0],
        [a.price_eur_per_kwh for a in awards],
        [a.duration_h for a in awards],
        awarded_q_kvar=[a.q_kvar for a in awards],
        delivered_q_kvar=delivered[:, 1],
        price_eur_per_kvarh=[a.price_eur_per_kvarh for a in awards],
        penalty_factor=penalty_factor,
        tolerance=tolerance,
        tolerance_kw=tolerance_kw,
    )
    lines = []
    buyers: dict[str, float] = defaultdict(float)
    sellers: dict[str, float] = defaultdict(float)
    flagged = []
    for i, award in enumerate(awards):
        flag = FLAG_CODES[int(arrays.flag[i])]
        net = float(arrays.net_eur[i])
        lines.append(
            SettlementLine(
                t_start=award.t_start,
                t_end=award.t_end,
                bid_id=award.bid_id,
                seller_id=award.seller_id,
                asset_id=award.asset_id,
                buyer_id=award.buyer_id,
                request_id=award.request_id,
                book_row=award.book_row,
                direction=award.direction,
                awarded_p_kw=award.p_kw,
                delivered_p_kw=float(delivered[i, 0]),
                awarded_q_kvar=award.q_kvar,
                delivered_q_kvar=float(delivered[i, 1]),
                shortfall_kwh=float(arrays.shortfall_kwh[i]),
                shortfall_kvarh=float(arrays.shortfall_kvarh[i]),
                payment_eur=float(arrays.payment_eur[i]),
                penalty_eur=float(arrays.penalty_eur[i]),
                net_eur=net,
                flag=flag,
            )
        )
        buyers[award.buyer_id] += net
        sellers[award.seller_id] += net
        if flag != "ok":
            flagged.append(f"{award.request_id}/{award.bid_id}")
    return SettlementReport(
        lines=tuple(lines),
        buyer_cost_eur=dict(buyers),
        seller_revenue_eur=dict(sellers),
        flagged=tuple(flagged),
    )
