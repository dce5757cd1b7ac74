//! 5,000 deliveries through failing providers: a real SMTP server (aiosmtpd)
//! refusing 30 % of messages with `451`, and a push gateway stub answering
//! `500` to some requests, leaving others hanging, and down entirely for a
//! while at the start. Every delivery must end `sent` or `dead`; each
//! provider must have accepted each delivery id at most once, and every
//! `sent` delivery must be one the provider accepted; the push breaker must
//! open during the outage and close again (visible in `/metrics`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use boardroom_tests::{
    SendExpect, TestApp,
    providers::{GatewayStub, SmtpSink},
};
use serde_json::{Value, json};
use uuid::Uuid;

const MEMBERS: usize = 50;
const SENDS: usize = 50;

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_deliveries_through_failing_providers_end_sent_or_dead() {
    let smtp = SmtpSink::start_refusing(0.3, 451);
    let gateway = GatewayStub::start(Some("Bearer gateway-secret")).await;
    gateway.behaviour.outage.store(true, Ordering::SeqCst);
    gateway
        .behaviour
        .fail_per_mille
        .store(150, Ordering::SeqCst);
    gateway.behaviour.hang_per_mille.store(20, Ordering::SeqCst);
    let smtp_url = smtp.url();
    let push_url = gateway.url();
    let outbox = std::env::temp_dir().join(format!("boardroom-outbox-{}", Uuid::new_v4().simple()));
    let app = TestApp::spawn_with(move |s| {
        s.database.max_connections = 10;
        s.email.smtp_url = smtp_url;
        s.notifications.push.url = push_url;
        s.notifications.push.auth_header = "Authorization: Bearer gateway-secret".into();
        s.notifications.push.timeout = Some(Duration::from_millis(500));
        s.notifications.outbox = outbox;
        s.notifications.poll_interval = Duration::from_millis(100);
        s.notifications.retry_base_delay = Duration::from_millis(20);
        s.notifications.retry_max_delay = Duration::from_millis(300);
        s.notifications.max_retries = 3;
        s.notifications.batch_size = 100;
        let push = s.services.entry("push".into()).or_default();
        push.timeout = Some(Duration::from_secs(2));
        push.breaker.failure_rate_threshold = Some(0.5);
        push.breaker.minimum_throughput = 20;
        push.breaker.monitoring_period = Duration::from_secs(2);
        push.breaker.reset_timeout = Duration::from_millis(300);
        push.breaker.half_open_max_calls = 1;
    })
    .await;
    let (token, org) = app.owner_with_org("faults").await;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(app.member(&token, &org, "member").await.0);
    }
    let mut ids = Vec::new();
    for n in 0..SENDS {
        let body = json!({
            "userIds": members,
            "organizationId": org,
            "type": "vote_opened",
            "channels": ["email", "push"],
            "title": format!("Vote {n} is open"),
            "message": "Cast your vote: https://example.org/votes",
            "priority": if n % 5 == 0 { "urgent" } else { "normal" },
        });
        let accepted = app
            .post_json("/v1/notifications", &token, &body)
            .expect_status(202)
            .await;
        assert_eq!(accepted["data"]["queued"], json!(MEMBERS * 2));
        ids.push(
            accepted["data"]["notificationId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Two seconds of outage, then the gateway recovers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway.behaviour.outage.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut deliveries: Vec<Value>;
    loop {
        deliveries = Vec::new();
        for id in &ids {
            let n = app
                .get(&format!("/v1/notifications/{id}"), Some(&token))
                .expect_status(200)
                .await;
            deliveries.extend(n["data"]["deliveries"].as_array().unwrap().iter().cloned());
        }
        let open = deliveries
            .iter()
            .filter(|d| !["sent", "dead"].contains(&d["status"].as_str().unwrap()))
            .count();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} deliveries not final");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(deliveries.len(), MEMBERS * SENDS * 2);

    // SMTP: no Message-ID accepted twice; every sent email was accepted.
    let messages = smtp.messages();
    let mut accepted_mail = HashSet::new();
    for m in &messages {
        let id = m["messageId"].as_str().unwrap().to_owned();
        assert!(accepted_mail.insert(id.clone()), "accepted twice: {id}");
    }
    // Push: no delivery id answered 2xx twice.
    let (dead, retried) = {
        let log = gateway.log.lock().unwrap();
        assert_eq!(
            log.malformed, 0,
            "every request had the id and the auth header"
        );
        for (id, times) in &log.accepted {
            assert_eq!(*times, 1, "push delivery {id} accepted {times} times");
        }
        let mut dead = 0;
        for d in &deliveries {
            let id = d["id"].as_str().unwrap();
            let sent = d["status"] == "sent";
            match d["channel"].as_str().unwrap() {
                "email" => assert_eq!(
                    accepted_mail.contains(&format!("<{id}@boardroom>")),
                    sent,
                    "{d}"
                ),
                _ => assert_eq!(log.accepted.contains_key(id), sent, "{d}"),
            }
            if !sent {
                dead += 1;
                assert!(d["lastError"].is_string(), "a dead delivery says why: {d}");
                assert_eq!(d["attempts"], 4, "out of tries: {d}");
            }
        }
        let retried = log.presented.values().filter(|&&n| n > 1).count();
        (dead, retried)
    };
    assert!(retried > 0, "the failures were retried");
    assert!(
        messages.len() + dead >= MEMBERS * SENDS,
        "{} mails",
        messages.len()
    );

    let text = app.metrics_text().await;
    let opened = metric(
        &text,
        "resilience_breaker_transitions_total{from=\"closed\",name=\"push\",to=\"open\"}",
    ) + metric(
        &text,
        "resilience_breaker_transitions_total{name=\"push\",from=\"closed\",to=\"open\"}",
    );
    let transitions: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("resilience_breaker_transitions_total") && l.contains("\"push\""))
        .collect();
    let count = |from: &str, to: &str| -> f64 {
        transitions
            .iter()
            .filter(|l| {
                l.contains(&format!("from=\"{from}\"")) && l.contains(&format!("to=\"{to}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        count("closed", "open") >= 1.0 || opened >= 1.0,
        "{transitions:?}"
    );
    assert!(count("half_open", "closed") >= 1.0, "{transitions:?}");
    let state_closed = text
        .lines()
        .find(|l| {
            l.starts_with("resilience_breaker_state")
                && l.contains("name=\"push\"")
                && l.contains("state=\"closed\"")
        })
        .unwrap_or_default();
    assert!(state_closed.ends_with(" 1"), "{state_closed}");
    assert!(
        metric(&text, "boardroom_notification_deliveries_total") >= (MEMBERS * SENDS * 2) as f64
    );
    println!(
        "{} deliveries final: {dead} dead, {} emails accepted, {} push ids accepted, \
         {retried} push ids tried more than once; push breaker closed->open {}, half_open->closed {}",
        deliveries.len(),
        messages.len(),
        gateway.log.lock().unwrap().accepted.len(),
        count("closed", "open"),
        count("half_open", "closed")
    );
}
