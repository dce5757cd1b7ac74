#!/usr/bin/env bash
# Load and fault scenarios (issue 8): overload, database outage, shutdown
# under load, soak. One entry command:
#
#   tests/load/faults.sh [overload|outage|shutdown|soak|all]   # default: all
#   DURATION=2m tests/load/faults.sh soak                       # a shorter soak
#
# What it does, all on 127.0.0.1 (shared shell in tests/load/lib.sh):
#   1. installs `wrk` (Debian) if missing; builds the release `boardroom` and
#      the `boardroom-load` bins (`fault-load`, `db-proxy`);
#   2. creates $LOAD_DB, migrates, seeds 100,000 users in 100 organizations
#      (the dataset of tests/load/users.sh), mints tokens: a member of
#      organization 1 (reads), an admin of it (writes), an operator (stats);
#   3. runs the scenarios, each against its own fresh release service pinned
#      to CPU $SERVER_CPUS, with `fault-load` (which records every request)
#      pinned to CPU $LOAD_CPUS; prints one table per scenario with its
#      acceptance verdicts.
#
# Scenarios:
#   overload  GET /v1/users?organizationId=<org 1>&role=member&isActive=true
#             (the expensive search). On a service with the users concurrency
#             limit off: unloaded p99 (1 worker), capacity (closed loop,
#             CAPACITY_CONCURRENCY workers), then an open loop at
#             OVERLOAD_FACTOR x capacity; then the same open loop against a
#             service with the default (on) limit. Reports goodput, admitted
#             p50/p99, rejection p50/p99.
#   outage    The service reaches PostgreSQL through `db-proxy`; an open loop
#             of OUTAGE_RATE req/s (searches, profile reads, 30 % writes) runs
#             30 s; the proxy cuts the database at +8 s for OUTAGE_CUT (10 s).
#             Reports non-503 5xx, acknowledged writes missing from the
#             database, time to breaker open, fast-fail p99 while open,
#             recovery after the database returns, /health/ready transitions.
#   shutdown  An open loop (searches and writes) runs; SIGTERM to the service at
#             +5 s. Reports requests that failed after the service had them
#             (a 5xx, or a transport error on a write that is in the database),
#             and connections refused after the listener closed.
#   soak      DURATION (10m) of mixed traffic at SOAK_RATE req/s; RSS and open
#             descriptors sampled every SOAK_SAMPLE (10 s); growth after the
#             warm-up (the first WARMUP_SHARE, 20 %, of samples).
#
# Knobs (environment): OVERLOAD_DURATION (15s), OVERLOAD_FACTOR (3),
# CAPACITY_CONCURRENCY (16), OUTAGE_RATE (60), OUTAGE_CUT (10),
# DB_PROXY_MODE (reset | blackhole), SHUTDOWN_RATE (50), SOAK_RATE (100),
# DURATION (10m, the soak), SERVER_CPUS (0), LOAD_CPUS (1), PG_NICE and PG_CPUS
# (unset: PostgreSQL untouched; else its backends at nice N / on those CPUs
# for the run, see lib.sh pg_nice), ON_LIMIT (another users_search limit for overload's "on"
# row), PG_URL, LOAD_DB
# (boardroom_faults), KEEP_LOGS=1, KEEP_DB=1.
set -euo pipefail
LIB_NAME=faults.sh
# shellcheck source=tests/load/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIO=${1:-all}
case "$SCENARIO" in
    overload | outage | shutdown | soak | all) ;;
    *) die "usage: tests/load/faults.sh [overload|outage|shutdown|soak|all]" ;;
esac
OVERLOAD_DURATION=${OVERLOAD_DURATION:-15s}
OVERLOAD_FACTOR=${OVERLOAD_FACTOR:-3}
CAPACITY_CONCURRENCY=${CAPACITY_CONCURRENCY:-16}
OUTAGE_RATE=${OUTAGE_RATE:-60}
OUTAGE_CUT=${OUTAGE_CUT:-10}
SHUTDOWN_RATE=${SHUTDOWN_RATE:-50}
SOAK_RATE=${SOAK_RATE:-100}
DURATION=${DURATION:-10m}
SOAK_SAMPLE=${SOAK_SAMPLE:-10}
WARMUP_SHARE=${WARMUP_SHARE:-0.2}

ensure_tools
pg_nice
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
build_release
seed_database
mint_tokens
SEARCH="/v1/users?organizationId=$ORG&role=member&isActive=true"
READS=(--read "$SEARCH")
for id in $PROFILES; do READS+=(--read "/v1/users/$id"); done
WRITES=(--write-token "$WRITE_TOKEN" --write-org "$ORG")
REPORT="$WORK/report.md"
: >"$REPORT"
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# missing_acked DIR: acknowledged write ids (DIR/acked.txt) not in the database.
missing_acked() {
    local dir=$1
    if [[ ! -s "$dir/acked.txt" ]]; then echo 0; return; fi
    psql "$DB_DIRECT_URL" -qAt -v ON_ERROR_STOP=1 >"$dir/missing.txt" <<SQL
CREATE TEMP TABLE acked (id uuid);
\\copy acked FROM '$dir/acked.txt'
SELECT a.id FROM acked a LEFT JOIN users u ON u.id = a.id WHERE u.id IS NULL;
SQL
    grep -c . "$dir/missing.txt" || true
}

# --- overload ------------------------------------------------------------
overload() {
    log "overload: service with the users_search concurrency limit off"
    start_service overload-off "$DB_DIRECT_URL" \
        BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__MAX_CONCURRENT=1000000 \
        BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__MAX_QUEUE=0
    fault_load --read "$SEARCH" --concurrency 4 --duration 3s --label warmup >/dev/null
    local unloaded capacity cap offered off on off_stats on_stats off_rss on_rss
    unloaded=$(fault_load --read "$SEARCH" --concurrency 1 --duration "$OVERLOAD_DURATION" --label unloaded)
    capacity=$(fault_load --read "$SEARCH" --concurrency "$CAPACITY_CONCURRENCY" --duration "$OVERLOAD_DURATION" --label capacity)
    cap=$(field "$capacity" ok_rps)
    offered=$(python3 -c "print(round($cap * $OVERLOAD_FACTOR))")
    log "capacity $cap req/s; offering $offered req/s"
    off=$(fault_load --read "$SEARCH" --rate "$offered" --concurrency 4096 --duration "$OVERLOAD_DURATION" --label limit-off)
    off_stats=$(admin_stats | jq -c '[.data.layers.breakers[]? | select(.name == "users" or .name == "users_search" or .name == "database") | {name, state, transitions}]')
    off_rss=$(rss_kb "$SERVICE_PID")
    stop_pid "$SERVICE_PID"

    log "overload: service with the ${ON_LIMIT:-default} (on) users_search concurrency limit"
    # ON_LIMIT=N tries another limit than config/default.toml's for the "on" row.
    start_service overload-on "$DB_DIRECT_URL" \
        ${ON_LIMIT:+BOARDROOM__SERVICES__USERS_SEARCH__CONCURRENCY__MAX_CONCURRENT=$ON_LIMIT}
    fault_load --read "$SEARCH" --concurrency 4 --duration 3s --label warmup >/dev/null
    on=$(fault_load --read "$SEARCH" --rate "$offered" --concurrency 4096 --duration "$OVERLOAD_DURATION" --label limit-on)
    on_stats=$(admin_stats | jq -c '[.data.layers.concurrency[]? | select(.name == "users_search") | {limit, inFlightHighWater, queuedHighWater, maxQueue, admitted, rejectedQueueFull, rejectedQueueTimeout}]')
    on_rss=$(rss_kb "$SERVICE_PID")
    stop_pid "$SERVICE_PID"

    local up99 ; up99=$(field "$unloaded" ok_p99)
    say ""
    say "### Overload: users search, ${OVERLOAD_FACTOR}x capacity, open loop, $OVERLOAD_DURATION per row"
    say ""
    say "unloaded (1 worker): $(field "$unloaded" ok_rps) req/s, p50 $(field "$unloaded" ok_p50) ms, p99 $up99 ms; capacity ($CAPACITY_CONCURRENCY workers, limit off): $cap req/s, p50 $(field "$capacity" ok_p50) ms, p99 $(field "$capacity" ok_p99) ms; offered $offered req/s"
    say ""
    say "| limit | sent | 2xx | goodput req/s | goodput / capacity | admitted p50 ms | admitted p99 ms | admitted p99 / unloaded p99 | 503 | rejection p50 ms | rejection p99 ms | other 5xx | transport errors | not sent (4096 in flight) | RSS MiB |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local line name rss
    for name in off on; do
        if [[ $name == off ]]; then line=$off; rss=$off_rss; else line=$on; rss=$on_rss; fi
        say "$(python3 - "$line" "$cap" "$up99" "$rss" "$name" <<'PY'
import sys
line, cap, up99, rss, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
f = dict(kv.split("=", 1) for kv in line.split()[1:])
g = float(f["ok_rps"])
print(f"| {name} | {f['sent']} | {f['ok']} | {g:.0f} | {g / cap:.2f} | {f['ok_p50']} | {f['ok_p99']} | {float(f['ok_p99']) / up99:.2f} | {f['s503']} | {f['rej_p50']} | {f['rej_p99']} | {f['s5xx_other']} | {f['errors']} | {f['skipped']} | {rss / 1024:.0f} |")
PY
)"
    done
    say ""
    say "limit off, breakers after the run: $off_stats"
    say "limit on, users_search concurrency after the run: $on_stats"
    say "$(python3 - "$on" "$cap" "$up99" <<'PY'
import sys
f = dict(kv.split("=", 1) for kv in sys.argv[1].split()[1:])
cap, up99 = float(sys.argv[2]), float(sys.argv[3])
g, p99, rej = float(f["ok_rps"]), float(f["ok_p99"]), float(f["rej_p99"])
v = lambda ok: "met" if ok else "NOT met"
print(f"acceptance (limit on): goodput {g / cap:.2f} of capacity (>= 0.90: {v(g >= 0.9 * cap)}); "
      f"admitted p99 {p99:.2f} ms = {p99 / up99:.2f} x unloaded (<= 2: {v(p99 <= 2 * up99)}); "
      f"rejection p99 {rej:.3f} ms (< 1 ms: {v(int(f['s503']) > 0 and rej < 1)})")
PY
)"
}

# --- outage --------------------------------------------------------------
outage() {
    local proxy_port proxy_pid dir poller_pid
    proxy_port=$(free_port)
    # The proxy stands for the network to the database: off the service's core.
    DB_PROXY_MODE=${DB_PROXY_MODE:-reset} "${LOAD_PIN[@]}" "$BIN/db-proxy" "127.0.0.1:$proxy_port" "${PG_URL#postgres://*@}" \
        >"$WORK/db-proxy.log" 2>&1 &
    proxy_pid=$!
    track "$proxy_pid"
    sleep 0.5
    kill -0 "$proxy_pid" 2>/dev/null || die "db-proxy exited: $(cat "$WORK/db-proxy.log")"
    log "outage: service through db-proxy :$proxy_port"
    SERVICE_LOG_LEVEL="warn,resilience=info" start_service outage \
        "postgres://postgres@127.0.0.1:$proxy_port/$LOAD_DB" BOARDROOM__LOG__FORMAT=json
    fault_load "${READS[@]}" --concurrency 4 --duration 3s --label warmup >/dev/null

    dir="$WORK/outage"
    mkdir -p "$dir"
    # /health/ready every 100 ms, bounded to 40 s. The poller forks about
    # seven processes a round (curl, jq, date, …): pinned with the load
    # generator, so it does not take the service's core (unpinned, it put a
    # 4–5 ms tail on the fast-fails).
    (
        (( ${#LOAD_PIN[@]} )) && taskset -p -c "$LOAD_CPUS" "$BASHPID" >/dev/null
        end=$(( $(date +%s) + 40 ))
        while (( $(date +%s) < end )); do
            t=$(date +%s%6N)
            body=$(curl -sS --max-time 1 -w '\n%{http_code}' "$SERVICE_URL/health/ready" 2>/dev/null || printf '\n000')
            code=$(tail -n 1 <<<"$body")
            summary=$(head -n -1 <<<"$body" | jq -r '[.data.status // "-", .data.checks.database.status // "-"] | join(" ")' 2>/dev/null || echo "- -")
            echo "$t $code $summary"
            sleep 0.1
        done
    ) >"$dir/ready.txt" &
    poller_pid=$!
    track "$poller_pid"

    local load_pid
    FAULT_LOAD_TIMEOUT=120 fault_load "${READS[@]}" "${WRITES[@]}" --write-share 0.3 \
        --rate "$OUTAGE_RATE" --concurrency 2048 --duration 30s --label outage --out "$dir" >"$dir/summary.txt" &
    load_pid=$!
    sleep 8
    kill -USR1 "$proxy_pid"
    sleep "$OUTAGE_CUT"
    kill -USR2 "$proxy_pid"
    wait "$load_pid" || die "fault-load (outage) failed"
    stop_pid "$poller_pid"
    local missing stats
    missing=$(missing_acked "$dir")
    stats=$(admin_stats | jq -c '[.data.layers.breakers[]? | select(.name == "users" or .name == "users_search" or .name == "database") | {name, state, transitions}]')
    stop_pid "$SERVICE_PID"
    stop_pid "$proxy_pid"

    say ""
    say "### Database outage: ${OUTAGE_CUT} s cut (db-proxy, mode ${DB_PROXY_MODE:-reset}) under $OUTAGE_RATE req/s (searches, profile reads, 30 % writes)"
    say ""
    say "$(python3 - "$dir" "$WORK/db-proxy.log" "$WORK/outage.log" "$missing" "$(cat "$dir/summary.txt")" <<'PY'
import csv, json, re, sys
from datetime import datetime
d, proxy_log, service_log, missing, summary = sys.argv[1:6]
cut = restored = None
for line in open(proxy_log):
    m = re.match(r"db-proxy (cut|restored) at (\d+)", line)
    if m:
        if m.group(1) == "cut" and cut is None:
            cut = int(m.group(2))
        elif m.group(1) == "restored" and cut is not None and restored is None:
            restored = int(m.group(2))
def us(ts):
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1e6)
transitions = []  # (t_us, breaker, from, to)
for line in open(service_log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    if f.get("message") == "circuit breaker state change":
        transitions.append((us(e["timestamp"]), f.get("breaker"), f.get("from"), f.get("to")))
rows = list(csv.DictReader(open(f"{d}/requests.csv")))
for r in rows:
    r["t"] = int(r["start_unix_us"]); r["status"] = int(r["status"]); r["lat"] = int(r["latency_us"])
def pct(v, p):
    v = sorted(v)
    if not v: return float("nan")
    import math
    return v[max(1, math.ceil(p / 100 * len(v))) - 1] / 1000
other5xx = [r for r in rows if 500 <= r["status"] <= 599 and r["status"] != 503]
errors = [r for r in rows if r["status"] == 0]
s503 = [r for r in rows if r["status"] == 503]
db = [t for t in transitions if t[1] == "database"]
opened = next((t for t in db if t[3] == "open" and t[0] >= cut), None)
# Open intervals of the database breaker.
intervals, start = [], None
for t, _, frm, to in db:
    if to == "open" and start is None: start = t
    if to != "open" and start is not None: intervals.append((start, t)); start = None
if start is not None: intervals.append((start, 2**63))
# A fast-fail is a 503 that started and ended while the breaker was open; a
# request that began while it was open but ended after it left (the
# half-open probe the reset timeout lets through, which tries the database)
# is counted apart.
in_open = lambda r: any(a <= r["t"] and r["t"] + r["lat"] < b for a, b in intervals)
straddles = lambda r: any(a <= r["t"] < b <= r["t"] + r["lat"] for a, b in intervals)
fast = [r["lat"] for r in rows if r["status"] == 503 and in_open(r)]
probes = [r["lat"] for r in rows if r["status"] == 503 and straddles(r)]
closed_after = next((t for t in db if t[3] == "closed" and t[0] >= restored), None)
users_tr = [t for t in transitions if t[1] != "database"]
# Recovery as the client sees it: from the restore to the start of the last
# request that failed (5xx or transport); every request started later succeeded.
fails = [r["t"] for r in rows if r["t"] >= cut and (r["status"] == 0 or r["status"] >= 500)]
recovered = max(fails) if fails else None
first_ok_write = min((r["t"] + r["lat"] for r in rows if r["kind"] == "w" and 200 <= r["status"] < 300 and r["t"] >= restored), default=None)
ready = []
prev = None
for line in open(f"{d}/ready.txt"):
    p = line.split()
    if len(p) < 4: continue
    state = tuple(p[1:4])
    if state != prev:
        ready.append((int(p[0]), state)); prev = state
f = dict(kv.split("=", 1) for kv in summary.split()[1:])
rel = lambda t: f"{(t - cut) / 1e6:+.3f} s" if t is not None else "never"
ms = lambda a, b: f"{(b - a) / 1e3:.0f} ms" if (a is not None and b is not None) else "n/a"
print(f"| figure | value |")
print(f"|---|---:|")
print(f"| requests (2xx / 503 / other 5xx / transport errors) | {f['sent']} ({f['ok']} / {f['s503']} / {f['s5xx_other']} / {f['errors']}) |")
print(f"| non-503 5xx | {len(other5xx)} |")
print(f"| writes attempted / acknowledged 2xx | {f['writes']} / {f['acked']} |")
print(f"| acknowledged writes missing from the database | {missing} |")
print(f"| time to open (cut → database breaker open) | {ms(cut, opened[0] if opened else None)} |")
print(f"| 503 answered while the database breaker was open: count, p50, p99 | {len(fast)}, {pct(fast, 50):.3f} ms, {pct(fast, 99):.3f} ms |")
print(f"| 503 begun while open, answered after it left open (half-open probes): count, p50, max | {len(probes)}, {pct(probes, 50):.3f} ms, {max(probes, default=0) / 1000:.3f} ms |")
print(f"| all 503: p50, p99 (incl. the ones before the breaker opened) | {pct([r['lat'] for r in s503], 50):.3f} ms, {pct([r['lat'] for r in s503], 99):.3f} ms |")
print(f"| restore → database breaker closed | {ms(restored, closed_after[0] if closed_after else None)} |")
print(f"| restore → first write acknowledged | {ms(restored, first_ok_write)} |")
print(f"| restore → start of the last failing request (every later one succeeded) | {ms(restored, recovered)} |")
print(f"| database breaker transitions (from cut) | {', '.join(f'{a}→{b} {rel(t)}' for t, _, a, b in db) or 'none'} |")
print(f"| other breakers' transitions (from cut) | {', '.join(f'{n} {a}→{b} {rel(t)}' for t, n, a, b in users_tr) or 'none'} |")
print(f"| /health/ready (HTTP, data.status, data.checks.database.status), from cut | {'; '.join(f'{rel(t)}: {s[0]} {s[1]} {s[2]}' for t, s in ready)} |")
print(f"| cut / restored (db-proxy) | {rel(cut)} / {rel(restored)} |")
rt = 1.0  # services.database.breaker.reset_timeout (default)
rec = (closed_after[0] - restored) / 1e6 if closed_after else float("inf")
rec_client = max(0.0, (recovered - restored) / 1e6) if recovered else 0.0
v = lambda ok: "met" if ok else "NOT met"
print()
print(f"acceptance: non-503 5xx {len(other5xx)} (0: {v(not other5xx)}); acknowledged writes lost {missing} (0: {v(missing == '0')}); "
      f"fast-fail p99 {pct(fast, 99):.3f} ms (< 1 ms: {v(bool(fast) and pct(fast, 99) < 1)}); "
      f"recovery {rec_client:.3f} s client-side, {rec:.3f} s to breaker closed (<= reset_timeout {rt} s + 1 s: {v(max(rec, rec_client) <= rt + 1)}); "
      f"transport errors {len(errors)}")
PY
)"
    say ""
    say "database/users breakers after the run: $stats"
}

# --- shutdown ------------------------------------------------------------
shutdown() {
    log "shutdown: SIGTERM under load"
    start_service shutdown "$DB_DIRECT_URL"
    fault_load "${READS[@]}" --concurrency 4 --duration 3s --label warmup >/dev/null
    local dir="$WORK/shutdown" load_pid term_us exit_us
    mkdir -p "$dir"
    # Searches (tens of ms each) and writes, so requests are in flight at the signal.
    FAULT_LOAD_TIMEOUT=120 fault_load --read "$SEARCH" "${WRITES[@]}" --write-share 0.3 \
        --rate "$SHUTDOWN_RATE" --concurrency 2048 --duration 10s --timeout 15s --label shutdown --out "$dir" >"$dir/summary.txt" &
    load_pid=$!
    sleep 5
    term_us=$(date +%s%6N)
    kill -TERM "$SERVICE_PID"
    for _ in $(seq 1 300); do kill -0 "$SERVICE_PID" 2>/dev/null || break; sleep 0.05; done
    exit_us=$(date +%s%6N)
    local status=0
    wait "$SERVICE_PID" || status=$?
    wait "$load_pid" || die "fault-load (shutdown) failed"
    local missing; missing=$(missing_acked "$dir")
    # Writes that failed in transport but were committed: accepted, then failed.
    psql "$DB_DIRECT_URL" -qAt -v ON_ERROR_STOP=1 >"$dir/committed-unacked.txt" <<SQL
CREATE TEMP TABLE w (email text, status int, id text);
\\copy w FROM '$dir/writes.csv' WITH (FORMAT csv, HEADER true)
SELECT w.email FROM w JOIN users u ON lower(u.email) = lower(w.email) WHERE w.status = 0 OR w.status >= 500;
SQL
    local committed; committed=$(grep -c . "$dir/committed-unacked.txt" || true)
    say ""
    say "### Shutdown: SIGTERM at +5 s of a 10 s open loop at $SHUTDOWN_RATE req/s (searches, 30 % writes)"
    say ""
    say "$(python3 - "$dir" "$term_us" "$exit_us" "$status" "$missing" "$committed" <<'PY'
import csv, sys
d, term, exit_, status, missing, committed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
rows = list(csv.DictReader(open(f"{d}/requests.csv")))
for r in rows:
    r["t"] = int(r["start_unix_us"]); r["s"] = int(r["status"]); r["lat"] = int(r["latency_us"])
before = [r for r in rows if r["t"] < term]
inflight = [r for r in before if r["t"] + r["lat"] >= term]
after = [r for r in rows if r["t"] >= term]
# Accepted and then failed: in flight at the signal (started before, answered
# after) and answered 5xx or cut off. A 503 answered before the signal is
# load shedding, not shutdown, and is counted apart.
fail_before = [r for r in inflight if r["s"] >= 500 or r["s"] == 0]
shed_before = [r for r in before if r["t"] + r["lat"] < term and (r["s"] >= 500 or r["s"] == 0)]
ok_after = [r for r in after if 200 <= r["s"] < 300]
err_after = {}
for r in after:
    k = r["error"] or str(r["s"])
    err_after[k] = err_after.get(k, 0) + 1
v = lambda ok: "met" if ok else "NOT met"
print("| figure | value |")
print("|---|---:|")
print(f"| SIGTERM → process exited (status {status}) | {(exit_ - term) / 1e3:.0f} ms |")
print(f"| requests started before SIGTERM / still in flight at SIGTERM | {len(before)} / {len(inflight)} |")
print(f"| in flight at SIGTERM and answered 5xx or failed in transport | {len(fail_before)} |")
print(f"| in flight at SIGTERM: outcome counts | {dict((k, sum(1 for r in inflight if (r['error'] or str(r['s'])) == k)) for k in set(r['error'] or str(r['s']) for r in inflight))} |")
print(f"| answered 5xx before SIGTERM (load shedding, not shutdown) | {len(shed_before)} |")
print(f"| writes acknowledged 2xx and missing from the database | {missing} |")
print(f"| writes failed (5xx / transport) yet committed | {committed} |")
print(f"| requests started after SIGTERM: answered 2xx / outcome counts | {len(ok_after)} / {err_after} |")
print()
print(f"acceptance: accepted requests that failed {len(fail_before)} + committed-but-failed writes {committed} + lost acknowledged writes {missing} (0: {v(len(fail_before) == 0 and committed == '0' and missing == '0')})")
PY
)"
}

# --- soak ----------------------------------------------------------------
soak() {
    log "soak: $DURATION at $SOAK_RATE req/s"
    start_service soak "$DB_DIRECT_URL"
    fault_load "${READS[@]}" --concurrency 4 --duration 3s --label warmup >/dev/null
    local dir="$WORK/soak" load_pid seconds
    mkdir -p "$dir"
    seconds=$(python3 -c "import re,sys; s='$DURATION'; m=re.fullmatch(r'(\d+)(s|m|h)', s) or sys.exit('DURATION like 10m'); print(int(m[1]) * {'s':1,'m':60,'h':3600}[m[2]])")
    FAULT_LOAD_TIMEOUT=$(( seconds + 120 )) fault_load "${READS[@]}" "${WRITES[@]}" --write-share 0.1 \
        --rate "$SOAK_RATE" --concurrency 2048 --duration "$DURATION" --label soak >"$dir/summary.txt" &
    load_pid=$!
    local end=$(( $(date +%s) + seconds ))
    echo "t_s rss_kib fds users_p99_ms" >"$dir/samples.txt"
    local t0; t0=$(date +%s)
    while (( $(date +%s) < end )) && kill -0 "$load_pid" 2>/dev/null; do
        echo "$(( $(date +%s) - t0 )) $(rss_kb "$SERVICE_PID") $(fd_count "$SERVICE_PID") $(admin_stats | jq -r '[.data.layers.operations[]? | select(.name == "users") | .p99Ms // "-"][0] // "-"')" >>"$dir/samples.txt"
        sleep "$SOAK_SAMPLE"
    done
    wait "$load_pid" || die "fault-load (soak) failed"
    echo "$(( $(date +%s) - t0 )) $(rss_kb "$SERVICE_PID") $(fd_count "$SERVICE_PID") -" >>"$dir/samples.txt"
    stop_pid "$SERVICE_PID"
    say ""
    say "### Soak: $DURATION at $SOAK_RATE req/s (searches, profile reads, 10 % writes), sampled every $SOAK_SAMPLE s"
    say ""
    say "$(python3 - "$dir" "$WARMUP_SHARE" "$(cat "$dir/summary.txt")" <<'PY'
import sys
d, share, summary = sys.argv[1], float(sys.argv[2]), sys.argv[3]
rows = [l.split() for l in open(f"{d}/samples.txt").read().splitlines()[1:]]
rows = [(int(t), int(r), int(fd)) for t, r, fd, *_ in rows]
w = max(1, int(len(rows) * share))
base = rows[w - 1]
peak_rss = max(r for _, r, _ in rows[w - 1:])
end = rows[-1]
f = dict(kv.split("=", 1) for kv in summary.split()[1:])
g_rss = (end[1] - base[1]) / base[1]
g_peak = (peak_rss - base[1]) / base[1]
fd_growth = max(fd for _, _, fd in rows[w - 1:]) - base[2]
v = lambda ok: "met" if ok else "NOT met"
print("| figure | value |")
print("|---|---:|")
print(f"| requests: sent / 2xx / 503 / other 5xx / transport errors | {f['sent']} / {f['ok']} / {f['s503']} / {f['s5xx_other']} / {f['errors']} |")
print(f"| 2xx p50 / p99 | {f['ok_p50']} ms / {f['ok_p99']} ms |")
print(f"| samples / warm-up samples | {len(rows)} / {w} (warm-up ends at {base[0]} s) |")
print(f"| RSS at start / end of warm-up / peak after / end | {rows[0][1] / 1024:.1f} / {base[1] / 1024:.1f} / {peak_rss / 1024:.1f} / {end[1] / 1024:.1f} MiB |")
print(f"| open descriptors at start / end of warm-up / max after / end | {rows[0][2]} / {base[2]} / {max(fd for _, _, fd in rows[w - 1:])} / {end[2]} |")
print()
print(f"acceptance: RSS growth after warm-up {g_rss * 100:+.1f} % at the end, {g_peak * 100:+.1f} % at the peak (< 10 %: {v(g_peak < 0.10)}); descriptor growth {fd_growth:+d} (none: {v(fd_growth <= 0)})")
PY
)"
    say ""
    say "samples (t s, RSS KiB, fds, users p99 ms):"
    say "$(tr '\n' ';' <"$dir/samples.txt")"
}

say "# faults.sh $SCENARIO — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load before: $LOAD_BEFORE"
say "service on CPU $SERVER_CPUS, fault-load on CPU $LOAD_CPUS; git $(git -C "$ROOT" rev-parse --short HEAD)"
case "$SCENARIO" in
    overload) overload ;;
    outage) outage ;;
    shutdown) shutdown ;;
    soak) soak ;;
    all) overload; outage; shutdown; soak ;;
esac
say ""
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "${REPORT_TO:-}" ]]; then cp "$REPORT" "$REPORT_TO"; fi
