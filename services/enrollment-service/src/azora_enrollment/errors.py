"""Domain errors of azora-enrollment; each carries its HTTP meaning and problem type."""

from __future__ import annotations

from azora_common.errors import Conflict, NotFound, ProblemError, Unprocessable


class CohortNotFound(NotFound):
    type_slug = "cohort-not-found"
    title = "Cohort not found"

    @classmethod
    def of(cls, namespace: str, name: str) -> CohortNotFound:
        return cls(f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}")


class EnrollmentNotFound(NotFound):
    type_slug = "enrollment-not-found"
    title = "Enrollment not found"


class WindowClosed(Conflict):
    type_slug = "enrollment-window-closed"
    title = "Enrollment window closed"


class NotEligible(Conflict):
    type_slug = "not-eligible"
    title = "Student not eligible"


class CohortFull(Conflict):
    type_slug = "cohort-full"
    title = "Cohort full"


class AlreadyEnrolled(Conflict):
    type_slug = "already-enrolled"
    title = "Already enrolled"


class InvalidTransition(Conflict):
    type_slug = "invalid-transition"
    title = "Transition not allowed"


class OfferExpired(Conflict):
    type_slug = "offer-expired"
    title = "Offer expired"


class InvalidSpec(Unprocessable):
    """A cohort spec the service cannot accept; ``reason`` is CamelCase for the operator."""

    type_slug = "invalid-spec"
    title = "Cohort spec rejected"

    def __init__(self, reason: str, detail: str, **extra: object) -> None:
        super().__init__(detail, reason=reason, **extra)


class UpstreamError(Exception):
    """A call to pricing or ledger failed; ``retryable`` says whether waiting can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


__all__ = [
    "AlreadyEnrolled",
    "CohortFull",
    "CohortNotFound",
    "EnrollmentNotFound",
    "InvalidSpec",
    "InvalidTransition",
    "NotEligible",
    "OfferExpired",
    "ProblemError",
    "UpstreamError",
    "WindowClosed",
]
