"""perpstream: a real-time streaming daemon for a perpetual-futures DEX.

Oracle prices and on-chain position events in; live PnL, health, liquidation
prices and liquidation candidates out, over WebSockets.
"""

__version__ = "0.1.0"
