"""The import contracts cover every shared module: a new one cannot slip past the platform rule.

import-linter checks the modules a contract names; a module added under cluster/ and not named
would be free to import a platform. DESIGN.md section 3: only cluster.select and the CLI choose
one, and cluster.session opens the one the settings name through cluster.select.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHOOSERS = {"cluster.select", "cluster.__main__", "cluster.session", "cluster.__init__"}
PLATFORMS = {"cluster.local", "cluster.kind", "cluster.kubeconfig", "cluster.kubectl"}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_shared_cluster_module_is_forbidden_the_platforms() -> None:
    shared = {f"cluster.{p.stem}" for p in (ROOT / "cluster").glob("*.py")} - CHOOSERS
    guarded: set[str] = set()
    for contract in _contracts():
        if set(contract.get("forbidden_modules", [])) >= PLATFORMS:  # type: ignore[call-overload]
            guarded |= set(contract["source_modules"])  # type: ignore[call-overload]
    assert shared - guarded == set(), "add these to the shared-modules contract in pyproject.toml"


def test_every_platform_package_has_a_contract() -> None:
    packages = {f"cluster.{p.name}" for p in (ROOT / "cluster").iterdir() if (p / "__init__.py").exists()}
    sources = {m for c in _contracts() for m in c.get("source_modules", [])}  # type: ignore[attr-defined]
    assert packages - sources == set(), "each platform package needs its own contract in pyproject.toml"
