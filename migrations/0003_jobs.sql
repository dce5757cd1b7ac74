-- Background jobs shared by every domain's bulk work (users bulk update now;
-- bulk uploads and bulk notification sends next), and the users audit trail.
--
-- A job is a list of items processed in batches. Each batch runs in one
-- transaction that applies its items AND advances `processed` (the cursor),
-- so a crash resumes from the last committed batch and no item is applied
-- twice. Workers claim with FOR UPDATE SKIP LOCKED and hold a lease
-- (`locked_by`, `locked_until`); an expired lease is taken by the next poll.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (length(kind) BETWEEN 1 AND 100),
    -- The tenant: members of it may read the job. NULL for a job that spans
    -- every organization its creator manages (or an operator's).
    organization_id  uuid REFERENCES organizations (id) ON DELETE CASCADE,
    created_by       uuid NOT NULL,
    created_by_operator boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    -- The handler's parameters (e.g. the fields to change) and the items.
    params           jsonb NOT NULL DEFAULT '{}',
    items            jsonb NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    batch_size       integer NOT NULL CHECK (batch_size BETWEEN 1 AND 5000),
    total            integer NOT NULL CHECK (total >= 0),
    processed        integer NOT NULL DEFAULT 0 CHECK (processed BETWEEN 0 AND total),
    succeeded        integer NOT NULL DEFAULT 0,
    failed           integer NOT NULL DEFAULT 0,
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    callback_url     text,
    -- NULL (no callback yet / none), pending, delivered, failed.
    callback_status  text CHECK (callback_status IN ('pending', 'delivered', 'failed')),
    callback_attempts integer NOT NULL DEFAULT 0,
    -- Failed attempts of the current batch (reset by each committed batch).
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    run_at           timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A repeated Idempotency-Key of the same creator in the same tenant is the same job.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (organization_id, created_by, idempotency_key)
    NULLS NOT DISTINCT WHERE idempotency_key IS NOT NULL;

-- The claim query's candidates: unfinished work, or a callback still to send.
CREATE INDEX jobs_claimable_idx ON jobs (created_at, id)
    WHERE status IN ('queued', 'running') OR callback_status = 'pending';

-- Per-item errors, apart from the job row so a batch appends without
-- rewriting what earlier batches wrote.
CREATE TABLE job_errors (
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_index  integer NOT NULL,
    item        text NOT NULL,
    message     text NOT NULL,
    PRIMARY KEY (job_id, item_index)
);

-- Who changed a user, when, how and through which job. Written in the same
-- transaction as the change; a user's rows for one job say how many times
-- that job applied to them (exactly once). No foreign keys: an audit row
-- outlives the user and the job it names (and a bulk batch of 5000 rows
-- does not pay 5000 key checks).
CREATE TABLE user_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid NOT NULL,
    actor_id    uuid NOT NULL,
    job_id      uuid,
    changes     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_audit_user_id_idx ON user_audit (user_id, created_at);
CREATE INDEX user_audit_job_id_idx ON user_audit (job_id) WHERE job_id IS NOT NULL;
