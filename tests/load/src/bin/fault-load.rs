//! `fault-load`: the load generator of the fault harness
//! (`tests/load/faults.sh`). Unlike `wrk`, it records every request — when
//! it started, what it was, its status (0 for a transport error) and its
//! latency — so the harness can split latencies by outcome (admitted vs
//! rejected) and by time (before, during and after a fault), and, for
//! writes, which ids the service acknowledged with a `2xx`, so it can check
//! afterwards that every acknowledged write is in the database.
//!
//! ```sh
//! # closed loop: 16 workers for 10 s
//! fault-load --base http://127.0.0.1:8080 --token "$T" --read '/v1/users?role=member' \
//!     --concurrency 16 --duration 10s
//! # open loop: 600 requests/s (at most 512 in flight), 20 % writes, records kept
//! fault-load --base ... --token "$T" --read ... --rate 600 --concurrency 512 \
//!     --write-token "$ADMIN" --write-org "$ORG" --write-share 0.2 --out /tmp/run1
//! ```
//!
//! Reads are `GET`s of the `--read` paths, taken in turn. A write is a
//! `POST /v1/users` of a new member of `--write-org` with a unique email.
//! With `--rate`, requests start on a fixed schedule whatever the answers
//! (open loop, no coordinated omission); one that would exceed
//! `--concurrency` in flight is not sent and counted as `skipped`.
//!
//! With `--out DIR` it writes `DIR/requests.csv`
//! (`start_unix_us,kind,status,latency_us,error`), `DIR/writes.csv`
//! (`email,status,id`, every write attempted) and `DIR/acked.txt` (the ids
//! of the writes answered `2xx`, one a line). It always prints one summary
//! line starting with `@@` (latencies in milliseconds).

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Parser;
use tokio::sync::Mutex;

/// Command line; see the module documentation.
#[derive(Parser, Debug)]
#[command(about = "Load generator that records every request (tests/load/faults.sh)")]
struct Args {
    /// Base URL of the service, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    base: String,
    /// Bearer token for reads.
    #[arg(long)]
    token: String,
    /// Path (with query) of a read; repeat for several, taken in turn.
    #[arg(long)]
    read: Vec<String>,
    /// Bearer token for writes (an admin of --write-org).
    #[arg(long)]
    write_token: Option<String>,
    /// Organization the written users join.
    #[arg(long)]
    write_org: Option<String>,
    /// Fraction of requests that are writes (0..=1).
    #[arg(long, default_value_t = 0.0)]
    write_share: f64,
    /// Requests per second (open loop); 0 runs a closed loop of --concurrency workers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Closed loop: workers. Open loop: most requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to send, e.g. 10s, 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Per-request timeout (then recorded as status 0, error `timeout`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    timeout: Duration,
    /// Folder for requests.csv, writes.csv and acked.txt.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Name printed in the summary line.
    #[arg(long, default_value = "run")]
    label: String,
}

/// One finished request.
struct Record {
    start_unix_us: u64,
    write: bool,
    status: u16,
    latency_us: u64,
    error: &'static str,
}

/// One attempted write.
struct WriteRecord {
    email: String,
    status: u16,
    id: Option<String>,
}

struct Shared {
    args: Args,
    client: reqwest::Client,
    records: Mutex<Vec<Record>>,
    writes: Mutex<Vec<WriteRecord>>,
    next: AtomicU64,
    in_flight: AtomicUsize,
    skipped: AtomicU64,
    run_id: String,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn classify(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "transport"
    }
}

impl Shared {
    /// Sends request number `n`; records it.
    async fn one(&self) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let args = &self.args;
        // Writes spread evenly: request n is a write when the running share crosses a step.
        let write = args.write_share > 0.0
            && ((n + 1) as f64 * args.write_share).floor() > (n as f64 * args.write_share).floor();
        let start_unix_us = unix_us();
        let started = Instant::now();
        let (status, error, write_record) = if write {
            self.write(n).await
        } else {
            let path = &args.read[(n as usize) % args.read.len()];
            let sent = self
                .client
                .get(format!("{}{}", args.base, path))
                .bearer_auth(&args.token)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(_) => (status, "", None),
                        Err(e) => (0, classify(&e), None),
                    }
                }
                Err(e) => (0, classify(&e), None),
            }
        };
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.records.lock().await.push(Record {
            start_unix_us,
            write,
            status,
            latency_us,
            error,
        });
        if let Some(record) = write_record {
            self.writes.lock().await.push(record);
        }
    }

    async fn write(&self, n: u64) -> (u16, &'static str, Option<WriteRecord>) {
        let args = &self.args;
        let email = format!("fault-{}-{n}@example.org", self.run_id);
        let body = serde_json::json!({
            "email": email,
            "firstName": "Fault",
            "lastName": format!("Load{n}"),
            "organizationId": args.write_org,
            "role": "member",
        });
        let sent = self
            .client
            .post(format!("{}/v1/users", args.base))
            .bearer_auth(args.write_token.as_deref().unwrap_or(&args.token))
            .json(&body)
            .send()
            .await;
        let (status, error, id) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => {
                        let id = (200..300).contains(&status).then(|| {
                            serde_json::from_slice::<serde_json::Value>(&bytes)
                                .ok()
                                .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| "?".to_owned())
                        });
                        (status, "", id)
                    }
                    Err(e) => (0, classify(&e), None),
                }
            }
            Err(e) => (0, classify(&e), None),
        };
        (status, error, Some(WriteRecord { email, status, id }))
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.read.is_empty() || args.write_share >= 1.0,
        "give --read PATH"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.write_share),
        "--write-share must be in 0..=1"
    );
    anyhow::ensure!(
        args.write_share == 0.0 || args.write_org.is_some(),
        "writes need --write-org"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()?;
    let run_id = format!("{}-{}", args.label, unix_us());
    let duration = args.duration;
    let shared = Arc::new(Shared {
        args,
        client,
        records: Mutex::new(Vec::new()),
        writes: Mutex::new(Vec::new()),
        next: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        skipped: AtomicU64::new(0),
        run_id,
    });
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    if shared.args.rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / shared.args.rate);
        let begin = tokio::time::Instant::now();
        let mut i: u32 = 0;
        loop {
            let at = begin + interval * i;
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            i = i.saturating_add(1);
            if shared.in_flight.load(Ordering::Relaxed) >= shared.args.concurrency {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            tasks.spawn(async move {
                shared.one().await;
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
            // Reap finished tasks as we go, so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
    } else {
        for _ in 0..shared.args.concurrency {
            let shared = shared.clone();
            tasks.spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    shared.one().await;
                }
            });
        }
    }
    // Every request is bounded by --timeout; wait at most that long again.
    let drained = tokio::time::timeout(shared.args.timeout + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64())
        .max(1e-9);

    let records = shared.records.lock().await;
    let writes = shared.writes.lock().await;
    if let Some(out) = &shared.args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut csv = std::io::BufWriter::new(std::fs::File::create(out.join("requests.csv"))?);
        writeln!(csv, "start_unix_us,kind,status,latency_us,error")?;
        for r in records.iter() {
            let kind = if r.write { "w" } else { "r" };
            writeln!(
                csv,
                "{},{kind},{},{},{}",
                r.start_unix_us, r.status, r.latency_us, r.error
            )?;
        }
        csv.flush()?;
        let mut w = std::io::BufWriter::new(std::fs::File::create(out.join("writes.csv"))?);
        let mut acked = std::io::BufWriter::new(std::fs::File::create(out.join("acked.txt"))?);
        writeln!(w, "email,status,id")?;
        for r in writes.iter() {
            writeln!(
                w,
                "{},{},{}",
                r.email,
                r.status,
                r.id.as_deref().unwrap_or("")
            )?;
            if let Some(id) = &r.id {
                writeln!(acked, "{id}")?;
            }
        }
        w.flush()?;
        acked.flush()?;
    }

    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    let mut all = Vec::new();
    let (mut s4xx, mut s503, mut s5xx, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for r in records.iter() {
        all.push(r.latency_us);
        match r.status {
            0 => errors += 1,
            200..=299 => ok.push(r.latency_us),
            503 => {
                s503 += 1;
                rejected.push(r.latency_us);
            }
            500..=599 => s5xx += 1,
            _ => s4xx += 1,
        }
    }
    ok.sort_unstable();
    rejected.sort_unstable();
    all.sort_unstable();
    println!(
        "@@ label={} sent={} ok={} s503={} s5xx_other={} s4xx={} errors={} skipped={} \
         seconds={:.3} ok_rps={:.1} ok_p50={:.3} ok_p99={:.3} rej_p50={:.3} rej_p99={:.3} \
         all_p50={:.3} all_p99={:.3} writes={} acked={}",
        shared.args.label,
        records.len(),
        ok.len(),
        s503,
        s5xx,
        s4xx,
        errors,
        shared.skipped.load(Ordering::Relaxed),
        elapsed,
        ok.len() as f64 / elapsed,
        percentile(&ok, 50.0),
        percentile(&ok, 99.0),
        percentile(&rejected, 50.0),
        percentile(&rejected, 99.0),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        writes.len(),
        writes.iter().filter(|w| w.id.is_some()).count(),
    );
    Ok(())
}
