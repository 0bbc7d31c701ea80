"""Tests of perpstream.chain: contract, decoding, JSON-RPC, indexer, dev chain, demo."""
