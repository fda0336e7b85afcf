"""Cohorts, students, enrollments, their history and the payment outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ACTIVE = "state IN ('pending_payment', 'enrolled', 'offered', 'waitlisted', 'completed')"
_ALL = (
    "state IN ('pending_payment', 'enrolled', 'waitlisted', 'offered', 'offer_expired', "
    "'declined', 'dropped', 'completed', 'rejected')"
)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE cohort_revision_seq")
    op.execute("CREATE SEQUENCE enrollment_queue_seq")
    op.create_table(
        "cohorts",
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
        sa.Column("deleted_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("namespace", "name", name="uq_cohorts_namespace_name"),
        sa.CheckConstraint(
            "capacity IS NULL OR capacity >= 0", name="ck_cohorts_capacity_non_negative"
        ),
        sa.CheckConstraint("seats_taken >= 0", name="ck_cohorts_seats_taken_non_negative"),
        sa.CheckConstraint("waitlisted >= 0", name="ck_cohorts_waitlisted_non_negative"),
        # The second guard behind the row lock: no code path can over-enroll a cohort.
        sa.CheckConstraint(
            "capacity IS NULL OR seats_taken <= capacity",
            name="ck_cohorts_seats_within_capacity",
        ),
    )
    op.create_table(
        "students",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("segment", sa.Text, nullable=True),
        sa.Column("attributes", JSONB, nullable=False, server_default="{}"),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "cohort_id",
            sa.BigInteger,
            sa.ForeignKey("cohorts.id", name="fk_enrollments_cohort_id_cohorts"),
            nullable=False,
        ),
        sa.Column(
            "student_id",
            sa.Text,
            sa.ForeignKey("students.id", name="fk_enrollments_student_id_students"),
            nullable=False,
        ),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("segment", sa.Text, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("queue_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("waitlisted_at", _TS, nullable=True),
        sa.Column("seated_at", _TS, nullable=True),
        sa.Column("offer_expires_at", _TS, nullable=True),
        sa.Column("quote_id", sa.Text, nullable=True),
        sa.Column("charge_amount", sa.BigInteger, nullable=True),
        sa.Column("charge_currency", sa.Text, nullable=True),
        sa.Column("charge_transaction_id", sa.Text, nullable=True),
        sa.Column("charged_at", _TS, nullable=True),
        sa.Column("refund_transaction_id", sa.Text, nullable=True),
        sa.Column("payment_error", sa.Text, nullable=True),
        sa.CheckConstraint(_ALL, name="ck_enrollments_state_known"),
        sa.CheckConstraint(
            "state <> 'offered' OR offer_expires_at IS NOT NULL",
            name="ck_enrollments_offer_has_expiry",
        ),
    )
    op.create_index(
        "uq_enrollments_one_active",
        "enrollments",
        ["cohort_id", "student_id"],
        unique=True,
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_index(
        "ix_enrollments_waitlist",
        "enrollments",
        ["cohort_id", "priority", "queue_seq"],
        postgresql_where=sa.text("state = 'waitlisted'"),
    )
    op.create_index(
        "ix_enrollments_offers",
        "enrollments",
        ["cohort_id", "offer_expires_at"],
        postgresql_where=sa.text("state = 'offered'"),
    )
    op.create_index("ix_enrollments_student", "enrollments", ["student_id"])
    op.create_index("ix_enrollments_cohort_state", "enrollments", ["cohort_id", "state"])
    op.create_table(
        "enrollment_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "enrollment_id",
            UUID(as_uuid=True),
            sa.ForeignKey("enrollments.id", name="fk_enrollment_history_enrollment_id_enrollments"),
            nullable=False,
        ),
        sa.Column("cohort_id", sa.BigInteger, nullable=False),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
    )
    op.create_index(
        "ix_enrollment_history_enrollment", "enrollment_history", ["enrollment_id", "id"]
    )
    op.create_index(
        "ix_enrollment_history_cohort", "enrollment_history", ["cohort_id", "to_state", "at"]
    )
    # History is append-only: refuse UPDATE and DELETE at the database, not only in code.
    op.execute(
        """
        CREATE FUNCTION enrollment_history_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'enrollment_history is append-only';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER enrollment_history_append_only BEFORE UPDATE OR DELETE "
        "ON enrollment_history FOR EACH ROW EXECUTE FUNCTION enrollment_history_append_only()"
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "enrollment_id",
            UUID(as_uuid=True),
            sa.ForeignKey("enrollments.id", name="fk_outbox_enrollment_id_enrollments"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("done_at", _TS, nullable=True),
        sa.CheckConstraint("kind IN ('charge', 'refund')", name="ck_outbox_kind_known"),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'cancelled', 'failed')", name="ck_outbox_status_known"
        ),
        sa.UniqueConstraint("enrollment_id", "kind", name="uq_outbox_enrollment_kind"),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.execute("DROP TRIGGER enrollment_history_append_only ON enrollment_history")
    op.execute("DROP FUNCTION enrollment_history_append_only()")
    op.drop_table("enrollment_history")
    op.drop_table("enrollments")
    op.drop_table("students")
    op.drop_table("cohorts")
    op.execute("DROP SEQUENCE enrollment_queue_seq")
    op.execute("DROP SEQUENCE cohort_revision_seq")
