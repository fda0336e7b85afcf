"""Accounts: opening, closing, balances (current and as of a time) and statements."""
