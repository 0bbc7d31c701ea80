"""The reference contracts: the exchange and the embedded chain's demo oracle, Vyper sources and compiled artifacts."""
