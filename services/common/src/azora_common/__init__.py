"""Shared plumbing for Azora services.

Services depend on this package; it depends on no service. ``azora_common.devenv`` holds the
development-only launchers (PostgreSQL, local control plane) used by ``make up`` and the tests;
services never import it.
"""
