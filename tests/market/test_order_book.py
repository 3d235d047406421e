"""OrderBook: built from models or arrays alike, validated once, newest version wins."""

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_helpers import T0, T1, book

from market import Bid, OrderBook


def _bid(bid_id: str, **changes: object) -> Bid:
    base: dict[str, object] = {
        "bid_id": bid_id,
        "seller_id": "home_1",
        "asset_id": "bat",
        "bus": 4,
        "t_start": T0,
        "t_end": T1,
        "direction": "up",
        "p_kw": 2.0,
        "price_eur_per_kwh": 0.1,
    }
    base.update(changes)
    return Bid.model_validate(base)


def test_from_bids_matches_from_arrays() -> None:
    bids = [
        _bid("a", q_kvar=1.0, price_eur_per_kvarh=0.02, min_fraction=0.5),
        _bid("b", direction="down", bus=7, seller_id="home_2"),
    ]
    from_models = OrderBook.from_bids(bids)
    from_arrays = OrderBook.from_arrays(
        ["a", "b"],
        ["home_1", "home_2"],
        [4, 7],
        ["up", "down"],
        [2.0, 2.0],
        [0.1, 0.1],
        q_kvar=[1.0, 0.0],
        price_eur_per_kvarh=[0.02, 0.0],
        min_fraction=[0.5, 0.0],
        asset_id=["bat", "bat"],
        t_start=[T0, T0],
        t_end=[T1, T1],
    )
    for name in ("bus", "direction", "p_kw", "q_kvar", "min_p_kw", "min_q_kvar", "t_end_s"):
        np.testing.assert_array_equal(getattr(from_models, name), getattr(from_arrays, name))
    assert from_models.direction.tolist() == [1, -1]
    assert from_models.min_p_kw.tolist() == [1.0, 0.0]
    assert from_models.min_q_kvar.tolist() == [0.5, 0.0]


def test_newer_version_replaces_older_and_takes_its_own_position() -> None:
    """Rows: a v0, b v0, a v2, a v1 -> a v2 survives at its submission slot, after b."""
    bids = [
        _bid("a", version=0, price_eur_per_kwh=0.30),
        _bid("b", version=0),
        _bid("a", version=2, price_eur_per_kwh=0.10),
        _bid("a", version=1, price_eur_per_kwh=0.20),
    ]
    order_book = OrderBook.from_bids(bids)
    assert order_book.bid_id.tolist() == ["b", "a"]
    assert order_book.version.tolist() == [0, 2]
    assert order_book.price_eur_per_kwh.tolist() == [0.1, 0.10]


def test_newer_version_replaces_older_in_arrays_too() -> None:
    """The simulator's path: rows s1/a v0 @0.30, s1/b v0, s1/a v1 @0.10, s2/a v0 -> s1's
    a v0 is dropped; the others keep their submission order (b, a v1, s2's a)."""
    order_book = OrderBook.from_arrays(
        ["a", "b", "a", "a"],
        ["s1", "s1", "s1", "s2"],
        [1, 1, 1, 1],
        ["up"] * 4,
        [1.0, 1.0, 2.0, 1.0],
        [0.30, 0.20, 0.10, 0.25],
        version=[0, 0, 1, 0],
    )
    rows = list(zip(order_book.seller_id, order_book.bid_id, order_book.version, strict=True))
    assert rows == [("s1", "b", 0), ("s1", "a", 1), ("s2", "a", 0)]
    assert order_book.price_eur_per_kwh.tolist() == [0.20, 0.10, 0.25]


def test_same_bid_id_of_another_seller_is_another_bid() -> None:
    order_book = OrderBook.from_bids([_bid("a"), _bid("a", seller_id="home_2")])
    assert len(order_book) == 2


def test_same_version_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="version 0 twice"):
        OrderBook.from_bids([_bid("a"), _bid("a", price_eur_per_kwh=0.2)])


def test_curve_bid_becomes_one_row_per_step() -> None:
    bid = _bid("c", p_kw=3.0, curve=[(1.0, 0.1), (2.0, 0.3)], min_fraction=0.2, q_kvar=1.0)
    order_book = OrderBook.from_bids([bid])
    assert order_book.bid_id.tolist() == ["c", "c"]
    assert order_book.step.tolist() == [0, 1]
    assert order_book.p_kw.tolist() == [1.0, 2.0]
    assert order_book.price_eur_per_kwh.tolist() == [0.1, 0.3]
    assert order_book.min_p_kw.tolist() == pytest.approx([0.6, 0.0])
    assert order_book.q_kvar.tolist() == [1.0, 0.0]


def _columns() -> dict[str, object]:
    return {
        "bid_id": ["a", "b"],
        "seller_id": ["s1", "s2"],
        "bus": [1, 2],
        "direction": ["up", "down"],
        "p_kw": [1.0, 2.0],
        "price_eur_per_kwh": [0.1, 0.2],
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"p_kw": [1.0, float("nan")]}, "p_kw[1]"),
        ({"p_kw": [-1.0, 1.0]}, "p_kw[0]"),
        ({"p_kw": [0.0, 1.0]}, "p_kw[0]"),
        ({"p_kw": [1.0]}, "p_kw: length"),
        ({"price_eur_per_kwh": [0.1, float("inf")]}, "price_eur_per_kwh[1]"),
        ({"q_kvar": [0.0, -2.0]}, "q_kvar[1]"),
        ({"min_fraction": [0.0, 1.5]}, "min_fraction[1]"),
        ({"direction": ["up", "left"]}, "direction[1]"),
        ({"direction": [1, 0]}, "direction[1]"),
        ({"bus": [1, -2]}, "bus[1]"),
        ({"bus": [1.0, 2.5]}, "bus: must be integers"),
        ({"bid_id": ["a", "b c"]}, "bid_id[1]"),
        ({"seller_id": ["s1", None]}, "seller_id[1]"),
        ({"asset_id": ["ok", "x" * 129]}, "asset_id[1]"),
        ({"version": [0, -1]}, "version[1]"),
        ({"t_start": [T0, T0], "t_end": [T1, T0]}, "t_end[1]"),
        ({"t_start": [T0, T0.replace(tzinfo=None)]}, "t_start[1]"),
        ({"bid_id": ["a", "a"], "seller_id": ["s", "s"]}, "bid_id"),
    ],
)
def test_invalid_columns_are_refused_naming_column_and_row(
    changes: dict[str, object], field: str
) -> None:
    columns = _columns() | changes
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        OrderBook.from_arrays(**columns)  # type: ignore[arg-type]


def test_columns_are_read_only_and_open_interval_by_default() -> None:
    order_book = OrderBook.from_arrays(**_columns())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read-only"):
        order_book.p_kw[0] = 5.0
    assert (order_book.t_start_s < int(T0.timestamp())).all()
    assert order_book.asset_id.tolist() == ["s1", "s2"]


def test_times_accept_datetime64_and_epoch_seconds() -> None:
    start = np.array([np.datetime64("2026-06-01T12:00:00")] * 2)
    by_datetime64 = OrderBook.from_arrays(
        **_columns(), t_start=start, t_end=start + np.timedelta64(15, "m")
    )  # type: ignore[arg-type]
    seconds = int(T0.timestamp())
    by_seconds = OrderBook.from_arrays(
        **_columns(), t_start=[seconds] * 2, t_end=[seconds + 900] * 2
    )  # type: ignore[arg-type]
    assert by_datetime64.t_start_s.tolist() == by_seconds.t_start_s.tolist() == [seconds] * 2
    assert timedelta(seconds=900) == T1 - T0


def test_merit_order_is_price_then_row_and_bus_index_finds_rows() -> None:
    order_book = book([("a", 3, 1.0, 0.2), ("b", 1, 1.0, 0.1), ("c", 3, 1.0, 0.1)])
    assert order_book.merit_order("p").tolist() == [1, 2, 0]
    assert order_book.rank("p").tolist() == [2, 0, 1]
    assert sorted(order_book.rows_at_buses(np.array([3, 3, 9])).tolist()) == [0, 2]
    assert order_book.rows_at_buses(np.array([9])).tolist() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.25]), min_size=1, max_size=60), st.data())
def test_merit_order_equals_a_stable_sort_by_price(
    prices: list[float], data: st.DataObject
) -> None:
    """Peer: numpy's lexsort on (row, price), whatever path (all rows or a subset) is used."""
    n = len(prices)
    order_book = book([(f"b{i}", i % 3, 1.0, p) for i, p in enumerate(prices)])
    expected = np.lexsort((np.arange(n), np.array(prices)))
    assert order_book.merit_order("p").tolist() == expected.tolist()
    subset = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1)))), dtype=np.int64)
    subset_order = order_book.in_merit_order(subset, "p")
    assert subset_order.tolist() == [r for r in expected.tolist() if r in set(subset.tolist())]


def test_large_book_builds_without_models() -> None:
    n = 200_000
    rng = np.random.default_rng(7)
    order_book = OrderBook.from_arrays(
        np.array([f"b{i}" for i in range(n)], dtype=object),
        np.array([f"s{i % 5000}" for i in range(n)], dtype=object),
        rng.integers(0, 100, n),
        np.where(rng.random(n) < 0.5, "up", "down"),
        rng.random(n) + 0.1,
        rng.random(n),
    )
    assert len(order_book) == n
