"""The one place where gridbid configures logging.

Library modules only do ``logging.getLogger(__name__)``; handlers and levels are set
here, once, by the command line (or by a test that wants them).
"""

import logging

from rich.logging import RichHandler

__all__ = ["setup_logging"]

_FORMAT = "%(name)s: %(message)s"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root logger for a gridbid command.

    Args:
        verbose: show DEBUG messages (and those of third-party libraries at INFO).
        quiet: show only warnings and errors.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format=_FORMAT,
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=False, show_path=verbose, markup=False)],
        force=True,
    )
    third_party = logging.INFO if verbose else logging.WARNING
    noisy = ("pandapower", "numba", "ray", "uvicorn", "httpx", "matplotlib", "simbench", "MESA")
    for name in noisy:
        logging.getLogger(name).setLevel(third_party)
