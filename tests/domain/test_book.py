from decimal import Decimal

import attrs
import pytest

from perpstream.domain import OpenInterest, PositionBook, RiskLevel, Side

from .factories import ACCOUNT, market, position

D = Decimal
OTHER = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def test_open_modify_close_keep_positions_interest_and_index_in_step() -> None:
    book = PositionBook(market())
    long = position(1, Side.LONG, size="2", collateral="100")
    short = position(2, Side.SHORT, size="3", collateral="100", account=OTHER)
    book.open(long)
    book.open(short)
    assert len(book) == 2 and long.position_id in book
    assert (book.open_interest.long, book.open_interest.short, book.open_interest.open_positions) == (2, 3, 2)
    assert book.of_account(ACCOUNT) == [long] and book.of_account(OTHER) == [short]
    assert book.liquidation_index.query(D("100"), D("0"), D("0")).count(RiskLevel.WARNING) == 0

    thin = long.modified(size=D("2"), collateral=D("1"), entry_price=D("100"), entry_funding_index=D("0"))
    assert book.modify(thin) == long
    assert book.get(long.position_id) == thin and book.of_account(ACCOUNT) == [thin]
    query = book.liquidation_index.query(D("100"), D("0"), D("0"))
    assert query.level_of(long.position_id) is RiskLevel.LIQUIDATABLE  # equity 1 < margin 10

    assert book.close(long.position_id) == thin
    assert book.of_account(ACCOUNT) == [] and long.position_id not in book.liquidation_index
    assert book.open_interest == OpenInterest().opened(short)
    assert list(book) == [short]


def test_inconsistent_events_are_refused_without_partial_updates() -> None:
    book = PositionBook(market())
    book.open(position(1))
    with pytest.raises(ValueError):
        book.open(position(1, collateral="20"))
    other_market = attrs.evolve(position(2), market_id="eth-usdc-perp")
    with pytest.raises(ValueError):
        book.open(other_market)
    with pytest.raises(ValueError):
        book.modify(position(1, Side.SHORT))
    with pytest.raises(KeyError):
        book.modify(position(3))
    with pytest.raises(KeyError):
        book.close(position(3).position_id)
    assert len(book) == len(book.liquidation_index) == book.open_interest.open_positions == 1
    assert book.get(position(2).position_id) is None

