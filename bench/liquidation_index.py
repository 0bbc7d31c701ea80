"""Per-tick cost of the liquidation index versus scanning every position.

    python bench/liquidation_index.py [--sizes 10000,100000,1000000] [--ticks 200]

For each size: open that many BTC positions (18-decimal chain values, both
sides, leverage 1.1×–50× skewed towards the low end, entries within ±2 % of
the start price, every position safe when opened), then replay one
random-walk price path with oracle confidence and funding drift. Each tick:

- index: ``query`` plus materializing the crossed set of every level;
- brute force: the exact level of every position (``position_level``), the
  same answers the index must give (checked on every scanned tick);
- then keepers liquidate what was liquidatable (removed from both), as on a
  live market, so liquidatable positions do not pile up tick after tick.

The brute force runs on the first ticks of the path (fewer at large sizes,
within ``--scan-budget`` position evaluations). Figures are medians and p99
in milliseconds; the speedup is brute-force median / index median.
The heap is frozen for the garbage collector after loading (``gc.freeze``),
as a daemon should do after bulk-loading state, so neither side's timing
includes collections of the position objects.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import time
from decimal import Decimal

from perpstream.domain import (
    ALERT_LEVELS,
    LiquidationIndex,
    Position,
    RiskLevel,
    Side,
    decimal_context,
    from_wad,
    position_level,
)

MMR = Decimal("0.005")
START_PRICE_CENTS = 6_500_000  # $65,000.00
FUNDING_RATE_PER_HOUR = Decimal("0.0001")
WAD = 10**18
ACCOUNT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def cents(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)


def draw_position(rng: random.Random, n: int, price: Decimal, confidence: Decimal, index: Decimal) -> Position:
    """One position, redrawn until it is safe at the current price (as when it was opened)."""
    while True:
        side = Side.LONG if rng.random() < 0.5 else Side.SHORT
        # The random draws are floats; every money value is built from integers.
        leverage_centi = int(110 * (5000 / 110) ** (rng.random() ** 1.5))  # 1.1× … 50×, mostly low
        spread = START_PRICE_CENTS // 50  # ±2 %
        entry_cents = START_PRICE_CENTS + (rng.randint(-spread, spread) + rng.randint(-spread, spread)) // 2
        size_wad = rng.randint(10**15, 10**16) * 10 ** rng.randint(0, 3)  # 0.001 … 10 BTC
        collateral_wad = entry_cents * size_wad * 100 // (100 * leverage_centi)  # notional / leverage
        entry_index_wad = index_wad(index) + rng.randint(-2 * WAD, 2 * WAD)
        candidate = Position(
            position_id=f"0x{n:064x}",
            account=ACCOUNT,
            market_id="btc-usdc-perp",
            side=side,
            size=from_wad(size_wad),
            collateral=from_wad(collateral_wad),
            entry_price=cents(entry_cents),
            entry_funding_index=from_wad(entry_index_wad),
        )
        if position_level(candidate, price, confidence, index, MMR) is RiskLevel.SAFE:
            return candidate


def index_wad(index: Decimal) -> int:
    return int(index.scaleb(18))


def price_path(rng: random.Random, ticks: int) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(price, confidence, funding index) per one-second tick."""
    path = []
    price_cents = START_PRICE_CENTS
    index = Decimal(0)
    for _ in range(ticks):
        price_cents += rng.randint(-6500, 6500)  # up to ±0.1 % a second
        price = cents(price_cents)
        confidence = cents(rng.randint(2000, 6000))  # $20 … $60, like Pyth's BTC/USD
        with decimal_context():
            index = (index + FUNDING_RATE_PER_HOUR * price / 3600).quantize(Decimal("1E-18"))
        path.append((price, confidence, index))
    return path


def index_tick(index: LiquidationIndex, price: Decimal, confidence: Decimal, funding: Decimal) -> list[list[str]]:
    query = index.query(price, confidence, funding)
    return [list(query.crossed(level)) for level in ALERT_LEVELS]


def brute_force_tick(
    positions: dict[str, Position], price: Decimal, confidence: Decimal, funding: Decimal
) -> list[list[str]]:
    crossed: list[list[str]] = [[] for _ in ALERT_LEVELS]
    for p in positions.values():
        level = position_level(p, price, confidence, funding, MMR)
        for i, alert in enumerate(ALERT_LEVELS):
            if level.severity >= alert.severity:
                crossed[i].append(p.position_id)
    return crossed


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    result = fn(*args)
    return (time.perf_counter_ns() - start) / 1e6, result


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def run(size: int, ticks: int, scan_budget: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    start_price, start_confidence = cents(START_PRICE_CENTS), cents(4000)
    positions = {
        p.position_id: p
        for p in (draw_position(rng, n, start_price, start_confidence, Decimal(0)) for n in range(1, size + 1))
    }
    index = LiquidationIndex(MMR)
    build_ms, _ = timed(lambda: [index.insert(p) for p in positions.values()])
    gc.collect()
    gc.freeze()

    scan_ticks = max(3, min(ticks, scan_budget // size))
    index_ms: list[float] = []
    brute_ms: list[float] = []
    crossed_warning: list[int] = []
    liquidated = 0
    for i, tick in enumerate(price_path(random.Random(seed + 1), ticks)):  # the same path at every size
        elapsed, crossed = timed(index_tick, index, *tick)
        index_ms.append(elapsed)
        crossed_warning.append(len(crossed[0]))
        if i < scan_ticks:
            elapsed, expected = timed(brute_force_tick, positions, *tick)
            brute_ms.append(elapsed)
            assert [set(ids) for ids in crossed] == [set(ids) for ids in expected], "index and brute force disagree"
        for position_id in crossed[-1]:  # keepers liquidate
            index.remove(position_id)
            del positions[position_id]
            liquidated += 1
    gc.unfreeze()
    return {
        "positions": size,
        "build_s": build_ms / 1000,
        "index_median": statistics.median(index_ms),
        "index_p99": p99(index_ms),
        "crossed": statistics.mean(crossed_warning),
        "liquidated": liquidated,
        "brute_median": statistics.median(brute_ms),
        "brute_ticks": scan_ticks,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated position counts")
    parser.add_argument("--ticks", type=int, default=200, help="price ticks replayed through the index")
    parser.add_argument("--scan-budget", type=int, default=500_000, help="position evaluations for the brute force")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    header = (
        f"{'positions':>10} {'build s':>8} {'index ms':>9} {'p99 ms':>8} {'crossed':>8} {'liq.':>6}"
        f" {'scan ms':>10} {'(ticks)':>7} {'speedup':>9} {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header), flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        r = run(size, args.ticks, args.scan_budget, args.seed)
        print(
            f"{r['positions']:>10,} {r['build_s']:>8.1f} {r['index_median']:>9.3f} {r['index_p99']:>8.3f}"
            f" {r['crossed']:>8.1f} {r['liquidated']:>6} {r['brute_median']:>10.1f} {r['brute_ticks']:>7} "
            f"{r['brute_median'] / r['index_median']:>8.0f}× {r['rss_mb']:>12.0f}",
            flush=True,
        )
    print(
        "\nindex ms: query + materialized crossed sets of all three levels, per tick (median; p99)."
        "\ncrossed: mean size of the warning-or-worse set; liq.: positions liquidated along the path."
        "\nscan ms: exact level of every position (median over the first (ticks) ticks)."
    )


if __name__ == "__main__":
    main()
