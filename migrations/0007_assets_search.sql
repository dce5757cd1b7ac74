-- Search generations of assets (issue 5: cached searches).
--
-- Every committed change to an organization's assets that a search can see
-- (insert, metadata update, delete, a processing result) bumps that
-- organization's `generation` in the same transaction, by trigger. A search
-- reads the generations of the organizations it covers *before* it reads
-- the assets, and caches its result under them: a later search that reads
-- the same generations therefore sees the same assets, and any change
-- committed since makes the generation differ (a miss). This holds across
-- instances, since the counter is in the database.
--
-- Rules the cache relies on:
-- - a row's generation only grows (`+ 1` under the row lock), and rows are
--   never deleted (no foreign key: an organization's deletion cascades to
--   its assets, whose delete triggers bump it once more). An operator's
--   search over every organization is keyed by `sum(generation)`, which
--   therefore changes with any committed bump;
-- - `view_count` and `download_count` are left out of the UPDATE trigger's
--   columns on purpose: counting a view must not drop every cached search
--   of the organization. Counters in a cached result may lag by up to
--   `assets.search_cache_ttl`. A new column of `assets` that searches show
--   or filter on must be added to the column list below.

CREATE TABLE asset_search_generations (
    organization_id uuid PRIMARY KEY,
    generation      bigint NOT NULL DEFAULT 1 CHECK (generation > 0)
);

-- Bumps the organizations of the rows a statement inserted or deleted: one
-- upsert per organization and statement (a bulk INSERT of 50,000 rows must
-- not update one row 50,000 times), in id order so that two transactions
-- lock the rows in the same order.
CREATE FUNCTION assets_bump_search_generations() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- `changed_rows`: the inserted rows, or the deleted ones.
    INSERT INTO asset_search_generations AS g (organization_id)
        SELECT DISTINCT organization_id FROM changed_rows ORDER BY organization_id
        ON CONFLICT (organization_id) DO UPDATE SET generation = g.generation + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER assets_search_generation_insert
    AFTER INSERT ON assets REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assets_bump_search_generations();

CREATE TRIGGER assets_search_generation_delete
    AFTER DELETE ON assets REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION assets_bump_search_generations();

-- Bumps the organization of an updated row (both, should it move).
CREATE FUNCTION assets_bump_search_generation() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO asset_search_generations AS g (organization_id)
        SELECT DISTINCT o FROM unnest(ARRAY[OLD.organization_id, NEW.organization_id]) AS o ORDER BY o
        ON CONFLICT (organization_id) DO UPDATE SET generation = g.generation + 1;
    RETURN NULL;
END
$$;

-- Every column but the view and download counters (see above). Updates are
-- one row at a time in this service, hence a row trigger (a statement
-- trigger with transition tables cannot name columns).
CREATE TRIGGER assets_search_generation_update
    AFTER UPDATE OF id, organization_id, uploaded_by, title, description, category, tags,
        confidentiality_level, file_name, mime_type, size_bytes, sha256, version, storage_key,
        processing_status, scan_status, scan_result, scanned_at, thumbnail_key, page_count,
        extracted_text, processing_error, skip_steps, created_at, updated_at, processed_at
    ON assets
    FOR EACH ROW EXECUTE FUNCTION assets_bump_search_generation();

-- Organizations that already have assets start at generation 1.
INSERT INTO asset_search_generations (organization_id)
    SELECT DISTINCT organization_id FROM assets;
