"""Business rules of azora-pricing: products, quotes, acceptance, simulation, rule admin.

No HTTP here; the request's session is the unit of work (committed by the dependency).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_store import (
    AdminStore,
    ConfigPut,
    ConfigWritten,
    check_generation,
    listing_item,
    stored_config,
)
from azora_common.errors import NotFound
from azora_common.listener import notify
from azora_pricing import repository
from azora_pricing.engine.currency import RoundingPolicy, is_currency
from azora_pricing.engine.evaluate import (
    CombinationMode,
    LineInput,
    QuoteInput,
    QuoteInputError,
    QuoteResult,
    evaluate,
)
from azora_pricing.engine.index import PricingSnapshot, RuleIndex
from azora_pricing.engine.rules import Rule
from azora_pricing.engine.spec import SpecError, compile_policy, compile_price, compile_rule
from azora_pricing.engine.trace import result_document
from azora_pricing.errors import (
    InvalidQuote,
    InvalidSpec,
    PromotionCodeRejected,
    PromotionCustomerLimit,
    PromotionExhausted,
    PromotionFirstPurchaseOnly,
    QuoteExpired,
)
from azora_pricing.metrics import (
    ACCEPTS,
    EVALUATION_SECONDS,
    QUOTES_CREATED,
    QUOTES_REJECTED,
    REDEMPTIONS,
    rule_applied,
    shadow_hit,
)
from azora_pricing.repository import QuoteRow
from azora_pricing.schemas import ProductIn, QuoteIn, SimulateIn
from azora_pricing.settings import PricingSettings
from azora_pricing.snapshot import SnapshotHolder


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quote_input(body: QuoteIn, *, first_purchase: bool) -> QuoteInput:
    return QuoteInput(
        currency=body.currency,
        lines=[LineInput(line.product, line.quantity) for line in body.lines],
        customer_id=body.customer.id,
        segment=body.customer.segment,
        codes=body.codes,
        fill_ratio=body.context.fillRatio,
        cohort=body.context.cohort,
        first_purchase=first_purchase,
    )


def _new_quote_id() -> str:
    """A random (version 4) UUID in its text form, without building a ``uuid.UUID``."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class PricingService:
    settings: PricingSettings
    holder: SnapshotHolder
    rounding: RoundingPolicy = field(init=False)
    rules: AdminStore = field(init=False)
    policies: AdminStore = field(init=False)

    def __post_init__(self) -> None:
        self.rounding = self.settings.rounding_policy()  # settings are frozen
        self.rules = repository.rule_store(self.settings.notify_channel)
        self.policies = repository.policy_store(self.settings.notify_channel)

    # --- engine ---------------------------------------------------------------------------

    def _evaluate(
        self, snapshot: PricingSnapshot, quote: QuoteInput, at: datetime, mode: str | None
    ) -> QuoteResult:
        combination = CombinationMode(mode or self.settings.combination_mode)
        # A PricingPolicy's mode for the currency wins over the deployment's settings.
        rounding = snapshot.rounding.get(quote.currency) or self.rounding.mode(quote.currency)
        started = time.perf_counter()
        try:
            return evaluate(snapshot, quote, at, mode=combination, rounding=rounding)
        except QuoteInputError as exc:
            raise InvalidQuote(exc.field, exc.reason) from None
        finally:
            EVALUATION_SECONDS.observe(time.perf_counter() - started)

    # --- products -------------------------------------------------------------------------

    async def put_product(
        self, session: AsyncSession, sku: str, body: ProductIn
    ) -> tuple[dict[str, Any], bool]:
        for currency, spec in body.prices.items():
            try:
                compile_price(spec, f"prices.{currency}")
            except SpecError as exc:
                raise InvalidSpec(exc.reason, exc.field, exc.detail) from None
        for currency in body.prices:
            if not is_currency(currency):
                raise InvalidSpec(
                    "UnknownCurrency", f"prices.{currency}", f"{currency!r} is not ISO 4217"
                )
        revision = await repository.bump_revision(session)
        row, created = await repository.upsert_product(
            session,
            sku=sku,
            name=body.name,
            labels=sorted(set(body.labels)),
            active=body.active,
            prices={c: p.model_dump(exclude_none=True) for c, p in body.prices.items()},
            revision=revision,
            now=_now(),
        )
        await notify(session, self.settings.notify_channel, f"product:{sku}")
        return product_document(row), created

    async def get_product(self, session: AsyncSession, sku: str) -> dict[str, Any]:
        row = await repository.get_product(session, sku)
        if row is None:
            raise NotFound(f"product {sku!r} does not exist")
        return product_document(row)

    async def list_products(
        self, session: AsyncSession, *, after: str | None, limit: int
    ) -> dict[str, Any]:
        rows = await repository.list_products(session, after=after, limit=limit)
        items = [product_document(r) for r in rows]
        return {"items": items, "next_after": items[-1]["sku"] if len(items) == limit else None}

    # --- quotes ---------------------------------------------------------------------------

    async def create_quote(self, session: AsyncSession, body: QuoteIn) -> dict[str, Any]:
        # The hot path prices against the in-memory snapshot and learns the stored revision
        # from the INSERT itself (one round trip). If this replica is behind what this
        # transaction can see (a write a moment ago, NOTIFY not yet processed), the quote is
        # priced again on a fresh snapshot, so a client never sees a quote that ignores a write
        # it has already been told succeeded.
        snapshot = self.holder.snapshot
        try:
            try:
                document, result = await self._price(session, body, snapshot)
            except InvalidQuote:
                fresh = await self.holder.fresh(session)
                if fresh is snapshot:
                    raise
                snapshot = fresh
                document, result = await self._price(session, body, snapshot)
        except InvalidQuote:
            QUOTES_REJECTED.inc()
            raise
        now = _now()
        quote_id = uuid.uuid4()
        expires_at = now + timedelta(seconds=self.settings.quote_ttl_seconds)
        doc = self._quote_document(quote_id, body, document, now, expires_at)
        stored_revision = await repository.insert_quote(
            session,
            id=quote_id,
            status="open",
            customer_id=body.customer.id,
            currency=result.currency,
            total=result.total,
            codes=sorted(set(result.applied_codes())),
            request=body.model_dump(mode="json"),
            result=doc,
            snapshot_revision=result.snapshot_revision,
            created_at=now,
            expires_at=expires_at,
        )
        if stored_revision != snapshot.revision:
            snapshot = await self.holder.fresh(session)
            document, result = await self._price(session, body, snapshot)
            doc = self._quote_document(quote_id, body, document, now, expires_at)
            await repository.update_quote_result(
                session,
                quote_id,
                total=result.total,
                codes=sorted(set(result.applied_codes())),
                result=doc,
                snapshot_revision=result.snapshot_revision,
            )
        self._count_quote(result)
        return doc

    async def create_quote_fast(
        self, body: QuoteIn, store: Callable[[QuoteRow], Awaitable[bool]]
    ) -> bytes | None:
        """The hot path of :meth:`create_quote` for quotes without promotion codes.

        Prices against the in-memory snapshot; ``store`` writes the quote with the statement
        that also checks the snapshot is current (the writer's batch, or the request's own
        connection) and returns once it is committed. Returns the response body, serialised
        once (the same bytes are stored), or ``None`` when the full path must answer: a
        rejected quote (it may only be rejected by a stale snapshot; the full path reloads and
        decides), a snapshot behind the stored revision or a value the database refuses
        (nothing was written).
        """
        assert not body.codes  # codes need redemption counts: the full path
        snapshot = self.holder.snapshot
        at = _now()
        try:
            result = self._evaluate(
                snapshot, _quote_input(body, first_purchase=True), at, body.combination_mode
            )
        except InvalidQuote:
            return None
        quote_id = _new_quote_id()
        expires_at = at + timedelta(seconds=self.settings.quote_ttl_seconds)
        doc = self._quote_document(quote_id, body, result_document(result), at, expires_at)
        encoded = orjson.dumps(doc, default=str)
        stored = await store(
            QuoteRow(
                id=quote_id,
                customer_id=body.customer.id,
                currency=result.currency,
                total=result.total,
                codes_json="[]",
                # The validated request, as the full path stores it (model_dump(mode="json")).
                request_json=body.model_dump_json(),
                result_json=encoded.decode(),
                snapshot_revision=snapshot.revision,
                created_at=at,
                expires_at=expires_at,
            )
        )
        if not stored:
            return None
        self._count_quote(result)
        return encoded

    @staticmethod
    def _count_quote(result: QuoteResult) -> None:
        QUOTES_CREATED.inc()
        for line in result.lines:
            for adj in line.adjustments:
                rule_applied(adj.rule.key, adj.kind.value).inc()
            for adj in line.shadow:
                shadow_hit(adj.rule.key).inc()

    @staticmethod
    def _quote_document(
        quote_id: uuid.UUID | str,
        body: QuoteIn,
        document: dict[str, Any],
        now: datetime,
        expires_at: datetime,
    ) -> dict[str, Any]:
        return {
            "id": str(quote_id),
            "status": "open",
            "customer": body.customer.model_dump(),
            "context": body.context.model_dump(mode="json", exclude_none=True),
            **document,
            "created_at": _ts(now),
            "expires_at": _ts(expires_at),
        }

    async def _price(
        self, session: AsyncSession, body: QuoteIn, snapshot: PricingSnapshot
    ) -> tuple[dict[str, Any], QuoteResult]:
        first_purchase = True
        if body.codes and body.customer.id is not None:
            first_purchase = not await repository.customer_has_purchase(session, body.customer.id)
        at = _now()
        result = self._evaluate(
            snapshot, _quote_input(body, first_purchase=first_purchase), at, body.combination_mode
        )
        for i, outcome in enumerate(result.codes):
            if not outcome.eligible:
                raise PromotionCodeRejected(f"codes[{i}]", outcome.reason, code=outcome.code)
        # Redemption counts are checked now so the customer hears early; acceptance re-checks
        # them under the promotion's row lock, which is what actually enforces the limits.
        for i, code in enumerate(result.applied_codes()):
            rule = snapshot.index.by_code[code]
            assert rule.promotion is not None
            await self._check_promotion_counts(
                session, code, body.customer.id, field=f"codes[{i}]", rule=rule
            )
        return result_document(result), result

    async def _check_promotion_counts(
        self,
        session: AsyncSession,
        code: str,
        customer_id: str | None,
        *,
        field: str,
        rule: Rule,
    ) -> None:
        promotion = rule.promotion
        assert promotion is not None
        if (promotion.per_customer_limit or promotion.first_purchase_only) and not customer_id:
            raise InvalidQuote(
                "customer.id", f"promotion code {code!r} is limited per customer: id required"
            )
        if promotion.max_redemptions is not None:
            used = await repository.count_redemptions(session, code)
            if used >= promotion.max_redemptions:
                raise PromotionExhausted(
                    f"promotion code {code!r} has no redemptions left",
                    field=field,
                    limit=promotion.max_redemptions,
                )
        if promotion.per_customer_limit is not None and customer_id is not None:
            used = await repository.count_redemptions(session, code, customer_id)
            if used >= promotion.per_customer_limit:
                raise PromotionCustomerLimit(
                    f"this customer has used promotion code {code!r} {used} time(s)",
                    field=field,
                    limit=promotion.per_customer_limit,
                )

    async def get_quote(self, session: AsyncSession, quote_id: uuid.UUID) -> dict[str, Any]:
        row = await repository.get_quote(session, quote_id)
        if row is None:
            raise NotFound(f"quote {quote_id} does not exist")
        doc: dict[str, Any] = dict(row.result)
        if row.status == "accepted":
            doc["status"] = "accepted"
            doc["accepted_at"] = _ts(row.accepted_at)
        return doc

    async def accept_quote(self, session: AsyncSession, quote_id: uuid.UUID) -> dict[str, Any]:
        # Lock order, the same in every transaction that takes more than one of these:
        # quote row -> customer advisory lock -> promotion rows by code. A second accept of
        # the same quote waits on the quote row and then finds it accepted.
        row = await repository.get_quote(session, quote_id, for_update=True)
        if row is None:
            raise NotFound(f"quote {quote_id} does not exist")
        if row.status == "accepted":
            # Accepting twice is naturally idempotent: the first answer, nothing consumed.
            ACCEPTS.labels("replayed").inc()
            response: dict[str, Any] = dict(row.accept_response)
            return response
        now = _now()
        if row.expires_at <= now:
            ACCEPTS.labels("expired").inc()
            # The quote held nothing (redemptions are consumed on accept), so none to release.
            raise QuoteExpired(
                f"quote {quote_id} expired at {_ts(row.expires_at)}",
                expired_at=_ts(row.expires_at),
            )
        customer_id: str | None = row.customer_id
        codes: list[str] = sorted(row.codes)
        if customer_id is not None:
            # Serialises this customer's accepts (with or without codes), so "first purchase"
            # cannot be raced by two quotes of the same customer accepted at once.
            await repository.lock_key(session, "pricing-customer", customer_id)
        for code in codes:
            await self._redeem(session, code, quote_id, customer_id, now)
        response = {
            "id": str(quote_id),
            "status": "accepted",
            "total": int(row.total),
            "currency": row.currency,
            "accepted_at": _ts(now),
            "redemptions": codes,
        }
        await repository.mark_accepted(session, quote_id, now=now, response=response)
        ACCEPTS.labels("accepted").inc()
        REDEMPTIONS.inc(len(codes))
        return response

    async def _redeem(
        self,
        session: AsyncSession,
        code: str,
        quote_id: uuid.UUID,
        customer_id: str | None,
        now: datetime,
    ) -> None:
        # FOR UPDATE on the promotion row before counting: without it, N concurrent accepts
        # would all count "limit - 1 used" and all insert, overshooting the limit.
        promotion = await repository.lock_promotion(session, code)
        if promotion is None:  # cannot happen: rows are never deleted
            raise PromotionExhausted(f"promotion code {code!r} no longer exists")
        if promotion.max_redemptions is not None:
            used = await repository.count_redemptions(session, code)
            if used >= promotion.max_redemptions:
                ACCEPTS.labels("exhausted").inc()
                raise PromotionExhausted(
                    f"promotion code {code!r} has no redemptions left",
                    code=code,
                    limit=promotion.max_redemptions,
                )
        if promotion.per_customer_limit is not None and customer_id is not None:
            used = await repository.count_redemptions(session, code, customer_id)
            if used >= promotion.per_customer_limit:
                ACCEPTS.labels("customer_limit").inc()
                raise PromotionCustomerLimit(
                    f"this customer has used promotion code {code!r} {used} time(s)",
                    code=code,
                    limit=promotion.per_customer_limit,
                )
        if (
            promotion.first_purchase_only
            and customer_id is not None
            and await repository.customer_has_purchase(session, customer_id)
        ):
            ACCEPTS.labels("first_purchase").inc()
            raise PromotionFirstPurchaseOnly(
                f"promotion code {code!r} is only valid on a first purchase", code=code
            )
        await repository.insert_redemption(
            session, code=code, quote_id=quote_id, customer_id=customer_id, now=now
        )

    # --- simulation -----------------------------------------------------------------------

    async def simulate(self, session: AsyncSession, body: SimulateIn) -> dict[str, Any]:
        live = await self.holder.fresh(session)
        candidates: dict[str, Rule] = {}
        for i, candidate in enumerate(body.rules):
            try:
                rule = compile_rule(candidate.namespace, candidate.name, candidate.spec)
            except SpecError as exc:
                raise InvalidSpec(
                    exc.reason, f"rules[{i}].spec.{exc.field}", exc.detail, rule=i
                ) from None
            candidates[rule.key] = rule
        rules = dict(candidates) if body.replace else {r.key: r for r in live.index.rules}
        rules.update(candidates)
        codes: dict[str, str] = {}
        for key, rule in rules.items():
            if rule.promotion is not None:
                other = codes.setdefault(rule.promotion.code, key)
                if other != key:
                    raise InvalidSpec(
                        "DuplicatePromotionCode",
                        "rules",
                        f"code {rule.promotion.code!r} is used by {other} and {key}",
                    )
        snapshot = PricingSnapshot(
            live.revision, live.products, RuleIndex(rules.values()), live.rounding
        )
        at = body.at or _now()
        results = []
        for i, basket in enumerate(body.baskets):
            try:
                result = self._evaluate(
                    snapshot, _quote_input(basket, first_purchase=True), at, basket.combination_mode
                )
            except InvalidQuote as exc:
                raise InvalidQuote(
                    f"baskets[{i}].{exc.extra['errors'][0]['field']}",
                    exc.extra["errors"][0]["reason"],
                ) from None
            results.append({"basket": i, **result_document(result)})
        return {"evaluated_at": _ts(at), "results": results}

    # --- rules (admin) --------------------------------------------------------------------

    async def put_rule(
        self, session: AsyncSession, namespace: str, name: str, body: ConfigPut
    ) -> ConfigWritten:
        try:
            rule = compile_rule(namespace, name, body.spec)
        except SpecError as exc:
            raise InvalidSpec(exc.reason, f"spec.{exc.field}", exc.detail) from None
        await self.rules.lock(session, namespace, name)
        stored = await self.rules.get(session, namespace, name)
        replay = check_generation(stored_config(stored), body, body.spec)
        if replay is not None:
            return replay
        if rule.promotion is not None:
            code = rule.promotion.code
            # Codes are unique across rules; the code row's lock orders two rules racing for it.
            await repository.lock_key(session, "pricing-code", code)
            owner = await repository.get_promotion(session, code)
            if owner is not None and (owner.rule_namespace, owner.rule_name) != (namespace, name):
                other = await self.rules.get(session, owner.rule_namespace, owner.rule_name)
                if other is not None and _code_of(other) == code:
                    raise InvalidSpec(
                        "DuplicatePromotionCode",
                        "spec.promotion.code",
                        f"code {code!r} already belongs to rule "
                        f"{owner.rule_namespace}/{owner.rule_name}",
                    )
        now = _now()
        written = await self.rules.write(session, namespace, name, body, body.spec, updated_at=now)
        await repository.record_rule_revision(
            session, written.revision, namespace, name, body.generation, body.spec, now
        )
        if rule.promotion is not None:
            await repository.upsert_promotion(
                session,
                code=rule.promotion.code,
                namespace=namespace,
                name=name,
                max_redemptions=rule.promotion.max_redemptions,
                per_customer_limit=rule.promotion.per_customer_limit,
                first_purchase_only=rule.promotion.first_purchase_only,
                now=now,
            )
        await self.rules.publish(session, f"rule:{namespace}/{name}")
        return written

    async def delete_rule(self, session: AsyncSession, namespace: str, name: str) -> None:
        await self.rules.lock(session, namespace, name)
        removed = await self.rules.remove(session, namespace, name)
        if removed is None:
            return
        await repository.record_rule_revision(
            session, removed.revision, namespace, name, removed.generation, None, _now()
        )
        await self.rules.publish(session, f"rule:{namespace}/{name}")

    async def list_rules(self, session: AsyncSession) -> list[dict[str, Any]]:
        return [listing_item(r) for r in await self.rules.list(session)]

    # --- pricing policies (admin) ---------------------------------------------------------

    async def put_policy(
        self, session: AsyncSession, namespace: str, name: str, body: ConfigPut
    ) -> ConfigWritten:
        try:
            rounding = compile_policy(body.spec)
        except SpecError as exc:
            raise InvalidSpec(exc.reason, f"spec.{exc.field}", exc.detail) from None
        # Policies are few and a currency may be set by one of them only: one lock for all of
        # them makes "no other policy sets this currency" true until commit.
        await repository.lock_key(session, "pricing-policy", "*")
        replay = check_generation(
            stored_config(await self.policies.get(session, namespace, name)), body, body.spec
        )
        if replay is not None:
            return replay
        for other in await self.policies.list(session):
            if (other.namespace, other.name) == (namespace, name):
                continue
            taken = sorted(set(rounding) & set((other.spec or {}).get("rounding", {})))
            if taken:
                raise InvalidSpec(
                    "CurrencyConflict",
                    f"spec.rounding.{taken[0]}",
                    f"{', '.join(taken)} already set by pricing policy "
                    f"{other.namespace}/{other.name}",
                )
        written = await self.policies.write(
            session, namespace, name, body, body.spec, updated_at=_now()
        )
        await self.policies.publish(session, f"policy:{namespace}/{name}")
        return written

    async def delete_policy(self, session: AsyncSession, namespace: str, name: str) -> None:
        await repository.lock_key(session, "pricing-policy", "*")
        if await self.policies.remove(session, namespace, name) is not None:
            await self.policies.publish(session, f"policy:{namespace}/{name}")

    async def list_policies(self, session: AsyncSession) -> list[dict[str, Any]]:
        return [listing_item(r) for r in await self.policies.list(session)]

    async def policy_status(
        self, session: AsyncSession, namespace: str, name: str
    ) -> dict[str, Any]:
        row = await self.policies.get(session, namespace, name)
        if row is None:
            raise NotFound(f"pricing policy {namespace}/{name} does not exist")
        snapshot = await self.holder.fresh(session)
        return {
            "revision": int(row.revision),
            "generation": int(row.generation),
            "loaded": snapshot.revision >= int(row.revision),
            "rounding": {c: m.value for c, m in sorted(compile_policy(row.spec).items())},
        }

    async def rule_status(self, session: AsyncSession, namespace: str, name: str) -> dict[str, Any]:
        row = await self.rules.get(session, namespace, name)
        if row is None:
            raise NotFound(f"pricing rule {namespace}/{name} does not exist")
        rule = compile_rule(namespace, name, row.spec)
        snapshot = self.holder.snapshot
        redemptions = None
        if rule.promotion is not None:
            used = await repository.count_redemptions(session, rule.promotion.code)
            limit = rule.promotion.max_redemptions
            redemptions = {
                "used": used,
                "limit": limit,
                "remaining": None if limit is None else max(limit - used, 0),
            }
        return {
            "revision": int(row.revision),
            "generation": int(row.generation),
            "active": not rule.shadow and rule.active_at(_now()),
            "scheduled_now": rule.active_at(_now()),
            "mode": "shadow" if rule.shadow else "active",
            "loaded": snapshot.revision >= int(row.revision),
            "redemptions": redemptions,
        }


def _code_of(row: Row[Any]) -> str | None:
    promotion = row.spec.get("promotion") if isinstance(row.spec, dict) else None
    code = promotion.get("code") if isinstance(promotion, dict) else None
    return code.lower() if isinstance(code, str) else None


def product_document(row: Row[Any]) -> dict[str, Any]:
    return {
        "sku": row.sku,
        "name": row.name,
        "labels": list(row.labels),
        "active": bool(row.active),
        "prices": row.prices,
        "revision": int(row.revision),
        "created_at": _ts(row.created_at),
        "updated_at": _ts(row.updated_at),
    }
