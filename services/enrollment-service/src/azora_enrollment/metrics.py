"""Domain metrics. Labels are bounded: outcomes, modes, and cohort keys (cohorts are
declared resources, a few hundred at most); never a student or enrollment id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DECISIONS = Counter(
    "azora_enrollment_decisions_total",
    "Enrollment requests decided, by outcome (a state, or the problem type of a refusal).",
    ["outcome"],
)
PROMOTIONS = Counter(
    "azora_enrollment_promotions_total",
    "Waitlisted enrollments promoted, by waitlist mode.",
    ["mode"],
)
OFFERS = Counter(
    "azora_enrollment_offers_total",
    "Waitlist offers resolved, by outcome (claimed, declined, expired).",
    ["outcome"],
)
OUTBOX_ATTEMPTS = Counter(
    "azora_enrollment_outbox_attempts_total",
    "Outbox job attempts, by job kind and result (done, retry, failed, cancelled).",
    ["kind", "result"],
)
OUTBOX_PENDING = Gauge(
    "azora_enrollment_outbox_pending_jobs",
    "Outbox jobs waiting to be done (charges and refunds).",
)
COHORT_CAPACITY = Gauge(
    "azora_enrollment_cohort_capacity_seats",
    "Seats of a cohort (absent when unlimited).",
    ["cohort"],
)
COHORT_SEATS_TAKEN = Gauge(
    "azora_enrollment_cohort_seats_taken",
    "Seats held: enrolled, completed, pending payment or offered.",
    ["cohort"],
)
COHORT_WAITLISTED = Gauge(
    "azora_enrollment_cohort_waitlisted",
    "Students on the cohort's waitlist.",
    ["cohort"],
)
COHORT_FILL_RATIO = Gauge(
    "azora_enrollment_cohort_fill_ratio",
    "Seats taken / capacity (absent when unlimited).",
    ["cohort"],
)
COHORT_GAUGES = (COHORT_CAPACITY, COHORT_SEATS_TAKEN, COHORT_WAITLISTED, COHORT_FILL_RATIO)
