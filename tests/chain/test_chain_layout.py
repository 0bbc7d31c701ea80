"""The production indexer loads no EVM; the dev chain keeps the recursion guard."""

from __future__ import annotations

import json
import subprocess
import sys

EVM_MODULES = ("eth", "eth_tester", "py_ecc", "web3", "vyper")


def _imports(statement: str) -> dict[str, object]:
    """What importing ``statement`` in a fresh interpreter loads, and the recursion limit after."""
    probe = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps({{'loaded': [m for m in {EVM_MODULES!r} if m in sys.modules],"
        " 'recursion_limit': sys.getrecursionlimit()}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_indexer_loads_no_evm() -> None:
    probe = _imports("import perpstream.chain, perpstream.chain.indexer, perpstream.chain.events, "
                     "perpstream.chain.jsonrpc\nfrom perpstream.chain import load_artifact\nload_artifact()")
    assert probe["loaded"] == []


def test_the_dev_chain_caps_the_recursion_limit_py_ecc_raises() -> None:
    probe = _imports("import perpstream.devchain")
    assert "eth" in probe["loaded"] and "py_ecc" in probe["loaded"]
    assert probe["recursion_limit"] == 12_288  # py-evm's need, not py_ecc's 100,000
