"""Column validation for :class:`~market.book.OrderBook`: one check per column, not per row.

Every check raises :class:`ValueError` naming the column and the first bad row.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from market.messages import ID_PATTERN, Direction

__all__ = [
    "DIRECTION_CODE",
    "check_ids",
    "direction_column",
    "float_column",
    "frozen",
    "int_column",
    "time_column",
]

DIRECTION_CODE = {Direction.UP: 1, Direction.DOWN: -1}
"""How directions are stored in :attr:`OrderBook.direction` (``int8``)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_ID_RE = re.compile(ID_PATTERN)
_ID_CHARS_RE = re.compile(r"[A-Za-z0-9_\n-]*")


def frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def check_ids(name: str, values: np.ndarray) -> None:
    """Refuse any id that does not match :data:`~market.messages.ID_PATTERN`.

    The fast path joins the ids with newlines and matches once in C; only a failure falls
    back to a per-id scan to name the offending row.
    """
    items = values.tolist()
    try:
        joined = "\n".join(items)
    except TypeError:
        joined = None
    if (
        joined is not None
        and joined.count("\n") == len(items) - 1
        and _ID_CHARS_RE.fullmatch(joined)
    ):
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        if not items or (lengths.min() >= 1 and lengths.max() <= 128):
            return
    for row, value in enumerate(items):
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise ValueError(f"{name}[{row}]={value!r} is not a valid id (must match {ID_PATTERN})")


def float_column(name: str, values: Any, n: int, *, low: float, high: float) -> FloatArray:
    """Convert to a finite float64 column of length ``n`` within ``[low, high]``."""
    try:
        array = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: not numeric ({error})") from None
    if array.shape != (n,):
        raise ValueError(f"{name}: length {array.shape[0]}, expected {n}")
    bad = ~np.isfinite(array) | (array < low) | (array > high)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name}[{row}]={array[row]!r} must be finite and in [{low}, {high}]")
    return array


def int_column(name: str, values: Any, n: int, *, low: int) -> IntArray:
    """Convert to an int64 column of length ``n``, refusing non-integers and values < low."""
    array = np.asarray(values).reshape(-1)
    if array.shape != (n,):
        raise ValueError(f"{name}: length {array.shape[0]}, expected {n}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name}: must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if n and array.min() < low:
        row = int(np.argmin(array))
        raise ValueError(f"{name}[{row}]={array[row]} must be >= {low}")
    return array


def direction_column(values: Any, n: int) -> npt.NDArray[np.int8]:
    """Accept ``"up"``/``"down"`` strings, :class:`Direction` or +1/-1 codes."""
    array = np.asarray(values).reshape(-1)
    if array.shape != (n,):
        raise ValueError(f"direction: length {array.shape[0]}, expected {n}")
    if array.dtype.kind in "iu":
        codes = array.astype(np.int8)
        bad = (codes != 1) & (codes != -1)
    else:
        as_str = array.astype(str)
        codes = np.where(as_str == "up", 1, -1).astype(np.int8)
        bad = (as_str != "up") & (as_str != "down")
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"direction[{row}]={array[row]!r} must be 'up', 'down', +1 or -1")
    return codes


def time_column(name: str, values: Any, n: int, default: int) -> IntArray:
    """Seconds since the Unix epoch; accepts aware datetimes, datetime64 or int seconds."""
    if values is None:
        return np.full(n, default, dtype=np.int64)
    array = np.asarray(values).reshape(-1)
    if array.shape != (n,):
        raise ValueError(f"{name}: length {array.shape[0]}, expected {n}")
    if array.dtype.kind == "M":
        return array.astype("datetime64[s]").astype(np.int64)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    seconds = np.empty(n, dtype=np.int64)
    for row, value in enumerate(array.tolist()):
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"{name}[{row}]={value!r} must be a timezone-aware datetime")
        seconds[row] = int(value.timestamp())
    return seconds
