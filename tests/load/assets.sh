#!/usr/bin/env bash
# Benchmarks of the assets domain (issue 5), against the release binary:
#
#   tests/load/assets.sh             # 3 runs of each, prints the figures
#   RUNS=1 SEARCH_ASSETS=5000 tests/load/assets.sh
#   ONLY=search tests/load/assets.sh # only part 3 (the search)
#
#   1. upload memory and throughput: a 200 MiB text file POSTed with curl
#      (multipart, streamed from the page cache); the server's peak RSS
#      growth (VmHWM after `clear_refs 5`, minus VmRSS before) and MB/s,
#      against `dd` copying the same page-cached file into the same storage
#      folder (same bytes, same disk, same run, no fsync on either side),
#      once the upload's processing has finished;
#   2. download throughput of a 100 MiB file already in the page cache:
#      GET /v1/files/{token} against nginx serving the same stored object
#      (curl -o /dev/null, best of 3 per run);
#   3. search: $SEARCH_ASSETS (50,000) assets with extracted text seeded
#      by SQL into one organization (ANALYZEd), then
#      `wrk -c32 -d$DURATION --latency` on GET /v1/assets?query=… as an
#      admin of it; p50/p99 from wrk. Twice: "cached" against the server
#      (search cache on, the default: after the first miss every request
#      is a hit), then "uncached" against a second server on the same
#      database started with BOARDROOM__ASSETS__SEARCH_CACHE_ENTRIES=0
#      (every request runs the search SQL).
#
# Needs PostgreSQL on $PG_URL; installs wrk and nginx (Debian) if missing.
# Everything runs on 127.0.0.1 and stops on exit; it writes nothing into
# the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${RUNS:-3}
ONLY=${ONLY:-all} # all | search
DURATION=${DURATION:-10s}
SEARCH_ASSETS=${SEARCH_ASSETS:-50000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
LOAD_DB=${LOAD_DB:-boardroom_assets_load}
BIN=${BIN:-$ROOT/target/release/boardroom}
export BOARDROOM__AUTH__JWT_SECRET=load-harness-secret-0123456789
export BOARDROOM__LOG__LEVEL=warn
export DATABASE_URL="$PG_URL/$LOAD_DB"
export BOARDROOM__ASSETS__MAX_FILE_SIZE=256MiB
export BOARDROOM__SERVER__REQUEST_TIMEOUT=300s

log() { printf '[assets.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
PIDS=()
WORK=$(mktemp -d "$ROOT/target/assets-load.XXXXXX") # same disk as the storage
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --locked -p boardroom)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
export BOARDROOM__SERVER__ADDR=127.0.0.1:$PORT
export BOARDROOM__STORAGE__PATH=$WORK/storage
psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $LOAD_DB WITH (FORCE)" >/dev/null
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 300); do curl -fs -o /dev/null "$BASE/health/ready" && break; sleep 0.1; done
OWNER=$(python3 -c 'import uuid; print(uuid.uuid4())')
TOKEN=$("$BIN" token --user "$OWNER")
ORG=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"Bench","slug":"bench-assets"}' "$BASE/v1/organizations" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
log "server $SERVER on $BASE; organization $ORG; load: $(cut -d' ' -f1-3 /proc/loadavg)"

kib() { awk -v f="$1" '$1 == f {print $2}' "/proc/$SERVER/status"; }
# wait_processed ID: until the asset's pipeline has finished (at most 60 s).
wait_processed() {
    local status
    for _ in $(seq 1 600); do
        status=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE/v1/assets/$1" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["processingStatus"])')
        [[ $status == pending || $status == processing ]] || return 0
        sleep 0.1
    done
    log "warning: asset $1 still $status after 60 s"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if [[ $ONLY != search ]]; then
# --- 1. upload: RSS growth and MB/s vs dd -------------------------------------
{ yes "board minutes, resolution carried unanimously, action items follow" || true; } | head -c 209715200 >"$WORK/body.txt"
for run in $(seq 1 "$RUNS"); do
    # A different first line each run, so no upload is a duplicate.
    { echo "run $run $RANDOM"; cat "$WORK/body.txt" || true; } | head -c 209715200 >"$WORK/up.txt"
    cat "$WORK/up.txt" >/dev/null # into the page cache
    echo 5 >"/proc/$SERVER/clear_refs"
    before=$(kib VmRSS:)
    sync # each timed write starts with no dirty pages of the last one
    t0=$(date +%s.%N)
    code=$(curl -s -o "$WORK/up.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        -F "organizationId=$ORG" -F "file=@$WORK/up.txt;filename=minutes$run.txt" "$BASE/v1/assets")
    elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
    peak=$(kib VmHWM:)
    [[ $code == 201 ]] || { cat "$WORK/up.json"; exit 1; }
    # The pipeline (scan, extraction) of this upload must not run during
    # dd or the next upload: wait for it (bounded) before going on.
    wait_processed "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["id"])' "$WORK/up.json")"
    sync
    t1=$(date +%s.%N)
    # dd writes the same bytes (read from the same page-cached file) into
    # the same folder, 1 MiB at a time.
    dd if="$WORK/up.txt" of="$WORK/storage/dd.bin" bs=1M status=none
    t2=$(date +%s.%N)
    rm -f "$WORK/storage/dd.bin"
    awk -v b="$before" -v p="$peak" -v u="$elapsed" -v d="$(echo "$t2 - $t1" | bc)" -v r="$run" \
        'BEGIN {printf "upload run %d: RSS %d -> peak %d KiB (growth %.1f MiB); upload %.0f MB/s; dd %.0f MB/s; ratio %.2f\n", r, b, p, (p-b)/1024, 209.7152/u, 209.7152/d, d/u}' |
        tee -a "$WORK/upload.txt"
done
echo "upload median ratio: $(sed -n 's/.*ratio \([0-9.]*\)$/\1/p' "$WORK/upload.txt" | median); median RSS growth MiB: $(sed -n 's/.*growth \([0-9.]*\) MiB.*/\1/p' "$WORK/upload.txt" | median)"

# --- 2. download vs nginx ------------------------------------------------------
head -c 104857600 "$WORK/body.txt" >"$WORK/down.txt"
ID=$(curl -fsS -H "Authorization: Bearer $TOKEN" -F "organizationId=$ORG" -F "file=@$WORK/down.txt;filename=down.txt" "$BASE/v1/assets" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
URL=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"expiresIn":3600}' \
    "$BASE/v1/assets/$ID/download-url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["url"])')
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
user root; daemon off; worker_processes 1; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$NGINX_PORT; root $WORK/storage; } }
CONF
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=("$!")
sleep 0.5
get() { curl -s -o /dev/null -w '%{speed_download}\n' "$1"; }
get "$BASE$URL" >/dev/null; get "http://127.0.0.1:$NGINX_PORT/assets/$ID/v1" >/dev/null # warm
for run in $(seq 1 "$RUNS"); do
    ours=$(for _ in 1 2 3; do get "$BASE$URL"; done | sort -n | tail -1)
    theirs=$(for _ in 1 2 3; do get "http://127.0.0.1:$NGINX_PORT/assets/$ID/v1"; done | sort -n | tail -1)
    awk -v o="$ours" -v t="$theirs" -v r="$run" 'BEGIN {printf "download run %d: boardroom %.0f MB/s; nginx %.0f MB/s; ratio %.2f\n", r, o/1e6, t/1e6, o/t}' | tee -a "$WORK/download.txt"
done
echo "download median ratio: $(sed -n 's/.*ratio \([0-9.]*\)$/\1/p' "$WORK/download.txt" | median)"
fi

# --- 3. search over $SEARCH_ASSETS assets ------------------------------------------
psql "$DATABASE_URL" -qAt -v ON_ERROR_STOP=1 <<SQL
INSERT INTO assets (id, organization_id, uploaded_by, title, description, category, tags, file_name,
    mime_type, size_bytes, sha256, storage_key, scan_status, processing_status, extracted_text)
SELECT gen_random_uuid(), '$ORG', '$OWNER',
    'Board pack ' || g, 'Quarterly papers number ' || g,
    (ARRAY['finance','governance','audit','legal'])[1 + g % 4],
    ARRAY[(ARRAY['q1','q2','q3','q4'])[1 + g % 4]],
    'pack' || g || '.pdf', 'application/pdf', 100000 + g, md5(g::text) || md5(g::text), 'assets/none',
    'clean', 'completed',
    'The committee reviewed ' || (ARRAY['budget','treasury','remuneration','risk','strategy'])[1 + g % 5]
      || ' matters in meeting ' || g || '. ' || repeat('Minutes record decisions and actions of the board. ', 20)
FROM generate_series(1, $SEARCH_ASSETS) g;
ANALYZE assets;
SQL
# The same search against a second server without the result cache.
UNCACHED_PORT=$(free_port)
BOARDROOM__SERVER__ADDR=127.0.0.1:$UNCACHED_PORT BOARDROOM__ASSETS__SEARCH_CACHE_ENTRIES=0 \
    BOARDROOM__ASSETS__WORKERS=0 "$BIN" serve >"$WORK/server-uncached.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$UNCACHED_PORT/health/ready" && break; sleep 0.1; done
SEARCH_PATH="/v1/assets?query=treasury%20committee&limit=20"
total=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE$SEARCH_PATH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["pagination"]["total"])')
log "search matches: $total; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
    for mode in cached uncached; do
        base=$BASE
        [[ $mode == uncached ]] && base=http://127.0.0.1:$UNCACHED_PORT
        wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
            "$base$SEARCH_PATH" >"$WORK/wrk-$mode$run.txt"
        p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk-$mode$run.txt")
        p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$mode$run.txt")
        rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$mode$run.txt")
        non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk-$mode$run.txt")
        echo "search $mode run $run: $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}; load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
# Hits and misses of the search cache on the cached server (from /metrics).
curl -fsS -H "Authorization: Bearer $("$BIN" token --user "$OWNER" --service 2>/dev/null || echo "$TOKEN")" "$BASE/metrics" 2>/dev/null |
    grep -E '^resilience_cache_(requests|loads)_total\{[^}]*name="assets.search"' || true
log "done; load: $(cut -d' ' -f1-3 /proc/loadavg)"
