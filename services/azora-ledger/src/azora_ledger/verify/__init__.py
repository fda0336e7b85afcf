"""Verification: every balance recomputed from the postings, every invariant checked."""
