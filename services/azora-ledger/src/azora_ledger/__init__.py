"""Azora Ledger: A double-entry financial ledger: accounts, transactions, balances and reports."""

__version__ = "0.1.0"
