-- Users search without joining `users`: the columns `GET /v1/users` filters,
-- counts and sorts on are copied onto each membership of the user, so that a
-- search scoped to organizations reads memberships alone (one index range per
-- organization) and joins `users` only for the rows of the page.
--
-- The copies are kept in step by triggers, in the same statement as the
-- change, so a search never sees a stale value:
--   - inserting a membership (or changing its `user_id`) copies the user's
--     values, or NULLs when the identity has no `users` row yet;
--   - inserting a user fills the memberships its identity already has;
--   - updating a user's name, email, designation or active flag rewrites the
--     copies (other updates, e.g. `last_active_at`, `updated_at`, skip it);
--   - deleting a user clears them (the repository deletes its memberships in
--     the same transaction anyway).
-- `user_is_active IS NULL` therefore means "no user row": such memberships
-- are not searchable, as with the inner join they replace.
-- `last_active_at` is not copied: the activity buffer updates it all the time
-- and only the `lastActiveAt` sort reads it (that sort joins `users`).

ALTER TABLE memberships
    ADD COLUMN user_first_name_lower  text,         -- lower(users.first_name)
    ADD COLUMN user_last_name_lower   text,         -- lower(users.last_name)
    ADD COLUMN user_email_lower       text,         -- lower(users.email)
    ADD COLUMN user_designation       text,         -- users.designation, as written
    ADD COLUMN user_is_active         boolean,      -- users.is_active; NULL: no user row
    ADD COLUMN user_created_at        timestamptz;  -- users.created_at (never updated)

UPDATE memberships m
SET user_first_name_lower = lower(u.first_name),
    user_last_name_lower = lower(u.last_name),
    user_email_lower = lower(u.email),
    user_designation = u.designation,
    user_is_active = u.is_active,
    user_created_at = u.created_at
FROM users u
WHERE u.id = m.user_id;

CREATE FUNCTION memberships_copy_user() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    u users%ROWTYPE;
BEGIN
    SELECT * INTO u FROM users WHERE id = NEW.user_id;
    IF FOUND THEN
        NEW.user_first_name_lower := lower(u.first_name);
        NEW.user_last_name_lower := lower(u.last_name);
        NEW.user_email_lower := lower(u.email);
        NEW.user_designation := u.designation;
        NEW.user_is_active := u.is_active;
        NEW.user_created_at := u.created_at;
    ELSE
        NEW.user_first_name_lower := NULL;
        NEW.user_last_name_lower := NULL;
        NEW.user_email_lower := NULL;
        NEW.user_designation := NULL;
        NEW.user_is_active := NULL;
        NEW.user_created_at := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER memberships_copy_user_on_insert
    BEFORE INSERT ON memberships
    FOR EACH ROW EXECUTE FUNCTION memberships_copy_user();

CREATE TRIGGER memberships_copy_user_on_move
    BEFORE UPDATE OF user_id ON memberships
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION memberships_copy_user();

CREATE FUNCTION users_copy_to_memberships() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE memberships
        SET user_first_name_lower = NULL,
            user_last_name_lower = NULL,
            user_email_lower = NULL,
            user_designation = NULL,
            user_is_active = NULL,
            user_created_at = NULL
        WHERE user_id = OLD.id;
        RETURN OLD;
    END IF;
    UPDATE memberships
    SET user_first_name_lower = lower(NEW.first_name),
        user_last_name_lower = lower(NEW.last_name),
        user_email_lower = lower(NEW.email),
        user_designation = NEW.designation,
        user_is_active = NEW.is_active,
        user_created_at = NEW.created_at
    WHERE user_id = NEW.id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_copy_to_memberships_on_insert
    AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION users_copy_to_memberships();

CREATE TRIGGER users_copy_to_memberships_on_update
    AFTER UPDATE ON users
    FOR EACH ROW WHEN (
        OLD.first_name IS DISTINCT FROM NEW.first_name
        OR OLD.last_name IS DISTINCT FROM NEW.last_name
        OR OLD.email IS DISTINCT FROM NEW.email
        OR OLD.designation IS DISTINCT FROM NEW.designation
        OR OLD.is_active IS DISTINCT FROM NEW.is_active
        OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION users_copy_to_memberships();

CREATE TRIGGER users_copy_to_memberships_on_delete
    AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_copy_to_memberships();

-- Facets and totals of one organization: an index-only scan of its range.
CREATE INDEX memberships_search_facets_idx ON memberships
    (organization_id, role, user_is_active, user_designation, user_id)
    WHERE user_is_active IS NOT NULL;

-- Pages of one organization in sort order (ties by id), with the role and
-- active flag in the index so the usual filters are checked without the heap.
CREATE INDEX memberships_search_last_name_idx ON memberships
    (organization_id, user_last_name_lower, user_id) INCLUDE (role, user_is_active)
    WHERE user_is_active IS NOT NULL;
CREATE INDEX memberships_search_first_name_idx ON memberships
    (organization_id, user_first_name_lower, user_id) INCLUDE (role, user_is_active)
    WHERE user_is_active IS NOT NULL;
CREATE INDEX memberships_search_created_at_idx ON memberships
    (organization_id, user_created_at, user_id) INCLUDE (role, user_is_active)
    WHERE user_is_active IS NOT NULL;

-- Prefix filters across organizations (operators searching everyone).
CREATE INDEX memberships_search_last_name_prefix_idx ON memberships
    (user_last_name_lower text_pattern_ops) WHERE user_is_active IS NOT NULL;
CREATE INDEX memberships_search_first_name_prefix_idx ON memberships
    (user_first_name_lower text_pattern_ops) WHERE user_is_active IS NOT NULL;
CREATE INDEX memberships_search_email_prefix_idx ON memberships
    (user_email_lower text_pattern_ops) WHERE user_is_active IS NOT NULL;
