//! Scale-out (issue 9): two instances on one database and one Redis behave
//! as one — a change through either is seen through the other within a
//! bound, a tag invalidation reaches both in-process caches and the shared
//! Redis level, and Redis failing costs speed, never an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use boardroom_tests::{
    SendExpect, TestApp,
    redis::{PrivateRedis, unique_prefix},
};
use serde_json::{Value, json};

/// Two instances of one deployment: one database, one Redis, one key prefix.
async fn pair(redis_url: &str) -> (TestApp, TestApp) {
    let prefix = unique_prefix();
    let a = TestApp::spawn_with(|settings| {
        settings.cache.redis_url = redis_url.to_owned();
        settings.cache.redis_prefix = prefix;
    })
    .await;
    let b = a.spawn_peer().await;
    (a, b)
}

async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis keys of `app`'s users cache values.
async fn l2_values(
    app: &TestApp,
    connection: &mut redis::aio::MultiplexedConnection,
) -> Vec<String> {
    let pattern = format!("{}:users:*:v:*", app.settings.cache.redis_prefix);
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(connection)
        .await
        .unwrap()
}

async fn first_name(app: &TestApp, token: &str, user: &str) -> String {
    let body = app
        .get(&format!("/v1/users/{user}"), Some(token))
        .expect_status(200)
        .await;
    body["data"]["firstName"].as_str().unwrap().to_owned()
}

async fn rename(app: &TestApp, token: &str, user: &str, name: &str) {
    app.patch_json(
        &format!("/v1/users/{user}"),
        token,
        &json!({"firstName": name}),
    )
    .expect_status(200)
    .await;
}

/// Polls `app` until `user`'s first name is `expected`; the time it took.
async fn seen_within(
    app: &TestApp,
    token: &str,
    user: &str,
    expected: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if first_name(app, token, user).await == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{expected:?} not seen through the other instance within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn readiness(app: &TestApp) -> Value {
    app.get("/health/ready", None).expect_status(200).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patch_through_a_is_seen_through_b_within_100ms_at_p99() {
    let server = PrivateRedis::spawn();
    let (a, b) = pair(&server.url()).await;
    let (owner, org) = a.owner_with_org("scale-coherence").await;
    let (user, _) = a.member(&owner, &org, "member").await;

    // The subscription of B is up once one change has reached it.
    first_name(&b, &owner, &user).await;
    rename(&a, &owner, &user, "Warm").await;
    seen_within(&b, &owner, &user, "Warm", Duration::from_secs(10)).await;

    let trials = 1000;
    let mut delays = Vec::with_capacity(trials);
    for trial in 0..trials {
        let name = format!("Trial{trial}");
        // B holds the old profile in its L1 when A changes it.
        assert_ne!(first_name(&b, &owner, &user).await, name);
        rename(&a, &owner, &user, &name).await;
        delays.push(seen_within(&b, &owner, &user, &name, Duration::from_secs(5)).await);
    }
    delays.sort();
    let p50 = delays[trials / 2];
    let p99 = delays[trials * 99 / 100 - 1];
    let max = delays[trials - 1];
    println!(
        "PATCH via A -> GET via B over {trials} trials: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_invalidation_through_a_evicts_both_l1s_and_l2() {
    let server = PrivateRedis::spawn();
    let url = server.url();
    let (a, b) = pair(&url).await;
    let mut connection = redis(&url).await;
    let (owner, org) = a.owner_with_org("scale-tags").await;
    let (user, _) = a.member(&owner, &org, "member").await;

    // A loads from the database and writes L2; B then fills its L1.
    assert_eq!(first_name(&a, &owner, &user).await, "Ada");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !l2_values(&a, &mut connection)
        .await
        .iter()
        .any(|key| key.ends_with(&user))
    {
        assert!(Instant::now() < deadline, "A never wrote the profile to L2");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Changed behind the service's back: every level now holds "Ada".
    sqlx::query("UPDATE users SET first_name = 'Direct' WHERE id = $1::uuid")
        .bind(&user)
        .execute(&a.pool)
        .await
        .unwrap();
    // B had nothing in L1 for this profile: its "Ada" comes from L2.
    assert_eq!(first_name(&b, &owner, &user).await, "Ada");
    assert_eq!(first_name(&a, &owner, &user).await, "Ada");

    let removed = a
        .post_json(
            "/admin/cache/invalidate",
            &a.service_token(),
            &json!({"tags": [format!("user:{user}")]}),
        )
        .expect_status(200)
        .await;
    assert!(
        removed["data"]["removed"].as_u64().unwrap() >= 1,
        "{removed}"
    );

    // L2 lost it before the answer; A's L1 too; B's L1 once NOTIFY arrives.
    let left = l2_values(&a, &mut connection).await;
    assert!(
        !left.iter().any(|key| key.ends_with(&user)),
        "L2 still holds {left:?}"
    );
    assert_eq!(first_name(&a, &owner, &user).await, "Direct");
    seen_within(&b, &owner, &user, "Direct", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_during_traffic_costs_no_errors_and_l2_comes_back() {
    let mut server = PrivateRedis::spawn();
    let (a, b) = pair(&server.url()).await;
    let a = Arc::new(a);
    let b = Arc::new(b);
    let (owner, org) = a.owner_with_org("scale-outage").await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(a.member(&owner, &org, "member").await.0);
    }
    assert_eq!(
        readiness(&a).await["data"]["checks"]["redis"]["status"],
        "ok"
    );

    // Traffic on both instances: reads, and writes that invalidate.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (a, b, stop, requests) = (a.clone(), b.clone(), stop.clone(), requests.clone());
        let (owner, users) = (owner.clone(), users.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for (i, user) in users.iter().enumerate() {
                    let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                    let path = format!("/v1/users/{user}");
                    let calls = [
                        reader.get(&path, Some(&owner)),
                        writer.patch_json(&path, &owner, &json!({"lastName": format!("R{round}")})),
                        reader.get(&path, Some(&owner)),
                        writer.get(&path, Some(&owner)),
                    ];
                    for call in calls {
                        requests.fetch_add(1, Ordering::Relaxed);
                        match call.send().await {
                            Ok(response) if response.status().is_success() => {}
                            Ok(response) => failures.push(format!(
                                "{} {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            )),
                            Err(error) => failures.push(error.to_string()),
                        }
                    }
                }
            }
            failures
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = readiness(&a).await;
        if report["data"]["checks"]["redis"]["status"] == "degraded" {
            assert_eq!(report["data"]["status"], "degraded", "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never showed redis degraded: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during_outage = requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        requests.load(Ordering::Relaxed) > during_outage + 20,
        "traffic kept flowing while Redis was down"
    );

    server.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    for app in [&a, &b] {
        loop {
            let report = readiness(app).await;
            if report["data"]["checks"]["redis"]["status"] == "ok" {
                break;
            }
            assert!(Instant::now() < deadline, "redis never recovered: {report}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = traffic.await.unwrap();
    let total = requests.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    println!("{total} requests across the outage, none failed");

    // L2 is used again: A's fill is what a new instance serves after a
    // change made behind the service's back.
    let user = &users[0];
    rename(&a, &owner, user, "Fresh").await;
    assert_eq!(first_name(&a, &owner, user).await, "Fresh");
    let mut connection = redis(&server.url()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !l2_values(&a, &mut connection)
        .await
        .iter()
        .any(|key| key.ends_with(user.as_str()))
    {
        assert!(
            Instant::now() < deadline,
            "nothing written to L2 after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("UPDATE users SET first_name = 'Direct' WHERE id = $1::uuid")
        .bind(user)
        .execute(&a.pool)
        .await
        .unwrap();
    let c = a.spawn_peer().await;
    assert_eq!(
        first_name(&c, &owner, user).await,
        "Fresh",
        "served from L2"
    );
}

/// Benchmark (run by hand, see BENCHMARKS.md): the latency of
/// `GET /v1/users/{id}` answered from L1, from L2 (another instance's L1
/// miss) and from the database (an instance without L2), in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: cargo test --release -p boardroom-tests --test scale -- --ignored --nocapture"]
async fn bench_l1_hit_vs_l2_hit_vs_database_read() {
    let server = PrivateRedis::spawn();
    let (a, b) = pair(&server.url()).await;
    let plain =
        TestApp::spawn_with(|settings| settings.database.url = a.settings.database.url.clone())
            .await;
    let (owner, org) = a.owner_with_org("scale-bench").await;
    let users = 300;
    let mut ids = Vec::new();
    for _ in 0..users {
        ids.push(a.member(&owner, &org, "member").await.0);
    }
    // Callers are cached everywhere first: only the profile lookup differs.
    for app in [&a, &b, &plain] {
        first_name(app, &owner, &ids[0]).await;
    }
    async fn timed(app: &TestApp, token: &str, user: &str) -> Duration {
        let started = Instant::now();
        first_name(app, token, user).await;
        started.elapsed()
    }
    let mut l1 = Vec::new();
    let mut l2 = Vec::new();
    let mut database = Vec::new();
    let mut connection = redis(&server.url()).await;
    for user in &ids[1..] {
        first_name(&a, &owner, user).await; // fills L2
        let deadline = Instant::now() + Duration::from_secs(5);
        while !l2_values(&a, &mut connection)
            .await
            .iter()
            .any(|k| k.ends_with(user.as_str()))
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        l2.push(timed(&b, &owner, user).await); // B: L1 miss, L2 hit
        l1.push(timed(&b, &owner, user).await); // B: L1 hit
        database.push(timed(&plain, &owner, user).await); // no L2: the database
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (l1, l2, database) = (median(&mut l1), median(&mut l2), median(&mut database));
    println!(
        "GET /v1/users/{{id}} median over {} users: L1 hit {l1:?}, L2 hit {l2:?}, database {database:?} (L2/L1 {:.2}, database/L2 {:.2})",
        users - 1,
        l2.as_secs_f64() / l1.as_secs_f64(),
        database.as_secs_f64() / l2.as_secs_f64()
    );
    drop(plain);
}
