"""Announce every change of a cohort's seats, waitlist or offers on the insight feed.

Every such change — admission (the ``admit`` function), a lifecycle transition, a promotion
from the waitlist, an expired offer — appends to ``enrollment_history`` in the transaction that
makes it; nothing changes a seat or a waitlist place without it. So one statement-level trigger
there is the single place that says "the live insight of cohort ns/name changed"
(``pg_notify`` on ``azora_common.changes.CHANNEL``, delivered on commit, folded by PostgreSQL
to one notification per cohort and transaction). The operator long-polls the feed and copies
the cohort's new figures into its status within a second or two (docs/operator.md).

Additive only: a replica of the previous release keeps working (it never sees the trigger).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION cohort_insight_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('azora_insight_changed', 'cohorts/' || c.namespace || '/' || c.name)
               FROM cohorts c
              WHERE c.id IN (SELECT DISTINCT cohort_id FROM appended);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER enrollment_history_insight
        AFTER INSERT ON enrollment_history
        REFERENCING NEW TABLE AS appended
        FOR EACH STATEMENT EXECUTE FUNCTION cohort_insight_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER enrollment_history_insight ON enrollment_history")
    op.execute("DROP FUNCTION cohort_insight_changed()")
