"""SQLAlchemy tables of azora-enrollment.

The invariants that matter live here as constraints, not only in Python:

* ``cohorts.seats_taken`` is the number of enrollments holding a seat (``pending_payment``,
  ``enrolled``, ``offered``, and ``completed``: finishing the course does not hand the seat to
  the waitlist); it is changed only in the transaction that changes such a row,
  under the cohort's row lock, and ``CHECK (capacity IS NULL OR seats_taken <= capacity)``
  makes over-enrollment impossible even if a code path forgot the lock.
* one active enrollment per (cohort, student): a partial unique index.
* history is append-only: nothing updates or deletes ``enrollment_history`` rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase

from azora_common.db import make_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()


# States that hold a seat (counted in ``cohorts.seats_taken``).
SEAT_STATES = ("pending_payment", "enrolled", "offered", "completed")
# States that make a second enrollment of the same student in the same cohort a conflict.
# ``completed`` is included: a cohort is one run of a course, finishing it twice means nothing.
ACTIVE_STATES = (*SEAT_STATES, "waitlisted")
ALL_STATES = (
    "pending_payment",
    "enrolled",
    "waitlisted",
    "offered",
    "offer_expired",
    "declined",
    "dropped",
    "completed",
    "rejected",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


ACTIVE_PREDICATE = _in("state", ACTIVE_STATES)

cohort_revision_seq = sa.Sequence("cohort_revision_seq", metadata=Base.metadata)
enrollment_queue_seq = sa.Sequence("enrollment_queue_seq", metadata=Base.metadata)

cohorts = sa.Table(
    "cohorts",
    Base.metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("uid", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("spec", JSONB, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=True),
    sa.Column("seats_taken", sa.Integer, nullable=False, server_default="0"),
    sa.Column("waitlisted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # What the service knows about azora-pricing's ability to price this cohort (migration
    # 0006, priceability.py); NULL for a free cohort.
    sa.Column("pricing_state", sa.Text, nullable=True),
    sa.Column("pricing_reason", sa.Text, nullable=True),
    sa.Column("pricing_detail", sa.Text, nullable=True),
    sa.Column("pricing_checked_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("namespace", "name", name="uq_cohorts_namespace_name"),
    sa.CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity_non_negative"),
    sa.CheckConstraint("seats_taken >= 0", name="seats_taken_non_negative"),
    sa.CheckConstraint("waitlisted >= 0", name="waitlisted_non_negative"),
    sa.CheckConstraint("capacity IS NULL OR seats_taken <= capacity", name="seats_within_capacity"),
    sa.CheckConstraint(
        "pricing_state IS NULL OR pricing_state IN ('verified', 'unverified', 'refused')",
        name="pricing_state_known",
    ),
)

students = sa.Table(
    "students",
    Base.metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("segment", sa.Text, nullable=True),
    sa.Column("attributes", JSONB, nullable=False, server_default="{}"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

enrollments = sa.Table(
    "enrollments",
    Base.metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("cohort_id", sa.BigInteger, sa.ForeignKey("cohorts.id"), nullable=False),
    sa.Column("student_id", sa.Text, sa.ForeignKey("students.id"), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("segment", sa.Text, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("queue_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("waitlisted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("seated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("offer_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("quote_id", sa.Text, nullable=True),
    sa.Column("charge_amount", sa.BigInteger, nullable=True),
    sa.Column("charge_currency", sa.Text, nullable=True),
    sa.Column("charge_transaction_id", sa.Text, nullable=True),
    sa.Column("charged_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refund_transaction_id", sa.Text, nullable=True),
    sa.Column("payment_error", sa.Text, nullable=True),
    sa.CheckConstraint(_in("state", ALL_STATES), name="state_known"),
    sa.CheckConstraint(
        "state <> 'offered' OR offer_expires_at IS NOT NULL", name="offer_has_expiry"
    ),
    sa.Index(
        "uq_enrollments_one_active",
        "cohort_id",
        "student_id",
        unique=True,
        postgresql_where=sa.text(ACTIVE_PREDICATE),
    ),
    sa.Index(
        "ix_enrollments_waitlist",
        "cohort_id",
        "priority",
        "queue_seq",
        postgresql_where=sa.text("state = 'waitlisted'"),
    ),
    sa.Index(
        "ix_enrollments_offers",
        "cohort_id",
        "offer_expires_at",
        postgresql_where=sa.text("state = 'offered'"),
    ),
    sa.Index("ix_enrollments_student", "student_id"),
    sa.Index("ix_enrollments_cohort_state", "cohort_id", "state"),
)

enrollment_history = sa.Table(
    "enrollment_history",
    Base.metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("enrollment_id", UUID(as_uuid=True), sa.ForeignKey("enrollments.id"), nullable=False),
    sa.Column("cohort_id", sa.BigInteger, nullable=False),
    sa.Column("from_state", sa.Text, nullable=True),
    sa.Column("to_state", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_enrollment_history_enrollment", "enrollment_id", "id"),
    sa.Index("ix_enrollment_history_cohort", "cohort_id", "to_state", "at"),
)

outbox = sa.Table(
    "outbox",
    Base.metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("enrollment_id", UUID(as_uuid=True), sa.ForeignKey("enrollments.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('charge', 'refund')", name="kind_known"),
    sa.CheckConstraint("status IN ('pending', 'done', 'cancelled', 'failed')", name="status_known"),
    # One charge and at most one refund per enrollment: a second job cannot double-charge.
    sa.UniqueConstraint("enrollment_id", "kind", name="uq_outbox_enrollment_kind"),
    sa.Index("ix_outbox_due", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")),
)
