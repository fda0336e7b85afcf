"""The payment outbox: charges and refunds recorded in azora-pricing and azora-ledger.

An enrollment that needs a charge is written in ``pending_payment`` together with an outbox
row, in one transaction; this worker does the remote calls later, so an outage of pricing or
ledger delays a charge but can neither lose it nor double it:

* every remote effect carries an Idempotency-Key derived from the enrollment id (the ledger
  transaction's key *is* the enrollment id, its reference ``enrollment:<id>``), so a retry
  after a crash or a lost response returns the first result instead of charging again;
* progress (quote id, accepted amount, ledger transaction id) is saved after each step, so a
  retry resumes where the last attempt stopped;
* jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, so replicas split the work and
  a job whose worker died is picked up again when its lease ends;
* the final step takes the cohort lock like every other seat change: if the student dropped
  while the charge was in flight, the charge is kept and a refund is queued instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import quote as url_quote

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from azora_common.logs import outgoing_headers
from azora_enrollment import lifecycle, metrics, priceability
from azora_enrollment import repository as repo
from azora_enrollment.clock import Clock
from azora_enrollment.errors import UpstreamError
from azora_enrollment.settings import EnrollmentSettings
from azora_enrollment.spec import spec_of

log = logging.getLogger("azora.enrollment.outbox")

# 408/425/429 mean "later"; so do 5xx and network failures. Other 4xx mean "no".
_RETRYABLE_STATUS = frozenset({408, 425, 429})


def _money_amount(value: Any) -> int:
    if isinstance(value, dict):
        return int(value["amount"])
    return int(value)


class PaymentClient:
    """Thin async client for azora-pricing (product, quote, accept) and azora-ledger."""

    def __init__(
        self, settings: EnrollmentSettings, transport: httpx.AsyncBaseTransport | None = None
    ):
        token = settings.service_token.get_secret_value()
        self._pricing = settings.pricing_url.rstrip("/")
        self._ledger = settings.ledger_url.rstrip("/")
        self._check_timeout = settings.pricing_check_timeout_s
        self._http = httpx.AsyncClient(
            timeout=settings.http_timeout_s,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        url: str,
        body: Any,
        key: str | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        headers = outgoing_headers()
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            response = await self._http.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=self._http.timeout if timeout_s is None else timeout_s,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{method} {url}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        return response

    @staticmethod
    def _fail(response: httpx.Response) -> UpstreamError:
        retryable = response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS
        text = response.text[:500]
        return UpstreamError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: "
            f"{text}",
            retryable=retryable,
        )

    async def quote(
        self,
        *,
        currency: str,
        student_id: str,
        segment: str | None,
        product: str,
        fill_ratio: str | None,
        cohort: str,
    ) -> dict[str, Any]:
        customer: dict[str, Any] = {"id": student_id}
        if segment is not None:
            customer["segment"] = segment
        context: dict[str, Any] = {"cohort": cohort}
        if fill_ratio is not None:
            context["fillRatio"] = fill_ratio
        body = {
            "currency": currency,
            "customer": customer,
            "lines": [{"product": product, "quantity": 1}],
            "codes": [],
            "context": context,
        }
        response = await self._call("POST", f"{self._pricing}/v1/quotes", body)
        if response.status_code != 201:
            raise self._fail(response)
        return dict(response.json())

    async def product(self, sku: str) -> dict[str, Any] | None:
        """The product as azora-pricing holds it (``prices`` by currency), ``None`` if unknown."""
        # Asked while an admin PUT waits (priceability.check): a short timeout of its own.
        response = await self._call(
            "GET",
            f"{self._pricing}/v1/products/{url_quote(sku, safe='')}",
            None,
            timeout_s=self._check_timeout,
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response)
        return dict(response.json())

    async def accept(self, quote_id: str, key: str) -> dict[str, Any]:
        response = await self._call(
            "POST", f"{self._pricing}/v1/quotes/{quote_id}/accept", {}, key=key
        )
        if response.status_code not in (200, 201):
            raise self._fail(response)
        return dict(response.json())

    async def ensure_account(self, code: str, kind: str, currency: str, name: str) -> None:
        body = {"code": code, "type": kind, "currency": currency, "name": name}
        response = await self._call("POST", f"{self._ledger}/v1/accounts", body)
        # 409 account-exists is success: the account is there, which is all we need.
        if response.status_code in (200, 201) or (
            response.status_code == 409 and "account-exists" in response.text
        ):
            return
        raise self._fail(response)

    async def post_transaction(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._call("POST", f"{self._ledger}/v1/transactions", body, key=key)
        if response.status_code not in (200, 201):
            raise self._fail(response)
        return dict(response.json())

    async def reverse(self, transaction_id: str, key: str) -> dict[str, Any]:
        response = await self._call(
            "POST", f"{self._ledger}/v1/transactions/{transaction_id}/reverse", {}, key=key
        )
        if response.status_code not in (200, 201):
            raise self._fail(response)
        return dict(response.json())


@dataclass(slots=True)
class OutboxWorker:
    sessionmaker: async_sessionmaker[AsyncSession]
    client: PaymentClient
    settings: EnrollmentSettings
    clock: Clock

    async def run_once(self) -> int:
        """Lease a batch of due jobs and work them; returns how many were attempted."""
        now = self.clock.now()
        lease = now + timedelta(seconds=self.settings.outbox_lease_s)
        async with self.sessionmaker() as session, session.begin():
            jobs = await repo.lease_jobs(session, now, lease, self.settings.outbox_batch_size)
        if jobs:
            await asyncio.gather(*(self._attempt(job) for job in jobs))
        return len(jobs)

    async def _attempt(self, job: sa.Row[Any]) -> None:
        try:
            if job.kind == "charge":
                result = await self._charge(job.id, job.enrollment_id)
            else:
                result = await self._refund(job.id, job.enrollment_id)
            metrics.OUTBOX_ATTEMPTS.labels(job.kind, result).inc()
        except UpstreamError as exc:
            await self._failed(job, str(exc), exc.retryable)
        except Exception as exc:  # a bug or a database hiccup: keep the job, retry later
            log.exception("outbox job %s failed unexpectedly", job.id)
            await self._failed(job, f"{type(exc).__name__}: {exc}", True)

    def _backoff(self, attempts: int) -> timedelta:
        # Exponential backoff with full jitter in [0.5, 1.5): replicas retrying after a shared
        # outage do not all hit the recovering service at the same instant.
        base = self.settings.outbox_backoff_base_s * (2 ** min(attempts - 1, 20))
        delay = min(self.settings.outbox_backoff_max_s, base) * random.uniform(0.5, 1.5)
        return timedelta(seconds=delay)

    async def _failed(self, job: sa.Row[Any], error: str, retryable: bool) -> None:
        now = self.clock.now()
        refused_for_good = not retryable and job.attempts >= self.settings.outbox_max_refusals
        async with self.sessionmaker() as session, session.begin():
            if not refused_for_good:
                await repo.retry_job(session, job.id, now + self._backoff(job.attempts), error)
                metrics.OUTBOX_ATTEMPTS.labels(job.kind, "retry").inc()
                log.warning(
                    "outbox %s job %s attempt %s: %s", job.kind, job.id, job.attempts, error
                )
                return
            await repo.finish_job(session, job.id, "failed", now, error[:2000])
            metrics.OUTBOX_ATTEMPTS.labels(job.kind, "failed").inc()
            log.error("outbox %s job %s gave up: %s", job.kind, job.id, error)
            if job.kind == "charge":
                await self._reject(session, job.enrollment_id, error, now)

    async def _reject(
        self, session: AsyncSession, enrollment_id: uuid.UUID, error: str, now: datetime
    ) -> None:
        seen = await repo.get_enrollment(session, enrollment_id)
        assert seen is not None
        cohort = await repo.lock_cohort_by_id(session, seen.cohort_id)
        assert cohort is not None
        row = await repo.get_enrollment(session, enrollment_id, lock=True)
        assert row is not None
        await repo.set_payment_fields(session, enrollment_id, payment_error=error[:2000])
        if row.state != "pending_payment":
            return
        await repo.set_state(
            session,
            enrollment_id,
            from_state="pending_payment",
            to_state="rejected",
            cohort_id=cohort.id,
            actor=lifecycle.SYSTEM_PAYMENT,
            reason=f"payment refused: {error[:300]}",
            now=now,
        )
        cohort.seats_taken -= 1
        await repo.add_to_counters(session, cohort.id, seats=-1)
        await lifecycle.promote(
            session, cohort, spec_of(cohort), now, reason="seat freed: payment refused"
        )

    async def _charge(self, job_id: int, enrollment_id: uuid.UUID) -> str:
        async with self.sessionmaker() as session:
            row = await repo.get_enrollment(session, enrollment_id)
            assert row is not None
            cohort = await repo.get_cohort_by_id(session, row.cohort_id)
            assert cohort is not None
            segment = await repo.student_segment(session, row.student_id)
        spec = spec_of(cohort)
        now = self.clock.now()
        if row.state != "pending_payment" and row.charge_amount is None:
            # Dropped before anything was accepted: nothing to charge, nothing to undo.
            async with self.sessionmaker() as session, session.begin():
                await repo.finish_job(session, job_id, "cancelled", now)
            return "cancelled"

        amount: int | None = row.charge_amount
        currency: str | None = row.charge_currency
        if amount is None:
            if spec.pricing is None:
                amount, currency = 0, None  # the cohort became free meanwhile
            else:
                quote_id = row.quote_id
                if quote_id is None:
                    try:
                        quote = await self.client.quote(
                            currency=spec.pricing.currency,
                            student_id=row.student_id,
                            segment=segment,
                            product=spec.pricing.product,
                            fill_ratio=_fill_ratio(cohort),
                            cohort=cohort.key,
                        )
                    except UpstreamError as exc:
                        if not exc.retryable:
                            # Refused for good: if the product or its price is missing, the
                            # cohort stops taking enrollments up front (priceability.py).
                            await _learn(
                                priceability.learn_from_refused_quote(
                                    self.sessionmaker, self.client, cohort, spec.pricing, now
                                )
                            )
                        raise
                    await _learn(
                        priceability.learn_from_quote(self.sessionmaker, cohort, spec.pricing, now)
                    )
                    quote_id = str(quote["id"])
                    await self._save(enrollment_id, quote_id=quote_id)
                try:
                    accepted = await self.client.accept(
                        quote_id, key=f"enrollment-{enrollment_id}-accept-{quote_id}"
                    )
                except UpstreamError as exc:
                    if not exc.retryable:
                        # Most likely the quote expired while we were retrying: the next
                        # attempt asks for a fresh one.
                        await self._save(enrollment_id, quote_id=None)
                    raise
                amount = _money_amount(accepted["total"])
                currency = str(accepted.get("currency") or spec.pricing.currency)
                await self._save(enrollment_id, charge_amount=amount, charge_currency=currency)

        transaction_id = row.charge_transaction_id
        if amount > 0 and transaction_id is None:
            assert currency is not None
            receivable = f"{self.settings.receivable_account_prefix}:{currency.lower()}"
            revenue = f"{self.settings.revenue_account_prefix}:{cohort.namespace}:{cohort.name}"
            await self.client.ensure_account(
                receivable, "asset", currency, f"Enrollment receivables ({currency})"
            )
            await self.client.ensure_account(
                revenue, "revenue", currency, f"Enrollment revenue {cohort.key}"
            )
            posted = await self.client.post_transaction(
                str(enrollment_id),
                {
                    "postings": [
                        {
                            "account": receivable,
                            "direction": "debit",
                            "amount": amount,
                            "currency": currency,
                        },
                        {
                            "account": revenue,
                            "direction": "credit",
                            "amount": amount,
                            "currency": currency,
                        },
                    ],
                    "reference": f"enrollment:{enrollment_id}",
                    "description": f"Enrollment of {row.student_id} in {cohort.key}",
                    "category": "enrollment",
                    "metadata": {"enrollment_id": str(enrollment_id), "cohort": cohort.key},
                },
            )
            transaction_id = str(posted["id"])
            await self._save(
                enrollment_id, charge_transaction_id=transaction_id, charged_at=self.clock.now()
            )
        return await self._complete_charge(job_id, enrollment_id, transaction_id)

    async def _complete_charge(
        self, job_id: int, enrollment_id: uuid.UUID, transaction_id: str | None
    ) -> str:
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            seen = await repo.get_enrollment(session, enrollment_id)
            assert seen is not None
            # Cohort lock first (global lock order), then the enrollment row.
            cohort = await repo.lock_cohort_by_id(session, seen.cohort_id)
            assert cohort is not None
            row = await repo.get_enrollment(session, enrollment_id, lock=True)
            assert row is not None
            if row.state == "pending_payment":
                await repo.set_state(
                    session,
                    enrollment_id,
                    from_state="pending_payment",
                    to_state="enrolled",
                    cohort_id=cohort.id,
                    actor=lifecycle.SYSTEM_PAYMENT,
                    reason=(
                        f"charge recorded in ledger transaction {transaction_id}"
                        if transaction_id
                        else "nothing to charge"
                    ),
                    now=now,
                )
            elif transaction_id is not None:
                # The student left while the charge was in flight: keep the books honest by
                # reversing it rather than pretending it never happened.
                await repo.enqueue(session, enrollment_id, "refund", now)
            await repo.finish_job(session, job_id, "done", now)
        return "done"

    async def _refund(self, job_id: int, enrollment_id: uuid.UUID) -> str:
        async with self.sessionmaker() as session:
            row = await repo.get_enrollment(session, enrollment_id)
        assert row is not None
        if row.refund_transaction_id is None and row.charge_transaction_id is not None:
            reversal = await self.client.reverse(
                row.charge_transaction_id, key=f"enrollment-{enrollment_id}-refund"
            )
            await self._save(enrollment_id, refund_transaction_id=str(reversal["id"]))
        async with self.sessionmaker() as session, session.begin():
            await repo.finish_job(session, job_id, "done", self.clock.now())
        return "done"

    async def _save(self, enrollment_id: uuid.UUID, **values: Any) -> None:
        async with self.sessionmaker() as session, session.begin():
            await repo.set_payment_fields(session, enrollment_id, **values)


async def _learn(lesson: Awaitable[None]) -> None:
    """Record what a quote taught about the cohort's pricing; a failure to record it must not
    change what happens to the job (the background re-check learns it later)."""
    try:
        await lesson
    except Exception:
        log.exception("could not record the pricing state of a cohort")


def _fill_ratio(cohort: repo.CohortRow) -> str | None:
    if not cohort.capacity:
        return None
    value = Decimal(cohort.seats_taken) / Decimal(cohort.capacity)
    return str(value.quantize(Decimal("0.0001"), ROUND_HALF_EVEN))
