//! `GET /v1/users`: filters, sorts, offset and keyset pages, and facets.
//!
//! The searched set is the tenant-visible one: users with a membership in an
//! organization the caller belongs to (every user for operators), optionally
//! narrowed to one `organizationId`. Then:
//!
//! - `q` matches the first name, last name, "first last" or email by
//!   case-insensitive prefix; `firstName`, `lastName`, `email` are
//!   case-insensitive prefixes of their own column; `designation` is a
//!   case-insensitive exact match; `role` (a membership in a visible
//!   organization with that role) and `isActive` are exact.
//! - Facets `role`, `designation` and `isActive` count distinct users over
//!   the filtered set, each facet ignoring its own filter (as a shop's facets
//!   do: picking `role=admin` still shows how many members there are).
//! - `total` counts the whole filtered set; a page is `offset`-based, or
//!   keyset-based with the opaque `cursor` from the previous page's
//!   `nextCursor` (stable under inserts, cheap for deep pages).
//!
//! The filtered, counted and sorted columns are read from the membership's
//! copy of the user's (migration `0006_users_search_membership.sql`, kept in
//! step by triggers in the same statement as every change), so the facets
//! and the total are one index-only pass over the visible memberships and a
//! one-organization page walks an index in sort order; `users` is joined
//! only for the rows of the page (and for the `lastActiveAt` sort, whose key
//! is not copied).
//!
//! SQL is assembled from fixed fragments with [`sqlx::QueryBuilder`]; every
//! value the client sent is a bind parameter, never text pasted into SQL.
//! Only the filters present appear in the statement, so each combination
//! gets its own prepared statement and plan (a catch-all `$1 IS NULL OR …`
//! statement would be planned once, generically, and miss the indexes).
//!
//! ```
//! use boardroom::users::search::{escape_like, Cursor, SortBy, SortOrder};
//! assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
//! let cursor = Cursor { sort_by: SortBy::LastName, order: SortOrder::Asc,
//!                       key: "lovelace".into(), id: uuid::Uuid::nil() };
//! assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
//! assert!(Cursor::decode("not a cursor").is_err());
//! ```

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::model::{User, UserMembership};
use crate::{
    auth::Role,
    error::ApiError,
    pagination::{DEFAULT_LIMIT, FacetCount, MAX_LIMIT, Pagination},
};

/// The longest text filter accepted.
const MAX_FILTER_CHARS: usize = 254;

/// `GET /v1/users` query parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Prefix of the first name, last name, "first last" or email (any case).
    #[param(max_length = 254)]
    pub q: Option<String>,
    /// Prefix of the first name (any case).
    #[param(max_length = 254)]
    pub first_name: Option<String>,
    /// Prefix of the last name (any case).
    #[param(max_length = 254)]
    pub last_name: Option<String>,
    /// Prefix of the email (any case).
    #[param(max_length = 254)]
    pub email: Option<String>,
    /// Only members of this organization (it must be one of the caller's).
    pub organization_id: Option<Uuid>,
    /// Only active (`true`) or deactivated (`false`) users.
    pub is_active: Option<bool>,
    /// Only users with this role in a visible organization.
    pub role: Option<Role>,
    /// Only users with this designation (any case).
    #[param(max_length = 254)]
    pub designation: Option<String>,
    /// Sort key (default `lastName`); ties are broken by id.
    pub sort_by: Option<SortBy>,
    /// `asc` (default) or `desc`.
    pub sort_order: Option<SortOrder>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (not with `cursor`).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// The previous page's `nextCursor` (not with `offset`; same sort).
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

/// What `GET /v1/users` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SortBy {
    /// Last name, case-insensitive.
    #[default]
    LastName,
    /// First name, case-insensitive.
    FirstName,
    /// Creation time.
    CreatedAt,
    /// Last activity (never active sorts as oldest).
    LastActiveAt,
}

impl SortBy {
    /// The SQL expression sorted on over `users u` (a fixed fragment), and its type.
    fn expression(self) -> (&'static str, &'static str) {
        match self {
            Self::LastName => ("lower(u.last_name)", "text"),
            Self::FirstName => ("lower(u.first_name)", "text"),
            Self::CreatedAt => ("u.created_at", "timestamptz"),
            Self::LastActiveAt => (
                "COALESCE(u.last_active_at, '-infinity'::timestamptz)",
                "timestamptz",
            ),
        }
    }

    /// The same key over `memberships m JOIN users u`: the membership's copy
    /// of it where there is one (migration 0006), so a one-organization page
    /// walks a `memberships` index in order. Equal to [`Self::expression`]
    /// for every row, so cursors are the same whichever produced them.
    fn membership_expression(self) -> &'static str {
        match self {
            Self::LastName => "m.user_last_name_lower",
            Self::FirstName => "m.user_first_name_lower",
            Self::CreatedAt => "m.user_created_at",
            Self::LastActiveAt => self.expression().0,
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// Where a keyset page starts: after the row with this sort key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort it belongs to.
    #[serde(rename = "s")]
    pub sort_by: SortBy,
    /// Its direction.
    #[serde(rename = "o")]
    pub order: SortOrder,
    /// The last row's sort key, as PostgreSQL printed it.
    #[serde(rename = "k")]
    pub key: String,
    /// The last row's id.
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a client's cursor; `400` naming `cursor` when it is not one of ours.
    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::invalid("cursor", "`cursor` is not a cursor this API issued");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.key.contains('\0') || cursor.key.len() > 1024 {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// Facet counts of a user search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserFacets {
    /// Users per role (ignoring the `role` filter).
    pub role: Vec<FacetCount>,
    /// Users per designation, `null` for none (ignoring the `designation` filter).
    pub designation: Vec<FacetCount>,
    /// Users per `isActive` value, `"true"`/`"false"` (ignoring the `isActive` filter).
    pub is_active: Vec<FacetCount>,
}

/// `GET /v1/users` data.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    /// The page.
    pub users: Vec<User>,
    /// Where it sits in the filtered set.
    pub pagination: Pagination,
    /// Counts per facet value over the filtered set.
    pub facets: UserFacets,
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct Search {
    /// `None` for operators: every user is visible.
    pub viewer: Option<Uuid>,
    organization_id: Option<Uuid>,
    q: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    role: Option<Role>,
    is_active: Option<bool>,
    designation: Option<String>,
    sort_by: SortBy,
    order: SortOrder,
    limit: i64,
    offset: i64,
    cursor: Option<Cursor>,
}

/// `LIKE` pattern text matching `value` literally (`\`, `%`, `_` escaped
/// with PostgreSQL's default escape character).
pub fn escape_like(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn filter_text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    if value.contains('\0') || value.chars().count() > MAX_FILTER_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be at most {MAX_FILTER_CHARS} characters, without NUL"),
        ));
    }
    let value = value.trim();
    Ok((!value.is_empty()).then(|| value.to_lowercase()))
}

fn prefix(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    Ok(filter_text(field, value)?.map(|v| format!("{}%", escape_like(&v))))
}

impl Search {
    /// Checks the parameters (`400` naming the one at fault).
    pub fn new(params: SearchParams, viewer: Option<Uuid>) -> Result<Self, ApiError> {
        let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("`limit` must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset = params.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::invalid("offset", "`offset` must be 0 or more"));
        }
        let sort_by = params.sort_by.unwrap_or_default();
        let order = params.sort_order.unwrap_or_default();
        let cursor = match params.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => {
                if params.offset.is_some() {
                    return Err(ApiError::invalid(
                        "cursor",
                        "give either `cursor` or `offset`, not both",
                    ));
                }
                let cursor = Cursor::decode(text)?;
                if cursor.sort_by != sort_by || cursor.order != order {
                    return Err(ApiError::invalid(
                        "cursor",
                        "`cursor` belongs to another sortBy/sortOrder; start again without it",
                    ));
                }
                Some(cursor)
            }
        };
        Ok(Self {
            viewer,
            organization_id: params.organization_id,
            q: prefix("q", params.q)?,
            first_name: prefix("firstName", params.first_name)?,
            last_name: prefix("lastName", params.last_name)?,
            email: prefix("email", params.email)?,
            role: params.role,
            is_active: params.is_active,
            designation: filter_text("designation", params.designation)?,
            sort_by,
            order,
            limit,
            offset,
            cursor,
        })
    }

    /// The organization filter, if any.
    pub fn organization_id(&self) -> Option<Uuid> {
        self.organization_id
    }

    /// The conditions on `memberships m` that no facet ignores: the
    /// searchable memberships (their user exists) in the visible
    /// organizations, and the text filters, all on the membership's copy of
    /// the user's columns (migration 0006), so no join to `users` is needed.
    fn push_scope(&self, sql: &mut QueryBuilder<Postgres>) {
        sql.push(" m.user_is_active IS NOT NULL");
        if let Some(viewer) = self.viewer {
            sql.push(" AND m.organization_id IN (SELECT organization_id FROM memberships WHERE user_id = ")
                .push_bind(viewer)
                .push(")");
        }
        if let Some(organization) = self.organization_id {
            sql.push(" AND m.organization_id = ")
                .push_bind(organization);
        }
        if let Some(q) = &self.q {
            sql.push(" AND (m.user_first_name_lower LIKE ")
                .push_bind(q.as_str())
                .push(" OR m.user_last_name_lower LIKE ")
                .push_bind(q.as_str())
                .push(" OR m.user_first_name_lower || ' ' || m.user_last_name_lower LIKE ")
                .push_bind(q.as_str())
                .push(" OR m.user_email_lower LIKE ")
                .push_bind(q.as_str())
                .push(")");
        }
        for (column, value) in [
            ("m.user_first_name_lower", &self.first_name),
            ("m.user_last_name_lower", &self.last_name),
            ("m.user_email_lower", &self.email),
        ] {
            if let Some(value) = value {
                sql.push(" AND ")
                    .push(column)
                    .push(" LIKE ")
                    .push_bind(value.as_str());
            }
        }
    }

    /// The faceted filters (`role`, `isActive`, `designation`) as a condition
    /// on `memberships m`: `true` when none is given.
    ///
    /// The role and the flag are written as constants: they come from a
    /// closed set (`Role::as_str`, `true`/`false`), never from the client's
    /// text, so at most a dozen statements differ by them. With them bound,
    /// PostgreSQL's generic plan for the page statement is estimated above
    /// the custom one and it re-planned the page on every execution (0.45 ms
    /// of a 0.75 ms statement; pgbench: 3,584 → 8,153 tps with constants,
    /// BENCHMARKS.md). The designation, client text, stays a parameter.
    fn push_faceted(&self, sql: &mut QueryBuilder<Postgres>) {
        sql.push("true");
        if let Some(role) = self.role {
            sql.push(" AND m.role = '").push(role.as_str()).push("'");
        }
        if let Some(active) = self.is_active {
            sql.push(if active {
                " AND m.user_is_active"
            } else {
                " AND NOT m.user_is_active"
            });
        }
        if self.designation.is_some() {
            sql.push(" AND ");
            self.push_designation_ok(sql);
        }
    }

    /// Whether the membership passes the `designation` filter (PostgreSQL's
    /// `lower()`, a parameter: client text): `true` without one.
    fn push_designation_ok(&self, sql: &mut QueryBuilder<Postgres>) {
        match &self.designation {
            Some(designation) => sql
                .push("(lower(m.user_designation) IS NOT DISTINCT FROM ")
                .push_bind(designation.as_str())
                .push(")"),
            None => sql.push("true"),
        };
    }

    /// `WITH base AS (…)`: one row per (user, visible membership) passing the
    /// filters that no facet ignores, with a flag per faceted filter.
    fn push_base(&self, sql: &mut QueryBuilder<Postgres>) {
        sql.push(
            "WITH base AS (SELECT m.user_id AS id, m.role, m.user_is_active AS is_active, \
             m.user_designation AS designation, ",
        );
        match self.role {
            Some(role) => sql.push("(m.role = ").push_bind(role.as_str()).push(")"),
            None => sql.push("true"),
        };
        sql.push(" AS role_ok, ");
        match self.is_active {
            Some(active) => sql.push("(m.user_is_active = ").push_bind(active).push(")"),
            None => sql.push("true"),
        };
        sql.push(" AS active_ok, ");
        self.push_designation_ok(sql);
        sql.push(" AS designation_ok FROM memberships m WHERE");
        self.push_scope(sql);
        sql.push(") ");
    }

    /// Facets and the total: from [`Self::cube`] within one organization,
    /// else in one `GROUPING SETS` pass over `base` (a user can have several
    /// memberships there, so each count is a distinct count).
    async fn facets(&self, pool: &PgPool) -> Result<(UserFacets, i64), ApiError> {
        if self.organization_id.is_some() {
            return self.cube(pool).await;
        }
        let mut sql = QueryBuilder::new("");
        self.push_base(&mut sql);
        // Within one organization a user has one membership, so `base` has
        // one row per user and a plain count (hash-aggregated) is exact;
        // across organizations a user can appear once per membership.
        let count = if self.organization_id.is_some() {
            "count(*)"
        } else {
            "count(DISTINCT id)"
        };
        sql.push(format!(
            "SELECT GROUPING(role, is_active, designation)::int AS set, role, is_active, designation, \
               {count} FILTER (WHERE active_ok AND designation_ok) AS by_role, \
               {count} FILTER (WHERE role_ok AND designation_ok) AS by_active, \
               {count} FILTER (WHERE role_ok AND active_ok) AS by_designation, \
               {count} FILTER (WHERE role_ok AND active_ok AND designation_ok) AS total \
             FROM base GROUP BY GROUPING SETS ((role), (is_active), (designation), ()) \
             ORDER BY 1, 2, 3, 4"
        ));
        type Row = (
            i32,
            Option<String>,
            Option<bool>,
            Option<String>,
            i64,
            i64,
            i64,
            i64,
        );
        let rows: Vec<Row> = sql.build_query_as().fetch_all(pool).await?;
        let mut facets = Facets::default();
        let mut total = 0;
        for (set, role, is_active, designation, by_role, by_active, by_designation, all) in rows {
            // GROUPING() sets a bit per column *not* grouped: role is the
            // high bit, designation the low one.
            match set {
                0b011 => facets.add_role(role.as_deref(), by_role),
                0b101 => facets.add_active(is_active, by_active),
                0b110 => facets.add_designation(designation.as_deref(), by_designation),
                0b111 => total = all,
                _ => {}
            }
        }
        Ok((facets.finish(), total))
    }

    /// Facets and the total within one organization, where each user has
    /// one membership: the organization's memberships passing the filters
    /// no facet ignores, counted per (role, isActive, designation) cell — a
    /// few dozen rows from one hash aggregate (half the database time of
    /// the `GROUPING SETS` pass, measured with pgbench) — then summed here,
    /// each facet over the cells that pass the other faceted filters.
    async fn cube(&self, pool: &PgPool) -> Result<(UserFacets, i64), ApiError> {
        let mut sql = QueryBuilder::new("SELECT m.role, m.user_is_active, m.user_designation, ");
        // Decided in SQL, as in the page's filter; it depends on the
        // designation only, so it adds no cells.
        self.push_designation_ok(&mut sql);
        sql.push(", count(*) FROM memberships m WHERE");
        self.push_scope(&mut sql);
        sql.push(" GROUP BY 1, 2, 3, 4");
        // (role, isActive, designation, passes the designation filter, count)
        type Cell = (String, Option<bool>, Option<String>, bool, i64);
        let cells: Vec<Cell> = sql.build_query_as().fetch_all(pool).await?;
        let mut facets = Facets::default();
        let mut total = 0;
        for (role, is_active, designation, designation_ok, count) in cells {
            let role_ok = self.role.is_none_or(|r| r.as_str() == role);
            let active_ok = self.is_active.is_none_or(|a| is_active == Some(a));
            if active_ok && designation_ok {
                facets.add_role(Some(&role), count);
            }
            if role_ok && designation_ok {
                facets.add_active(is_active, count);
            }
            if role_ok && active_ok {
                facets.add_designation(designation.as_deref(), count);
                if designation_ok {
                    total += count;
                }
            }
        }
        Ok((facets.finish(), total))
    }

    /// One page (plus one row, to tell whether more follow), with each row's
    /// sort key as text for the next cursor.
    ///
    /// Within one organization a user has one membership, so the page reads
    /// the organization's memberships in sort order (an index of migration
    /// 0006) and joins `users` only for the rows it returns. Across
    /// organizations a user can match several memberships: the matching
    /// users are deduplicated first, then sorted.
    async fn page(&self, pool: &PgPool) -> Result<Vec<(User, String)>, ApiError> {
        let (user_expression, kind) = self.sort_by.expression();
        let (direction, comparison) = match self.order {
            SortOrder::Asc => ("ASC", ">"),
            SortOrder::Desc => ("DESC", "<"),
        };
        let mut sql = QueryBuilder::new("");
        let (expression, id) = if self.organization_id.is_some() {
            let expression = self.sort_by.membership_expression();
            sql.push(
                "SELECT u.id, u.email, u.first_name, u.last_name, u.designation, u.is_active, \
                 u.created_at, u.updated_at, u.last_active_at, (",
            )
            .push(expression)
            .push(")::text AS sort_key FROM memberships m JOIN users u ON u.id = m.user_id WHERE");
            self.push_scope(&mut sql);
            sql.push(" AND ");
            self.push_faceted(&mut sql);
            (expression, "m.user_id")
        } else {
            sql.push("WITH matched AS (SELECT DISTINCT m.user_id AS id FROM memberships m WHERE");
            self.push_scope(&mut sql);
            sql.push(" AND ");
            self.push_faceted(&mut sql);
            sql.push(
                ") SELECT u.id, u.email, u.first_name, u.last_name, u.designation, u.is_active, \
                 u.created_at, u.updated_at, u.last_active_at, (",
            )
            .push(user_expression)
            .push(")::text AS sort_key FROM users u JOIN matched ON matched.id = u.id WHERE true");
            (user_expression, "u.id")
        };
        if let Some(cursor) = &self.cursor {
            sql.push(" AND (")
                .push(expression)
                .push(", ")
                .push(id)
                .push(") ")
                .push(comparison)
                .push(" (")
                .push_bind(cursor.key.as_str())
                .push("::")
                .push(kind)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        sql.push(" ORDER BY ")
            .push(expression)
            .push(" ")
            .push(direction)
            .push(", ")
            .push(id)
            .push(" ")
            .push(direction)
            // A validated integer, written out for the same reason as the
            // faceted constants (a bound LIMIT is estimated at 10 % of the
            // rows in a generic plan); the first page has no OFFSET at all.
            .push(" LIMIT ")
            .push(self.limit + 1);
        if self.cursor.is_none() && self.offset > 0 {
            sql.push(" OFFSET ").push_bind(self.offset);
        }
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: User,
            sort_key: String,
        }
        let rows: Vec<Row> = sql.build_query_as().fetch_all(pool).await?;
        Ok(rows.into_iter().map(|r| (r.user, r.sort_key)).collect())
    }

    /// Runs the search: the page, the total and the facets.
    pub async fn run(&self, pool: &PgPool) -> Result<UserList, ApiError> {
        let (page, facets) = tokio::try_join!(self.page(pool), self.facets(pool))?;
        let (facets, total) = facets;
        let has_more = page.len() as i64 > self.limit;
        let mut rows = page;
        rows.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
        let next_cursor = if has_more {
            rows.last().map(|(user, key)| {
                Cursor {
                    sort_by: self.sort_by,
                    order: self.order,
                    key: key.clone(),
                    id: user.id,
                }
                .encode()
            })
        } else {
            None
        };
        let mut users: Vec<User> = rows.into_iter().map(|(user, _)| user).collect();
        attach_memberships(pool, &mut users, self.viewer).await?;
        Ok(UserList {
            users,
            pagination: Pagination {
                total,
                limit: self.limit,
                offset: if self.cursor.is_some() {
                    0
                } else {
                    self.offset
                },
                has_more,
                next_cursor,
            },
            facets,
        })
    }
}

/// The three facets being filled: counts for the same value add up (the
/// cells of [`Search::cube`]; the `GROUPING SETS` rows have one per value),
/// zero counts are left out, each facet is sorted by count (descending),
/// then value.
#[derive(Default)]
struct Facets(UserFacets);

impl Facets {
    fn add_role(&mut self, role: Option<&str>, count: i64) {
        add(&mut self.0.role, role, count);
    }

    fn add_active(&mut self, is_active: Option<bool>, count: i64) {
        let value = is_active.map(|b| if b { "true" } else { "false" });
        add(&mut self.0.is_active, value, count);
    }

    fn add_designation(&mut self, designation: Option<&str>, count: i64) {
        add(&mut self.0.designation, designation, count);
    }

    fn finish(mut self) -> UserFacets {
        for facet in [
            &mut self.0.role,
            &mut self.0.is_active,
            &mut self.0.designation,
        ] {
            facet.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        }
        self.0
    }
}

/// Adds `count` to `value`'s entry of `facet` (a handful of values).
fn add(facet: &mut Vec<FacetCount>, value: Option<&str>, count: i64) {
    match facet.iter_mut().find(|f| f.value.as_deref() == value) {
        Some(entry) => entry.count += count,
        None if count > 0 => facet.push(FacetCount::new(value.map(str::to_owned), count)),
        None => {}
    }
}

/// Fills each user's memberships visible to `viewer` (all for operators), in
/// one query for the whole page.
async fn attach_memberships(
    pool: &PgPool,
    users: &mut [User],
    viewer: Option<Uuid>,
) -> Result<(), ApiError> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        user_id: Uuid,
        #[sqlx(flatten)]
        membership: UserMembership,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.user_id, t.organization_id, t.role FROM memberships t
         WHERE t.user_id = ANY($1)
           AND ($2::uuid IS NULL OR EXISTS (
                 SELECT 1 FROM memberships c
                 WHERE c.organization_id = t.organization_id AND c.user_id = $2))
         ORDER BY t.created_at, t.organization_id",
    )
    .bind(&ids)
    .bind(viewer)
    .fetch_all(pool)
    .await?;
    let mut by_user: std::collections::HashMap<Uuid, Vec<UserMembership>> =
        std::collections::HashMap::with_capacity(users.len());
    for row in rows {
        by_user.entry(row.user_id).or_default().push(row.membership);
    }
    for user in users {
        user.memberships = by_user.remove(&user.id).unwrap_or_default();
    }
    Ok(())
}
