"""Reversals: the mirror of a posted transaction, in full or in part."""
