# Shared shell of the load harness (sourced, not run): logging, process
# bookkeeping, tools, the release build, the seeded database, starting the
# service. `tests/load/faults.sh` uses it; see that script for the scenarios.
#
# The sourcing script sets LIB_NAME (for log lines) first. Every process
# started through `track` is stopped by its pid on exit (SIGTERM, then
# SIGKILL after 10 s); the work folder is removed unless KEEP_LOGS=1, the
# database dropped unless KEEP_DB=1.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/load"
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
LOAD_DB=${LOAD_DB:-boardroom_faults}
USERS=${USERS:-100000}
ORGS=${ORGS:-100}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
# PG_NICE=N / PG_CPUS=LIST run PostgreSQL's backends at nice N / on those
# CPUs for the run (see pg_nice).
PG_NICE=${PG_NICE:-}
PG_CPUS=${PG_CPUS:-}
PG_NICE_RESTORE=()
PG_CPUS_RESTORE=()
export BOARDROOM__AUTH__JWT_SECRET=${BOARDROOM__AUTH__JWT_SECRET:-load-harness-secret-0123456789}
export DB_DIRECT_URL="$PG_URL/$LOAD_DB"

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${LIB_NAME:-load}" -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
WORK=$(mktemp -d -t boardroom-faults.XXXXXX)

# track PID: stop it on exit.
track() { PIDS+=("$1"); }

# stop_pid PID [SIGNAL]: signal one process, wait at most 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 sig=${2:-TERM}
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

lib_cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if (( ${#PG_CPUS_RESTORE[@]} )); then
        taskset -p -c "${PG_CPUS_RESTORE[1]}" "${PG_CPUS_RESTORE[0]}" >/dev/null 2>&1 || true
        log "postmaster ${PG_CPUS_RESTORE[0]} back on CPUs ${PG_CPUS_RESTORE[1]}"
    fi
    if (( ${#PG_NICE_RESTORE[@]} )); then
        renice -n "${PG_NICE_RESTORE[1]}" -p "${PG_NICE_RESTORE[0]}" >/dev/null 2>&1 || true
        log "postmaster ${PG_NICE_RESTORE[0]} back at nice ${PG_NICE_RESTORE[1]}"
    fi
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
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

# ensure_tools: wrk from Debian if missing; the rest must be there.
ensure_tools() {
    if ! command -v wrk >/dev/null; then
        log "installing wrk (Debian)"
        local sudo=
        [[ $(id -u) == 0 ]] || sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
    fi
    for tool in curl jq psql python3 taskset cargo; do
        command -v "$tool" >/dev/null || die "$tool is required"
    done
    if (( $(nproc) < 2 )); then
        log "fewer than 2 CPUs: not pinning"
        SERVER_PIN=()
        LOAD_PIN=()
    else
        # Arrays, not functions: a backgrounded simple command is exec'd, so
        # `$!` is the process's own pid (taskset execs it too).
        SERVER_PIN=(taskset -c "$SERVER_CPUS")
        LOAD_PIN=(taskset -c "$LOAD_CPUS")
    fi
}

# pg_nice: with PG_NICE and/or PG_CPUS set, renices and/or pins
# PostgreSQL's postmaster, so the backends it forks from now on (every
# connection the service opens after this) run at that priority / on those
# CPUs; both restored on exit. On a 2-vCPU box where the database shares the
# cores with the service and the load generator, this stands in for a
# database on its own host: the service's and the client's wake-ups are not
# queued behind query execution. Needs the rights to read the data
# directory's postmaster.pid, to renice and to set affinity (root).
pg_nice() {
    [[ -n $PG_NICE || -n $PG_CPUS ]] || return 0
    local dir pid old
    dir=$(psql "$PG_URL/postgres" -qAtc 'SHOW data_directory') || die "PG_NICE/PG_CPUS: cannot ask PostgreSQL for its data directory"
    pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null) || die "PG_NICE/PG_CPUS: cannot read $dir/postmaster.pid"
    if [[ -n $PG_NICE ]]; then
        old=$(ps -o ni= -p "$pid" | tr -d ' ')
        renice -n "$PG_NICE" -p "$pid" >/dev/null || die "PG_NICE: renice $pid failed"
        PG_NICE_RESTORE=("$pid" "$old")
        log "postmaster $pid at nice $PG_NICE (was $old) for this run"
    fi
    if [[ -n $PG_CPUS ]]; then
        old=$(taskset -p -c "$pid" | sed 's/.*: //')
        taskset -p -c "$PG_CPUS" "$pid" >/dev/null || die "PG_CPUS: taskset $pid failed"
        PG_CPUS_RESTORE=("$pid" "$old")
        log "postmaster $pid on CPUs $PG_CPUS (was $old) for this run"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL PID NAME [curl args...]: until URL answers 2xx; bounded to 60 s.
wait_http() {
    local url=$1 pid=$2 name=$3; shift 3
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log: $(tail -n 5 "$WORK/$name.log")"
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    die "$name did not answer $url within 60 s"
}

# build_release: the release `boardroom` and the `boardroom-load` bins; sets
# BIN. SKIP_BUILD=1 uses the binaries already in target/release as they are.
build_release() {
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
    if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
        log "SKIP_BUILD=1: using $BIN as built"
        return
    fi
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked -q -p boardroom -p boardroom-load --bins)
}

# seed_database: a fresh $LOAD_DB, migrated, with $USERS users in $ORGS
# organizations (the dataset of tests/load/users.sh); sets ORG (organization
# 1), VIEWER (a member of it), ADMIN (an admin of it) and PROFILES (20 other
# user ids of it, space-separated).
seed_database() {
    log "fresh database $LOAD_DB"
    psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null
    psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $LOAD_DB" >/dev/null
    DATABASE_URL="$DB_DIRECT_URL" BOARDROOM__LOG__LEVEL=warn timeout 120 "$BIN/boardroom" migrate \
        >"$WORK/migrate.log" 2>&1 || die "migrate failed: $(tail -n 5 "$WORK/migrate.log")"
    log "seeding $USERS users in $ORGS organizations"
    psql "$DB_DIRECT_URL" -v ON_ERROR_STOP=1 -q -1 -f - >/dev/null <<SQL
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

ANALYZE organizations;
ANALYZE users;
ANALYZE memberships;
SQL
    local count
    count=$(psql "$DB_DIRECT_URL" -qAtc "SELECT count(*) FROM users JOIN memberships ON user_id = id")
    [[ "$count" == "$USERS" ]] || die "seeded $count users, expected $USERS"
    ORG=$(psql "$DB_DIRECT_URL" -qAtc "SELECT md5('load-org-1')::uuid")
    VIEWER=$(psql "$DB_DIRECT_URL" -qAtc \
        "SELECT user_id FROM memberships WHERE organization_id = '$ORG' AND role = 'member' ORDER BY user_id LIMIT 1")
    ADMIN=$(psql "$DB_DIRECT_URL" -qAtc \
        "SELECT user_id FROM memberships WHERE organization_id = '$ORG' AND role = 'admin' ORDER BY user_id LIMIT 1")
    PROFILES=$(psql "$DB_DIRECT_URL" -qAtc \
        "SELECT user_id FROM memberships WHERE organization_id = '$ORG' AND user_id NOT IN ('$VIEWER', '$ADMIN') ORDER BY user_id LIMIT 20" | paste -sd' ')
}

# mint_tokens: READ_TOKEN (VIEWER), WRITE_TOKEN (ADMIN), OPERATOR_TOKEN.
mint_tokens() {
    READ_TOKEN=$("$BIN/boardroom" token --user "$VIEWER" --ttl 4h)
    WRITE_TOKEN=$("$BIN/boardroom" token --user "$ADMIN" --ttl 4h)
    OPERATOR_TOKEN=$("$BIN/boardroom" token --user "$(python3 -c 'import uuid; print(uuid.uuid4())')" --service --ttl 4h)
}

# start_service NAME DB_URL [ENV=VALUE...]: the release service on a free
# port, pinned to SERVER_CPUS, logging to $WORK/NAME.log; sets SERVICE_PID,
# SERVICE_URL. Extra arguments are environment overrides (config keys).
start_service() {
    local name=$1 db_url=$2; shift 2
    local port
    port=$(free_port)
    env BOARDROOM__SERVER__ADDR="127.0.0.1:$port" DATABASE_URL="$db_url" \
        BOARDROOM__LOG__LEVEL="${SERVICE_LOG_LEVEL:-warn}" "$@" \
        "${SERVER_PIN[@]}" "$BIN/boardroom" serve >"$WORK/$name.log" 2>&1 &
    SERVICE_PID=$!
    track "$SERVICE_PID"
    SERVICE_URL="http://127.0.0.1:$port"
    wait_http "$SERVICE_URL/health/live" "$SERVICE_PID" "$name"
}

# rss_kb PID: resident set size in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# fd_count PID: open file descriptors.
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# admin_stats: /admin/stats of SERVICE_URL (operator token), or {} on failure.
admin_stats() {
    curl -fsS --max-time 2 -H "Authorization: Bearer $OPERATOR_TOKEN" "$SERVICE_URL/admin/stats" 2>/dev/null || echo '{}'
}

# fault_load ARGS...: runs fault-load pinned to LOAD_CPUS against SERVICE_URL
# with READ_TOKEN; prints its @@ line. Bounded by `timeout`.
fault_load() {
    local out="$WORK/fault-load.$(date +%s%N).txt"
    timeout "${FAULT_LOAD_TIMEOUT:-1200}" "${LOAD_PIN[@]}" "$BIN/fault-load" \
        --base "$SERVICE_URL" --token "$READ_TOKEN" "$@" >"$out" 2>&1 \
        || die "fault-load failed: $(tail -n 5 "$out")"
    grep '^@@' "$out" || die "no summary from fault-load: $(tail -n 5 "$out")"
}

# field LINE NAME: the value of NAME=value in a @@ line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
