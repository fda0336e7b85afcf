"""Azora AI Orchestrator: An OpenAI-compatible gateway with weighted, health-aware routing."""

__version__ = "0.1.0"
