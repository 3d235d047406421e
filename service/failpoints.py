"""Fail points: kill the process at a named point, for crash-safety tests.

``GRIDBID_FAILPOINTS=before_clearing_commit`` makes the process exit abruptly (no cleanup,
like SIGKILL) when it reaches that point. Unset in production, :func:`hit` is a dict lookup.
"""

from __future__ import annotations

import os

__all__ = ["hit"]

EXIT_CODE = 86
_ACTIVE = frozenset(filter(None, os.environ.get("GRIDBID_FAILPOINTS", "").split(",")))


def hit(name: str) -> None:
    """Exit the process at once if fail point ``name`` is active."""
    if name in _ACTIVE:
        os._exit(EXIT_CODE)
