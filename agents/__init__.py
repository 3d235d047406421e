"""Autonomous agents: buildings and their assets, storage, heating plant, the DSO."""

__all__: list[str] = []
