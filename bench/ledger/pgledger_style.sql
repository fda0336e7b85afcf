-- pgledger-style SQL reference (our re-implementation, not pgledger's code): one PL/pgSQL
-- function per transfer that locks both accounts in id order, inserts the transfer and its two
-- entries with the running balances, and updates the balances. Used only by bench/ledger/run.py.
CREATE SCHEMA IF NOT EXISTS ref;

CREATE TABLE ref.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    currency text NOT NULL,
    balance numeric NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0,
    allow_negative_balance boolean NOT NULL DEFAULT true,
    allow_positive_balance boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ref.transfers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_account_id bigint NOT NULL REFERENCES ref.accounts (id),
    to_account_id bigint NOT NULL REFERENCES ref.accounts (id),
    amount numeric NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ref.entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES ref.accounts (id),
    transfer_id bigint NOT NULL REFERENCES ref.transfers (id),
    amount numeric NOT NULL,
    account_previous_balance numeric NOT NULL,
    account_current_balance numeric NOT NULL,
    account_version bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ref.entries (account_id, account_version);

CREATE FUNCTION ref.create_transfer(p_from bigint, p_to bigint, p_amount numeric)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_transfer bigint;
    v_from ref.accounts;
    v_to ref.accounts;
BEGIN
    IF p_amount <= 0 THEN RAISE EXCEPTION 'amount must be positive'; END IF;
    -- Lock both accounts in id order (no deadlocks).
    PERFORM 1 FROM ref.accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE;
    UPDATE ref.accounts SET balance = balance - p_amount, version = version + 1,
        updated_at = now() WHERE id = p_from RETURNING * INTO v_from;
    IF NOT v_from.allow_negative_balance AND v_from.balance < 0 THEN
        RAISE EXCEPTION 'account % cannot go negative', p_from;
    END IF;
    UPDATE ref.accounts SET balance = balance + p_amount, version = version + 1,
        updated_at = now() WHERE id = p_to RETURNING * INTO v_to;
    INSERT INTO ref.transfers (from_account_id, to_account_id, amount)
        VALUES (p_from, p_to, p_amount) RETURNING id INTO v_transfer;
    INSERT INTO ref.entries (account_id, transfer_id, amount, account_previous_balance,
        account_current_balance, account_version)
    VALUES (p_from, v_transfer, -p_amount, v_from.balance + p_amount, v_from.balance,
            v_from.version),
           (p_to, v_transfer, p_amount, v_to.balance - p_amount, v_to.balance, v_to.version);
    RETURN v_transfer;
END $$;
