"""Fixtures of the agents' tests (helpers live in agent_fixtures.py)."""

from agent_fixtures import summer, winter

__all__ = ["summer", "winter"]
