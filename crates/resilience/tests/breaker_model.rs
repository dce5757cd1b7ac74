//! Model-based test of the circuit breaker: random sequences of time steps,
//! calls, held calls finishing or being dropped, and operator actions, run
//! against the real breaker (on tokio's paused clock) and against a plain
//! reference model written from the rules, compared step by step: same
//! admit/reject decision, same `retry_after`, same state, same window counts.
//!
//! The model keeps every recorded outcome in a `Vec` with its time and counts
//! the window by filtering it, and checks the opening rule after every
//! recorded call; the real breaker uses time buckets and skips the check on a
//! success when it can prove it cannot trip. Agreement shows the shortcut is
//! exact (single-threaded).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use resilience::breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState};
use tokio::sync::oneshot;

/// The window: 10 s in buckets of 1 s.
const PERIOD_MS: u64 = 10_000;
const BUCKET_MS: u64 = PERIOD_MS / 10;

#[derive(Clone, Debug)]
struct Settings {
    failure_threshold: u32,
    failure_rate_threshold: Option<f64>,
    minimum_throughput: u32,
    reset_timeout_ms: u64,
    reset_timeout_max_ms: Option<u64>,
    half_open_max_calls: u32,
    slow_call_ms: Option<u64>,
    slow_call_rate_threshold: Option<f64>,
}

impl Settings {
    fn config(&self) -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_threshold: self.failure_threshold,
            failure_rate_threshold: self.failure_rate_threshold,
            minimum_throughput: self.minimum_throughput,
            monitoring_period: Duration::from_millis(PERIOD_MS),
            reset_timeout: Duration::from_millis(self.reset_timeout_ms),
            reset_timeout_max: self.reset_timeout_max_ms.map(Duration::from_millis),
            half_open_max_calls: self.half_open_max_calls,
            slow_call_duration: self.slow_call_ms.map(Duration::from_millis),
            slow_call_rate_threshold: self.slow_call_rate_threshold,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Let time pass (ms).
    Advance(u64),
    /// A call that finishes at once, succeeding or failing.
    Call(bool),
    /// A call that is admitted (or not) now and held.
    Start,
    /// The held call at this index (mod the number held) finishes.
    Finish(usize, bool),
    /// The held call at this index is dropped unfinished.
    Drop(usize),
    Reset,
    ForceOpen,
    Disable,
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
}

/// A call the model admitted: under which generation, and whether a probe.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    generation: u64,
    probe: bool,
    started: u64,
}

#[derive(Debug)]
enum Decision {
    Admitted(Option<Ticket>),
    Rejected(u64),
}

struct Model {
    s: Settings,
    now: u64,
    state: State,
    /// Every generation is one stay in one state (a new half-open round too).
    generation: u64,
    /// `(time, failure, slow)` of each call recorded since the last close.
    outcomes: Vec<(u64, bool, bool)>,
    open_until: u64,
    open_for: u64,
    probes_admitted: u32,
    probe_successes: u32,
    last_probe_at: u64,
}

impl Model {
    fn new(s: Settings) -> Self {
        Self {
            open_for: s.reset_timeout_ms,
            s,
            now: 0,
            state: State::Closed,
            generation: 0,
            outcomes: Vec::new(),
            open_until: 0,
            probes_admitted: 0,
            probe_successes: 0,
            last_probe_at: 0,
        }
    }

    fn enter(&mut self, state: State) {
        self.generation += 1;
        self.state = state;
        match state {
            State::Open => self.open_until = self.now + self.open_for,
            State::HalfOpen => {
                self.probes_admitted = 0;
                self.probe_successes = 0;
            }
            State::Closed => {
                self.outcomes.clear();
                self.open_for = self.s.reset_timeout_ms;
            }
            State::ForcedOpen | State::Disabled => {}
        }
    }

    /// (calls, failures, slow) inside the window now.
    fn window(&self) -> (u64, u64, u64) {
        let now_bucket = self.now / BUCKET_MS;
        let inside: Vec<_> = self
            .outcomes
            .iter()
            .filter(|(at, _, _)| now_bucket - at / BUCKET_MS < 10)
            .collect();
        (
            inside.len() as u64,
            inside.iter().filter(|o| o.1).count() as u64,
            inside.iter().filter(|o| o.2).count() as u64,
        )
    }

    fn trips(&self) -> bool {
        let (calls, failures, slow) = self.window();
        if calls < u64::from(self.s.minimum_throughput) {
            return false;
        }
        let by_failures = match self.s.failure_rate_threshold {
            None => failures >= u64::from(self.s.failure_threshold),
            Some(rate) => failures as f64 / calls as f64 >= rate,
        };
        let by_slow = self
            .s
            .slow_call_rate_threshold
            .is_some_and(|rate| slow as f64 / calls as f64 >= rate);
        by_failures || by_slow
    }

    fn admit(&mut self) -> Decision {
        loop {
            let ticket = |probe| Ticket {
                generation: self.generation,
                probe,
                started: self.now,
            };
            match self.state {
                State::Closed => return Decision::Admitted(Some(ticket(false))),
                State::Disabled => return Decision::Admitted(None),
                State::ForcedOpen => return Decision::Rejected(self.s.reset_timeout_ms),
                State::Open if self.now < self.open_until => {
                    return Decision::Rejected(self.open_until - self.now);
                }
                State::Open => self.enter(State::HalfOpen),
                State::HalfOpen => {
                    if self.probes_admitted < self.s.half_open_max_calls {
                        self.probes_admitted += 1;
                        self.last_probe_at = self.last_probe_at.max(self.now);
                        return Decision::Admitted(Some(ticket(true)));
                    }
                    let forget_at = self.last_probe_at + self.s.reset_timeout_ms;
                    if self.now < forget_at {
                        return Decision::Rejected(forget_at - self.now);
                    }
                    // The outstanding probes are forgotten: a new round.
                    self.enter(State::HalfOpen);
                }
            }
        }
    }

    fn finish(&mut self, ticket: Ticket, ok: bool) {
        if ticket.generation != self.generation {
            return;
        }
        let slow = self
            .s
            .slow_call_ms
            .is_some_and(|limit| self.now - ticket.started > limit);
        if ticket.probe {
            if !ok || (slow && self.s.slow_call_rate_threshold.is_some()) {
                self.open_for = match self.s.reset_timeout_max_ms {
                    Some(max) => (self.open_for * 2).min(max),
                    None => self.s.reset_timeout_ms,
                };
                self.enter(State::Open);
            } else {
                self.probe_successes += 1;
                if self.probe_successes >= self.s.half_open_max_calls {
                    self.enter(State::Closed);
                }
            }
        } else {
            self.outcomes.push((self.now, !ok, slow));
            if self.trips() {
                self.enter(State::Open);
            }
        }
    }

    fn cancel(&mut self, ticket: Ticket) {
        if ticket.probe && ticket.generation == self.generation {
            self.probes_admitted -= 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Driving the real breaker.

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// The work the breaker wraps: finishes when told, with the outcome told.
async fn controlled(rx: oneshot::Receiver<bool>) -> Result<(), std::io::Error> {
    match rx.await {
        Ok(true) => Ok(()),
        _ => Err(std::io::Error::other("failed")),
    }
}

fn state_of(state: BreakerState) -> State {
    match state {
        BreakerState::Closed => State::Closed,
        BreakerState::Open => State::Open,
        BreakerState::HalfOpen => State::HalfOpen,
        BreakerState::ForcedOpen => State::ForcedOpen,
        BreakerState::Disabled => State::Disabled,
    }
}

fn run(settings: Settings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let layer = BreakerLayer::new("model", settings.config()).unwrap();
        let breaker = layer.handle();
        let mut model = Model::new(settings);
        // Held calls: the real future, its trigger, and the model's ticket.
        let mut held = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Op::Call(_) | Op::Start => {
                    let (tx, rx) = oneshot::channel();
                    let mut future = Box::pin(breaker.call(controlled(rx)));
                    let real = poll_once(future.as_mut());
                    let decision = model.admit();
                    match (real, decision) {
                        (Poll::Pending, Decision::Admitted(ticket)) => {
                            if let Op::Call(ok) = op {
                                tx.send(ok).unwrap();
                                let result = poll_once(future.as_mut());
                                prop_assert!(result.is_ready(), "step {step}: call did not finish");
                                if let Some(ticket) = ticket {
                                    model.finish(ticket, ok);
                                }
                            } else {
                                held.push((future, tx, ticket));
                            }
                        }
                        (Poll::Ready(Err(error)), Decision::Rejected(retry_after)) => {
                            let open = error.downcast_ref::<BreakerOpen>();
                            prop_assert!(open.is_some(), "step {step}: not a BreakerOpen");
                            prop_assert_eq!(
                                open.unwrap().retry_after(),
                                Duration::from_millis(retry_after),
                                "step {}: retry_after",
                                step
                            );
                        }
                        (real, model) => {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: breaker {:?}, model {model:?}",
                                real.map(|r| r.map_err(|e| e.to_string()))
                            )));
                        }
                    }
                }
                Op::Finish(index, ok) => {
                    if !held.is_empty() {
                        let (mut future, tx, ticket) = held.remove(index % held.len());
                        tx.send(ok).unwrap();
                        prop_assert!(poll_once(future.as_mut()).is_ready());
                        if let Some(ticket) = ticket {
                            model.finish(ticket, ok);
                        }
                    }
                }
                Op::Drop(index) => {
                    if !held.is_empty() {
                        let (future, _tx, ticket) = held.remove(index % held.len());
                        drop(future);
                        if let Some(ticket) = ticket {
                            model.cancel(ticket);
                        }
                    }
                }
                Op::Reset => {
                    breaker.reset();
                    model.enter(State::Closed);
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.enter(State::ForcedOpen);
                }
                Op::Disable => {
                    breaker.disable();
                    model.enter(State::Disabled);
                }
            }
            prop_assert_eq!(
                state_of(breaker.state()),
                model.state,
                "step {}: state",
                step
            );
            let snapshot = breaker.snapshot();
            let (calls, failures, slow) = model.window();
            prop_assert_eq!(
                (snapshot.calls, snapshot.failures, snapshot.slow_calls),
                (calls, failures, slow),
                "step {}: window counts",
                step
            );
        }
        Ok(())
    })
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        1u32..=4,
        prop::option::weighted(0.3, prop::sample::select(vec![0.25, 0.5, 0.75, 1.0])),
        1u32..=5,
        1u64..=4,
        prop::option::of(1u64..=4),
        1u32..=3,
        prop::option::weighted(
            0.4,
            (
                5u64..=20,
                prop::option::of(prop::sample::select(vec![0.3, 0.5, 1.0])),
            ),
        ),
    )
        .prop_map(
            |(threshold, rate, min_calls, reset_s, max_factor, probes, slow)| Settings {
                failure_threshold: threshold,
                failure_rate_threshold: rate,
                minimum_throughput: min_calls,
                reset_timeout_ms: reset_s * 1000,
                reset_timeout_max_ms: max_factor.map(|f| reset_s * 1000 * f),
                half_open_max_calls: probes,
                slow_call_ms: slow.map(|(tenths, _)| tenths * 100),
                slow_call_rate_threshold: slow.and_then(|(_, rate)| rate),
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![0u64..=300, 300u64..=3000, 3000u64..=12000].prop_map(Op::Advance),
        8 => any::<bool>().prop_map(Op::Call),
        4 => Just(Op::Start),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::Reset),
        1 => prop::bool::weighted(0.5).prop_map(|force| if force { Op::ForceOpen } else { Op::Disable }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model(
        settings in settings(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(settings, ops)?;
    }
}
