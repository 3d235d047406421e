"""The order book: a columnar (numpy) view of many bids, validated once, for fast clearing.

Rows are in submission order; that order is the second tie-break of every rule (after
price). A newer ``version`` of the same ``(seller_id, bid_id)`` replaces the older one and
takes the row position of its own submission. A curve bid becomes one row per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from market._columns import (
    DIRECTION_CODE,
    FloatArray,
    IntArray,
    check_ids,
    direction_column,
    float_column,
    frozen,
    int_column,
    time_column,
)
from market.messages import Bid

__all__ = ["DIRECTION_CODE", "OPEN_END_S", "OPEN_START_S", "OrderBook"]

OPEN_START_S = np.iinfo(np.int64).min
"""``t_start_s`` of a row built without an interval: valid from any time."""

OPEN_END_S = np.iinfo(np.int64).max
"""``t_end_s`` of a row built without an interval: valid until any time."""


@dataclass(frozen=True, eq=False)
class OrderBook:
    """Bids as columns; row ``i`` of every column is one bid (or one step of a curve bid).

    Build it with :meth:`from_bids` or :meth:`from_arrays`, not directly: those validate.
    Columns are read-only numpy arrays.

    Attributes:
        bid_id, seller_id, asset_id: ``object`` arrays of ids.
        bus: pandapower bus index (int64).
        direction: +1 for ``up``, -1 for ``down`` (int8).
        p_kw, q_kvar: Offered quantities (float64, >= 0).
        price_eur_per_kwh, price_eur_per_kvarh: Asked prices (float64, >= 0).
        min_p_kw, min_q_kvar: Smallest accepted quantity of each product if any is
            accepted (``min_fraction`` x quantity; for curve bids, on the first step).
        version: Bid version (int64).
        step: Step of a curve bid (0 for plain bids).
        t_start_s, t_end_s: Interval in seconds since the Unix epoch (int64); rows built
            without an interval are open (:data:`OPEN_START_S`, :data:`OPEN_END_S`).
    """

    bid_id: np.ndarray
    seller_id: np.ndarray
    asset_id: np.ndarray
    bus: IntArray
    direction: npt.NDArray[np.int8]
    p_kw: FloatArray
    q_kvar: FloatArray
    price_eur_per_kwh: FloatArray
    price_eur_per_kvarh: FloatArray
    min_p_kw: FloatArray
    min_q_kvar: FloatArray
    version: IntArray
    step: IntArray
    t_start_s: IntArray
    t_end_s: IntArray
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.bus.shape[0])

    @classmethod
    def from_bids(cls, bids: Iterable[Bid]) -> OrderBook:
        """Build a book from validated :class:`~market.messages.Bid` models.

        Curve bids are expanded into one row per step (same ``bid_id``, ``step`` 0, 1, ...);
        a bid's ``q_kvar`` and its minimum accepted quantity go to step 0.

        Raises:
            ValueError: if two bids share ``(seller_id, bid_id, version)``.
        """
        columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        for bid in bids:
            steps = bid.curve or ((bid.p_kw, bid.price_eur_per_kwh),)
            for step, (step_kw, step_price) in enumerate(steps):
                first = step == 0
                columns["bid_id"].append(bid.bid_id)
                columns["seller_id"].append(bid.seller_id)
                columns["asset_id"].append(bid.asset_id)
                columns["bus"].append(bid.bus)
                columns["direction"].append(DIRECTION_CODE[bid.direction])
                columns["p_kw"].append(step_kw)
                columns["q_kvar"].append(bid.q_kvar if first else 0.0)
                columns["price_eur_per_kwh"].append(step_price)
                columns["price_eur_per_kvarh"].append(bid.price_eur_per_kvarh)
                columns["min_p_kw"].append(bid.min_fraction * bid.p_kw if first else 0.0)
                columns["min_q_kvar"].append(bid.min_fraction * bid.q_kvar if first else 0.0)
                columns["version"].append(bid.version)
                columns["step"].append(step)
                columns["t_start_s"].append(int(bid.t_start.timestamp()))
                columns["t_end_s"].append(int(bid.t_end.timestamp()))
        arrays = {name: np.array(values, dtype=_COLUMNS[name]) for name, values in columns.items()}
        return cls._latest_versions(arrays)

    @classmethod
    def from_arrays(
        cls,
        bid_id: Sequence[str] | np.ndarray,
        seller_id: Sequence[str] | np.ndarray,
        bus: Sequence[int] | np.ndarray,
        direction: Sequence[str] | np.ndarray,
        p_kw: Sequence[float] | np.ndarray,
        price_eur_per_kwh: Sequence[float] | np.ndarray,
        *,
        q_kvar: Sequence[float] | np.ndarray | None = None,
        price_eur_per_kvarh: Sequence[float] | np.ndarray | None = None,
        min_fraction: Sequence[float] | np.ndarray | None = None,
        asset_id: Sequence[str] | np.ndarray | None = None,
        version: Sequence[int] | np.ndarray | None = None,
        t_start: Sequence[datetime] | np.ndarray | None = None,
        t_end: Sequence[datetime] | np.ndarray | None = None,
    ) -> OrderBook:
        """Build a book from columns, validating every column once (no pydantic objects).

        Args:
            bid_id, seller_id: Ids per row; ``(seller_id, bid_id)`` identifies a bid.
            bus: pandapower bus index per row (integers >= 0).
            direction: ``"up"``/``"down"`` (or :class:`Direction`, or +1/-1) per row.
            p_kw: Offered active power (finite, >= 0).
            price_eur_per_kwh: Asked active price (finite, >= 0).
            q_kvar: Offered reactive power; default 0.
            price_eur_per_kvarh: Asked reactive price; default 0.
            min_fraction: Minimum accepted share in [0, 1]; default 0 (divisible).
            asset_id: Asset per row; default the seller id.
            version: Version per row (integers >= 0); default 0.
            t_start, t_end: Aware datetimes, ``datetime64`` or int seconds since the epoch;
                default open (the row can serve a request in any interval).

        Returns:
            The book, with the highest version of each ``(seller_id, bid_id)`` kept.

        Raises:
            ValueError: naming the column (and the first bad row) on a wrong length, a
                non-finite, negative or out-of-range value, a bad id, an unknown
                direction, an empty offer, an interval ending before it starts, or two rows
                with the same ``(seller_id, bid_id, version)``.
        """
        n = len(bus)
        arrays: dict[str, np.ndarray] = {}
        for name, values in (("bid_id", bid_id), ("seller_id", seller_id)):
            ids = np.asarray(values, dtype=object).reshape(-1)
            if ids.shape != (n,):
                raise ValueError(f"{name}: length {ids.shape[0]}, expected {n}")
            check_ids(name, ids)
            arrays[name] = ids
        if asset_id is None:
            arrays["asset_id"] = arrays["seller_id"]
        else:
            arrays["asset_id"] = np.asarray(asset_id, dtype=object).reshape(-1)
            if arrays["asset_id"].shape != (n,):
                raise ValueError(f"asset_id: length {arrays['asset_id'].shape[0]}, expected {n}")
            check_ids("asset_id", arrays["asset_id"])
        arrays["bus"] = int_column("bus", bus, n, low=0)
        arrays["direction"] = direction_column(direction, n)
        inf = np.inf
        zeros = np.zeros(n)
        arrays["p_kw"] = float_column("p_kw", p_kw, n, low=0.0, high=inf)
        q = zeros if q_kvar is None else q_kvar
        arrays["q_kvar"] = float_column("q_kvar", q, n, low=0.0, high=inf)
        price = price_eur_per_kwh
        arrays["price_eur_per_kwh"] = float_column("price_eur_per_kwh", price, n, low=0, high=inf)
        price_q = zeros if price_eur_per_kvarh is None else price_eur_per_kvarh
        arrays["price_eur_per_kvarh"] = float_column(
            "price_eur_per_kvarh", price_q, n, low=0.0, high=inf
        )
        fraction = zeros if min_fraction is None else min_fraction
        fraction = float_column("min_fraction", fraction, n, low=0.0, high=1.0)
        arrays["min_p_kw"] = fraction * arrays["p_kw"]
        arrays["min_q_kvar"] = fraction * arrays["q_kvar"]
        empty = (arrays["p_kw"] <= 0.0) & (arrays["q_kvar"] <= 0.0)
        if empty.any():
            row = int(np.argmax(empty))
            raise ValueError(f"p_kw[{row}]: p_kw or q_kvar must be > 0 (row offers nothing)")
        arrays["version"] = (
            np.zeros(n, dtype=np.int64)
            if version is None
            else int_column("version", version, n, low=0)
        )
        arrays["step"] = np.zeros(n, dtype=np.int64)
        arrays["t_start_s"] = time_column("t_start", t_start, n, OPEN_START_S)
        arrays["t_end_s"] = time_column("t_end", t_end, n, OPEN_END_S)
        backwards = arrays["t_end_s"] <= arrays["t_start_s"]
        if backwards.any():
            row = int(np.argmax(backwards))
            raise ValueError(f"t_end[{row}]: must be after t_start")
        return cls._latest_versions(arrays)

    @classmethod
    def _latest_versions(cls, arrays: dict[str, np.ndarray]) -> OrderBook:
        """Keep, per ``(seller_id, bid_id)``, the rows of its highest version."""
        sellers = arrays["seller_id"].tolist()
        bid_ids = arrays["bid_id"].tolist()
        n = len(sellers)
        seller_hash = np.fromiter(map(hash, sellers), dtype=np.int64, count=n)
        bid_hash = np.fromiter(map(hash, bid_ids), dtype=np.int64, count=n)
        with np.errstate(over="ignore"):
            key_hash = (seller_hash * np.int64(1_000_003) ^ bid_hash) + arrays["step"]
        key_hash.sort()
        if (key_hash[1:] == key_hash[:-1]).any():
            # Some (seller, bid, step) repeats, or two hashes collide: decide exactly.
            keep = cls._keep_latest(
                sellers, bid_ids, arrays["version"].tolist(), arrays["step"].tolist()
            )
            arrays = {name: values[keep] for name, values in arrays.items()}
        return cls(**{name: frozen(np.ascontiguousarray(a)) for name, a in arrays.items()})

    @staticmethod
    def _keep_latest(
        sellers: list[str], bid_ids: list[str], versions: list[int], steps: list[int]
    ) -> npt.NDArray[np.bool_]:
        """Mask of rows belonging to the highest version of their ``(seller_id, bid_id)``."""
        latest: dict[tuple[str, str], int] = {}
        seen: set[tuple[str, str, int, int]] = set()
        for seller, bid, version, step in zip(sellers, bid_ids, versions, steps, strict=True):
            key = (seller, bid, version, step)
            if key in seen:
                raise ValueError(
                    f"bid_id: seller {seller!r} submitted bid {bid!r} version {version} "
                    "twice; raise the version to replace a bid"
                )
            seen.add(key)
            if version > latest.get((seller, bid), -1):
                latest[(seller, bid)] = version
        return np.fromiter(
            (latest[(s, b)] == v for s, b, v in zip(sellers, bid_ids, versions, strict=True)),
            dtype=bool,
            count=len(sellers),
        )

    def first_step_row(self) -> IntArray:
        """Row of each row's step 0 (itself for plain bids).

        :meth:`from_bids` puts a curve bid's steps in consecutive rows (step 0, 1, ...),
        and keeping the newest version keeps or drops all of a bid's rows together, so
        step ``k`` of a bid sits ``k`` rows after its step 0.
        """
        return np.arange(len(self), dtype=np.int64) - self.step

    def merit_order(self, product: str) -> IntArray:
        """Rows sorted by asked price, then row (submission order): the tie-break rule.

        Rows are unique, so the bid id (the documented third key) never decides here.

        Args:
            product: ``"p"`` (by ``price_eur_per_kwh``) or ``"q"`` (``price_eur_per_kvarh``).
        """
        key = f"order_{product}"
        if key not in self._cache:
            price = self.price_eur_per_kwh if product == "p" else self.price_eur_per_kvarh
            self._cache[key] = frozen(_price_then_row_order(price))
        return self._cache[key]

    def rank(self, product: str) -> IntArray:
        """Position of each row in :meth:`merit_order` (lower is cheaper)."""
        key = f"rank_{product}"
        if key not in self._cache:
            rank = np.empty(len(self), dtype=np.int64)
            rank[self.merit_order(product)] = np.arange(len(self), dtype=np.int64)
            self._cache[key] = frozen(rank)
        return self._cache[key]

    def rows_at_buses(self, buses: IntArray) -> IntArray:
        """Rows whose bus is in ``buses``, in row order.

        Few rows are found through a cached bus index (sorted once); when the buses hold a
        large share of the book, a dense bus lookup table over all rows is cheaper.
        """
        buses = np.asarray(buses, dtype=np.int64)
        counts = self._bus_counts()
        valid = buses[(buses >= 0) & (buses < counts.shape[0])]
        if valid.size == 0:
            return np.empty(0, dtype=np.int64)
        table = np.zeros(counts.shape[0], dtype=bool)
        table[valid] = True
        expected = int(counts[table].sum())
        if expected * 16 >= len(self):
            return np.flatnonzero(table[self.bus]).astype(np.int64)
        if "bus_order" not in self._cache:
            small = counts.shape[0] <= np.iinfo(np.uint16).max
            order = np.argsort(self.bus.astype(np.uint16) if small else self.bus, kind="stable")
            self._cache["bus_order"] = order
            self._cache["bus_starts"] = np.r_[0, np.cumsum(counts)]
        order, starts_all = self._cache["bus_order"], self._cache["bus_starts"]
        unique = np.flatnonzero(table)
        starts, lengths = starts_all[unique], counts[unique]
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        return np.sort(order[np.arange(lengths.sum()) + offsets])

    def covering(self, direction_code: int, start_s: int, end_s: int) -> npt.NDArray[np.bool_]:
        """Mask of rows in ``direction_code`` whose interval covers ``[start_s, end_s)``.

        Cached per (direction, interval): the requests of a round usually share one slot.
        """
        key = f"covering_{direction_code}_{start_s}_{end_s}"
        if key not in self._cache:
            self._cache[key] = frozen(
                (self.direction == direction_code)
                & (self.t_start_s <= start_s)
                & (self.t_end_s >= end_s)
            )
        return self._cache[key]

    def _bus_counts(self) -> IntArray:
        """Number of rows per bus index (cached)."""
        if "bus_counts" not in self._cache:
            self._cache["bus_counts"] = np.bincount(self.bus, minlength=1)
        return self._cache["bus_counts"]

    def in_merit_order(self, rows: IntArray, product: str) -> IntArray:
        """Unique ``rows`` in merit order (price, then row).

        Many rows are filtered out of the cached full merit order; few are sorted alone.
        """
        if rows.shape[0] * 16 >= len(self):
            mask = np.zeros(len(self), dtype=bool)
            mask[rows] = True
            order = self.merit_order(product)
            return order[mask[order]]
        if rows.shape[0] > 1 and not (rows[1:] > rows[:-1]).all():
            rows = np.sort(rows)
        price = self.price_eur_per_kwh if product == "p" else self.price_eur_per_kvarh
        return rows[_price_then_row_order(price[rows])]


def _price_then_row_order(price: FloatArray) -> IntArray:
    """Indices sorting ``price`` ascending, equal prices by index (the tie-break rule).

    An unstable quicksort is three times faster than a stable sort on a million floats;
    runs of equal prices, if any, are then put back in index order.
    """
    order = np.argsort(price)
    if order.shape[0] < 2:
        return order.astype(np.int64)
    sorted_price = price[order]
    tied = sorted_price[1:] == sorted_price[:-1]
    if tied.any():
        in_run = np.r_[tied, False] | np.r_[False, tied]
        run_id = np.cumsum(np.r_[True, ~tied])
        positions = np.flatnonzero(in_run)
        members = order[positions]
        order[positions] = members[np.lexsort((members, run_id[positions]))]
    return order.astype(np.int64)


_COLUMNS: dict[str, Any] = {
    "bid_id": object,
    "seller_id": object,
    "asset_id": object,
    "bus": np.int64,
    "direction": np.int8,
    "p_kw": np.float64,
    "q_kvar": np.float64,
    "price_eur_per_kwh": np.float64,
    "price_eur_per_kvarh": np.float64,
    "min_p_kw": np.float64,
    "min_q_kvar": np.float64,
    "version": np.int64,
    "step": np.int64,
    "t_start_s": np.int64,
    "t_end_s": np.int64,
}
