"""The orphan sweep: configs a service holds that no custom resource declares are removed.

The per-object resync timer repairs the configs the operator knows; this sweep covers the rest.
Per kind, every ``RESYNC_INTERVAL``: list what the service holds (``GET /admin/v1/{plural}``),
*then* list the resources in Kubernetes. The order matters: the operator PUTs a config only
after its resource exists, so anything in the first list that the operator created is in the
second one (a resource created between the two calls is declared, never orphaned).

A config that no resource declares is a suspect. It is deleted only when it was seen orphaned
on two consecutive sweeps at least ``orphan_grace`` apart (default: two resync intervals) with
the same revision (re-written meanwhile: the clock starts again), and the resources are listed
once more right before the DELETE. Any list that fails (the service down, the CRD missing, a
403) skips the kind for this sweep: an error is never read as "nothing is declared".

Scope: only namespaces the operator watches (``NAMESPACES``, Kopf's patterns); a service or kind
in ``PRUNE_EXCLUDE`` (or ``PRUNE=false``) is left alone, for people who configure it by hand.

Why a task started by ``@kopf.on.startup`` and not a Kopf timer: Kopf timers and daemons run
per object of a watched resource, and the sweep belongs to no object (its subject is what has
*no* object). A timer on a stand-in singleton would need a resource to exist and RBAC for it;
the task lives and dies with the operator process (``@kopf.on.cleanup`` cancels it).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from azora_operator.client import Rejected, ServiceUnavailable
from azora_operator.kinds import GROUP, KINDS, VERSION, Kind
from azora_operator.kube import KubeListError
from azora_operator.metrics import RECONCILES
from azora_operator.reconcile import Reconciler

log = logging.getLogger("azora_operator")

Key = tuple[str, str, str]  # kind, namespace, name


@dataclass
class _Suspect:
    first_seen: float
    revision: object


class NamespaceScope:
    """Kopf's namespace patterns (``team-*``, ``!kube-system``); empty means every namespace."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.include = [p for p in patterns if not p.startswith("!")]
        self.exclude = [p[1:] for p in patterns if p.startswith("!")]

    @property
    def cluster_wide(self) -> bool:
        return not self.include and not self.exclude

    @property
    def exact(self) -> list[str] | None:
        """The namespaces, when every pattern is a plain name (no listing of namespaces)."""
        if self.exclude or any(set(p) & set("*?[") for p in self.include) or not self.include:
            return None
        return list(self.include)

    def __contains__(self, namespace: str) -> bool:
        if any(fnmatch.fnmatchcase(namespace, p) for p in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatchcase(namespace, p) for p in self.include)


class OrphanSweep:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.settings = reconciler.settings
        self.scope = NamespaceScope(self.settings.namespaces)
        self._suspects: dict[Key, _Suspect] = {}

    def kinds(self) -> list[Kind]:
        return [k for k in KINDS if self.settings.prunes(k.service, k.kind)]

    async def run(self) -> None:
        """Sweep every interval until cancelled; the first after one interval (the cold
        start's applies go first)."""
        interval = self.settings.resync_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("orphan sweep failed; trying again in %.0fs", interval)

    async def sweep(self, now: float | None = None) -> list[Key]:
        """One pass over every kind; returns what was removed."""
        now = time.monotonic() if now is None else now
        removed: list[Key] = []
        for kind in self.kinds():
            try:
                removed += await self._sweep_kind(kind, now)
            except (ServiceUnavailable, KubeListError) as exc:
                # Nothing counts as seen this time: the two sweeps must be consecutive.
                self._forget(kind, keep=set())
                log.info("orphan sweep of %s skipped: %s", kind.kind, exc)
        return removed

    async def _sweep_kind(self, kind: Kind, now: float) -> list[Key]:
        client = self.reconciler.client(kind)
        held = await client.items(kind.admin_plural)  # the service first, then Kubernetes
        declared = await self.declared(kind)
        orphans: dict[Key, object] = {}
        for item in held:
            namespace, name = str(item.get("namespace", "")), str(item.get("name", ""))
            if namespace not in self.scope or (namespace, name) in declared:
                continue
            orphans[(kind.kind, namespace, name)] = item.get("revision")
        self._forget(kind, keep=set(orphans))
        due: list[Key] = []
        for key, revision in orphans.items():
            suspect = self._suspects.get(key)
            if suspect is None or suspect.revision != revision:
                self._suspects[key] = _Suspect(first_seen=now, revision=revision)
                continue
            # A suspect of the previous sweep (any gap in between forgets it: see _forget).
            if now - suspect.first_seen >= self.settings.orphan_grace():
                due.append(key)
        if not due:
            return []
        # Once more right before deleting: a resource created since the list above wins.
        declared = await self.declared(kind)
        removed: list[Key] = []
        for key in due:
            _, namespace, name = key
            self._suspects.pop(key, None)
            if (namespace, name) in declared:
                continue
            try:
                await client.delete(kind.admin_plural, namespace, name)
            except Rejected as exc:
                log.warning("orphan %s %s/%s not removed: %s", kind.kind, namespace, name, exc)
                continue
            RECONCILES.labels(kind=kind.kind, result="pruned").inc()
            log.warning(
                "%s %s/%s removed from %s: no %s declares it (orphaned for %.0fs or more; "
                "AZORA_OPERATOR_PRUNE_EXCLUDE=%s keeps hand-made configs)",
                kind.kind,
                namespace,
                name,
                kind.service,
                kind.kind,
                self.settings.orphan_grace(),
                kind.service,
            )
            removed.append(key)
        return removed

    def _forget(self, kind: Kind, keep: set[Key]) -> None:
        for key in [k for k in self._suspects if k[0] == kind.kind and k not in keep]:
            del self._suspects[key]

    async def declared(self, kind: Kind) -> set[tuple[str, str]]:
        """(namespace, name) of every resource of ``kind`` in the watched namespaces."""
        base = f"/apis/{GROUP}/{VERSION}"
        kube = self.reconciler.kube
        if self.scope.cluster_wide:
            paths = [f"{base}/{kind.plural}"]
        else:
            namespaces = self.scope.exact
            if namespaces is None:
                listed = await kube.list_objects("/api/v1/namespaces")
                names = (str(ns.get("metadata", {}).get("name", "")) for ns in listed)
                namespaces = [n for n in names if n in self.scope]
            paths = [f"{base}/namespaces/{ns}/{kind.plural}" for ns in namespaces]
        found: set[tuple[str, str]] = set()
        for path in paths:
            for obj in await kube.list_objects(path):
                meta = obj.get("metadata") or {}
                found.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        return found
