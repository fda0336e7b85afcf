"""vk_admit_many: the admissions of one key queued in one replica, checked in one statement.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# vk_admit for n requests in arrival order under one row lock: each request is checked against
# the state the previous ones left (exactly as n calls in a row would), one UPDATE at the end.
ADMIT_MANY = """
CREATE FUNCTION vk_admit_many(
    p_key text, p_rpm integer, p_tpm integer, p_budget bigint, p_period_s bigint,
    p_tokens bigint[], p_costs bigint[]
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
    need double precision;
    i integer;
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
    FOR i IN 1 .. coalesce(array_length(p_tokens, 1), 0) LOOP
        need := least(p_tokens[i], p_tpm);
        IF p_rpm > 0 AND rq < 1 THEN
            RETURN QUERY SELECT false, 'requests', sp, rs, ws, (1 - rq) * 60.0 / p_rpm;
        ELSIF p_tpm > 0 AND tk < need THEN
            RETURN QUERY SELECT false, 'tokens', sp, rs, ws, (need - tk) * 60.0 / p_tpm;
        ELSIF p_budget > 0 AND sp + rs >= p_budget THEN
            RETURN QUERY SELECT false, 'budget', sp, rs, ws,
                CASE WHEN p_period_s > 0
                     THEN extract(epoch FROM ws + make_interval(secs => p_period_s) - t)::float8
                     ELSE -1.0 END;
        ELSE
            IF p_rpm > 0 THEN rq := rq - 1; END IF;
            IF p_tpm > 0 THEN tk := tk - p_tokens[i]; END IF;
            IF p_budget > 0 THEN rs := rs + p_costs[i]; END IF;
            RETURN QUERY SELECT true, '', sp, rs, ws, 0.0::float8;
        END IF;
    END LOOP;
    UPDATE key_state k SET
        stamp = t,
        rq_level = CASE WHEN p_rpm > 0 THEN rq ELSE k.rq_level END,
        tk_level = CASE WHEN p_tpm > 0 THEN tk ELSE k.tk_level END,
        window_start = ws,
        spent = sp,
        reserved = rs
    WHERE k.key_id = p_key;
END $$
"""


def upgrade() -> None:
    op.execute(ADMIT_MANY)


def downgrade() -> None:
    op.execute("DROP FUNCTION vk_admit_many")
