"""Pending (two-phase) transactions: post, void, expire."""
