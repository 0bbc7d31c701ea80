from __future__ import annotations

from pathlib import Path

import pytest

from perpstream.devchain import DevChain


@pytest.fixture
async def chain() -> DevChain:
    """A fresh embedded chain with the exchange deployed (real eth-tester)."""
    return await DevChain.start(traders=6)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chain-index.sqlite3"
