"""Compile the reference contract and write its committed JSON artifact.

Run ``python -m perpstream.chain.build_contract`` after editing
``contracts/PerpExchange.vy`` (needs the ``contracts`` extra: vyper). Use
``--check`` to fail instead of writing when the artifact is out of date.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from perpstream.chain.artifact import CONTRACT_NAME, ContractArtifact, source_sha256, source_text

__all__ = ["compile_artifact", "main"]


def compile_artifact() -> ContractArtifact:
    """Compile the current source with the installed vyper."""
    import vyper  # the compiler is a build-time dependency only

    source = source_text()
    output = vyper.compile_code(
        source, contract_path=f"{CONTRACT_NAME}.vy", output_formats=["abi", "bytecode"]
    )
    return ContractArtifact(
        contract_name=CONTRACT_NAME,
        compiler=f"vyper-{vyper.__version__}",
        source_sha256=source_sha256(source),
        abi=tuple(output["abi"]),
        bytecode=output["bytecode"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the artifact is stale")
    args = parser.parse_args(argv)

    artifact_path = resources.files("perpstream.chain.contracts").joinpath(f"{CONTRACT_NAME}.json")
    fresh = compile_artifact().to_json()
    current = artifact_path.read_text(encoding="utf-8") if artifact_path.is_file() else ""
    if fresh == current:
        print(f"{CONTRACT_NAME}.json is up to date")
        return 0
    if args.check:
        print(f"{CONTRACT_NAME}.json is stale: run python -m perpstream.chain.build_contract")
        return 1
    with resources.as_file(artifact_path) as path:
        path.write_text(fresh, encoding="utf-8")
    print(f"wrote {CONTRACT_NAME}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
