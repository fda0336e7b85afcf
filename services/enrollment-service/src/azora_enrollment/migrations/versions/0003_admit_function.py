"""enrollment_admit(): one round trip for a whole enrollment decision.

The function takes the cohort lock as late as possible and holds it for one statement: every
refusal that does not depend on the last seat is decided before it, and seat / waitlist /
refusal, the enrollment row, its first history entry, the counters and the payment job are one
step under it. See ``service._enroll`` and the service README ("Speed") for the reasoning.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "('pending_payment', 'enrolled', 'offered', 'waitlisted', 'completed')"

FUNCTION = f"""
CREATE FUNCTION enrollment_admit(
    p_namespace text,
    p_name text,
    p_revision bigint,          -- the cohort revision the caller's spec parameters come from
    p_open boolean,             -- capacity <> 0 and the window contains p_now, at p_revision
    p_student text,
    p_segment text,             -- null: keep the segment on record
    p_attributes jsonb,         -- null: keep the attributes on record
    p_allowed_segments text[],  -- null: any segment
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
    OUT o_outcome text,         -- enrolled | pending_payment | waitlisted | not_found | stale
                                -- | closed | not_eligible | already_enrolled | full
                                -- | expire_first
    OUT o_segment text,
    OUT o_existing_id uuid,
    OUT o_existing_state text,
    OUT o_priority integer,
    OUT o_queue_seq bigint,
    OUT o_position integer,
    OUT o_capacity integer,
    OUT o_seats_taken integer,
    OUT o_waitlisted integer
) LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
BEGIN
    -- 1. Unlocked: a committed snapshot of the cohort. Every refusal decided on it is read-only,
    --    so it linearises at this snapshot, which lies inside the request; no lock is needed.
    SELECT id, revision, capacity, seats_taken, waitlisted INTO c
      FROM cohorts
     WHERE namespace = p_namespace AND name = p_name AND deleted_at IS NULL;
    IF NOT FOUND THEN
        o_outcome := 'not_found';
        RETURN;
    END IF;
    o_capacity := c.capacity; o_seats_taken := c.seats_taken; o_waitlisted := c.waitlisted;
    IF c.revision <> p_revision THEN
        -- The caller's spec is not this cohort's any more: it reloads and calls again.
        o_outcome := 'stale';
        RETURN;
    END IF;
    IF NOT p_open THEN
        o_outcome := 'closed';
        RETURN;
    END IF;
    -- The segment that will be on record: the given one, else the stored one. Read, not
    -- written, here: a refusal takes no row lock at all, and the student row is locked only
    -- after the cohort row (the lock order of every path: cohort, then the rest).
    o_segment := coalesce(p_segment, (SELECT s.segment FROM students s WHERE s.id = p_student));
    IF p_allowed_segments IS NOT NULL
       AND (o_segment IS NULL OR NOT (o_segment = ANY (p_allowed_segments))) THEN
        o_outcome := 'not_eligible';
        RETURN;
    END IF;
    SELECT e.id, e.state INTO o_existing_id, o_existing_state
      FROM enrollments e
     WHERE e.cohort_id = c.id AND e.student_id = p_student AND e.state IN {_ACTIVE}
     LIMIT 1;
    IF FOUND THEN
        o_outcome := 'already_enrolled';
        RETURN;
    END IF;
    -- Full and nothing left on the waitlist, in the snapshot: refuse without queueing for the
    -- lock. Seats free up only through a drop (which promotes from the waitlist) or a capacity
    -- increase; either commits after our snapshot, so the refusal is still a correct answer at
    -- the snapshot's instant. Offer mode is excluded: an offer past its window holds a seat
    -- until someone expires it, so "full" there is not yet known without the lock.
    IF c.capacity IS NOT NULL AND c.seats_taken >= c.capacity AND NOT p_offer_mode
       AND (NOT p_waitlist_enabled
            OR (p_waitlist_capacity IS NOT NULL AND c.waitlisted >= p_waitlist_capacity)) THEN
        o_outcome := 'full';
        RETURN;
    END IF;

    -- 2. The cohort row lock: from here to COMMIT, nobody else changes this cohort's seats or
    --    waitlist, so the counts read now stay true until our insert commits. Everything from
    --    here on is this one statement; the caller's COMMIT follows it.
    SELECT id, revision, capacity, seats_taken, waitlisted INTO c
      FROM cohorts
     WHERE id = c.id AND deleted_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        o_outcome := 'not_found';
        RETURN;
    END IF;
    o_capacity := c.capacity; o_seats_taken := c.seats_taken; o_waitlisted := c.waitlisted;
    IF c.revision <> p_revision THEN
        o_outcome := 'stale';   -- the spec changed while we queued; the caller retries
        RETURN;
    END IF;
    IF p_offer_mode AND EXISTS (
        SELECT 1 FROM enrollments
         WHERE cohort_id = c.id AND state = 'offered' AND offer_expires_at <= p_now
    ) THEN
        -- Dead offers hold seats: the caller expires them (promotion rules live in Python)
        -- and decides on the general path, still holding this lock.
        o_outcome := 'expire_first';
        RETURN;
    END IF;
    INSERT INTO students AS s (id, segment, attributes, updated_at)
    VALUES (p_student, p_segment, coalesce(p_attributes, '{{}}'::jsonb), p_now)
    ON CONFLICT (id) DO UPDATE
       SET updated_at = p_now,
           segment = coalesce(p_segment, s.segment),
           attributes = coalesce(p_attributes, s.attributes)
    RETURNING s.segment INTO o_segment;
    -- The stored segment may have changed since the read above (only when none was given).
    IF p_allowed_segments IS NOT NULL
       AND (o_segment IS NULL OR NOT (o_segment = ANY (p_allowed_segments))) THEN
        o_outcome := 'not_eligible';
        RETURN;
    END IF;
    -- Re-checked under the lock: the same student may have been admitted while we queued.
    -- (The partial unique index is the last guard; this keeps the answer a clean 409.)
    SELECT e.id, e.state INTO o_existing_id, o_existing_state
      FROM enrollments e
     WHERE e.cohort_id = c.id AND e.student_id = p_student AND e.state IN {_ACTIVE}
     LIMIT 1;
    IF FOUND THEN
        o_outcome := 'already_enrolled';
        RETURN;
    END IF;
    IF c.capacity IS NULL OR c.seats_taken < c.capacity THEN
        o_outcome := p_seat_state;
        o_priority := 0;
    ELSIF p_waitlist_enabled
          AND (p_waitlist_capacity IS NULL OR c.waitlisted < p_waitlist_capacity) THEN
        o_outcome := 'waitlisted';
        o_priority := coalesce((p_priorities ->> o_segment)::integer, p_default_priority);
    ELSE
        o_outcome := 'full';
        RETURN;
    END IF;
    INSERT INTO enrollments (id, cohort_id, student_id, state, segment, priority, queue_seq,
                             created_at, updated_at, waitlisted_at, seated_at)
    VALUES (p_id, c.id, p_student, o_outcome, o_segment, o_priority,
            nextval('enrollment_queue_seq'), p_now, p_now,
            CASE WHEN o_outcome = 'waitlisted' THEN p_now END,
            CASE WHEN o_outcome = 'enrolled' THEN p_now END)
    RETURNING queue_seq INTO o_queue_seq;
    INSERT INTO enrollment_history (enrollment_id, cohort_id, from_state, to_state, actor,
                                    reason, at)
    VALUES (p_id, c.id, NULL, o_outcome, p_actor, p_reason, p_now);
    IF o_outcome = 'waitlisted' THEN
        UPDATE cohorts SET waitlisted = waitlisted + 1 WHERE id = c.id;
        o_waitlisted := c.waitlisted + 1;
        IF p_position_visible THEN
            SELECT count(*) + 1 INTO o_position
              FROM enrollments
             WHERE cohort_id = c.id AND state = 'waitlisted'
               AND (priority, queue_seq) < (o_priority, o_queue_seq);
        END IF;
    ELSE
        -- CHECK (seats_taken <= capacity) refuses this if the lock were ever missing.
        UPDATE cohorts SET seats_taken = seats_taken + 1 WHERE id = c.id;
        o_seats_taken := c.seats_taken + 1;
        IF o_outcome = 'pending_payment' THEN
            INSERT INTO outbox (enrollment_id, kind, next_attempt_at, created_at)
            VALUES (p_id, 'charge', p_now, p_now)
            ON CONFLICT ON CONSTRAINT uq_outbox_enrollment_kind DO NOTHING;
        END IF;
    END IF;
END
$fn$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION enrollment_admit(text, text, bigint, boolean, text, text, jsonb, text[], "
        "jsonb, integer, text, boolean, integer, boolean, boolean, uuid, timestamptz, text, text)"
    )
