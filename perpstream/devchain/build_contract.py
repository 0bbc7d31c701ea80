"""Compile the reference contracts and write their committed JSON artifacts.

Run ``python -m perpstream.devchain.build_contract`` after editing a source
in ``perpstream/chain/contracts/`` (needs the ``contracts`` extra: vyper).
Use ``--check`` to fail instead of writing when an artifact is out of date.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from perpstream.chain.artifact import CONTRACT_NAME, CONTRACT_NAMES, ContractArtifact, source_sha256, source_text

__all__ = ["compile_artifact", "main"]

_PACKAGE = "perpstream.chain.contracts"


def compile_artifact(name: str = CONTRACT_NAME) -> ContractArtifact:
    """Compile the current source of one contract with the installed vyper."""
    import vyper  # the compiler is a build-time dependency only

    source = source_text(name)
    output = vyper.compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"])
    return ContractArtifact(
        contract_name=name,
        compiler=f"vyper-{vyper.__version__}",
        source_sha256=source_sha256(source),
        abi=tuple(output["abi"]),
        bytecode=output["bytecode"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if an artifact is stale")
    args = parser.parse_args(argv)

    stale = 0
    for name in CONTRACT_NAMES:
        artifact_path = resources.files(_PACKAGE).joinpath(f"{name}.json")
        fresh = compile_artifact(name).to_json()
        current = artifact_path.read_text(encoding="utf-8") if artifact_path.is_file() else ""
        if fresh == current:
            print(f"{name}.json is up to date")
        elif args.check:
            print(f"{name}.json is stale: run python -m perpstream.devchain.build_contract")
            stale += 1
        else:
            with resources.as_file(artifact_path) as path:
                path.write_text(fresh, encoding="utf-8")
            print(f"wrote {name}.json")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
