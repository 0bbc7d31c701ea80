"""The embedded dev chain: eth-tester (py-evm) in-process, with oracle and exchange deployed.

Prices reach the exchange only through the demo oracle: every
price-dependent transaction carries updates signed by the demo publisher.
Tests name a price (``entry_price=``, ``exit_price=``, ``price=``) and the
chain signs an update at it, published at the next block's time; bots pass
the update data they hold (``update_data=``), as a client of a real
exchange passes Hermes's.

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
  by one second per block. Only the oracle's staleness check compares block
  time with publish times (wall clock), which is why the default maximum
  price age is a generous minute.
- ``snapshot()`` remembers the head; ``revert(id)`` makes that block the head
  again. Post-merge blocks get a random ``mix_hash``, so blocks mined after a
  revert have new hashes even with the same contents: a real reorg.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import attrs
import trio
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import BlockNotFound, ContractLogicError

from perpstream.chain.artifact import CONTRACT_NAME, ORACLE_CONTRACT_NAME, load_artifact
from perpstream.chain.client import BlockHeader, RawLog, TopicFilter, encode_topic_filter
from perpstream.chain.decoding import EventDecoder
from perpstream.chain.events import ChainEvent, PositionOpened
from perpstream.chain.units import bytes32_to_market_id, from_wad, market_id_to_bytes32, to_wad
from perpstream.devchain.deploy import DEFAULT_MAX_PRICE_AGE_S, Deployment, MarketRisk, deploy_exchange
from perpstream.devchain.oracle_update import DemoPublisher, OracleDomain, pyth_price_from_decimal
from perpstream.domain.prices import PythPrice

__all__ = [
    "raw_log_from_web3",
    "DEFAULT_MARKET_FEEDS",
    "DEV_MNEMONIC",
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
#: The default configuration's markets and their Pyth feed ids.
DEFAULT_MARKET_FEEDS: Mapping[str, str] = {
    "btc-usdc-perp": "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43",
    "eth-usdc-perp": "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace",
    "sol-usdc-perp": "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d",
}
# Pyth's error selectors (PythErrors.sol), named in revert messages.
_PYTH_ERRORS = {
    "0x025dbdd4": "InsufficientFee",
    "0xe69ffece": "InvalidUpdateData",
    "0xe60dce71": "InvalidUpdateDataSource",
    "0x14aebe68": "PriceFeedNotFound",
    "0x19abf40e": "StalePrice",
}


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
class OpenOrder:
    """One order of a batch; ``entry_price`` is the oracle price the chain signs for its market."""

    market_id: str
    is_long: bool
    size: Decimal
    collateral: Decimal
    entry_price: Decimal

    def as_abi(self) -> tuple[bytes, bool, int, int]:
        return (market_id_to_bytes32(self.market_id), self.is_long, to_wad(self.size), to_wad(self.collateral))


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


def _revert_reason(exc: Exception) -> str:
    """The revert's message, with a Pyth error selector named.

    web3 reports custom revert data as hex (``exc.data``); eth-tester puts
    the raw bytes' repr in its message.
    """
    text = f"{exc} {getattr(exc, 'data', None) or ''}"
    for selector, name in _PYTH_ERRORS.items():
        if selector in text or repr(bytes.fromhex(selector[2:])) in text:
            return f"{name} ({selector})"
    return str(exc)


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
    """An in-process EVM chain with oracle and exchange deployed and funded accounts.

    Accounts: ``owner`` (deployer and funding keeper), ``liquidator``, then
    ``traders``. Every method that touches the chain is async and runs in the
    shared worker thread; transactions are mined as they are sent.
    """

    def __init__(self, w3: Web3, deployment: Deployment, accounts: Sequence[str], publisher: DemoPublisher) -> None:
        self._w3 = w3
        self.deployment = deployment
        self._contract = w3.eth.contract(address=deployment.exchange_address, abi=load_artifact(CONTRACT_NAME).abi)  # type: ignore[call-overload]
        self._oracle = w3.eth.contract(  # type: ignore[call-overload]
            address=deployment.oracle_address, abi=load_artifact(ORACLE_CONTRACT_NAME).abi
        )
        self._publisher = publisher
        self._decoder = EventDecoder(self._contract.abi)
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
        market_feeds: Mapping[str, str] = DEFAULT_MARKET_FEEDS,
        max_price_age_s: int = DEFAULT_MAX_PRICE_AGE_S,
        publisher: DemoPublisher | None = None,
    ) -> DevChain:
        """Start eth-tester and deploy oracle and exchange (blocking; see :meth:`start`)."""
        backend = PyEVMBackend.from_mnemonic(DEV_MNEMONIC, num_accounts=traders + 2)
        w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        accounts = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
        publisher = publisher or DemoPublisher()
        deployment = deploy_exchange(
            w3,
            deployer=accounts[0],
            market_feeds=market_feeds,
            publisher=publisher.address,
            max_price_age_s=max_price_age_s,
            default_risk=default_risk,
            market_risk=market_risk,
        )
        return cls(w3, deployment, accounts, publisher)

    @classmethod
    async def start(
        cls,
        *,
        traders: int = 12,
        default_risk: MarketRisk = MarketRisk(),
        market_risk: Mapping[str, MarketRisk] | None = None,
        market_feeds: Mapping[str, str] = DEFAULT_MARKET_FEEDS,
        max_price_age_s: int = DEFAULT_MAX_PRICE_AGE_S,
        publisher: DemoPublisher | None = None,
    ) -> DevChain:
        """:meth:`create` off the trio thread."""
        return await trio.to_thread.run_sync(partial(
            cls.create, traders=traders, default_risk=default_risk, market_risk=market_risk,
            market_feeds=market_feeds, max_price_age_s=max_price_age_s, publisher=publisher,
        ))

    # ------------------------------------------------------------ identity

    @property
    def address(self) -> str:
        """The exchange contract's address (EIP-55)."""
        return self.deployment.exchange_address

    @property
    def oracle_address(self) -> str:
        return self.deployment.oracle_address

    @property
    def oracle_domain(self) -> OracleDomain:
        """What the demo publisher signs this chain's updates for."""
        return self.deployment.oracle_domain

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

    def feed_id(self, market_id: str) -> str:
        """The oracle feed the exchange prices ``market_id`` by (KeyError if none)."""
        return self.deployment.market_feeds[market_id]

    # ------------------------------------------------------------ oracle updates

    async def price_update(self, market_id: str, price: Decimal | PythPrice, *, publish_time: int | None = None) -> bytes:
        """:meth:`sign_price` at the next block's earliest timestamp (head + 1 s) unless
        ``publish_time`` is given (a PythPrice's own is replaced either way).

        Head + 1 is newer than any update a transaction of the head block
        stored, so the oracle never skips it as older.
        """
        if publish_time is None:
            publish_time = await self.head_timestamp() + 1
        return self.sign_price(market_id, price, publish_time)

    def sign_price(self, market_id: str, price: Decimal | PythPrice, publish_time: int) -> bytes:
        """An update of ``market_id``'s feed at ``price``, signed by the demo publisher for this chain.

        A Decimal is published at expo -8 (finer when it needs more digits)
        with zero confidence.
        """
        if isinstance(price, Decimal):
            price = pyth_price_from_decimal(price, publish_time)
        else:
            price = attrs.evolve(price, publish_time=publish_time)
        return self._publisher.sign(self.oracle_domain, self.feed_id(market_id), price)

    async def oracle_price(self, market_id: str) -> PythPrice | None:
        """The oracle's stored price of the market's feed (``getPriceUnsafe``), None before any."""

        def read() -> PythPrice | None:
            try:
                price, conf, expo, publish_time = self._oracle.functions.getPriceUnsafe(
                    bytes.fromhex(self.feed_id(market_id))
                ).call()
            except (TransactionFailed, ContractLogicError):  # PriceFeedNotFound
                return None
            return PythPrice(price=price, conf=conf, expo=expo, publish_time=publish_time)

        return await self._run(read)

    async def head_timestamp(self) -> int:
        return await self._run(lambda: int(self._w3.eth.get_block("latest")["timestamp"]))

    # ------------------------------------------------------------ transactions

    async def open_position(
        self,
        account: str,
        market_id: str,
        *,
        is_long: bool,
        size: Decimal,
        collateral: Decimal,
        entry_price: Decimal | None = None,
        update_data: Sequence[bytes] = (),
    ) -> TxReceipt:
        """Open at the oracle's price: ``entry_price`` signed by the chain, or the ``update_data`` given."""
        updates = await self._updates(update_data, [(market_id, entry_price)])
        call = self._contract.functions.openPosition(
            market_id_to_bytes32(market_id), is_long, to_wad(size), to_wad(collateral), updates
        )
        return await self._send(call, account, updates)

    async def open_positions(
        self, account: str, orders: Sequence[OpenOrder], *, gas: int | None = None
    ) -> TxReceipt:
        """Open up to 64 positions in one transaction, each market at its orders' entry price.

        ``gas`` skips the estimate (which would run the transaction twice).
        """
        prices: dict[str, Decimal] = {}
        for order in orders:
            if prices.setdefault(order.market_id, order.entry_price) != order.entry_price:
                raise ValueError(f"orders of {order.market_id} in one batch need one entry price")
        updates = await self._updates((), prices.items())
        call = self._contract.functions.openPositions([o.as_abi() for o in orders], updates)
        return await self._send(call, account, updates, gas=gas)

    async def modify_position(
        self,
        account: str,
        position_id: str,
        *,
        size: Decimal,
        collateral: Decimal,
        price: Decimal | None = None,
        update_data: Sequence[bytes] = (),
    ) -> TxReceipt:
        """Resize at the oracle's price (``price`` signed by the chain, or ``update_data``)."""
        updates = await self._position_updates(update_data, position_id, price)
        call = self._contract.functions.modifyPosition(
            bytes.fromhex(position_id[2:]), to_wad(size), to_wad(collateral), updates
        )
        return await self._send(call, account, updates)

    async def close_position(
        self,
        account: str,
        position_id: str,
        *,
        exit_price: Decimal | None = None,
        update_data: Sequence[bytes] = (),
    ) -> TxReceipt:
        updates = await self._position_updates(update_data, position_id, exit_price)
        call = self._contract.functions.closePosition(bytes.fromhex(position_id[2:]), updates)
        return await self._send(call, account, updates)

    async def liquidate(
        self,
        account: str,
        position_id: str,
        *,
        price: Decimal | None = None,
        update_data: Sequence[bytes] = (),
    ) -> TxReceipt:
        updates = await self._position_updates(update_data, position_id, price)
        call = self._contract.functions.liquidate(bytes.fromhex(position_id[2:]), updates)
        return await self._send(call, account, updates)

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

    async def margin_at(self, position_id: str, price_wad: int) -> tuple[int, int, int]:
        """The contract's ``marginAt``: (equity, maintenance, reward) in wads at ``price_wad``."""

        def read() -> tuple[int, int, int]:
            equity, maintenance, reward = self._contract.functions.marginAt(
                bytes.fromhex(position_id[2:]), price_wad
            ).call()
            return int(equity), int(maintenance), int(reward)

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
        await self._run(lambda: self._w3.testing.mine(blocks))  # type: ignore[attr-defined]

    async def advance_time(self, seconds: int) -> None:
        """Mine one block ``seconds`` after the head's timestamp (prices age on chain)."""

        def travel() -> None:
            head = int(self._w3.eth.get_block("latest")["timestamp"])
            self._w3.testing.timeTravel(head + seconds)  # type: ignore[attr-defined]

        await self._run(travel)

    async def snapshot(self) -> str:
        """Remember the current head; :meth:`revert` returns to it (the id is opaque)."""
        return await self._run(lambda: str(self._w3.testing.snapshot()))  # type: ignore[attr-defined]

    async def revert(self, snapshot_id: str) -> None:
        """Make the snapshot's block the head again, dropping every later block."""
        await self._run(lambda: self._w3.testing.revert(snapshot_id))  # type: ignore[attr-defined]

    # ------------------------------------------------------------ helpers

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _updates(
        self, given: Sequence[bytes], priced: Iterable[tuple[str, Decimal | None]]
    ) -> list[bytes]:
        """The update data to submit: ``given``, then an update at each named price."""
        updates = [bytes(u) for u in given]
        for market_id, price in priced:
            if price is not None:
                updates.append(await self.price_update(market_id, price))
        return updates

    async def _position_updates(
        self, given: Sequence[bytes], position_id: str, price: Decimal | None
    ) -> list[bytes]:
        """:meth:`_updates` for a transaction on a position: ``price`` is for its market.

        A position that is not open gets the price for any market: the
        contract refuses the transaction anyway ("no such position").
        """
        if price is None:
            return await self._updates(given, ())
        position = await self.position(position_id)
        market_id = position.market_id if position is not None else next(iter(self.deployment.market_feeds))
        return await self._updates(given, [(market_id, price)])

    async def _send(
        self, call: ContractFunction, sender: str, updates: Sequence[bytes] = (), *, gas: int | None = None
    ) -> TxReceipt:
        return await self._run(partial(self._transact, call, sender, updates, gas))

    def _transact(self, call: ContractFunction, sender: str, updates: Sequence[bytes], gas: int | None) -> TxReceipt:
        params: dict[str, Any] = {"from": sender}
        if gas is not None:
            params["gas"] = gas
        try:
            if updates:
                params["value"] = int(self._oracle.functions.getUpdateFee(list(updates)).call())
            tx_hash = call.transact(params)  # type: ignore[arg-type]
        except (TransactionFailed, ContractLogicError) as exc:
            raise TransactionReverted(f"{call.fn_name}: {_revert_reason(exc)}") from exc
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
