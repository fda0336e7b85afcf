"""One admission function: ``enrollment_admit()`` is the single home of the admission rules.

Before, the rules lived in ``enrollment_admit()`` (0003), in ``enrollment_admit_keyed()`` (0004,
the Idempotency-Key around it) and again in Python (the general path for prerequisites and for
offers past their window, and the bulk path). This migration adds the one function that replaces
both, with the same name and the Idempotency-Key folded in (the old two stay until a later
release, for rolling upgrades), and adds the eligibility rule as its own
function because promotion (``repository.waitlist_batch``) asks the same question:

- ``enrollment_unmet(student, segment, allowed, prerequisites)``: the unmet requirements, as
  the API reports them (``[]`` when eligible). Prerequisites are cohorts the student has
  completed in this service, so they are checked here too (before, only Python could).
- ``enrollment_admit(...)``: key insert or replay, then the decision (unlocked refusals, then
  the cohort lock, then seat / waitlist place / refusal with the row, its history entry, the
  counters, the payment job and the response stored with the key).

A refusal is an outcome, not an error: the decision runs in a block with an exception handler
(a subtransaction), and a refusal raises ``AZ001`` inside it, which undoes the block's writes
(the key, the student upsert) and returns the outcome and its details. So the caller never
sees an error for a decision and needs no savepoint of its own: the statement behaves the same
in autocommit (``POST /v1/enrollments``), inside the bulk request's transaction, and inside a
test's outer transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "('pending_payment', 'enrolled', 'offered', 'waitlisted', 'completed')"
_OLD_ADMIT = (
    "text, text, bigint, boolean, text, text, jsonb, text[], jsonb, integer, text, boolean, "
    "integer, boolean, boolean, uuid, timestamptz, text, text"
)
_OLD_KEYED = "text, text, text, jsonb, timestamptz, jsonb, " + _OLD_ADMIT
_ADMIT = (
    "text, text, text, jsonb, timestamptz, jsonb, text, text, bigint, boolean, text, text, "
    "jsonb, text[], text[], jsonb, integer, text, boolean, integer, boolean, boolean, uuid, "
    "timestamptz, text, text"
)

UNMET = """
CREATE FUNCTION enrollment_unmet(
    p_student text,
    p_segment text,
    p_allowed_segments text[],  -- null: any segment
    p_prerequisites text[]      -- "namespace/name" of cohorts to have completed; null: none
) RETURNS jsonb LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(jsonb_agg(u.item ORDER BY u.ord), '[]'::jsonb)
      FROM (
        SELECT 1 AS ord, jsonb_build_object('requirement', 'segment', 'segment', p_segment,
                                            'allowed', to_jsonb(p_allowed_segments)) AS item
         WHERE p_allowed_segments IS NOT NULL
           AND (p_segment IS NULL OR NOT (p_segment = ANY (p_allowed_segments)))
        UNION ALL
        SELECT 2, jsonb_build_object('requirement', 'prerequisites', 'missing', m.missing)
          FROM (SELECT jsonb_agg(p.key ORDER BY p.i) AS missing
                  FROM unnest(p_prerequisites) WITH ORDINALITY AS p(key, i)
                 WHERE NOT EXISTS (
                       SELECT 1
                         FROM enrollments e JOIN cohorts c ON c.id = e.cohort_id
                        WHERE e.student_id = p_student AND e.state = 'completed'
                          AND c.namespace || '/' || c.name = p.key)) m
         WHERE m.missing IS NOT NULL
      ) u
$fn$
"""

ADMIT = f"""
CREATE FUNCTION enrollment_admit(
    p_scope text,
    p_key text,                 -- null: no Idempotency-Key
    p_request_hash text,
    p_request_body jsonb,
    p_key_expired_before timestamptz,  -- keys created before this are forgotten
    p_view jsonb,               -- the response without student, state, position, seated_at, payment
    p_namespace text,
    p_name text,
    p_revision bigint,          -- the cohort revision the caller's spec parameters come from
    p_open boolean,             -- capacity <> 0 and the window contains p_now, at p_revision
    p_student text,
    p_segment text,             -- null: keep the segment on record
    p_attributes jsonb,         -- null: keep the attributes on record
    p_allowed_segments text[],  -- null: any segment
    p_prerequisites text[],     -- null: none
    p_priorities jsonb,         -- {{segment: priority}} for a priority-ordered waitlist
    p_default_priority integer,
    p_seat_state text,          -- 'enrolled', or 'pending_payment' on a priced cohort
    p_waitlist_enabled boolean,
    p_waitlist_capacity integer,
    p_offer_mode boolean,
    p_position_visible boolean,
    p_id uuid,
    p_now timestamptz,
    p_actor text,
    p_reason text,
    OUT o_outcome text,         -- enrolled | pending_payment | waitlisted (accepted, committed)
                                -- | replay (a live key) | not_found | stale | closed
                                -- | not_eligible | already_enrolled | full | expire_first
    OUT o_status smallint,      -- accepted: 201; replay: the stored status
    OUT o_response jsonb,       -- accepted: the enrollment; replay: the stored response
    OUT o_request_hash text,    -- replay: the stored request's hash and body
    OUT o_request_body jsonb,
    OUT o_segment text,
    OUT o_unmet jsonb,          -- not_eligible: the unmet requirements
    OUT o_existing_id uuid,     -- already_enrolled: the active enrollment
    OUT o_existing_state text
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    c record;
    v_key text;
    v_seen_segment text;
    v_priority integer;
    v_queue_seq bigint;
    v_position integer;
BEGIN
    BEGIN  -- a subtransaction: a refusal (AZ001 below) undoes the key and the student upsert
        IF p_key IS NOT NULL THEN
            -- As azora_common.idempotency: insert, or take over a forgotten key; no row back
            -- means a live key. A concurrent duplicate waits on the primary-key index until
            -- the first statement ends: committed, it replays; undone, it decides as if first.
            INSERT INTO idempotency_keys AS k (scope, key, request_hash, request_body,
                                               response_status, response_body, created_at)
            VALUES (p_scope, p_key, p_request_hash, p_request_body, 0, '{{}}'::jsonb,
                    clock_timestamp())
            ON CONFLICT (scope, key) DO UPDATE
               SET request_hash = excluded.request_hash,
                   request_body = excluded.request_body,
                   response_status = excluded.response_status,
                   response_body = excluded.response_body,
                   created_at = excluded.created_at
             WHERE k.created_at < p_key_expired_before
            RETURNING k.key INTO v_key;
            IF NOT FOUND THEN
                -- A new statement inside a VOLATILE function takes a new snapshot: after
                -- waiting on the index it sees the committed first request.
                SELECT k.request_hash, k.request_body, k.response_status, k.response_body
                  INTO o_request_hash, o_request_body, o_status, o_response
                  FROM idempotency_keys k
                 WHERE k.scope = p_scope AND k.key = p_key;
                o_outcome := 'replay';
                RETURN;
            END IF;
        END IF;

        <<decision>>
        BEGIN
            -- 1. Unlocked: a committed snapshot of the cohort. Every refusal decided on it is
            --    read-only, so it linearises at this snapshot, which lies inside the request.
            SELECT id, revision, capacity, seats_taken, waitlisted INTO c
              FROM cohorts
             WHERE namespace = p_namespace AND name = p_name AND deleted_at IS NULL;
            IF NOT FOUND THEN
                o_outcome := 'not_found';
                EXIT decision;
            END IF;
            IF c.revision <> p_revision THEN
                o_outcome := 'stale';  -- the caller's spec is not this cohort's: reload, retry
                EXIT decision;
            END IF;
            IF NOT p_open THEN
                o_outcome := 'closed';
                EXIT decision;
            END IF;
            -- The segment that will be on record: the given one, else the stored one. Read,
            -- not written, here: a refusal takes no row lock at all, and the student row is
            -- locked only after the cohort row (the lock order of every path).
            o_segment := coalesce(p_segment,
                                  (SELECT s.segment FROM students s WHERE s.id = p_student));
            v_seen_segment := o_segment;
            IF p_allowed_segments IS NOT NULL OR p_prerequisites IS NOT NULL THEN
                o_unmet := enrollment_unmet(p_student, o_segment, p_allowed_segments,
                                            p_prerequisites);
                IF o_unmet <> '[]'::jsonb THEN
                    o_outcome := 'not_eligible';
                    EXIT decision;
                END IF;
            END IF;
            SELECT e.id, e.state INTO o_existing_id, o_existing_state
              FROM enrollments e
             WHERE e.cohort_id = c.id AND e.student_id = p_student AND e.state IN {_ACTIVE}
             LIMIT 1;
            IF FOUND THEN
                o_outcome := 'already_enrolled';
                EXIT decision;
            END IF;
            -- Full with nothing left on the waitlist, in the snapshot: refuse without queueing
            -- for the lock. Seats free up only through a drop (which promotes from the
            -- waitlist) or a capacity increase, both after our snapshot. Offer mode is
            -- excluded: an offer past its window holds a seat until someone expires it.
            IF c.capacity IS NOT NULL AND c.seats_taken >= c.capacity AND NOT p_offer_mode
               AND (NOT p_waitlist_enabled
                    OR (p_waitlist_capacity IS NOT NULL
                        AND c.waitlisted >= p_waitlist_capacity)) THEN
                o_outcome := 'full';
                EXIT decision;
            END IF;

            -- 2. The cohort row lock: from here to COMMIT nobody else changes this cohort's
            --    seats or waitlist, so the counts read now stay true until our insert commits.
            SELECT id, revision, capacity, seats_taken, waitlisted INTO c
              FROM cohorts
             WHERE id = c.id AND deleted_at IS NULL
               FOR UPDATE;
            IF NOT FOUND THEN
                o_outcome := 'not_found';
                EXIT decision;
            END IF;
            IF c.revision <> p_revision THEN
                o_outcome := 'stale';  -- the spec changed while we queued
                EXIT decision;
            END IF;
            IF p_offer_mode AND EXISTS (
                SELECT 1 FROM enrollments
                 WHERE cohort_id = c.id AND state = 'offered' AND offer_expires_at <= p_now
            ) THEN
                -- Dead offers hold seats: the caller expires them (with the promotion that
                -- follows, lifecycle.py) in a transaction of its own, then asks again.
                o_outcome := 'expire_first';
                EXIT decision;
            END IF;
            INSERT INTO students AS s (id, segment, attributes, updated_at)
            VALUES (p_student, p_segment, coalesce(p_attributes, '{{}}'::jsonb), p_now)
            ON CONFLICT (id) DO UPDATE
               SET updated_at = p_now,
                   segment = coalesce(p_segment, s.segment),
                   attributes = coalesce(p_attributes, s.attributes)
            RETURNING s.segment INTO o_segment;
            -- The stored segment may have changed since the read above (only when none was
            -- given): the requirements are asked again for the segment now on record.
            IF o_segment IS DISTINCT FROM v_seen_segment
               AND (p_allowed_segments IS NOT NULL OR p_prerequisites IS NOT NULL) THEN
                o_unmet := enrollment_unmet(p_student, o_segment, p_allowed_segments,
                                            p_prerequisites);
                IF o_unmet <> '[]'::jsonb THEN
                    o_outcome := 'not_eligible';
                    EXIT decision;
                END IF;
            END IF;
            -- Re-checked under the lock: the same student may have been admitted while we
            -- queued (the partial unique index is the last guard; this keeps a clean 409).
            SELECT e.id, e.state INTO o_existing_id, o_existing_state
              FROM enrollments e
             WHERE e.cohort_id = c.id AND e.student_id = p_student AND e.state IN {_ACTIVE}
             LIMIT 1;
            IF FOUND THEN
                o_outcome := 'already_enrolled';
                EXIT decision;
            END IF;
            IF c.capacity IS NULL OR c.seats_taken < c.capacity THEN
                o_outcome := p_seat_state;
                v_priority := 0;
            ELSIF p_waitlist_enabled
                  AND (p_waitlist_capacity IS NULL OR c.waitlisted < p_waitlist_capacity) THEN
                o_outcome := 'waitlisted';
                v_priority := coalesce((p_priorities ->> o_segment)::integer, p_default_priority);
            ELSE
                o_outcome := 'full';
                EXIT decision;
            END IF;
            INSERT INTO enrollments (id, cohort_id, student_id, state, segment, priority,
                                     queue_seq, created_at, updated_at, waitlisted_at, seated_at)
            VALUES (p_id, c.id, p_student, o_outcome, o_segment, v_priority,
                    nextval('enrollment_queue_seq'), p_now, p_now,
                    CASE WHEN o_outcome = 'waitlisted' THEN p_now END,
                    CASE WHEN o_outcome = 'enrolled' THEN p_now END)
            RETURNING queue_seq INTO v_queue_seq;
            INSERT INTO enrollment_history (enrollment_id, cohort_id, from_state, to_state,
                                            actor, reason, at)
            VALUES (p_id, c.id, NULL, o_outcome, p_actor, p_reason, p_now);
            IF o_outcome = 'waitlisted' THEN
                UPDATE cohorts SET waitlisted = waitlisted + 1 WHERE id = c.id;
                IF p_position_visible THEN
                    SELECT count(*) + 1 INTO v_position
                      FROM enrollments
                     WHERE cohort_id = c.id AND state = 'waitlisted'
                       AND (priority, queue_seq) < (v_priority, v_queue_seq);
                END IF;
            ELSE
                -- CHECK (seats_taken <= capacity) refuses this if the lock were ever missing.
                UPDATE cohorts SET seats_taken = seats_taken + 1 WHERE id = c.id;
                IF o_outcome = 'pending_payment' THEN
                    INSERT INTO outbox (enrollment_id, kind, next_attempt_at, created_at)
                    VALUES (p_id, 'charge', p_now, p_now)
                    ON CONFLICT ON CONSTRAINT uq_outbox_enrollment_kind DO NOTHING;
                END IF;
            END IF;
        END decision;

        IF o_outcome NOT IN ('enrolled', 'pending_payment', 'waitlisted') THEN
            RAISE EXCEPTION USING ERRCODE = 'AZ001';  -- undo this block; the outcome stays
        END IF;
        o_status := 201;
        o_response := p_view || jsonb_build_object(
            'student', jsonb_build_object('id', p_student, 'segment', o_segment),
            'state', o_outcome,
            'waitlist_position', v_position,
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
    EXCEPTION WHEN SQLSTATE 'AZ001' THEN
        NULL;  -- refused: nothing written (variables keep their values: the outcome is returned)
    END;
END
$fn$
"""


def upgrade() -> None:
    # Expand, not contract: the functions of 0003 and 0004 stay (the new one is an overload
    # with another signature), because during a rolling upgrade the previous release's replicas
    # keep calling enrollment_admit_keyed until they are replaced; dropping it here would fail
    # their requests. No code of this release calls them. A migration of a later release drops
    # them (_OLD_ADMIT, _OLD_KEYED), once no replica of a release before 0005 can run.
    op.execute(UNMET)
    op.execute(ADMIT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION enrollment_admit({_ADMIT})")
    op.execute("DROP FUNCTION enrollment_unmet(text, text, text[], text[])")
