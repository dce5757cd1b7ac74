#!/usr/bin/env bash
# HTTP benchmarks of the users domain (issue 4), the first scenario of the
# load harness (issue 8).
#
#   tests/load/users.sh            # 3 runs of 10 s per target, prints a table
#   RUNS=1 DURATION=5s tests/load/users.sh
#
# What it does, all on 127.0.0.1:
#   1. installs `wrk` (Debian) if missing; builds the release `boardroom`
#      and the `boardroom-load` bins (`hello`, `plain-search`);
#   2. drops and creates the database $LOAD_DB, starts the release
#      `boardroom` on it (migrations run at start), seeds 100,000 users in
#      100 organizations of 1,000 (one INSERT ... SELECT generate_series),
#      VACUUM ANALYZEs, mints a token for a `member` of organization 1;
#   3. starts `hello` (bare axum) and `plain-search` (the same search query
#      through plain axum + sqlx, same pool size) beside it;
#   4. per run, with wrk pinned to one core and the servers to the other:
#        hello          GET /                                 -c64
#        user (cached)  GET /v1/users/{id} (warmed first)     -c64
#        search         GET /v1/users?organizationId=..&role=member&isActive=true -c32
#        plain-search   the same query, same database          -c32
#      (the two search targets alternate order between runs);
#   5. prints a table (per run and medians) with the ratios, and the load
#      average before and after. It writes nothing into the repository; the
#      wrk outputs go to a temporary folder that is removed on exit
#      (KEEP_LOGS=1 keeps it, KEEP_DB=1 keeps the database).
#
# Knobs (environment): RUNS (3), DURATION (10s), WARMUP (3s), THREADS (wrk -t,
# 1), SERVER_CPUS (0), WRK_CPUS (1), SEARCH_QUEUE (64), SEARCH_QUEUE_TIMEOUT
# (10s), SEARCH_LIMIT (unset: the configured 4 in flight), PG_URL
# (postgres://postgres@127.0.0.1:5432), LOAD_DB (boardroom_load),
# BOARDROOM__DATABASE__MAX_CONNECTIONS (unset: the service default, 10; it is
# passed to plain-search too, so both pools are the same size).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/load"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_CPUS=${WRK_CPUS:-1}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
LOAD_DB=${LOAD_DB:-boardroom_load}
USERS=100000
ORGS=100
export BOARDROOM__AUTH__JWT_SECRET=${BOARDROOM__AUTH__JWT_SECRET:-load-harness-secret-0123456789}
export BOARDROOM__LOG__LEVEL=warn
# The search's own stack sheds what exceeds 4 in flight (services.users_search:
# no queue, sized by tests/load/faults.sh overload). This benchmark is a closed
# loop of 32 clients measuring the query and the layers against plain-search,
# so here the excess waits in the limit's queue instead of getting a 503.
export BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__MAX_QUEUE=${SEARCH_QUEUE:-64}
# SEARCH_LIMIT=N: another in-flight limit than config/default.toml's 4.
if [[ -n ${SEARCH_LIMIT:-} ]]; then
    export BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__MAX_CONCURRENT=$SEARCH_LIMIT
fi
export BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__QUEUE_TIMEOUT=${SEARCH_QUEUE_TIMEOUT:-10s}
export DATABASE_URL="$PG_URL/$LOAD_DB"

log() { printf '[users.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
WORK=$(mktemp -d -t boardroom-load.XXXXXX)
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: at most 10 s per process, then SIGKILL.
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_DB:-0}" != 1 ]]; then
        psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian)"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
for tool in curl psql taskset cargo; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if (( $(nproc) < 2 )); then
    log "fewer than 2 CPUs: not pinning"
    SERVER_PIN=()
    WRK_PIN=()
else
    # Arrays, not functions: a backgrounded simple command is exec'd, so `$!`
    # is the server's own pid (taskset execs it too) and killing it stops it.
    SERVER_PIN=(taskset -c "$SERVER_CPUS")
    WRK_PIN=(taskset -c "$WRK_CPUS")
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url pid name [curl args...]: bounded to 60 s
    local url=$1 pid=$2 name=$3; shift 3
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log: $(tail -n 5 "$WORK/$name.log")"
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    die "$name did not answer $url within 60 s"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- build ---------------------------------------------------------------
log "building release binaries"
(cd "$ROOT" && cargo build --release --locked -q -p boardroom -p boardroom-load --bins)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release"

# --- database and service ------------------------------------------------
log "fresh database $LOAD_DB"
psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null
psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $LOAD_DB" >/dev/null

SERVICE_PORT=$(free_port)
BOARDROOM__SERVER__ADDR="127.0.0.1:$SERVICE_PORT" "${SERVER_PIN[@]}" "$BIN/boardroom" serve >"$WORK/boardroom.log" 2>&1 &
PIDS+=($!); SERVICE_PID=$!
wait_http "http://127.0.0.1:$SERVICE_PORT/health/ready" "$SERVICE_PID" boardroom

log "seeding $USERS users in $ORGS organizations"
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -1 -f - >/dev/null <<SQL
INSERT INTO organizations (id, name, slug)
SELECT md5('load-org-' || o)::uuid, 'Load board ' || o, 'load-board-' || o
FROM generate_series(1, $ORGS) o;

WITH s AS (
    SELECT g,
           md5('load-user-' || g)::uuid AS id,
           md5('load-org-' || (1 + (g - 1) / ($USERS / $ORGS)))::uuid AS org
    FROM generate_series(1, $USERS) g),
u AS (
    INSERT INTO users (id, email, first_name, last_name, designation, is_active, created_at)
    SELECT id,
           'load-' || g || '@example.org',
           (ARRAY['Ada','Grace','Alan','Barbara','Edsger'])[1 + g % 5],
           (ARRAY['Lovelace','Hopper','Turing','Liskov','Dijkstra','lovelace'])[1 + g % 6] || g,
           (ARRAY['Chair','Director','Secretary',NULL])[1 + g % 4],
           g % 7 <> 0,
           now() - g * interval '1 second'
    FROM s RETURNING id)
INSERT INTO memberships (organization_id, user_id, role)
SELECT s.org, s.id, (ARRAY['admin','member','viewer','member'])[1 + s.g % 4] FROM s;
SQL
# The copies of the users' columns on their memberships (migration 0006) are
# written by triggers, which leaves a dead version of each membership: vacuum
# (outside the seeding transaction) so the tables are as a settled database's,
# index-only scans included, before measuring.
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "VACUUM (ANALYZE) organizations, users, memberships" >/dev/null
COUNT=$(psql "$DATABASE_URL" -qAtc "SELECT count(*) FROM users JOIN memberships ON user_id = id")
[[ "$COUNT" == "$USERS" ]] || die "seeded $COUNT users, expected $USERS"

ORG=$(psql "$DATABASE_URL" -qAtc "SELECT md5('load-org-1')::uuid")
VIEWER=$(psql "$DATABASE_URL" -qAtc \
    "SELECT user_id FROM memberships WHERE organization_id = '$ORG' AND role = 'member' ORDER BY user_id LIMIT 1")
TARGET=$(psql "$DATABASE_URL" -qAtc \
    "SELECT user_id FROM memberships WHERE organization_id = '$ORG' AND user_id <> '$VIEWER' ORDER BY user_id LIMIT 1")
TOKEN=$("$BIN/boardroom" token --user "$VIEWER" --ttl 2h)
QUERY="organizationId=$ORG&role=member&isActive=true"

# --- baselines -----------------------------------------------------------
HELLO_PORT=$(free_port)
"${SERVER_PIN[@]}" "$BIN/hello" "127.0.0.1:$HELLO_PORT" >"$WORK/hello.log" 2>&1 &
PIDS+=($!); wait_http "http://127.0.0.1:$HELLO_PORT/" "$!" hello

PLAIN_PORT=$(free_port)
"${SERVER_PIN[@]}" "$BIN/plain-search" "127.0.0.1:$PLAIN_PORT" >"$WORK/plain-search.log" 2>&1 &
PIDS+=($!); wait_http "http://127.0.0.1:$PLAIN_PORT/v1/users?$QUERY" "$!" plain-search -H "x-viewer-id: $VIEWER"

HELLO_URL="http://127.0.0.1:$HELLO_PORT/"
USER_URL="http://127.0.0.1:$SERVICE_PORT/v1/users/$TARGET"
SEARCH_URL="http://127.0.0.1:$SERVICE_PORT/v1/users?$QUERY"
PLAIN_URL="http://127.0.0.1:$PLAIN_PORT/v1/users?$QUERY"

# Same answer from both search paths (total and page), or the comparison is void.
service_total=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$SEARCH_URL" | jq -r '.data.pagination.total, (.data.users | length)' | paste -sd/)
plain_total=$(curl -fsS -H "x-viewer-id: $VIEWER" "$PLAIN_URL" | jq -r '.pagination.total, (.users | length)' | paste -sd/)
[[ "$service_total" == "$plain_total" ]] || die "service ($service_total) and plain-search ($plain_total) disagree"
log "search matches $service_total (total/page) users in both"
curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$USER_URL" || die "GET $USER_URL failed"

# --- measuring -----------------------------------------------------------
# bench NAME CONNECTIONS DURATION URL [ENV...]: one wrk run; prints its @@ line.
bench() {
    local name=$1 conns=$2 duration=$3 url=$4; shift 4
    local out="$WORK/$name.$(date +%s%N).txt"
    env "$@" timeout 120 "${WRK_PIN[@]}" wrk -t"$THREADS" -c"$conns" -d"$duration" --latency \
        -s "$HERE/wrk.lua" "$url" >"$out" 2>&1 || die "wrk $name failed: $(tail -n 5 "$out")"
    local line
    line=$(grep '^@@' "$out") || die "no summary from wrk $name: $(tail -n 5 "$out")"
    if [[ "$line" != *" non2xx=0 socket_errors=0"* ]]; then
        log "warning: $name had errors: $line"
    fi
    echo "$line"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

hello()  { bench hello 64 "$1" "$HELLO_URL"; }
user()   { bench user 64 "$1" "$USER_URL" WRK_TOKEN="$TOKEN"; }
search() { bench search 32 "$1" "$SEARCH_URL" WRK_TOKEN="$TOKEN"; }
plain()  { bench plain 32 "$1" "$PLAIN_URL" WRK_VIEWER="$VIEWER"; }

log "warming up ($WARMUP per target)"
for target in hello user search plain; do "$target" "$WARMUP" >/dev/null; done

ROWS=()
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS: load $(cut -d' ' -f1-3 /proc/loadavg)"
    h=$(hello "$DURATION"); u=$(user "$DURATION")
    if (( run % 2 )); then
        s=$(search "$DURATION"); p=$(plain "$DURATION")
    else
        p=$(plain "$DURATION"); s=$(search "$DURATION")
    fi
    ROWS+=("$run $(field "$h" rps) $(field "$u" rps) $(field "$u" p99) $(field "$s" rps) $(field "$s" p50) $(field "$s" p99) $(field "$p" rps) $(field "$p" p50) $(field "$p" p99) $(( $(field "$h" non2xx) + $(field "$u" non2xx) + $(field "$s" non2xx) + $(field "$p" non2xx) + $(field "$h" socket_errors) + $(field "$u" socket_errors) + $(field "$s" socket_errors) + $(field "$p" socket_errors) ))")
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- table ---------------------------------------------------------------
printf '%s\n' "${ROWS[@]}" | awk -v pool="${BOARDROOM__DATABASE__MAX_CONNECTIONS:-10 (default)}" \
    -v before="$LOAD_BEFORE" -v after="$LOAD_AFTER" -v dur="$DURATION" -v threads="$THREADS" '
function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    n++
    run[n] = $1; hr[n] = $2; ur[n] = $3; up99[n] = $4; sr[n] = $5; sp50[n] = $6; sp99[n] = $7
    pr[n] = $8; pp50[n] = $9; pp99[n] = $10; err[n] = $11
    ratio_u[n] = ($2 > 0) ? $3 / $2 : 0; ratio_s[n] = ($8 > 0) ? $5 / $8 : 0
}
END {
    printf "\nUsers HTTP benchmarks: wrk -t%s, %s per target; -c64 hello/user, -c32 search; pool %s\n", threads, dur, pool
    printf "load average before: %s, after: %s\n\n", before, after
    printf "| run | hello req/s | user (cached) req/s | user/hello | user p99 ms | search req/s | search p50 ms | search p99 ms | plain-search req/s | plain p50 ms | plain p99 ms | search/plain | errors |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= n; i++)
        printf "| %s | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | %d |\n", run[i], hr[i], ur[i], ratio_u[i], up99[i], sr[i], sp50[i], sp99[i], pr[i], pp50[i], pp99[i], ratio_s[i], err[i]
    for (i = 1; i <= n; i++) { a1[i] = hr[i]; a2[i] = ur[i]; a3[i] = ratio_u[i]; a4[i] = up99[i]; a5[i] = sr[i]; a6[i] = sp50[i]; a7[i] = sp99[i]; a8[i] = pr[i]; a9[i] = pp50[i]; a10[i] = pp99[i]; a11[i] = ratio_s[i] }
    mu = median(a3, n); ms = median(a11, n); mp99 = median(a7, n)
    printf "| median | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | |\n", median(a1, n), median(a2, n), mu, median(a4, n), median(a5, n), median(a6, n), mp99, median(a8, n), median(a9, n), median(a10, n), ms
    printf "\ntargets (medians): user/hello %.2f (>= 0.5: %s), search p99 %.2f ms (<= 20 ms: %s), search/plain %.2f (>= 0.9: %s)\n", \
        mu, (mu >= 0.5 ? "met" : "NOT met"), mp99, (mp99 <= 20 && median(a5, n) > 0 ? "met" : "NOT met"), ms, (ms >= 0.9 ? "met" : "NOT met")
}'
