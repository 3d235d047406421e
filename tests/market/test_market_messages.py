"""Market messages: valid ones round-trip through JSON, invalid ones name the bad field."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from market import Award, Bid, Direction, FlexRequest, MarketConfig, check_aligned

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)


def _bid(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "bid_id": "b-1",
        "seller_id": "home_7",
        "asset_id": "bat_1",
        "bus": 12,
        "t_start": T0,
        "t_end": T1,
        "direction": "up",
        "p_kw": 3.0,
        "price_eur_per_kwh": 0.12,
    }
    base.update(changes)
    return base


def _request(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "request_id": "r-1",
        "buyer_id": "dso",
        "bus": 12,
        "t_start": T0,
        "t_end": T1,
        "direction": "down",
        "p_kw": 10.0,
        "max_price_eur_per_kwh": 0.4,
        "dv_required_pu": 0.01,
        "sensitivity_pu_per_kw": {12: 0.002, 11: 0.001},
    }
    base.update(changes)
    return base


def _loc(excinfo: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {str(err["loc"][0]) for err in excinfo.value.errors() if err["loc"]}


def test_valid_messages_round_trip_through_json() -> None:
    bid = Bid.model_validate(_bid())
    request = FlexRequest.model_validate(_request())
    assert Bid.model_validate_json(bid.model_dump_json()) == bid
    assert FlexRequest.model_validate_json(request.model_dump_json()) == request
    assert request.sensitivity_pu_per_kw == {12: 0.002, 11: 0.001}
    assert bid.direction is Direction.UP
    assert bid.duration_h == pytest.approx(0.25)


def test_datetimes_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    bid = Bid.model_validate(_bid(t_start=T0.astimezone(cet), t_end=T1.astimezone(cet)))
    assert bid.t_start.utcoffset() == timedelta(0)
    assert bid.t_start == T0


def test_messages_are_frozen() -> None:
    bid = Bid.model_validate(_bid())
    with pytest.raises(ValidationError):
        bid.p_kw = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"p_kw": float("nan")}, "p_kw"),
        ({"p_kw": float("inf")}, "p_kw"),
        ({"p_kw": -1.0}, "p_kw"),
        ({"q_kvar": -0.5}, "q_kvar"),
        ({"p_kw": 0.0, "q_kvar": 0.0}, "p_kw"),
        ({"price_eur_per_kwh": float("nan")}, "price_eur_per_kwh"),
        ({"t_end": T0}, "t_end"),
        ({"t_end": T0 - timedelta(minutes=15)}, "t_end"),
        ({"t_start": datetime(2026, 6, 1, 12, 0)}, "t_start"),  # noqa: DTZ001 - naive on purpose
        ({"direction": "sideways"}, "direction"),
        ({"bid_id": "has space"}, "bid_id"),
        ({"seller_id": "x" * 129}, "seller_id"),
        ({"bus": -1}, "bus"),
        ({"bus": True}, "bus"),
        ({"min_fraction": 1.5}, "min_fraction"),
        ({"version": -1}, "version"),
        ({"colour": "red"}, "colour"),
        ({"curve": [(1.0, 0.12), (2.0, 0.10)]}, "curve"),
        ({"curve": [(1.0, 0.12), (1.0, 0.20)]}, "curve"),
        ({"curve": [(1.0, 0.10), (2.0, 0.20)]}, "curve"),
        ({"curve": [(1.0, 0.12), (2.0, 0.20)], "min_fraction": 0.5}, "curve"),
    ],
)
def test_invalid_bid_is_rejected_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Bid.model_validate(_bid(**changes))
    assert field in _loc(excinfo)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"p_kw": -2.0}, "p_kw"),
        ({"dv_required_pu": -0.01}, "dv_required_pu"),
        ({"max_price_eur_per_kwh": float("inf")}, "max_price_eur_per_kwh"),
        ({"sensitivity_pu_per_kw": {3: float("nan")}}, "sensitivity_pu_per_kw"),
        ({"sensitivity_pu_per_kw": {-3: 0.1}}, "sensitivity_pu_per_kw"),
        ({"direction": 1}, "direction"),
        ({"t_end": T0}, "t_end"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_invalid_request_is_rejected_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        FlexRequest.model_validate(_request(**changes))
    assert field in _loc(excinfo)


def test_curve_bid_is_accepted_when_consistent() -> None:
    bid = Bid.model_validate(_bid(curve=[(1.0, 0.12), (2.0, 0.20)], min_fraction=0.3))
    assert bid.curve == ((1.0, 0.12), (2.0, 0.20))


def test_unaligned_interval_is_rejected_naming_the_field() -> None:
    config = MarketConfig()
    bid = Bid.model_validate(_bid(t_start=T0 + timedelta(minutes=5)))
    with pytest.raises(ValidationError) as excinfo:
        check_aligned(bid, config)
    assert _loc(excinfo) == {"t_start"}
    with pytest.raises(ValidationError) as excinfo:
        Bid.model_validate(_bid(t_end=T1 + timedelta(minutes=1)), context={"market": config})
    assert _loc(excinfo) == {"t_end"}
    aligned = Bid.model_validate(_bid())
    assert check_aligned(aligned, config) is aligned
    assert check_aligned(bid, MarketConfig(slot_minutes=5)) is bid


def test_slot_length_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="slot_minutes"):
        MarketConfig(slot_minutes=7)


def test_award_cost_uses_interval_hours() -> None:
    """3 kW x 0.25 h x 0.2 EUR/kWh + 1 kvar x 0.25 h x 0.04 EUR/kvarh = 0.15 + 0.01 EUR."""
    award = Award(
        bid_id="b",
        seller_id="s",
        asset_id="a",
        bus=1,
        request_id="r",
        buyer_id="dso",
        book_row=0,
        t_start=T0,
        t_end=T1,
        direction=Direction.UP,
        p_kw=3.0,
        q_kvar=1.0,
        price_eur_per_kwh=0.2,
        price_eur_per_kvarh=0.04,
    )
    assert award.cost_eur == pytest.approx(0.16, abs=1e-12)
