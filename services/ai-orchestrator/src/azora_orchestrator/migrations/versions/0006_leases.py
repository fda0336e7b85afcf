"""vk_admit_lease: per-replica leases of a key's budget and request/token buckets.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One statement of a replica for one key (quota.py), under the row lock of its key_state row:
#
# 1. give back the unused part of the replica's lease (p_back_*): requests and tokens to the
#    buckets (never above their capacity), budget units out of `reserved` (only in the window
#    they were reserved in: a window reset already dropped them);
# 2. admit the queued requests exactly, in arrival order, as vk_admit_many does;
# 3. grant a new lease slice (p_want_*): taken from the buckets and added to `reserved` exactly
#    like a reservation, so every other replica sees it as spent. Each part is at most the
#    headroom divided by p_safety, and the whole grant is refused (zeros) when any part would
#    not hold one request (p_min_*): near a limit the replica uses the exact path (2) only.
#
# A commit that granted something is made durable (a grant forgotten by a database crash would
# be a slice the database does not count); everything else keeps the pool's asynchronous
# commit (a forgotten give-back or admission only makes admission stricter, README "The bound").
ADMIT_LEASE = """
CREATE FUNCTION vk_admit_lease(
    p_key text, p_rpm integer, p_tpm integer, p_budget bigint, p_period_s bigint,
    p_tokens bigint[], p_costs bigint[],
    p_back_rq bigint, p_back_tk bigint, p_back_b bigint, p_back_ws timestamptz,
    p_want_rq bigint, p_want_tk bigint, p_want_b bigint,
    p_min_rq bigint, p_min_tk bigint, p_min_b bigint,
    p_safety integer, p_ttl_s double precision
) RETURNS TABLE(ok boolean[], reason text[], reserved bigint[], wait_s double precision[],
                spent bigint, window_start timestamptz,
                lease_rq bigint, lease_tk bigint, lease_b bigint, lease_s double precision)
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
    n integer := coalesce(array_length(p_tokens, 1), 0);
    oks boolean[] := '{}';
    reasons text[] := '{}';
    rss bigint[] := '{}';
    waits double precision[] := '{}';
    g_rq bigint := 0;
    g_tk bigint := 0;
    g_b bigint := 0;
    left_s double precision := p_ttl_s;
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
    -- 1. the unused part of the replica's lease
    IF p_rpm > 0 AND p_back_rq > 0 THEN rq := least(p_rpm, rq + p_back_rq); END IF;
    IF p_tpm > 0 AND p_back_tk > 0 THEN tk := least(p_tpm, tk + p_back_tk); END IF;
    IF p_back_b > 0 AND p_back_ws = ws THEN rs := greatest(0, rs - p_back_b); END IF;
    -- 2. exact admission, in arrival order (vk_admit_many)
    FOR i IN 1 .. n LOOP
        need := least(p_tokens[i], p_tpm);
        IF p_rpm > 0 AND rq < 1 THEN
            oks := oks || false; reasons := reasons || 'requests'::text;
            waits := waits || ((1 - rq) * 60.0 / p_rpm);
        ELSIF p_tpm > 0 AND tk < need THEN
            oks := oks || false; reasons := reasons || 'tokens'::text;
            waits := waits || ((need - tk) * 60.0 / p_tpm);
        ELSIF p_budget > 0 AND sp + rs >= p_budget THEN
            oks := oks || false; reasons := reasons || 'budget'::text;
            waits := waits || CASE WHEN p_period_s > 0
                THEN extract(epoch FROM ws + make_interval(secs => p_period_s) - t)::float8
                ELSE -1.0 END;
        ELSE
            IF p_rpm > 0 THEN rq := rq - 1; END IF;
            IF p_tpm > 0 THEN tk := tk - p_tokens[i]; END IF;
            IF p_budget > 0 THEN rs := rs + p_costs[i]; END IF;
            oks := oks || true; reasons := reasons || ''::text; waits := waits || 0.0::float8;
        END IF;
        rss := rss || rs;
    END LOOP;
    -- 3. a new slice, only with room for safety x the slice left over
    IF p_want_rq > 0 OR p_want_tk > 0 OR p_want_b > 0 THEN
        IF p_rpm > 0 THEN g_rq := least(p_want_rq, floor(rq / p_safety)::bigint); END IF;
        IF p_tpm > 0 THEN g_tk := least(p_want_tk, floor(tk / p_safety)::bigint); END IF;
        IF p_budget > 0 THEN
            g_b := least(p_want_b, (p_budget - sp - rs) / p_safety);  -- integer division
        END IF;
        IF p_period_s > 0 THEN
            left_s := least(p_ttl_s,
                extract(epoch FROM ws + make_interval(secs => p_period_s) - t)::float8);
        END IF;
        IF (p_rpm > 0 AND g_rq < greatest(p_min_rq, 1))
           OR (p_tpm > 0 AND g_tk < greatest(p_min_tk, 1))
           OR (p_budget > 0 AND g_b < greatest(p_min_b, 1))
           OR left_s <= 0 THEN
            g_rq := 0; g_tk := 0; g_b := 0;
        ELSE
            rq := rq - g_rq;
            tk := tk - g_tk;
            rs := rs + g_b;
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
    END IF;
    UPDATE key_state k SET
        stamp = t,
        rq_level = CASE WHEN p_rpm > 0 THEN rq ELSE k.rq_level END,
        tk_level = CASE WHEN p_tpm > 0 THEN tk ELSE k.tk_level END,
        window_start = ws,
        spent = sp,
        reserved = rs
    WHERE k.key_id = p_key;
    RETURN QUERY SELECT oks, reasons, rss, waits, sp, ws, g_rq, g_tk, g_b, left_s;
END $$
"""


def upgrade() -> None:
    op.execute(ADMIT_LEASE)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION vk_admit_lease(text, integer, integer, bigint, bigint, bigint[], "
        "bigint[], bigint, bigint, bigint, timestamptz, bigint, bigint, bigint, bigint, "
        "bigint, bigint, integer, double precision)"
    )
