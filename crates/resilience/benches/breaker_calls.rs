//! Runs N closed calls through a ready no-op service — bare, behind our
//! `Breaker`, or behind tower-resilience's count-window breaker — on a
//! current-thread runtime, for counting instructions per call with callgrind
//! (robust to machine load, unlike wall-clock benches):
//!
//! ```text
//! cargo build --release -p resilience-benches --bin breaker_calls
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/breaker_calls ours $n 2>&1 | grep refs
//! done
//! ```
//!
//! Instructions per call = (refs at 200000 − refs at 100000) / 100000, which
//! cancels the start-up cost. Modes: `bare`, `ours`, `peer`.
//!
//! CPU time per call, which other processes on the machine inflate far less
//! than wall-clock time: `perf stat -e task-clock breaker_calls ours 10000000`
//! and divide by the count.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use resilience::breaker::{BreakerConfig, BreakerLayer};
use tower::{Layer, Service, ServiceExt};
use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};

#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

fn run<S>(mut service: S, calls: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..calls {
            let response = service.ready().await.unwrap().call(i).await.unwrap();
            black_box(response);
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "ours".into());
    let calls: u64 = args.next().map_or(100_000, |n| n.parse().expect("a count"));
    match mode.as_str() {
        "bare" => run(Noop, calls),
        "ours" => {
            let config = BreakerConfig {
                failure_rate_threshold: Some(0.5),
                minimum_throughput: 10,
                monitoring_period: Duration::from_secs(60),
                reset_timeout: Duration::from_secs(30),
                half_open_max_calls: 1,
                ..BreakerConfig::default()
            };
            run(
                BreakerLayer::new("calls", config).unwrap().layer(Noop),
                calls,
            );
        }
        "peer" => {
            let layer = CircuitBreakerLayer::builder()
                .sliding_window_type(SlidingWindowType::CountBased)
                .sliding_window_size(100)
                .failure_rate_threshold(0.5)
                .minimum_number_of_calls(10)
                .wait_duration_in_open(Duration::from_secs(30))
                .permitted_calls_in_half_open(1)
                .build()
                .unwrap();
            run(layer.layer(Noop), calls);
        }
        other => panic!("unknown mode {other}: bare, ours or peer"),
    }
}
