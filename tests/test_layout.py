"""Package smoke tests: every package imports, states its API, and keeps DESIGN.md's arrows.

DESIGN.md: ``sim`` and ``service`` use ``agents``, ``market``, ``grid``; ``agents`` use
``market`` and ``grid``; ``market`` and ``grid`` use neither; ``sim`` and ``service`` never
import each other. Ray is imported in one module only (STYLE.md, rule 11).
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agents", "market", "grid", "sim", "service", "gridbid"]
FORBIDDEN = {
    "market": {"agents", "grid", "sim", "service", "gridbid", "mesa", "ray", "fastapi"},
    "grid": {"agents", "market", "sim", "service", "gridbid", "mesa", "ray", "fastapi"},
    "agents": {"sim", "service", "gridbid", "mesa", "ray", "fastapi"},
    "sim": {"service", "gridbid"},
    "service": {"sim", "gridbid", "ray"},
    "gridbid": set(),
}


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    """Map each module file of a package to the top-level names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_and_exports_what_it_declares(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} has no docstring"
    exported = module.__all__
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_keeps_the_import_arrows(package: str) -> None:
    offending = {
        module: sorted(names & FORBIDDEN[package])
        for module, names in _imported_top_levels(package).items()
        if names & FORBIDDEN[package]
    }
    assert offending == {}, f"{package} imports what DESIGN.md forbids: {offending}"


def test_ray_is_imported_in_at_most_one_module() -> None:
    importers = [
        module
        for package in PACKAGES
        for module, names in _imported_top_levels(package).items()
        if "ray" in names
    ]
    assert len(importers) <= 1, importers
