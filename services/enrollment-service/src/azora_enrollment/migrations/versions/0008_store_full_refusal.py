"""A full cohort's refusal is stored under its Idempotency-Key by the statement that decides it.

Since a refusal is stored under its key (docs/idempotency.md), a keyed request refused because
the cohort is full cost two statements and two durable commits: ``enrollment_admit`` (which
undoes its own writes for a refusal, the key row included) and then the stored refusal. Under
load a full cohort's 409 is the commonest answer, so this doubled the commits of the busiest
endpoint. Its problem names only the cohort and its spec, so the caller can render it before
asking, once per cohort revision.

- ``enrollment_store_answer(...)``: store a response under a key, or take over a forgotten key;
  the key back when stored, null when the key is live with another answer. The one home of this
  statement: ``repository.store_refusal`` calls it too.
- ``enrollment_admit(..., p_full_response)``: an overload of 0005's function with one more
  parameter. It asks the 0005 function (the single home of the admission rules, unchanged) and,
  when the outcome is ``full`` for a keyed request and ``p_full_response`` is given, stores that
  problem under the key (outcome ``full``, status 409) in the same statement, or returns the
  live key's answer (outcome ``replay``) when a concurrent request with the key stored first.

Additive only: a replica of the previous release keeps calling the 0005 function.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STORE = "text, text, text, jsonb, smallint, jsonb, timestamptz, timestamptz"
_ADMIT = (
    "text, text, text, jsonb, timestamptz, jsonb, text, text, bigint, boolean, text, text, "
    "jsonb, text[], text[], jsonb, integer, text, boolean, integer, boolean, boolean, uuid, "
    "timestamptz, text, text"
)
# The 0005 function's parameters, in order (the overload passes each on).
_PARAMS = (
    "p_scope, p_key, p_request_hash, p_request_body, p_key_expired_before, p_view, p_namespace, "
    "p_name, p_revision, p_open, p_student, p_segment, p_attributes, p_allowed_segments, "
    "p_prerequisites, p_priorities, p_default_priority, p_seat_state, p_waitlist_enabled, "
    "p_waitlist_capacity, p_offer_mode, p_position_visible, p_id, p_now, p_actor, p_reason"
)

STORE = """
CREATE FUNCTION enrollment_store_answer(
    p_scope text,
    p_key text,
    p_request_hash text,
    p_request_body jsonb,
    p_status smallint,
    p_response jsonb,
    p_now timestamptz,
    p_key_expired_before timestamptz  -- a key created before this is forgotten: taken over
) RETURNS text LANGUAGE sql VOLATILE AS $fn$
    INSERT INTO idempotency_keys AS k (scope, key, request_hash, request_body, response_status,
                                       response_body, created_at)
    VALUES (p_scope, p_key, p_request_hash, p_request_body, p_status, p_response, p_now)
    ON CONFLICT (scope, key) DO UPDATE
       SET request_hash = excluded.request_hash,
           request_body = excluded.request_body,
           response_status = excluded.response_status,
           response_body = excluded.response_body,
           created_at = excluded.created_at
     WHERE k.created_at < p_key_expired_before
    RETURNING k.key
$fn$
"""

ADMIT = f"""
CREATE FUNCTION enrollment_admit(
    p_scope text, p_key text, p_request_hash text, p_request_body jsonb,
    p_key_expired_before timestamptz, p_view jsonb, p_namespace text, p_name text,
    p_revision bigint, p_open boolean, p_student text, p_segment text, p_attributes jsonb,
    p_allowed_segments text[], p_prerequisites text[], p_priorities jsonb,
    p_default_priority integer, p_seat_state text, p_waitlist_enabled boolean,
    p_waitlist_capacity integer, p_offer_mode boolean, p_position_visible boolean, p_id uuid,
    p_now timestamptz, p_actor text, p_reason text,
    p_full_response jsonb,      -- the problem of outcome full, stored under p_key; null: not
    OUT o_outcome text, OUT o_status smallint, OUT o_response jsonb, OUT o_request_hash text,
    OUT o_request_body jsonb, OUT o_segment text, OUT o_unmet jsonb, OUT o_existing_id uuid,
    OUT o_existing_state text
) LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    SELECT * INTO o_outcome, o_status, o_response, o_request_hash, o_request_body, o_segment,
                  o_unmet, o_existing_id, o_existing_state
      FROM enrollment_admit({_PARAMS});
    IF o_outcome <> 'full' OR p_key IS NULL OR p_full_response IS NULL THEN
        RETURN;
    END IF;
    -- The decision undid its key row with the refusal; a concurrent request with the same key
    -- may have inserted its own since (we wait on it here, as on the decision's insert).
    IF enrollment_store_answer(p_scope, p_key, p_request_hash, p_request_body, 409::smallint,
                               p_full_response, clock_timestamp(),
                               p_key_expired_before) IS NOT NULL THEN
        o_status := 409;
        o_response := p_full_response;
        RETURN;
    END IF;
    SELECT k.request_hash, k.request_body, k.response_status, k.response_body
      INTO o_request_hash, o_request_body, o_status, o_response
      FROM idempotency_keys k
     WHERE k.scope = p_scope AND k.key = p_key;
    o_outcome := 'replay';
END
$fn$
"""


def upgrade() -> None:
    op.execute(STORE)
    op.execute(ADMIT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION enrollment_admit({_ADMIT}, jsonb)")
    op.execute(f"DROP FUNCTION enrollment_store_answer({_STORE})")
