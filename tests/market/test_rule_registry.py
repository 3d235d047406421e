"""The rule registry: names, duplicates refused, unknown names and params explained."""

import pytest
from market_helpers import book, request
from pydantic import ValidationError

from market import available_rules, clear, get_rule, register_rule
from market.registry import _RULES


def test_the_four_rules_are_registered() -> None:
    assert set(available_rules()) >= {
        "pay_as_bid",
        "pay_as_clear",
        "locational",
        "iterative_price",
    }
    assert list(available_rules()) == sorted(available_rules())


def test_duplicate_name_is_refused_and_the_original_kept() -> None:
    original = get_rule("pay_as_bid")
    with pytest.raises(ValueError, match="already registered"):
        register_rule("pay_as_bid")(lambda requests, book, params: None)  # type: ignore[arg-type,return-value]
    assert get_rule("pay_as_bid") is original


def test_new_rule_is_callable_by_name() -> None:
    def empty(requests, book, params):  # type: ignore[no-untyped-def]
        from market import ClearingResult

        return ClearingResult(rule="test_empty", params=dict(params))

    try:
        register_rule("test_empty")(empty)
        result = clear("test_empty", [], book([("a", 1, 1.0, 0.1)]), {"k": 1})
        assert (result.rule, result.params) == ("test_empty", {"k": 1})
    finally:
        _RULES.pop("test_empty", None)


def test_unknown_rule_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="pay_as_clear") as excinfo:
        get_rule("pay_as_whatever")
    assert "pay_as_whatever" in str(excinfo.value)


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear", "locational", "iterative_price"])
def test_unknown_param_is_refused_naming_it(rule: str) -> None:
    with pytest.raises(ValidationError, match="colour"):
        clear(rule, [request()], book([("a", 1, 1.0, 0.1)]), {"colour": "red"})


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear", "locational", "iterative_price"])
def test_rules_are_deterministic_and_record_their_params(rule: str) -> None:
    order_book = book([("a", 1, 3.0, 0.1), ("b", 1, 3.0, 0.1), ("c", 2, 3.0, 0.05)])
    requests = [request(sensitivity_pu_per_kw={1: 0.002, 2: 0.001})]
    first = clear(rule, requests, order_book)
    second = clear(rule, requests, order_book)
    assert first == second
    assert first.rule == rule
    assert isinstance(first.params, dict)
    assert first.model_dump_json()


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear", "locational", "iterative_price"])
def test_empty_book_leaves_every_need_unserved(rule: str) -> None:
    from market import OrderBook

    result = clear(rule, [request(sensitivity_pu_per_kw={1: 0.001})], OrderBook.from_bids([]))
    assert result.awards == ()
    assert result.unserved_p_kw == {"r1": 8.0}
    assert clear(rule, [], OrderBook.from_bids([])).awards == ()
