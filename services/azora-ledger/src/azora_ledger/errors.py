"""Domain errors of azora-ledger; each carries its HTTP meaning and a stable problem type."""

from __future__ import annotations

from azora_common.errors import Conflict, InvalidField, NotFound, ProblemError


class AccountExists(Conflict):
    type_slug = "account-exists"
    title = "Account exists"


class AccountNotFound(NotFound):
    type_slug = "account-not-found"
    title = "Account not found"


class TransactionNotFound(NotFound):
    type_slug = "transaction-not-found"
    title = "Transaction not found"


class UnknownAccount(InvalidField):
    type_slug = "unknown-account"
    title = "Unknown account"


class UnknownCategory(InvalidField):
    type_slug = "unknown-category"
    title = "Unknown category"


class Unbalanced(InvalidField):
    type_slug = "unbalanced"
    title = "Debits do not equal credits"


class CurrencyMismatch(InvalidField):
    type_slug = "currency-mismatch"
    title = "Currency mismatch"


class AccountClosed(InvalidField):
    type_slug = "account-closed"
    title = "Account closed"


class AmountOverflow(InvalidField):
    type_slug = "amount-overflow"
    title = "Amount out of range"


class InvalidCurrency(InvalidField):
    type_slug = "invalid-currency"
    title = "Invalid currency"


class BalanceConstraintViolated(ProblemError):
    """A balance flag or overdraft limit would not hold after the transaction."""

    status = 422
    type_slug = "balance-constraint-violated"
    title = "Balance constraint violated"


class ConditionFailed(ProblemError):
    """An optimistic guard (expected version or balance condition) did not hold."""

    status = 409
    type_slug = "condition-failed"
    title = "Condition failed"


class ReferenceReused(ProblemError):
    status = 409
    type_slug = "reference-reused"
    title = "Reference already used with a different request"


class NotPending(ProblemError):
    status = 409
    type_slug = "not-pending"
    title = "Transaction is not pending"


class PendingExpired(ProblemError):
    status = 409
    type_slug = "pending-expired"
    title = "Pending transaction expired"


class NotReversible(ProblemError):
    status = 409
    type_slug = "not-reversible"
    title = "Transaction cannot be reversed"


class AlreadyReversed(ProblemError):
    status = 409
    type_slug = "already-reversed"
    title = "Transaction already fully reversed"


class ExceedsRemaining(InvalidField):
    type_slug = "exceeds-remaining"
    title = "Amount exceeds what is left"


class BatchRejected(ProblemError):
    status = 422
    type_slug = "batch-rejected"
    title = "Atomic batch rejected"


class AccountNotEmpty(ProblemError):
    status = 409
    type_slug = "account-not-empty"
    title = "Account still has a balance or pending amounts"


class LedgerBusy(ProblemError):
    status = 503
    type_slug = "ledger-busy"
    title = "Ledger busy, retry"
