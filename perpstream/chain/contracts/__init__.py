"""The reference contract: Vyper source and its compiled artifact."""
