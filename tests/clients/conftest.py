"""Fixtures shared by the client tests: the examples' Node dependencies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "examples" / "js"
# What examples/js/package-lock.json installs that the tests use.
LOCKED = ("ws/package.json", "@asyncapi/specs/schemas/3.0.0.json")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """examples/js/node_modules as the lock file pins it (``npm ci``); skips without npm."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the examples' Node packages cannot be installed here")
    modules = JS / "node_modules"
    if not all((modules / path).is_file() for path in LOCKED):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return modules


@pytest.fixture(scope="session")
def node(node_modules: Path) -> str:
    """The node binary, with the examples' locked dependencies installed; skips without node."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed: the JavaScript examples cannot run here")
    return binary
