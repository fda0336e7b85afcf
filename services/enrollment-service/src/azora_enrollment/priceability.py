"""Whether azora-pricing can price a cohort: asked on PUT, kept on the cohort row, re-checked.

A priced cohort names a product and a currency. If azora-pricing does not know the product (or
has no price for it in that currency), no enrollment into the cohort can ever be charged: each
would be accepted, retried by the outbox and rejected. So the service finds out early and says
so:

- **on PUT** (``cohorts.put_cohort``) it asks pricing (``GET /v1/products/{sku}``) before taking
  any lock: unknown product → ``422`` reason ``UnknownProduct``, no price in the currency →
  ``422`` ``UnpricedCurrency`` (the operator copies the reason into ``Ready=False``). Pricing
  unreachable → the cohort is accepted (configuration does not wait for a dependency) and
  stored as ``unverified``;
- **from the outbox**: a quote refused for good (a 4xx) makes the worker ask the same question;
  if the product or its price is missing, the cohort becomes ``refused``. A quote that
  succeeds makes it ``verified``;
- **in the background** (``recheck``, every ``ENROLLMENT_PRICING_RECHECK_INTERVAL_S``): every
  live priced cohort that is not ``verified`` is asked about again, so a cohort becomes
  priceable again on its own once the product (or its price) is created.

The hot path reads the state from the cohort row it already holds (``admission.enroll``): no
call to pricing per enrollment. Entering ``refused`` takes a new revision, so an enrollment
decided on an older row is answered ``stale`` by ``enrollment_admit`` and re-read; a process
that holds a ``refused`` row re-reads it before refusing (a row that became priceable again is
never refused from a stale copy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from azora_common.errors import Conflict
from azora_enrollment import repository as repo
from azora_enrollment.errors import InvalidSpec, UpstreamError
from azora_enrollment.spec import CohortSpec, PricingSpec, spec_of

if TYPE_CHECKING:
    # The outbox reports to this module; only the type of its client is needed here.
    from azora_enrollment.outbox import PaymentClient

log = logging.getLogger("azora.enrollment.pricing")

VERIFIED = "verified"
UNVERIFIED = "unverified"
REFUSED = "refused"
# The field of the spec each refusal is about.
_FIELD = {"UnknownProduct": "spec.pricing.product", "UnpricedCurrency": "spec.pricing.currency"}


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # VERIFIED, UNVERIFIED or REFUSED
    reason: str | None = None  # UnknownProduct, UnpricedCurrency, PricingUnavailable
    detail: str | None = None

    def columns(self, now: datetime) -> dict[str, Any]:
        """The cohort row's pricing columns for this verdict."""
        return {
            "pricing_state": self.state,
            "pricing_reason": self.reason,
            "pricing_detail": self.detail,
            "pricing_checked_at": now,
        }


NOT_PRICED: dict[str, Any] = {
    "pricing_state": None,
    "pricing_reason": None,
    "pricing_detail": None,
    "pricing_checked_at": None,
}


class CohortNotPriceable(Conflict):
    """An enrollment into a cohort azora-pricing cannot price: refused before any seat."""

    type_slug = "cohort-not-priceable"
    title = "Cohort cannot be priced"


async def check(client: PaymentClient, pricing: PricingSpec) -> Verdict:
    """Ask azora-pricing whether it can price ``pricing.product`` in ``pricing.currency``."""
    try:
        product = await client.product(pricing.product)
    except UpstreamError as exc:
        # Unreachable, 5xx, or a refusal of the question itself (e.g. our token): we do not
        # know, which is not the same as "cannot be priced".
        return Verdict(UNVERIFIED, "PricingUnavailable", f"azora-pricing was not asked: {exc}")
    if product is None or product.get("active") is False:
        state = "has no product" if product is None else "has the product only as inactive:"
        return Verdict(REFUSED, "UnknownProduct", f"azora-pricing {state} '{pricing.product}'")
    prices = product.get("prices")
    currencies = sorted(prices) if isinstance(prices, dict) else []
    if pricing.currency not in currencies:
        return Verdict(
            REFUSED,
            "UnpricedCurrency",
            f"product '{pricing.product}' has no price in {pricing.currency} in azora-pricing "
            f"(it has: {', '.join(currencies) or 'none'})",
        )
    return Verdict(VERIFIED)


def spec_refusal(verdict: Verdict, pricing: PricingSpec) -> InvalidSpec:
    """The 422 of a PUT whose pricing azora-pricing refuses."""
    assert verdict.reason is not None
    assert verdict.detail is not None
    field = _FIELD[verdict.reason]
    return InvalidSpec(
        verdict.reason,
        f"{field}: {verdict.detail}",
        field=field,
        errors=[{"field": field, "reason": verdict.detail}],
        product=pricing.product,
        currency=pricing.currency,
    )


def not_priceable(cohort: repo.CohortRow, spec: CohortSpec) -> CohortNotPriceable:
    """The 409 of an enrollment into a cohort known to be unpriceable."""
    assert spec.pricing is not None
    return CohortNotPriceable(
        f"cohort {cohort.key} cannot take enrollments: {cohort.pricing_detail}; they are "
        "accepted again once azora-pricing can price it (re-checked in the background)",
        cohort=cohort.key,
        product=spec.pricing.product,
        currency=spec.pricing.currency,
        reason=cohort.pricing_reason,
    )


def status(cohort: repo.CohortRow, spec: CohortSpec) -> dict[str, Any] | None:
    """The ``pricing`` member of the cohort's admin status; ``None`` for a free cohort."""
    if spec.pricing is None:
        return None
    state = cohort.pricing_state or UNVERIFIED  # stored before migration 0006: not asked yet
    return {
        "verified": state == VERIFIED,
        "state": state,
        "reason": cohort.pricing_reason if cohort.pricing_state else "NotCheckedYet",
        "detail": cohort.pricing_detail,
        "product": spec.pricing.product,
        "currency": spec.pricing.currency,
        "checked_at": cohort.pricing_checked_at.isoformat() if cohort.pricing_checked_at else None,
    }


async def record(
    sessionmaker: async_sessionmaker[AsyncSession],
    cohort_id: int,
    pricing: PricingSpec,
    verdict: Verdict,
    now: datetime,
) -> bool:
    """Store what was learnt about the cohort's pricing; whether its state changed.

    Only if the cohort still has the pricing that was asked about (its spec may have changed
    meanwhile). Under the cohort row lock, like every change of the row; entering ``refused``
    takes a new revision (see the module docstring).
    """
    async with sessionmaker() as session, session.begin():
        cohort = await repo.lock_cohort_by_id(session, cohort_id)
        if cohort is None or cohort.deleted_at is not None:
            return False
        if spec_of(cohort).pricing != pricing:
            return False
        changed = cohort.pricing_state != verdict.state
        values = verdict.columns(now)
        if changed and verdict.state == REFUSED:
            values["revision"] = await repo.cohort_store.next_revision(session)
        await repo.update_cohort(session, cohort.id, **values)
        if changed:
            await repo.cohort_store.publish(session, cohort.key)
            log.info(
                "cohort %s pricing %s → %s (%s)",
                cohort.key,
                cohort.pricing_state,
                verdict.state,
                verdict.detail or "priceable",
            )
    return changed


async def recheck(
    sessionmaker: async_sessionmaker[AsyncSession],
    client: PaymentClient,
    now: datetime,
    *,
    limit: int = 100,
) -> int:
    """Ask pricing again about live priced cohorts that are not ``verified``; how many
    changed state. A down pricing leaves them as they are (``PricingUnavailable`` is only
    recorded for a cohort nothing was known about)."""
    async with sessionmaker() as session:
        cohorts = await repo.priced_cohorts_to_check(session, limit)
    changed = 0
    for cohort in cohorts:
        pricing = spec_of(cohort).pricing
        assert pricing is not None
        verdict = await check(client, pricing)
        if verdict.state == UNVERIFIED and cohort.pricing_state == REFUSED:
            # Pricing said "no" before and cannot be asked now: the "no" is the best we know.
            verdict = Verdict(REFUSED, cohort.pricing_reason, cohort.pricing_detail)
        changed += await record(sessionmaker, cohort.id, pricing, verdict, now)
    return changed


async def learn_from_refused_quote(
    sessionmaker: async_sessionmaker[AsyncSession],
    client: PaymentClient,
    cohort: repo.CohortRow,
    pricing: PricingSpec,
    now: datetime,
) -> None:
    """The outbox's quote was refused for good: if the product or its price is missing, the
    cohort is unpriceable (a refusal for another reason, e.g. a rule, changes nothing)."""
    verdict = await check(client, pricing)
    if verdict.state == REFUSED:
        await record(sessionmaker, cohort.id, pricing, verdict, now)


async def learn_from_quote(
    sessionmaker: async_sessionmaker[AsyncSession],
    cohort: repo.CohortRow,
    pricing: PricingSpec,
    now: datetime,
) -> None:
    """The outbox got a quote: the cohort is priceable."""
    if cohort.pricing_state != VERIFIED:
        await record(sessionmaker, cohort.id, pricing, Verdict(VERIFIED), now)
