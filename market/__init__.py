"""The local flexibility market: messages, order book, clearing rules, settlement."""

__all__: list[str] = []
