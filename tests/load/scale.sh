#!/usr/bin/env bash
# Scale-out benchmark (issue 9): cached read throughput through nginx with
# one Boardroom instance behind it vs two, in one run.
#
#   tests/load/scale.sh                  # 3 runs of 10 s per setup, prints a table
#   RUNS=1 DURATION=5s tests/load/scale.sh
#
# All on 127.0.0.1: installs `wrk` and `nginx` (Debian) when missing, builds
# the release `boardroom`, creates the database $LOAD_DB with 1,000 users in
# one organization, starts a private `redis-server` (free port, temporary
# folder), two release instances A and B on that database and Redis
# (`cache.redis_url`), and two nginx servers: one proxying to A only, one to
# A and B (`least_conn`, keep-alive, as config/nginx/boardroom.conf). wrk
# then reads `GET /v1/users/{id}` for random ids of the 1,000 (warmed first,
# so every answer is a cache hit) through each nginx, alternating the order
# between runs. Everything shares the machine's cores: on a 2-core box the
# second instance competes with the first, nginx and wrk for the same CPUs.
# Stops every process it started (by pid) and removes its temporary folder.
#
# Knobs: RUNS (3), DURATION (10s), WARMUP (3s), CONNECTIONS (64), THREADS (1),
# PG_URL (postgres://postgres@127.0.0.1:5432), LOAD_DB (boardroom_scale_load).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
LOAD_DB=${LOAD_DB:-boardroom_scale_load}
USERS=1000
export BOARDROOM__AUTH__JWT_SECRET=${BOARDROOM__AUTH__JWT_SECRET:-load-harness-secret-0123456789}
export BOARDROOM__LOG__LEVEL=warn
export BOARDROOM__JOBS__WORKERS=0
export DATABASE_URL="$PG_URL/$LOAD_DB"

log() { printf '[scale.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
WORK=$(mktemp -d -t boardroom-scale.XXXXXX)
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ "${KEEP_LOGS:-0}" == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
if (( ${#missing[@]} )); then
    log "installing ${missing[*]} (Debian)"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in curl psql cargo redis-server python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # url pid name [curl args...]: bounded to 60 s
    local url=$1 pid=$2 name=$3; shift 3
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -n 5 "$WORK/$name.log")"
        if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    die "$name did not answer $url within 60 s"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "building the release binary"
(cd "$ROOT" && cargo build --release --locked -q -p boardroom --bin boardroom)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/boardroom"

log "fresh database $LOAD_DB, private redis-server"
psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null
psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $LOAD_DB" >/dev/null
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
export BOARDROOM__CACHE__REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

PORT_A=$(free_port)
BOARDROOM__SERVER__ADDR="127.0.0.1:$PORT_A" "$BIN" serve >"$WORK/a.log" 2>&1 &
PIDS+=($!); wait_http "http://127.0.0.1:$PORT_A/health/ready" "$!" a
PORT_B=$(free_port)
BOARDROOM__SERVER__ADDR="127.0.0.1:$PORT_B" "$BIN" serve >"$WORK/b.log" 2>&1 &
PIDS+=($!); wait_http "http://127.0.0.1:$PORT_B/health/ready" "$!" b

log "seeding $USERS users"
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -1 >/dev/null <<SQL
INSERT INTO organizations (id, name, slug) VALUES (md5('scale-org')::uuid, 'Scale board', 'scale-board');
WITH u AS (
    INSERT INTO users (id, email, first_name, last_name)
    SELECT md5('scale-user-' || g)::uuid, 'scale-' || g || '@example.org', 'Ada', 'Lovelace' || g
    FROM generate_series(1, $USERS) g RETURNING id)
INSERT INTO memberships (organization_id, user_id, role)
SELECT md5('scale-org')::uuid, id, 'member' FROM u;
ANALYZE users; ANALYZE memberships;
SQL
VIEWER=$(psql "$DATABASE_URL" -qAtc "SELECT md5('scale-user-1')::uuid")
TOKEN=$("$BIN" token --user "$VIEWER" --ttl 2h)

# wrk: a random one of the ids per request.
{
    printf 'local ids = {'
    psql "$DATABASE_URL" -qAtc "SELECT user_id FROM memberships" | sed 's/.*/"&",/' | tr -d '\n'
    printf '}\n'
    cat <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/users/" .. ids[math.random(#ids)])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("@@ rps=%.1f p50=%.3f p99=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status + e.connect + e.read + e.write + e.timeout))
end
LUA
} >"$WORK/ids.lua"

nginx_conf() { # name port upstream-servers...
    local name=$1 port=$2; shift 2
    mkdir -p "$WORK/nginx-$name"
    {
        echo "worker_processes 1; pid $WORK/nginx-$name/nginx.pid; error_log $WORK/nginx-$name/error.log warn;"
        echo "events { worker_connections 4096; }"
        echo "http { access_log off; client_body_temp_path $WORK/nginx-$name; proxy_temp_path $WORK/nginx-$name;"
        echo "  fastcgi_temp_path $WORK/nginx-$name; uwsgi_temp_path $WORK/nginx-$name; scgi_temp_path $WORK/nginx-$name;"
        echo "  upstream boardroom { least_conn; keepalive 64;"
        for server in "$@"; do echo "    server $server;"; done
        echo "  }"
        echo "  server { listen 127.0.0.1:$port;"
        echo "    location / { proxy_pass http://boardroom; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
        echo "  }"
        echo "}"
    } >"$WORK/nginx-$name/nginx.conf"
}
ONE_PORT=$(free_port); TWO_PORT=$(free_port)
nginx_conf one "$ONE_PORT" "127.0.0.1:$PORT_A"
nginx_conf two "$TWO_PORT" "127.0.0.1:$PORT_A" "127.0.0.1:$PORT_B"
for name in one two; do
    "$NGINX" -p "$WORK/nginx-$name" -c "$WORK/nginx-$name/nginx.conf" -g 'daemon off;' >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
done
wait_http "http://127.0.0.1:$ONE_PORT/health/live" "${PIDS[-2]}" one
wait_http "http://127.0.0.1:$TWO_PORT/health/live" "${PIDS[-1]}" two

bench() { # port duration: prints the @@ line
    local out="$WORK/wrk.$(date +%s%N).txt"
    timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency -s "$WORK/ids.lua" \
        "http://127.0.0.1:$1" >"$out" 2>&1 || die "wrk failed: $(tail -n 5 "$out")"
    grep '^@@' "$out" || die "no summary from wrk: $(tail -n 5 "$out")"
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

log "warming up both setups ($WARMUP each: every id cached in both instances)"
bench "$ONE_PORT" "$WARMUP" >/dev/null
bench "$TWO_PORT" "$WARMUP" >/dev/null

ROWS=()
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS: load $(cut -d' ' -f1-3 /proc/loadavg)"
    if (( run % 2 )); then
        one=$(bench "$ONE_PORT" "$DURATION"); two=$(bench "$TWO_PORT" "$DURATION")
    else
        two=$(bench "$TWO_PORT" "$DURATION"); one=$(bench "$ONE_PORT" "$DURATION")
    fi
    ROWS+=("$run $(field "$one" rps) $(field "$one" p50) $(field "$one" p99) $(field "$two" rps) $(field "$two" p50) $(field "$two" p99) $(( $(field "$one" errors) + $(field "$two" errors) ))")
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

printf '%s\n' "${ROWS[@]}" | awk -v before="$LOAD_BEFORE" -v after="$LOAD_AFTER" -v dur="$DURATION" \
    -v conns="$CONNECTIONS" -v cpus="$(nproc)" '
function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ n++; r[n] = $1; o[n] = $2; o50[n] = $3; o99[n] = $4; t[n] = $5; t50[n] = $6; t99[n] = $7; e[n] = $8; q[n] = ($2 > 0) ? $5 / $2 : 0 }
END {
    printf "\nCached GET /v1/users/{id} (random of 1,000) through nginx: wrk -c%s, %s per setup, %s CPUs\n", conns, dur, cpus
    printf "load average before: %s, after: %s\n\n", before, after
    printf "| run | 1 instance req/s | p50 ms | p99 ms | 2 instances req/s | p50 ms | p99 ms | 2/1 | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= n; i++) printf "| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | %d |\n", r[i], o[i], o50[i], o99[i], t[i], t50[i], t99[i], q[i], e[i]
    for (i = 1; i <= n; i++) { a1[i] = o[i]; a2[i] = o50[i]; a3[i] = o99[i]; a4[i] = t[i]; a5[i] = t50[i]; a6[i] = t99[i]; a7[i] = q[i] }
    printf "| median | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | |\n", median(a1, n), median(a2, n), median(a3, n), median(a4, n), median(a5, n), median(a6, n), median(a7, n)
}'
