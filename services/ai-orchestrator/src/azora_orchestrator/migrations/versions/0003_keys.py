"""Virtual keys, their shared enforcement state and the admission function.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One call per admitted request of a key with limits or a budget: refill the key's request and
# token buckets, start a new budget window when the current one is over (windows are aligned to
# multiples of the period since the Unix epoch, UTC), check, and reserve. Everything under the
# row lock of the key's state, so replicas serialise per key in PostgreSQL.
ADMIT = """
CREATE FUNCTION vk_admit(
    p_key text, p_rpm integer, p_tpm integer, p_tokens bigint,
    p_budget bigint, p_period_s bigint, p_cost bigint
) RETURNS TABLE(ok boolean, reason text, spent bigint, reserved bigint,
                window_start timestamptz, wait_s double precision)
LANGUAGE plpgsql AS $$
DECLARE
    s key_state%ROWTYPE;
    t timestamptz := clock_timestamp();
    el double precision;
    rq double precision;
    tk double precision;
    ws timestamptz;
    sp bigint;
    rs bigint;
BEGIN
    SELECT * INTO s FROM key_state k WHERE k.key_id = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO key_state (key_id) VALUES (p_key) ON CONFLICT DO NOTHING;
        SELECT * INTO s FROM key_state k WHERE k.key_id = p_key FOR UPDATE;
    END IF;
    el := greatest(0, extract(epoch FROM t - s.stamp));
    rq := CASE WHEN p_rpm > 0 THEN least(p_rpm, s.rq_level + el * p_rpm / 60.0) ELSE 0 END;
    tk := CASE WHEN p_tpm > 0 THEN least(p_tpm, s.tk_level + el * p_tpm / 60.0) ELSE 0 END;
    ws := s.window_start;
    sp := s.spent;
    rs := s.reserved;
    IF p_period_s > 0 AND t >= ws + make_interval(secs => p_period_s) THEN
        ws := to_timestamp(floor(extract(epoch FROM t) / p_period_s) * p_period_s);
        sp := 0;
        rs := 0;
    END IF;
    IF p_rpm > 0 AND rq < 1 THEN
        RETURN QUERY SELECT false, 'requests', sp, rs, ws, (1 - rq) * 60.0 / p_rpm;
        RETURN;
    END IF;
    IF p_tpm > 0 AND tk < least(p_tokens, p_tpm) THEN
        RETURN QUERY SELECT false, 'tokens', sp, rs, ws,
            (least(p_tokens, p_tpm) - tk) * 60.0 / p_tpm;
        RETURN;
    END IF;
    IF p_budget > 0 AND sp + rs >= p_budget THEN
        RETURN QUERY SELECT false, 'budget', sp, rs, ws,
            CASE WHEN p_period_s > 0
                 THEN extract(epoch FROM ws + make_interval(secs => p_period_s) - t)::float8
                 ELSE -1.0 END;
        RETURN;
    END IF;
    UPDATE key_state k SET
        stamp = t,
        rq_level = CASE WHEN p_rpm > 0 THEN rq - 1 ELSE k.rq_level END,
        tk_level = CASE WHEN p_tpm > 0 THEN tk - p_tokens ELSE k.tk_level END,
        window_start = ws,
        spent = sp,
        reserved = rs + CASE WHEN p_budget > 0 THEN p_cost ELSE 0 END
    WHERE k.key_id = p_key;
    RETURN QUERY SELECT true, '', sp, rs + CASE WHEN p_budget > 0 THEN p_cost ELSE 0 END, ws,
        0.0::float8;
END $$
"""


def upgrade() -> None:
    op.execute("CREATE SEQUENCE key_revision_seq")
    op.create_table(
        "virtual_keys",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("team", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("models", ARRAY(sa.Text), nullable=False),
        sa.Column("requests_per_minute", sa.Integer),
        sa.Column("tokens_per_minute", sa.Integer),
        sa.Column("budget_amount", sa.BigInteger),
        sa.Column("budget_unit", sa.Text),
        sa.Column("budget_period_s", sa.BigInteger),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_keys"),
        sa.UniqueConstraint("secret_hash", name="uq_virtual_keys_secret_hash"),
    )
    # Narrow and hot (one update per admission): kept apart from the key's description.
    op.create_table(
        "key_state",
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column(
            "stamp",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
        sa.Column("rq_level", sa.Float, nullable=False, server_default=sa.text("1e18")),
        sa.Column("tk_level", sa.Float, nullable=False, server_default=sa.text("1e18")),
        sa.Column(
            "window_start",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("'epoch'::timestamptz"),
        ),
        # Settled cost (or tokens) of the current window, and reservations in flight.
        sa.Column("spent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reserved", sa.BigInteger, nullable=False, server_default="0"),
        # Everything ever settled (the counter the usage API and the ledger agree with).
        sa.Column("total_spent", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("key_id", name="pk_key_state"),
    )
    op.execute("ALTER TABLE key_state SET (fillfactor = 50)")  # room for HOT updates
    op.execute(ADMIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION vk_admit")
    op.drop_table("key_state")
    op.drop_table("virtual_keys")
    op.execute("DROP SEQUENCE key_revision_seq")
