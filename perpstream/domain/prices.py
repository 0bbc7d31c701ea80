"""Oracle prices as Pyth publishes them, and their exact decimal values.

Pyth quotes a price as an integer mantissa with a shared exponent
(``value = price × 10^expo``) and a confidence interval in the same units.
Keeping the integers and converting on demand means no float ever touches a
price, and two updates can be compared exactly.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

__all__ = ["PythPrice", "PriceUpdate", "normalize_feed_id"]


def normalize_feed_id(feed_id: str) -> str:
    """Return a Pyth feed id as 64 lower-case hex digits without ``0x``.

    Hermes omits the prefix while configs and docs often include it; one
    canonical form lets feed ids be compared and used as dictionary keys.
    """
    text = feed_id.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a Pyth feed id (64 hex digits): {feed_id!r}")
    return text


@attrs.frozen
class PythPrice:
    """One Pyth price: ``price`` and ``conf`` are integers scaled by ``10^expo``."""

    price: int
    conf: int
    expo: int
    publish_time: int  # oracle time, integer seconds since the Unix epoch

    @property
    def value(self) -> Decimal:
        """The price as an exact decimal."""
        return Decimal(f"{self.price}E{self.expo}")

    @property
    def confidence(self) -> Decimal:
        """The confidence interval (one σ) as an exact decimal."""
        return Decimal(f"{self.conf}E{self.expo}")


@attrs.frozen
class PriceUpdate:
    """What every price feed emits: one feed's newest price and EMA price.

    Real (Hermes) and simulated feeds produce the same type, so everything
    downstream is indifferent to where prices come from.
    """

    feed_id: str  # canonical form, see normalize_feed_id
    price: PythPrice
    ema_price: PythPrice
    source: str  # "pyth-hermes" | "simulated"
    #: The oracle slot the price is from (Hermes ``metadata.slot``): several
    #: updates share one whole-second ``publish_time``, the slot orders them.
    slot: int | None = None
    #: The signed update a transaction submits to the on-chain oracle
    #: (``updatePriceFeeds``) so the contract uses this very price: Hermes's
    #: ``binary.data``, or the embedded demo publisher's signature.
    update_data: tuple[bytes, ...] = ()

    @property
    def order(self) -> tuple[int, int]:
        """Oracle time, newest last: ``(publish_time, slot)``."""
        return (self.price.publish_time, self.slot if self.slot is not None else -1)

    @property
    def publish_time(self) -> int:
        return self.price.publish_time
