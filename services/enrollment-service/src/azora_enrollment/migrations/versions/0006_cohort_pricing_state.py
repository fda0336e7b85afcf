"""Whether azora-pricing can price a cohort, kept on the cohort row (``priceability.py``).

A priced cohort whose product (or its price in the cohort's currency) azora-pricing does not
know used to take every enrollment with 201 and reject it later in the outbox. The service now
asks pricing when the cohort is PUT, learns from the outbox's refused quotes, and re-checks in
the background; what it knows is stored here so the hot path (``POST /v1/enrollments``) can
refuse up front from the cohort row it already holds, with no call to pricing per request:

- ``pricing_state``: ``verified`` (product and price in the currency exist), ``unverified``
  (pricing could not be asked; enrollments are taken, the outbox retries), ``refused``
  (pricing does not know the product or has no price in the currency: enrollments are
  refused); NULL for a free cohort, and for a priced cohort stored before this migration
  (read as ``unverified`` and checked by the background pass);
- ``pricing_reason`` (CamelCase: ``UnknownProduct``, ``UnpricedCurrency``,
  ``PricingUnavailable``), ``pricing_detail`` (a sentence) and ``pricing_checked_at``.

Expand only: nullable columns with no default, so replicas of the previous release keep
working during a rolling upgrade (they never read or write them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cohorts", sa.Column("pricing_state", sa.Text, nullable=True))
    op.add_column("cohorts", sa.Column("pricing_reason", sa.Text, nullable=True))
    op.add_column("cohorts", sa.Column("pricing_detail", sa.Text, nullable=True))
    op.add_column(
        "cohorts", sa.Column("pricing_checked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        "ck_cohorts_pricing_state_known",
        "cohorts",
        "pricing_state IS NULL OR pricing_state IN ('verified', 'unverified', 'refused')",
    )


def downgrade() -> None:
    op.drop_constraint("ck_cohorts_pricing_state_known", "cohorts", type_="check")
    for column in ("pricing_checked_at", "pricing_detail", "pricing_reason", "pricing_state"):
        op.drop_column("cohorts", column)
