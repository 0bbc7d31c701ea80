"""Fixtures shared by the client tests: the examples' Node dependencies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.npm_install import npm_ci

JS = Path(__file__).resolve().parents[2] / "examples" / "js"
# What examples/js/package-lock.json installs that the tests use.
LOCKED = ("ws/package.json", "@asyncapi/specs/schemas/3.0.0.json")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """examples/js/node_modules as the lock file pins it (``npm ci``); skips without npm."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the examples' Node packages cannot be installed here")
    npm_ci(JS, installed=LOCKED, timeout=300)
    return JS / "node_modules"


@pytest.fixture(scope="session")
def node(node_modules: Path) -> str:
    """The node binary, with the examples' locked dependencies installed; skips without node."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed: the JavaScript examples cannot run here")
    return binary
