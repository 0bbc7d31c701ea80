"""The embedded dev chain: eth-tester (py-evm) in-process, with the exchange deployed.

eth-tester is synchronous and not thread-safe, so every call goes through
one worker thread at a time: ``trio.to_thread.run_sync`` with a
``CapacityLimiter(1)`` shared by :class:`DevChain` and its
:class:`EmbeddedChainClient`. The trio thread never blocks on the EVM.

eth-tester behaviour worth knowing (eth-tester 0.14 / py-evm 0.12):

- Auto-mining is on: every transaction is mined at once in a block of its
  own, so a send returns with its receipt. ``mine(n)`` adds empty blocks.
- A block's timestamp is ``max(wall clock, parent + 1)`` taken when the
  *previous* block was mined (py-evm prepares the next header right after
  mining). Mining many blocks in a burst runs timestamps ahead of the clock
  by one second per block; nothing here relies on block time.
- ``snapshot()`` remembers the head; ``revert(id)`` makes that block the head
  again. Post-merge blocks get a random ``mix_hash``, so blocks mined after a
  revert have new hashes even with the same contents: a real reorg.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any, Callable, Mapping, Sequence, TypeVar

import attrs
import trio
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import BlockNotFound, ContractLogicError

from perpstream.chain.artifact import load_artifact
from perpstream.chain.client import BlockHeader, RawLog, TopicFilter, encode_topic_filter
from perpstream.chain.decoding import EventDecoder
from perpstream.chain.events import ChainEvent, PositionOpened
from perpstream.chain.units import bytes32_to_market_id, from_wad, market_id_to_bytes32, to_wad

__all__ = [
    "raw_log_from_web3",
    "DEV_MNEMONIC",
    "MarketRisk",
    "OpenOrder",
    "OnChainPosition",
    "TxReceipt",
    "TransactionReverted",
    "EmbeddedChainClient",
    "DevChain",
]

T = TypeVar("T")

# The well-known development mnemonic (Hardhat/Anvil/Foundry use it too).
DEV_MNEMONIC = "test test test test test test test test test test test junk"
_ZERO_ADDRESS = "0x" + "00" * 20


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def raw_log_from_web3(entry: Mapping[str, Any]) -> RawLog:
    """A web3 log (AttributeDict with HexBytes) as the indexer's RawLog."""
    return RawLog(
        address=Web3.to_checksum_address(entry["address"]),
        topics=tuple(bytes(t) for t in entry["topics"]),
        data=bytes(entry["data"]),
        block_number=int(entry["blockNumber"]),
        block_hash=_hex(entry["blockHash"]),
        tx_hash=_hex(entry["transactionHash"]),
        log_index=int(entry["logIndex"]),
    )


@attrs.frozen
class MarketRisk:
    """A market's risk parameters as the contract takes them (see domain.md)."""

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
class OpenOrder:
    market_id: str
    is_long: bool
    size: Decimal
    collateral: Decimal
    entry_price: Decimal

    def as_abi(self) -> tuple[bytes, bool, int, int, int]:
        return (
            market_id_to_bytes32(self.market_id),
            self.is_long,
            to_wad(self.size),
            to_wad(self.collateral),
            to_wad(self.entry_price),
        )


@attrs.frozen
class OnChainPosition:
    """A position as the contract's ``getPosition`` view reports it."""

    position_id: str
    account: str
    market_id: str
    is_long: bool
    size: Decimal
    collateral: Decimal
    entry_price: Decimal
    entry_funding_index: Decimal


@attrs.frozen
class TxReceipt:
    tx_hash: str
    block_number: int
    events: tuple[ChainEvent, ...]  # the exchange's events emitted by the transaction

    @property
    def opened_position_ids(self) -> tuple[str, ...]:
        """Ids of the positions this transaction opened, in order."""
        return tuple(e.position_id for e in self.events if isinstance(e, PositionOpened))


class TransactionReverted(Exception):
    """The contract refused a transaction (the message holds its reason)."""


class EmbeddedChainClient:
    """ChainClient over the dev chain's web3 (EthereumTesterProvider)."""

    def __init__(self, w3: Web3, limiter: trio.CapacityLimiter) -> None:
        self._w3 = w3
        self._limiter = limiter

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def chain_id(self) -> int:
        return await self._run(lambda: int(self._w3.eth.chain_id))

    async def block_number(self) -> int:
        return await self._run(lambda: int(self._w3.eth.block_number))

    async def get_block_header(self, number: int) -> BlockHeader | None:
        def read() -> BlockHeader | None:
            try:
                block = self._w3.eth.get_block(number)
            except BlockNotFound:
                return None
            return BlockHeader(
                number=int(block["number"]),
                hash=_hex(block["hash"]),
                parent_hash=_hex(block["parentHash"]),
                timestamp=int(block["timestamp"]),
            )

        return await self._run(read)

    async def get_logs(
        self,
        from_block: int,
        to_block: int,
        address: str,
        topics: TopicFilter | None = None,
    ) -> list[RawLog]:
        params: dict[str, Any] = {"fromBlock": from_block, "toBlock": to_block, "address": address}
        if topics is not None:
            params["topics"] = encode_topic_filter(topics)
        entries = await self._run(lambda: self._w3.eth.get_logs(params))  # type: ignore[arg-type]
        return [raw_log_from_web3(e) for e in entries]


class DevChain:
    """An in-process EVM chain with the exchange deployed and funded accounts.

    Accounts: ``owner`` (deployer and funding keeper), ``liquidator``, then
    ``traders``. Every method that touches the chain is async and runs in the
    shared worker thread; transactions are mined as they are sent.
    """

    def __init__(self, w3: Web3, contract: Contract, accounts: Sequence[str]) -> None:
        self._w3 = w3
        self._contract = contract
        self._decoder = EventDecoder(contract.abi)
        self._limiter = trio.CapacityLimiter(1)
        self.accounts: tuple[str, ...] = tuple(accounts)

    # ------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        *,
        traders: int = 12,
        default_risk: MarketRisk = MarketRisk(),
        market_risk: Mapping[str, MarketRisk] | None = None,
    ) -> DevChain:
        """Start eth-tester and deploy the exchange (blocking; see :meth:`start`)."""
        backend = PyEVMBackend.from_mnemonic(DEV_MNEMONIC, num_accounts=traders + 2)
        w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        accounts = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx_hash = factory.constructor(default_risk.as_abi()).transact({"from": accounts[0]})
        address = w3.eth.get_transaction_receipt(tx_hash)["contractAddress"]
        contract = w3.eth.contract(address=address, abi=artifact.abi)
        for market_id, risk in (market_risk or {}).items():
            contract.functions.setMarketRisk(market_id_to_bytes32(market_id), risk.as_abi()).transact(
                {"from": accounts[0]}
            )
        return cls(w3, contract, accounts)

    @classmethod
    async def start(
        cls,
        *,
        traders: int = 12,
        default_risk: MarketRisk = MarketRisk(),
        market_risk: Mapping[str, MarketRisk] | None = None,
    ) -> DevChain:
        """:meth:`create` off the trio thread."""
        return await trio.to_thread.run_sync(
            partial(cls.create, traders=traders, default_risk=default_risk, market_risk=market_risk)
        )

    # ------------------------------------------------------------ identity

    @property
    def address(self) -> str:
        """The exchange contract's address (EIP-55)."""
        return str(self._contract.address)

    @property
    def abi(self) -> tuple[dict[str, Any], ...]:
        return tuple(self._contract.abi)  # type: ignore[arg-type]

    @property
    def owner(self) -> str:
        return self.accounts[0]

    @property
    def liquidator(self) -> str:
        return self.accounts[1]

    @property
    def traders(self) -> tuple[str, ...]:
        return self.accounts[2:]

    def client(self) -> EmbeddedChainClient:
        """A ChainClient for the indexer, sharing this chain's worker thread."""
        return EmbeddedChainClient(self._w3, self._limiter)

    # ------------------------------------------------------------ transactions

    async def open_position(
        self,
        account: str,
        market_id: str,
        *,
        is_long: bool,
        size: Decimal,
        collateral: Decimal,
        entry_price: Decimal,
    ) -> TxReceipt:
        order = OpenOrder(market_id, is_long, size, collateral, entry_price)
        return await self._send(self._contract.functions.openPosition(*order.as_abi()), account)

    async def open_positions(
        self, account: str, orders: Sequence[OpenOrder], *, gas: int | None = None
    ) -> TxReceipt:
        """Open up to 64 positions in one transaction.

        ``gas`` skips the estimate (which would run the transaction twice).
        """
        call = self._contract.functions.openPositions([o.as_abi() for o in orders])
        return await self._send(call, account, gas=gas)

    async def modify_position(
        self, account: str, position_id: str, *, size: Decimal, collateral: Decimal, entry_price: Decimal
    ) -> TxReceipt:
        call = self._contract.functions.modifyPosition(
            bytes.fromhex(position_id[2:]), to_wad(size), to_wad(collateral), to_wad(entry_price)
        )
        return await self._send(call, account)

    async def close_position(self, account: str, position_id: str, *, exit_price: Decimal) -> TxReceipt:
        call = self._contract.functions.closePosition(bytes.fromhex(position_id[2:]), to_wad(exit_price))
        return await self._send(call, account)

    async def liquidate(self, account: str, position_id: str, *, price: Decimal) -> TxReceipt:
        call = self._contract.functions.liquidate(bytes.fromhex(position_id[2:]), to_wad(price))
        return await self._send(call, account)

    async def update_funding(
        self,
        market_id: str,
        *,
        rate_per_hour: Decimal,
        index: Decimal,
        timestamp: int,
        account: str | None = None,
    ) -> TxReceipt:
        call = self._contract.functions.updateFunding(
            market_id_to_bytes32(market_id), to_wad(rate_per_hour), to_wad(index), timestamp
        )
        return await self._send(call, account or self.owner)

    async def set_market_risk(self, market_id: str, risk: MarketRisk) -> TxReceipt:
        call = self._contract.functions.setMarketRisk(market_id_to_bytes32(market_id), risk.as_abi())
        return await self._send(call, self.owner)

    # ------------------------------------------------------------ views

    async def position(self, position_id: str) -> OnChainPosition | None:
        """The contract's own view of a position; None when not open."""
        return await self._run(partial(self._read_position, position_id))

    async def open_positions_view(self) -> list[OnChainPosition]:
        """Every open position, by enumerating all ids the contract has issued."""

        def read() -> list[OnChainPosition]:
            functions = self._contract.functions
            count = functions.positionCount().call()
            ids = [_hex(functions.positionIdAt(i).call()) for i in range(count)]
            return [p for p in map(self._read_position, ids) if p is not None]

        return await self._run(read)

    async def funding(self, market_id: str) -> tuple[Decimal, Decimal, int]:
        """(rate per hour, index, timestamp) as last posted; zeros before any update."""

        def read() -> tuple[Decimal, Decimal, int]:
            rate, index, timestamp = self._contract.functions.funding(market_id_to_bytes32(market_id)).call()
            return from_wad(rate), from_wad(index), int(timestamp)

        return await self._run(read)

    # ------------------------------------------------------------ chain control

    async def block_number(self) -> int:
        return await self._run(lambda: int(self._w3.eth.block_number))

    async def mine(self, blocks: int = 1) -> None:
        await self._run(lambda: self._w3.testing.mine(blocks))

    async def snapshot(self) -> str:
        """Remember the current head; :meth:`revert` returns to it (the id is opaque)."""
        return await self._run(lambda: str(self._w3.testing.snapshot()))

    async def revert(self, snapshot_id: str) -> None:
        """Make the snapshot's block the head again, dropping every later block."""
        await self._run(lambda: self._w3.testing.revert(snapshot_id))

    # ------------------------------------------------------------ helpers

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _send(self, call: ContractFunction, sender: str, *, gas: int | None = None) -> TxReceipt:
        return await self._run(partial(self._transact, call, sender, gas))

    def _transact(self, call: ContractFunction, sender: str, gas: int | None) -> TxReceipt:
        params: dict[str, Any] = {"from": sender}
        if gas is not None:
            params["gas"] = gas
        try:
            tx_hash = call.transact(params)  # type: ignore[arg-type]
        except (TransactionFailed, ContractLogicError) as exc:
            raise TransactionReverted(f"{call.fn_name}: {exc}") from exc
        receipt = self._w3.eth.get_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise TransactionReverted(f"{call.fn_name}: transaction {_hex(tx_hash)} reverted")
        events = tuple(
            self._decoder.decode(raw_log_from_web3(entry))
            for entry in receipt["logs"]
            if entry["address"] == self._contract.address
        )
        return TxReceipt(tx_hash=_hex(tx_hash), block_number=int(receipt["blockNumber"]), events=events)

    def _read_position(self, position_id: str) -> OnChainPosition | None:
        fields = self._contract.functions.getPosition(bytes.fromhex(position_id[2:])).call()
        account, market_id, is_long, size, collateral, entry_price, entry_index = fields
        if account == _ZERO_ADDRESS:
            return None
        return OnChainPosition(
            position_id=position_id,
            account=Web3.to_checksum_address(account),
            market_id=bytes32_to_market_id(market_id),
            is_long=bool(is_long),
            size=from_wad(size),
            collateral=from_wad(collateral),
            entry_price=from_wad(entry_price),
            entry_funding_index=from_wad(entry_index),
        )
