"""enrollment_admit_keyed(): Idempotency-Key, decision and stored response in one statement.

``POST /v1/enrollments`` (the fast route, ``fastpath.py``) calls this function in autocommit:
a single statement is its own transaction, so there is no BEGIN or COMMIT round trip and the
cohort lock taken by ``enrollment_admit`` is released by the statement's own commit.

- The key is inserted (or a key older than the retention window taken over) exactly as
  ``azora_common.idempotency.run_idempotent`` does; a live key returns the stored request hash,
  body and response (``o_replay``) without deciding anything. A concurrent duplicate blocks on
  the primary-key index until the first statement ends: committed, it replays; rolled back, it
  decides as if it were first.
- A seat or a waitlist place commits with the key and its response (built here from the
  caller's view template, the outcome, segment and position), so a replay never sees the
  placeholder.
- Every other outcome (refusals, ``stale``, ``not_found``, ``expire_first``) raises
  ``enrollment_admit_keyed:<outcome>`` with the decision as JSON in DETAIL: the statement rolls
  back, the key, the student upsert and anything else with it, as the general path's rollback
  does ("a refused request leaves nothing behind"; a refused request can be retried with the
  same key).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ARGS = (
    "text, text, text, jsonb, timestamptz, jsonb, "
    "text, text, bigint, boolean, text, text, jsonb, text[], "
    "jsonb, integer, text, boolean, integer, boolean, boolean, uuid, timestamptz, text, text"
)

FUNCTION = """
CREATE FUNCTION enrollment_admit_keyed(
    p_scope text,
    p_key text,                 -- null: no Idempotency-Key
    p_request_hash text,
    p_request_body jsonb,
    p_key_expired_before timestamptz,  -- keys created before this are forgotten
    p_view jsonb,               -- the response without student, state, position, seated_at, payment
    p_namespace text,
    p_name text,
    p_revision bigint,
    p_open boolean,
    p_student text,
    p_segment text,
    p_attributes jsonb,
    p_allowed_segments text[],
    p_priorities jsonb,
    p_default_priority integer,
    p_seat_state text,
    p_waitlist_enabled boolean,
    p_waitlist_capacity integer,
    p_offer_mode boolean,
    p_position_visible boolean,
    p_id uuid,
    p_now timestamptz,
    p_actor text,
    p_reason text,
    OUT o_replay boolean,
    OUT o_request_hash text,
    OUT o_request_body jsonb,
    OUT o_status smallint,
    OUT o_response jsonb,
    OUT o_outcome text
)
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    d record;
BEGIN
    o_replay := false;
    IF p_key IS NOT NULL THEN
        -- As run_idempotent: insert, or take over a forgotten key; no row = a live key.
        INSERT INTO idempotency_keys AS k (scope, key, request_hash, request_body,
                                           response_status, response_body, created_at)
        VALUES (p_scope, p_key, p_request_hash, p_request_body, 0, '{}'::jsonb,
                clock_timestamp())
        ON CONFLICT (scope, key) DO UPDATE
           SET request_hash = excluded.request_hash,
               request_body = excluded.request_body,
               response_status = excluded.response_status,
               response_body = excluded.response_body,
               created_at = excluded.created_at
         WHERE k.created_at < p_key_expired_before
        RETURNING k.key INTO o_outcome;
        IF NOT FOUND THEN
            -- A new statement inside a VOLATILE function takes a new snapshot: after waiting
            -- on the index it sees the committed first request.
            SELECT k.request_hash, k.request_body, k.response_status, k.response_body
              INTO o_request_hash, o_request_body, o_status, o_response
              FROM idempotency_keys k
             WHERE k.scope = p_scope AND k.key = p_key;
            o_replay := true;
            o_outcome := NULL;
            RETURN;
        END IF;
    END IF;
    SELECT * INTO d FROM enrollment_admit(
        p_namespace, p_name, p_revision, p_open, p_student, p_segment, p_attributes,
        p_allowed_segments, p_priorities, p_default_priority, p_seat_state,
        p_waitlist_enabled, p_waitlist_capacity, p_offer_mode, p_position_visible, p_id,
        p_now, p_actor, p_reason);
    o_outcome := d.o_outcome;
    IF o_outcome NOT IN ('enrolled', 'pending_payment', 'waitlisted') THEN
        -- Roll the whole statement back (key included) and tell the caller why.
        RAISE EXCEPTION 'enrollment_admit_keyed:%', o_outcome
              USING DETAIL = jsonb_build_object(
                  'outcome', d.o_outcome, 'segment', d.o_segment,
                  'existing_id', d.o_existing_id, 'existing_state', d.o_existing_state,
                  'capacity', d.o_capacity, 'seats_taken', d.o_seats_taken,
                  'waitlisted', d.o_waitlisted)::text;
    END IF;
    o_status := 201;
    o_response := p_view || jsonb_build_object(
        'student', jsonb_build_object('id', p_student, 'segment', d.o_segment),
        'state', o_outcome,
        'waitlist_position', d.o_position,
        'seated_at', CASE WHEN o_outcome = 'enrolled' THEN p_view -> 'created_at'
                          ELSE 'null'::jsonb END,
        'payment', CASE WHEN o_outcome = 'pending_payment' THEN jsonb_build_object(
                            'quote_id', NULL, 'amount', NULL, 'currency', NULL,
                            'transaction_id', NULL, 'charged_at', NULL,
                            'refund_transaction_id', NULL, 'error', NULL)
                        ELSE 'null'::jsonb END);
    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys SET response_status = o_status, response_body = o_response
         WHERE scope = p_scope AND key = p_key;
    END IF;
END
$fn$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION enrollment_admit_keyed({_ARGS})")
