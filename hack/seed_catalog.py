"""Seed the example catalog (examples/catalog/catalog.json) through the services' REST APIs.

The example ``EnrollmentCohort`` is priced by product ``k8s-fundamentals`` in EUR and its
charges are posted to azora-ledger under category ``enrollment``. Both are business data
owned by the services' own APIs (a product is edited by the people who sell the course, with
a revision per change and quotes that record it; a ledger category is part of the chart of
accounts), not cluster configuration, so they are seeded here instead of being a custom
resource. ``make up`` runs this after the services are ready; on a cluster, port-forward the
two services and run it with a token that has ``pricing:write`` and ``ledger:write``:

    python hack/seed_catalog.py --pricing-url http://127.0.0.1:8103 \\
        --ledger-url http://127.0.0.1:8102 --token "$AZORA_API_TOKEN"

Idempotent: a product is written (``PUT /v1/products/{sku}``, which bumps pricing's
revision) only when a field the catalog states differs from the stored one; a category or an
account that exists is left as it is (an account of another type or currency is an error).
Uses only the public API, so it works against any deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = ROOT / "examples" / "catalog" / "catalog.json"


class SeedError(RuntimeError):
    """The services refused part of the catalog; the message says which and why."""


@dataclass(frozen=True)
class Change:
    kind: str  # product | category | account
    key: str
    action: str  # created | updated | unchanged

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.action}"


def _refused(response: httpx.Response, what: str) -> SeedError:
    return SeedError(f"{what}: {response.status_code} {response.text[:500]}")


def _product_differs(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if stored.get("name") != wanted["name"]:
        return True
    if sorted(set(stored.get("labels", []))) != sorted(set(wanted.get("labels", []))):
        return True
    if bool(stored.get("active", True)) != bool(wanted.get("active", True)):
        return True
    stored_prices: dict[str, dict[str, Any]] = stored.get("prices", {})
    if set(stored_prices) != set(wanted["prices"]):
        return True
    # The stored spec also holds the defaults the catalog leaves out (flatFee 0, ...): compare
    # what the catalog states.
    return any(
        stored_prices[currency].get(field) != value
        for currency, spec in wanted["prices"].items()
        for field, value in spec.items()
    )


def seed_pricing(client: httpx.Client, url: str, pricing: dict[str, Any]) -> list[Change]:
    changes = []
    for sku, wanted in pricing.get("products", {}).items():
        got = client.get(f"{url}/v1/products/{sku}")
        if got.status_code == 200 and not _product_differs(got.json(), wanted):
            changes.append(Change("product", sku, "unchanged"))
            continue
        if got.status_code not in (200, 404):
            raise _refused(got, f"GET product {sku}")
        put = client.put(f"{url}/v1/products/{sku}", json=wanted)
        if put.status_code not in (200, 201):
            raise _refused(put, f"PUT product {sku}")
        changes.append(Change("product", sku, "created" if got.status_code == 404 else "updated"))
    return changes


def seed_ledger(client: httpx.Client, url: str, ledger: dict[str, Any]) -> list[Change]:
    changes = []
    listed = client.get(f"{url}/v1/categories")
    if listed.status_code != 200:
        raise _refused(listed, "GET categories")
    existing = {c["code"] for c in listed.json()["items"]}
    for category in ledger.get("categories", []):
        code = category["code"]
        if code in existing:
            changes.append(Change("category", code, "unchanged"))
            continue
        created = client.post(f"{url}/v1/categories", json=category)
        # 409: created by someone else since we listed; it is there, which is what we want.
        if created.status_code not in (201, 409):
            raise _refused(created, f"POST category {code}")
        changes.append(Change("category", code, "created"))
    for account in ledger.get("accounts", []):
        code = account["code"]
        got = client.get(f"{url}/v1/accounts/{code}")
        if got.status_code == 404:
            created = client.post(f"{url}/v1/accounts", json=account)
            if created.status_code == 201:
                changes.append(Change("account", code, "created"))
                continue
            if created.status_code != 409:
                raise _refused(created, f"POST account {code}")
            got = client.get(f"{url}/v1/accounts/{code}")
        if got.status_code != 200:
            raise _refused(got, f"GET account {code}")
        stored = got.json()
        for field in ("type", "currency"):
            if stored.get(field) != account[field]:
                raise SeedError(
                    f"account {code} exists with {field} {stored.get(field)!r}, "
                    f"the catalog says {account[field]!r}"
                )
        changes.append(Change("account", code, "unchanged"))
    return changes


def seed(
    *,
    pricing_url: str,
    ledger_url: str,
    token: str,
    catalog: Path = DEFAULT_CATALOG,
    timeout: float = 10.0,
) -> list[Change]:
    """Bring the services' catalog up to ``catalog``; returns what was done, item by item."""
    document = json.loads(catalog.read_text())
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=timeout) as client:
        changes = seed_pricing(client, pricing_url.rstrip("/"), document.get("pricing", {}))
        changes += seed_ledger(client, ledger_url.rstrip("/"), document.get("ledger", {}))
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/seed_catalog.py",
        description="Seed a catalog (default examples/catalog/catalog.json) through the REST APIs.",
    )
    parser.add_argument("--file", type=Path, default=DEFAULT_CATALOG, help="catalog JSON")
    parser.add_argument("--pricing-url", default=os.environ.get("AZORA_PRICING_URL"))
    parser.add_argument("--ledger-url", default=os.environ.get("AZORA_LEDGER_URL"))
    parser.add_argument("--token", default=os.environ.get("AZORA_API_TOKEN"))
    args = parser.parse_args(argv)
    missing = [
        name
        for name, value in (
            ("--pricing-url / AZORA_PRICING_URL", args.pricing_url),
            ("--ledger-url / AZORA_LEDGER_URL", args.ledger_url),
            ("--token / AZORA_API_TOKEN", args.token),
        )
        if not value
    ]
    if missing:
        parser.error("missing " + ", ".join(missing) + " (or `. .local/azora.env` first)")
    try:
        changes = seed(
            pricing_url=args.pricing_url,
            ledger_url=args.ledger_url,
            token=args.token,
            catalog=args.file,
        )
    except (SeedError, httpx.HTTPError) as exc:
        print(f"seeding the catalog failed: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
