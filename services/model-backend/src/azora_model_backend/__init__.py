"""Azora local model backend: a real, offline, numpy-only OpenAI-compatible model server."""
