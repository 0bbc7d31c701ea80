"""Deploy the exchange and its oracle to any chain a Web3 reaches.

One function for every chain: the embedded eth-tester chain, a local
Hardhat or Anvil node over HTTP, a testnet. It deploys the demo oracle
(unless pointed at an existing Pyth-shaped oracle, such as Pyth's own
contract), then the exchange, then maps every market to its price feed.
Transactions are sent ``from`` the deployer, so the node must hold its key
unlocked (development nodes do).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
from web3 import Web3
from web3.contract.contract import ContractFunction

from perpstream.chain.artifact import CONTRACT_NAME, ORACLE_CONTRACT_NAME, load_artifact
from perpstream.chain.units import market_id_to_bytes32, to_wad
from perpstream.devchain.oracle_update import DemoPublisher, OracleDomain
from perpstream.domain.prices import normalize_feed_id

__all__ = [
    "DEFAULT_MAX_PRICE_AGE_S",
    "DEFAULT_UPDATE_FEE_WEI",
    "Deployment",
    "DeploymentError",
    "MarketRisk",
    "deploy_exchange",
]

#: How old an oracle price the exchange accepts. Generous because the
#: embedded chain's block timestamps may run a few seconds ahead of the clock.
DEFAULT_MAX_PRICE_AGE_S = 60
#: The demo oracle's fee per update: non-zero, so the fee path is exercised.
DEFAULT_UPDATE_FEE_WEI = 1


class DeploymentError(Exception):
    """A deployment transaction failed."""


@attrs.frozen
class MarketRisk:
    """A market's risk parameters as the contract takes them (see docs/domain.md)."""

    maintenance_margin_ratio: Decimal = Decimal("0.005")
    liquidation_fee_ratio: Decimal = Decimal("0.005")
    min_keeper_fee: Decimal = Decimal("5")
    max_keeper_fee: Decimal = Decimal("1000")

    def as_abi(self) -> tuple[int, int, int, int]:
        return (
            to_wad(self.maintenance_margin_ratio),
            to_wad(self.liquidation_fee_ratio),
            to_wad(self.min_keeper_fee),
            to_wad(self.max_keeper_fee),
        )


@attrs.frozen
class Deployment:
    """Where the contracts are and what they were deployed with."""

    chain_id: int
    exchange_address: str
    oracle_address: str
    #: The block of the exchange's creation: the indexer's ``start_block``.
    exchange_block: int
    market_feeds: Mapping[str, str]  # market id -> canonical feed id

    @property
    def oracle_domain(self) -> OracleDomain:
        """What a demo publisher signs updates for."""
        return OracleDomain(self.chain_id, self.oracle_address)


def deploy_exchange(
    w3: Web3,
    *,
    deployer: str,
    market_feeds: Mapping[str, str],
    oracle_address: str | None = None,
    publisher: str | None = None,
    update_fee_wei: int = DEFAULT_UPDATE_FEE_WEI,
    max_price_age_s: int = DEFAULT_MAX_PRICE_AGE_S,
    default_risk: MarketRisk = MarketRisk(),
    market_risk: Mapping[str, MarketRisk] | None = None,
) -> Deployment:
    """Deploy (oracle and) exchange, set market feeds and risk; blocking.

    ``market_feeds`` maps market ids to Pyth feed ids. With
    ``oracle_address`` the exchange uses that oracle (e.g. Pyth's contract
    on the chain) and no demo oracle is deployed; otherwise a demo oracle
    trusting ``publisher`` (the demo publisher's address unless given) is.
    """
    feeds = {market_id: normalize_feed_id(feed_id) for market_id, feed_id in market_feeds.items()}
    if oracle_address is None:
        oracle_artifact = load_artifact(ORACLE_CONTRACT_NAME)
        oracle_factory = w3.eth.contract(abi=oracle_artifact.abi, bytecode=oracle_artifact.bytecode)
        publisher_address = publisher or DemoPublisher().address
        oracle_address, _ = _create(w3, oracle_factory.constructor(publisher_address, update_fee_wei), deployer)
    exchange_artifact = load_artifact(CONTRACT_NAME)
    factory = w3.eth.contract(abi=exchange_artifact.abi, bytecode=exchange_artifact.bytecode)
    address, block = _create(
        w3, factory.constructor(oracle_address, max_price_age_s, default_risk.as_abi()), deployer
    )
    exchange = w3.eth.contract(address=address, abi=exchange_artifact.abi)  # type: ignore[call-overload]
    for market_id, feed_id in feeds.items():
        _transact(w3, exchange.functions.setMarketFeed(market_id_to_bytes32(market_id), bytes.fromhex(feed_id)),
                  deployer)
    for market_id, risk in (market_risk or {}).items():
        _transact(w3, exchange.functions.setMarketRisk(market_id_to_bytes32(market_id), risk.as_abi()), deployer)
    return Deployment(
        chain_id=int(w3.eth.chain_id),
        exchange_address=address,
        oracle_address=Web3.to_checksum_address(oracle_address),
        exchange_block=block,
        market_feeds=feeds,
    )


def _create(w3: Web3, constructor: Any, deployer: str) -> tuple[str, int]:
    receipt = _wait(w3, constructor.transact({"from": deployer}), "deployment")
    return Web3.to_checksum_address(receipt["contractAddress"]), int(receipt["blockNumber"])


def _transact(w3: Web3, call: ContractFunction, deployer: str) -> None:
    _wait(w3, call.transact({"from": deployer}), call.fn_name)


def _wait(w3: Web3, tx_hash: bytes, what: str) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    if receipt["status"] != 1:
        raise DeploymentError(f"{what}: transaction 0x{bytes(tx_hash).hex()} reverted")
    return receipt
