"""Demo activity on the embedded chain: traders, a liquidator, a funding keeper.

They send real transactions, so every stream of the service carries live
chain events in the embedded demo. Each is a plain trio ``run()`` coroutine
(with ``task_status``) around a ``step()`` that tests can drive directly.
Trader and liquidator transact with a market's newest :class:`Quote`: the
price they size orders by and the signed oracle update they submit, so the
contract prices the transaction itself.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any, AsyncIterable, Awaitable, Callable, NoReturn, Sequence

import attrs
import trio

from perpstream.chain.units import round_to_wad
from perpstream.devchain.embedded import DevChain, TransactionReverted

__all__ = ["PriceSource", "FundingRateSource", "Quote", "QuoteSource", "DemoTrader", "DemoLiquidator", "FundingKeeper"]

log = logging.getLogger(__name__)

PriceSource = Callable[[str], Decimal | None]  # market id -> oracle price, None if unknown


@attrs.frozen
class Quote:
    """A market's price and the signed oracle update that proves it on chain."""

    price: Decimal
    update_data: tuple[bytes, ...]


QuoteSource = Callable[[str], Quote | None]  # market id -> newest quote, None if unknown
FundingRateSource = Callable[[str], Decimal | None]  # market id -> rate per hour
Sleep = Callable[[float], Awaitable[None]]

_HOUR_S = Decimal(3600)
# Position notionals in USD and leverages: many modest, many 60-150x so that
# warnings and liquidations really happen as the price moves.
_NOTIONALS_USD = (500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)
_LEVERAGE_TIERS = ((2, 10), (10, 60), (60, 150))
_LEVERAGE_WEIGHTS = (30, 30, 40)


@attrs.define
class _Holding:
    position_id: str
    market_id: str


def _round_down(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def _round_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_UP)


class DemoTrader:
    """Opens, modifies and closes positions for the chain's trader accounts."""

    def __init__(
        self,
        chain: DevChain,
        markets: Sequence[str],
        quote: QuoteSource,
        *,
        seed: int = 11,
        interval_s: tuple[float, float] = (1.0, 3.0),
        max_leverage: Decimal = Decimal(50),
        max_positions_per_account: int = 3,
        accounts: Sequence[str] | None = None,
        sleep: Sleep = trio.sleep,
    ) -> None:
        self._chain = chain
        self._markets = tuple(markets)
        self._quote = quote
        self._rng = random.Random(seed)
        self._interval_s = interval_s
        self._max_leverage = max_leverage
        self._max_positions = max_positions_per_account
        self._accounts = tuple(accounts if accounts is not None else chain.traders)
        self._sleep = sleep
        self._holdings: dict[str, list[_Holding]] = {a: [] for a in self._accounts}
        self.actions: Counter[str] = Counter()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
        await self.adopt_open_positions()
        task_status.started()
        while True:
            await self.step()
            await self._sleep(self._rng.uniform(*self._interval_s))

    async def adopt_open_positions(self) -> None:
        """Take over the accounts' open positions, e.g. after a restart."""
        for position in await self._chain.open_positions_view():
            holdings = self._holdings.get(position.account)
            if holdings is not None and all(h.position_id != position.position_id for h in holdings):
                holdings.append(_Holding(position.position_id, position.market_id))

    async def step(self) -> str | None:
        """One trading action by a random account; returns what it did, if anything."""
        account = self._rng.choice(self._accounts)
        holdings = await self._refresh(account)
        try:
            if not holdings or (len(holdings) < self._max_positions and self._rng.random() < 0.5):
                action = await self._open(account)
            else:
                holding = self._rng.choice(holdings)
                if self._rng.random() < 0.55:
                    action = await self._modify(account, holding)
                else:
                    action = await self._close(account, holding)
        except TransactionReverted as exc:
            log.info("demo trade refused: %s", exc)
            action = "refused"
        if action is not None:
            self.actions[action] += 1
        return action

    async def _refresh(self, account: str) -> list[_Holding]:
        """Drop holdings that are gone on chain (liquidated meanwhile)."""
        alive = [h for h in self._holdings[account] if await self._chain.position(h.position_id) is not None]
        self._holdings[account] = alive
        return alive

    def _uniform(self, low: Decimal | int, high: Decimal | int, places: int) -> Decimal:
        """A random decimal in [low, high] with ``places`` decimals (no floats)."""
        scale = 10**places
        return Decimal(self._rng.randint(int(low * scale), int(high * scale))).scaleb(-places)

    def _leverage(self) -> Decimal:
        low, high = self._rng.choices(_LEVERAGE_TIERS, weights=_LEVERAGE_WEIGHTS)[0]
        return min(self._max_leverage, self._uniform(low, high, 1))

    async def _open(self, account: str) -> str | None:
        quoted = [(m, q) for m in self._markets if (q := self._quote(m)) is not None]
        if not quoted:
            return None
        market_id, quote = self._rng.choice(quoted)
        price = quote.price
        notional = self._rng.choice(_NOTIONALS_USD) * self._uniform(Decimal("0.8"), Decimal("1.2"), 3)
        leverage = self._leverage()
        size = _round_down(notional / price, 6)
        if size <= 0:
            return None
        receipt = await self._chain.open_position(
            account,
            market_id,
            is_long=self._rng.random() < 0.5,
            size=size,
            collateral=_round_up(size * price / leverage, 2),  # never above max leverage
            update_data=quote.update_data,
        )
        self._holdings[account].append(_Holding(receipt.opened_position_ids[0], market_id))
        return "open"

    async def _modify(self, account: str, holding: _Holding) -> str | None:
        position = await self._chain.position(holding.position_id)
        quote = self._quote(holding.market_id)
        if position is None or quote is None:
            return None
        size, collateral = position.size, position.collateral
        choice = self._rng.random()
        if choice < 0.35:  # add collateral: deleverage
            collateral = _round_down(collateral * self._uniform(Decimal("1.2"), Decimal("1.5"), 2), 2)
        elif choice < 0.7:  # add to the position at the oracle's price
            size += _round_down(size * self._uniform(Decimal("0.2"), Decimal("0.6"), 2), 6)
        else:  # reduce the position (the contract realizes the removed part's pnl)
            size = _round_down(size * self._uniform(Decimal("0.3"), Decimal("0.7"), 2), 6)
        if size <= 0:
            return None
        collateral = max(collateral, _round_up(size * quote.price / self._max_leverage, 2))
        await self._chain.modify_position(
            account, holding.position_id, size=size, collateral=collateral, update_data=quote.update_data
        )
        return "modify"

    async def _close(self, account: str, holding: _Holding) -> str | None:
        quote = self._quote(holding.market_id)
        if quote is None:
            return None
        await self._chain.close_position(account, holding.position_id, update_data=quote.update_data)
        self._holdings[account].remove(holding)
        return "close"


class DemoLiquidator:
    """Liquidates the positions the service reports as liquidatable.

    Candidates come from ``candidates`` (an async iterable of position ids
    with the signed update they were judged at, e.g. the service's live
    liquidation events) or through
    :meth:`liquidate`. Each is sent with its market's newest signed update;
    the contract decides at that price. A candidate the chain refuses —
    already closed or liquidated, or not liquidatable at the oracle's
    price — is counted and skipped.
    """

    def __init__(
        self,
        chain: DevChain,
        quote: QuoteSource,
        *,
        candidates: AsyncIterable[tuple[str, tuple[bytes, ...]]] | None = None,
        account: str | None = None,
    ) -> None:
        self._chain = chain
        self._quote = quote
        self._candidates = candidates
        self._account = account or chain.liquidator
        self.liquidated = 0
        self.refused = 0
        #: Why the chain refused, by revert reason (a race: "no such position").
        self.refusals: Counter[str] = Counter()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self._candidates is None:
            raise ValueError("DemoLiquidator.run needs a candidates iterable")
        task_status.started()
        async for position_id, update_data in self._candidates:
            await self.liquidate(position_id, update_data=update_data)

    async def liquidate(self, position_id: str, *, update_data: tuple[bytes, ...] = ()) -> bool:
        """Try to liquidate one position; True when the chain accepted it.

        ``update_data``: the signed price the candidate was judged at; without
        it, the market's newest quote.
        """
        position = await self._chain.position(position_id)
        if position is None:
            return False
        if not update_data:
            quote = self._quote(position.market_id)
            if quote is None:
                return False
            update_data = quote.update_data
        try:
            await self._chain.liquidate(self._account, position_id, update_data=update_data)
        except TransactionReverted as exc:
            self.refused += 1
            self.refusals[str(exc).removeprefix("liquidate: ").removeprefix("execution reverted: ")] += 1
            log.debug("liquidation of %s refused: %s", position_id, exc)
            return False
        self.liquidated += 1
        return True


class FundingKeeper:
    """Posts each market's funding rate and accrued index on chain periodically.

    The index accrues as ``d(index) = rate × P × dt / 3600 s``,
    with the rate in force since the last post (read back from the chain, so
    a restarted keeper continues the same index); the new rate comes from
    ``rate_for``. Posting funding names no price on chain (the keeper's
    index is its own), so the keeper needs prices only, not signed updates.
    """

    def __init__(
        self,
        chain: DevChain,
        markets: Sequence[str],
        rate_for: FundingRateSource,
        current_price: PriceSource,
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = trio.sleep,
    ) -> None:
        self._chain = chain
        self._markets = tuple(markets)
        self._rate_for = rate_for
        self._price = current_price
        self._interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self.posted = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            await self.post_all()
            await self._sleep(self._interval_s)

    async def post_all(self) -> int:
        """Post every market that has a price and a rate; returns how many."""
        posted = 0
        for market_id in self._markets:
            rate, price = self._rate_for(market_id), self._price(market_id)
            if rate is None or price is None:
                continue
            last_rate, last_index, last_time = await self._chain.funding(market_id)
            now = max(int(self._clock()), last_time)
            index = last_index
            if last_time > 0:
                index += last_rate * price * Decimal(now - last_time) / _HOUR_S
            await self._chain.update_funding(
                market_id, rate_per_hour=round_to_wad(rate), index=round_to_wad(index), timestamp=now
            )
            posted += 1
        self.posted += posted
        return posted
