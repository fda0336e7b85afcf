"""Azora Pricing: A dynamic pricing engine: products, rules, promotions and explainable quotes."""

__version__ = "0.1.0"
