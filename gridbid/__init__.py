"""gridbid: decentralised, market-based control of distribution grids.

This small package is the application layer: the ``gridbid`` command line and the
logging set-up. It composes the domain packages (``agents``, ``market``, ``grid``,
``sim``, ``service``) without being imported by any of them, so that ``sim`` and
``service`` never have to import each other to share one CLI.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
