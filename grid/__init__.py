"""The grid: network model from pandapower/simbench, batched AC power flow, sensitivities."""

__all__: list[str] = []
