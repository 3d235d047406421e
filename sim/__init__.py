"""Simulation: mesa model, scenarios, clock and profiles, metrics, results, report."""

__all__: list[str] = []
