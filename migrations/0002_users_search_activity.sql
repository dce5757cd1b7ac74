-- Users: indexes for search (prefix, case-insensitive) and sorting, and the
-- activity log.

-- `q`, `firstName`, `lastName`, `email` are case-insensitive prefix filters:
-- `lower(col) LIKE 'prefix%'` uses a text_pattern_ops index.
CREATE INDEX users_first_name_prefix_idx ON users (lower(first_name) text_pattern_ops);
CREATE INDEX users_last_name_prefix_idx ON users (lower(last_name) text_pattern_ops);
CREATE INDEX users_email_prefix_idx ON users (lower(email) text_pattern_ops);

-- Sorts (and keyset pages) by name or time, ties broken by id.
CREATE INDEX users_last_name_sort_idx ON users (lower(last_name), id);
CREATE INDEX users_first_name_sort_idx ON users (lower(first_name), id);
CREATE INDEX users_created_at_sort_idx ON users (created_at, id);

-- Searches are scoped to organizations: members of one organization, by role.
CREATE INDEX memberships_organization_role_idx ON memberships (organization_id, role, user_id);

-- What users did, as the service saw it or a client reported it. Written in
-- batches by the activity buffer; read newest first per user.
CREATE TABLE user_activity (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          uuid NOT NULL,
    organization_id  uuid,
    kind             text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    source           text NOT NULL CHECK (source IN ('client', 'service')),
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_activity_user_idx ON user_activity (user_id, occurred_at DESC, id DESC);
