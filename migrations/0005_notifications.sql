-- Notifications: what was sent (one row per POST /v1/notifications), its
-- deliveries (one per recipient and channel, the durable priority queue),
-- and each user's preferences.
--
-- A delivery is the unit of work: workers claim due ones with
-- FOR UPDATE SKIP LOCKED ordered by priority then due time, hold a lease
-- (`locked_by`, `locked_until`) while they call the provider, and record the
-- outcome. An expired lease (a crashed worker) puts the delivery back in the
-- queue; the provider sees the same delivery id again (email Message-ID, the
-- gateways' Idempotency-Key header), so a resend is not a second message.

CREATE TABLE notification_preferences (
    user_id      uuid PRIMARY KEY,
    -- {"email": false, ...}: a channel absent is on.
    channels     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(channels) = 'object'),
    -- {"<type>": {"<channel>": false}}: absent is on.
    types        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(types) = 'object'),
    quiet_start  time,
    quiet_end    time,
    quiet_zone   text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND (quiet_start IS NULL) = (quiet_zone IS NULL))
);

CREATE TABLE notifications (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_by       uuid NOT NULL,
    type             text NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
    title            text NOT NULL,
    message          text NOT NULL,
    -- 0 urgent, 1 high, 2 normal, 3 low: the queue's sort order.
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 3),
    data             jsonb,
    scheduled_at     timestamptz,
    max_retries      integer NOT NULL CHECK (max_retries BETWEEN 0 AND 20),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- The request as received, to tell a replay (same body) from a conflict.
    request          jsonb NOT NULL,
    queued           integer NOT NULL DEFAULT 0,
    deferred         integer NOT NULL DEFAULT 0,
    suppressed       integer NOT NULL DEFAULT 0,
    -- The bulk job that created it, if any.
    job_id           uuid,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX notifications_idempotency_key ON notifications (organization_id, created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_organization_idx ON notifications (organization_id, created_at);

CREATE SEQUENCE notification_feed_seq;

CREATE TABLE notification_deliveries (
    id               uuid PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'push', 'sms', 'in_app')),
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 3),
    status           text NOT NULL CHECK (status IN ('queued', 'deferred', 'sending', 'sent',
                                                     'delivered', 'failed', 'dead', 'suppressed')),
    -- Why it is suppressed, deferred or dead.
    reason           text,
    attempts         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL,
    last_error       text,
    -- When it is due (scheduledAt, end of quiet hours, next retry).
    run_at           timestamptz NOT NULL,
    locked_by        text,
    locked_until     timestamptz,
    -- Secret of the open pixel and click links.
    tracking_token   text NOT NULL,
    -- Position in the recipient's in-app feed (the SSE event id).
    feed_seq         bigint,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    delivered_at     timestamptz,
    opened_at        timestamptz,
    clicked_at       timestamptz,
    read_at          timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The claim query: due work by priority, then due time.
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (priority, run_at, id)
    WHERE status IN ('queued', 'deferred', 'failed');
-- Expired leases.
CREATE INDEX notification_deliveries_leased_idx ON notification_deliveries (locked_until)
    WHERE status = 'sending';
CREATE INDEX notification_deliveries_notification_idx ON notification_deliveries (notification_id);
CREATE UNIQUE INDEX notification_deliveries_tracking_idx ON notification_deliveries (tracking_token);
-- The in-app feed and its stream.
CREATE INDEX notification_deliveries_feed_idx ON notification_deliveries (user_id, feed_seq)
    WHERE channel = 'in_app' AND feed_seq IS NOT NULL;
CREATE INDEX notification_deliveries_org_idx ON notification_deliveries (organization_id, queued_at);
