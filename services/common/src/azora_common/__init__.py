"""Shared plumbing for Azora services.

Services depend on this package; it depends on no service. The development-only launchers
(PostgreSQL, local control plane) live in ``azora_devenv`` under ``hack/devenv``, which no image
installs.
"""
