"""The registry of clearing rules: rules are pure functions registered under a name.

A rule is any callable ``rule(requests, book, params) -> ClearingResult`` that does no
I/O, reads no clock and draws no random numbers. Configs refer to rules by name
(``rule: pay_as_clear``); :func:`clear` looks the name up and calls the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from market.book import OrderBook
from market.messages import ClearingResult, FlexRequest

__all__ = ["ClearingRule", "available_rules", "clear", "get_rule", "register_rule"]


class ClearingRule(Protocol):
    """What a clearing rule is: a pure function of requests, an order book and params."""

    def __call__(
        self,
        requests: Sequence[FlexRequest],
        book: OrderBook,
        params: Mapping[str, Any],
    ) -> ClearingResult:
        """Clear ``book`` against ``requests``; must be deterministic and side-effect free."""
        ...


_RULES: dict[str, ClearingRule] = {}


def register_rule(name: str) -> Callable[[ClearingRule], ClearingRule]:
    """Class/function decorator registering a clearing rule under ``name``.

    Raises:
        ValueError: if ``name`` is already registered (a registry never silently replaces).
    """

    def decorator(rule: ClearingRule) -> ClearingRule:
        if name in _RULES:
            raise ValueError(f"clearing rule {name!r} is already registered")
        _RULES[name] = rule
        return rule

    return decorator


def get_rule(name: str) -> ClearingRule:
    """Return the rule registered under ``name``.

    Raises:
        KeyError: naming the unknown rule and listing the known ones.
    """
    try:
        return _RULES[name]
    except KeyError:
        known = ", ".join(available_rules()) or "(none)"
        raise KeyError(f"unknown clearing rule {name!r}; known rules: {known}") from None


def available_rules() -> tuple[str, ...]:
    """Names of the registered rules, sorted."""
    return tuple(sorted(_RULES))


def clear(
    rule_name: str,
    requests: Sequence[FlexRequest],
    book: OrderBook,
    params: Mapping[str, Any] | None = None,
) -> ClearingResult:
    """Clear ``book`` against ``requests`` with the rule registered as ``rule_name``.

    Args:
        rule_name: A name from :func:`available_rules`.
        requests: The buyers' requests; ids must be unique.
        book: The bids.
        params: Rule parameters; unknown keys are refused by the rule.

    Returns:
        The rule's :class:`~market.messages.ClearingResult`.
    """
    return get_rule(rule_name)(requests, book, dict(params or {}))
