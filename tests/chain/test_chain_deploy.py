"""deploy_exchange with a plain Web3, as against any node: the exchange pays the oracle's fee."""

from __future__ import annotations

from decimal import Decimal

import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError

from perpstream.chain import load_artifact
from perpstream.chain.artifact import ORACLE_CONTRACT_NAME
from perpstream.chain.units import market_id_to_bytes32, to_wad
from perpstream.devchain import DEFAULT_MARKET_FEEDS, DemoPublisher, MarketRisk, deploy_exchange
from perpstream.domain.prices import PythPrice

from .helpers import BTC, ETH


def test_deploys_with_any_web3_and_points_a_second_exchange_at_an_existing_oracle() -> None:
    w3 = Web3(EthereumTesterProvider())
    deployer, trader = w3.eth.accounts[0], w3.eth.accounts[1]
    deployment = deploy_exchange(w3, deployer=deployer, market_feeds={BTC: "0x" + DEFAULT_MARKET_FEEDS[BTC]},
                                 update_fee_wei=7, market_risk={BTC: MarketRisk(Decimal("0.01"))})
    exchange = w3.eth.contract(address=deployment.exchange_address, abi=load_artifact().abi)
    oracle = w3.eth.contract(address=deployment.oracle_address, abi=load_artifact(ORACLE_CONTRACT_NAME).abi)
    assert exchange.functions.oracle().call() == deployment.oracle_address
    assert exchange.functions.feedIdOf(market_id_to_bytes32(BTC)).call().hex() == DEFAULT_MARKET_FEEDS[BTC]
    assert exchange.functions.feedIdOf(market_id_to_bytes32(ETH)).call() == b"\0" * 32
    assert exchange.functions.marketRisk(market_id_to_bytes32(BTC)).call()[0] == to_wad(Decimal("0.01"))
    assert oracle.functions.publisher().call() == DemoPublisher().address
    assert deployment.exchange_block == w3.eth.block_number - 2  # then one setMarketFeed, one setMarketRisk

    head = w3.eth.get_block("latest")["timestamp"]
    update = DemoPublisher().sign(deployment.oracle_domain, DEFAULT_MARKET_FEEDS[BTC],
                                  PythPrice(price=6_500_000, conf=100, expo=-2, publish_time=head + 1))
    fee = oracle.functions.getUpdateFee([update]).call()
    assert fee == 7
    open_call = exchange.functions.openPosition(market_id_to_bytes32(BTC), True, 10**18, 10**21, [update])
    for wrong in (0, fee + 1):
        with pytest.raises((ContractLogicError, TransactionFailed), match="update fee"):
            open_call.transact({"from": trader, "value": wrong})
    receipt = w3.eth.wait_for_transaction_receipt(open_call.transact({"from": trader, "value": fee}))
    assert receipt["status"] == 1
    assert w3.eth.get_balance(deployment.oracle_address) == fee
    position_id = exchange.functions.positionIdAt(0).call()
    assert exchange.functions.getPosition(position_id).call()[5] == to_wad(Decimal("65000"))  # 6500000e-2

    for admin in (exchange.functions.setMarketFeed(market_id_to_bytes32(ETH), b"\1" * 32),
                  exchange.functions.setMaxPriceAge(10**9), oracle.functions.setPublisher(trader)):
        with pytest.raises((ContractLogicError, TransactionFailed), match="only the owner"):
            admin.transact({"from": trader})
    w3.eth.wait_for_transaction_receipt(exchange.functions.setMaxPriceAge(5).transact({"from": deployer}))
    assert exchange.functions.maxPriceAge().call() == 5

    second = deploy_exchange(w3, deployer=deployer, market_feeds={ETH: DEFAULT_MARKET_FEEDS[ETH]},
                             oracle_address=deployment.oracle_address)
    assert second.oracle_address == deployment.oracle_address
    assert second.exchange_address != deployment.exchange_address
