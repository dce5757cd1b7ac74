-- Assets (board documents): metadata, processing state, extracted text for
-- search, the durable processing tasks, and download/view events.
--
-- The file itself lives in object storage under a key derived from the id
-- (`assets/<id>/v<version>`), never from the client's file name.

-- array_to_string is only STABLE (it depends on the element type's output
-- function); for text[] it cannot change, so a generated column may use it
-- through this wrapper.
CREATE FUNCTION assets_tags_text(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(tags, ' ');

CREATE TABLE assets (
    id                    uuid PRIMARY KEY,
    organization_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    uploaded_by           uuid NOT NULL,
    title                 text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description           text CHECK (length(description) <= 10000),
    category              text CHECK (length(category) BETWEEN 1 AND 100),
    tags                  text[] NOT NULL DEFAULT '{}',
    confidentiality_level text NOT NULL DEFAULT 'internal'
                          CHECK (confidentiality_level IN ('public', 'internal', 'confidential', 'restricted')),
    file_name             text NOT NULL CHECK (length(file_name) BETWEEN 1 AND 255),
    mime_type             text NOT NULL,
    size_bytes            bigint NOT NULL CHECK (size_bytes >= 0),
    sha256                text NOT NULL CHECK (length(sha256) = 64),
    -- Bumped when the stored bytes change; download tokens are bound to it.
    version               integer NOT NULL DEFAULT 1,
    storage_key           text NOT NULL,
    processing_status     text NOT NULL DEFAULT 'pending'
                          CHECK (processing_status IN ('pending', 'completed', 'failed', 'quarantined')),
    scan_status           text NOT NULL DEFAULT 'pending'
                          CHECK (scan_status IN ('pending', 'clean', 'infected', 'skipped', 'failed')),
    scan_result           text,
    scanned_at            timestamptz,
    thumbnail_key         text,
    page_count            integer,
    extracted_text        text,
    processing_error      text,
    -- Content steps not to run after the scan (bulk upload options).
    skip_steps            text[] NOT NULL DEFAULT '{}',
    view_count            bigint NOT NULL DEFAULT 0,
    download_count        bigint NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    processed_at          timestamptz,
    -- Full-text search with an explicit configuration (a generated column
    -- must name it to be immutable): title weighs most, then description
    -- and tags, then the extracted text (capped below tsvector's 1 MB).
    search                tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', coalesce(description, '')), 'B')
        || setweight(to_tsvector('english', assets_tags_text(tags)), 'B')
        || setweight(to_tsvector('english', left(coalesce(extracted_text, ''), 200000)), 'C')
    ) STORED
);

CREATE INDEX assets_search_idx ON assets USING gin (search);
CREATE INDEX assets_tags_idx ON assets USING gin (tags);
CREATE INDEX assets_org_created_idx ON assets (organization_id, created_at DESC, id DESC);
-- Duplicate detection is per organization, by content.
CREATE INDEX assets_org_sha256_idx ON assets (organization_id, sha256);

-- One row per processing step of an asset (scan, thumbnail, extract).
-- Claimed with FOR UPDATE SKIP LOCKED under a lease; a failed step waits
-- `run_at` (backoff) and is taken again; an expired lease (a crashed worker)
-- is taken by the next claim.
CREATE TABLE asset_tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset_id      uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    step          text NOT NULL CHECK (step IN ('scan', 'thumbnail', 'extract')),
    state         text NOT NULL DEFAULT 'available'
                  CHECK (state IN ('available', 'running', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (asset_id, step)
);

CREATE INDEX asset_tasks_claimable_idx ON asset_tasks (run_at, id) WHERE state IN ('available', 'running');

-- Who viewed or downloaded what, and when.
CREATE TABLE asset_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset_id         uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL,
    user_id          uuid,
    kind             text NOT NULL CHECK (kind IN ('view', 'download')),
    occurred_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX asset_events_org_idx ON asset_events (organization_id, kind, occurred_at);
CREATE INDEX asset_events_asset_idx ON asset_events (asset_id, occurred_at DESC);
