"""Pydantic models of the ledger API. Inputs forbid unknown fields; amounts are strict ints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Amounts are stored as PostgreSQL bigint: anything at or above 2^63 is refused at the edge.
MAX_AMOUNT = 2**63 - 1

Amount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Minor units, > 0")]
SignedAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
AccountCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.@-]+(:[A-Za-z0-9_.@-]+)*$",
        description="Hierarchical code, segments joined by ':' (assets:receivables:student:42)",
    ),
]
Currency = Annotated[
    str,
    Field(
        pattern=r"^[A-Z][A-Z0-9_]{2,15}$",
        description="ISO 4217 code, or a custom asset code (with an explicit scale)",
    ),
]
CategoryCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Text = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]
# Checked by _no_nul (keys and strings without NUL, integers within 64 bits, at any depth);
# the document states the key rule (propertyNames) and the rest in words.
Metadata = Annotated[
    dict[str, Any],
    Field(
        max_length=64,
        description=(
            "Free-form JSON, up to 64 keys; no NUL character in any key or string, integers "
            "between -2^63 and 2^64-1, at any depth"
        ),
        json_schema_extra={"propertyNames": {"pattern": r"^[^\x00]*$"}},
    ),
]
# RFC 3339 date-time with a mandatory offset. Pydantic alone also takes a number of seconds
# since 1970 (as_of=0.5 was a report as of 1970) and other ISO 8601 forms: refused here.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime) or value is None:
        return value  # from Python callers, already typed
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp with a timezone, e.g. 2026-01-31T23:59:59Z")
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
AccountType = Literal["asset", "liability", "equity", "revenue", "expense"]
Direction = Literal["debit", "credit"]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        # Valid RFC 3339 at the ends of year 1 or 9999 can fall outside what UTC can represent;
        # a ValueError makes it a field error (pydantic lets OverflowError through as a 500).
        raise ValueError("out of range once converted to UTC") from exc


def _no_nul(value: Any) -> Any:
    # PostgreSQL text and jsonb cannot hold NUL characters, and JSON numbers we store must fit
    # 64 bits (the canonical request encoding): refuse both as bad input, not a 500.
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ValueError("numbers in metadata must fit in 64 bits")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v)
    return value


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountFlags(Input):
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    overdraft_limit: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] | None = Field(
        default=None,
        description="The available balance (normal direction) may go down to -overdraft_limit",
    )

    @model_validator(mode="after")
    def _one_flag(self) -> AccountFlags:
        if self.debits_must_not_exceed_credits and self.credits_must_not_exceed_debits:
            raise ValueError(
                "debits_must_not_exceed_credits and credits_must_not_exceed_debits exclude "
                "each other"
            )
        return self


class AccountIn(Input):
    code: AccountCode
    type: AccountType
    currency: Currency
    scale: Annotated[int, Field(strict=True, ge=0, le=18)] | None = None
    name: Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")] | None = None
    flags: AccountFlags = Field(default_factory=AccountFlags)
    metadata: Metadata = Field(default_factory=dict)

    _nul = field_validator("metadata")(_no_nul)


class PostingIn(Input):
    account: AccountCode
    direction: Direction
    amount: Amount
    currency: Currency


class ConditionIn(Input):
    """An optimistic guard on one account, checked under its lock before the transaction."""

    account: AccountCode
    expected_version: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] | None = None
    balance_at_least: SignedAmount | None = Field(
        default=None, description="Available balance (normal direction) must be >= this"
    )
    balance_at_most: SignedAmount | None = None

    @model_validator(mode="after")
    def _something(self) -> ConditionIn:
        if (
            self.expected_version is None
            and self.balance_at_least is None
            and self.balance_at_most is None
        ):
            raise ValueError("give expected_version, balance_at_least or balance_at_most")
        return self


class TransactionIn(Input):
    postings: Annotated[list[PostingIn], Field(min_length=2, max_length=100)]
    reference: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00]*$")] | None = (
        None
    )
    description: Text | None = None
    category: CategoryCode | None = None
    tags: Annotated[list[Tag], Field(max_length=20)] = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)
    effective_at: Timestamp | None = Field(
        default=None, description="When it counts (may be backdated); default: now"
    )
    pending: bool = Field(default=False, description="Reserve now; post, void or expire later")
    expires_at: Timestamp | None = None
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=366 * 86400)] | None = None
    conditions: Annotated[list[ConditionIn], Field(max_length=20)] = Field(default_factory=list)

    _nul = field_validator("metadata")(_no_nul)

    @field_validator("effective_at", "expires_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _expiry_only_when_pending(self) -> TransactionIn:
        if (self.expires_at or self.timeout_seconds) and not self.pending:
            raise ValueError("expires_at/timeout_seconds apply only to pending transactions")
        if self.expires_at and self.timeout_seconds:
            raise ValueError("give expires_at or timeout_seconds, not both")
        return self


class PostPendingIn(Input):
    amount: Amount | None = Field(
        default=None, description="Post part of the pending amount; the rest is released"
    )


class VoidPendingIn(Input):
    pass


class ReverseIn(Input):
    amount: Amount | None = Field(default=None, description="Partial reversal; default: all left")
    description: Text | None = None
    reference: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00]*$")] | None = (
        None
    )
    effective_at: Timestamp | None = None

    @field_validator("effective_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class BatchIn(Input):
    mode: Literal["atomic", "independent"] = Field(
        default="independent",
        description="atomic: all or nothing; independent: each item succeeds or fails alone",
    )
    transactions: Annotated[list[TransactionIn], Field(min_length=1, max_length=1000)]


class CategoryIn(Input):
    code: CategoryCode
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
    description: Text | None = None


class CloseAccountIn(Input):
    pass


# ---- response shapes (documentation in the OpenAPI schema) ----


class PostingOut(BaseModel):
    account: str
    direction: Direction
    amount: int
    currency: str


class TransactionOut(BaseModel):
    id: str
    kind: Literal["transfer", "pending", "post", "reversal"]
    status: Literal["posted", "pending", "voided", "expired"]
    reference: str | None
    category: str | None
    tags: list[str]
    description: str | None
    metadata: dict[str, Any]
    effective_at: datetime
    recorded_at: datetime
    expires_at: datetime | None
    resolved_at: datetime | None
    parent_id: str | None
    postings: list[PostingOut]


class Totals(BaseModel):
    debits: int
    credits: int
    balance: int


class BalancesOut(BaseModel):
    posted: Totals
    pending: Totals
    available: int


class AccountOut(BaseModel):
    id: int
    code: str
    name: str | None
    type: AccountType
    currency: str
    scale: int
    flags: AccountFlags
    closed: bool
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    balances: BalancesOut


class AccountList(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class CategoryOut(BaseModel):
    code: str
    name: str
    description: str | None


class CategoryList(BaseModel):
    items: list[CategoryOut]


class TransactionList(BaseModel):
    items: list[TransactionOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class StatementEntryOut(BaseModel):
    transaction_id: str
    kind: Literal["transfer", "pending", "post", "reversal"]
    reference: str | None
    description: str | None
    category: str | None
    direction: Direction
    amount: int
    currency: str
    effective_at: datetime
    recorded_at: datetime
    account_version: int
    balance: Totals = Field(description="The account's posted totals after this entry")


class StatementOut(BaseModel):
    account: str
    currency: str
    items: list[StatementEntryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )
