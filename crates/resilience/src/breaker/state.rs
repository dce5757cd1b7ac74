//! The breaker's shared state machine: one per layer, shared by every service
//! copy, handle and wrapped future.
//!
//! Hot path: the state and a generation number are packed in one `AtomicU64`
//! (`generation << 8 | state`), read once per admission and once per
//! completion; counts go to the [`Window`]; half-open probe slots are another
//! packed word (`generation << 32 | admitted`) taken with a CAS. Every state
//! change happens under the `control` mutex, which is never held across an
//! await and never taken by a call in the closed state or a rejection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::config::BreakerConfig;
use super::window::{BUCKETS, Counts, Ticks, Window};
use crate::clock::Clock;

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum BreakerState {
    /// Calls pass and their outcomes are counted.
    Closed = 0,
    /// Calls are refused until the next probe time.
    Open = 1,
    /// A few probe calls pass; their outcomes close or reopen the breaker.
    HalfOpen = 2,
    /// Opened by an operator: every call is refused until `reset()`.
    ForcedOpen = 3,
    /// Switched off by an operator or by config: every call passes, nothing is counted.
    Disabled = 4,
}

impl BreakerState {
    /// Every state, in gauge order.
    pub const ALL: [BreakerState; 5] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::Disabled,
    ];

    /// The state's name as used in metrics labels and JSON: `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        }
    }

    #[inline]
    fn from_word(word: u64) -> Self {
        match word & 0xff {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            _ => BreakerState::Disabled,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of state, as sent to the receivers of
/// [`BreakerHandle::subscribe`](super::BreakerHandle::subscribe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// When it happened.
    pub at: Instant,
}

/// What a call was allowed to do.
pub(crate) enum Admission {
    /// Closed, or a half-open probe: run it and report the outcome.
    Admitted(Permit),
    /// Disabled: run it, report nothing.
    Pass,
    /// Refused; retry after this long.
    Rejected(Duration),
}

/// A call's claim on the breaker, reported on completion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permit {
    /// The state word seen at admission; an outcome reported under another
    /// word belongs to a past state and is ignored.
    word: u64,
    /// Admission time (nanoseconds since the origin), when slow calls are judged.
    started: u64,
}

impl Permit {
    #[inline]
    pub(crate) fn is_probe(&self) -> bool {
        BreakerState::from_word(self.word) == BreakerState::HalfOpen
    }
}

/// Metric handles, created once with the breaker.
struct BreakerMetrics {
    state: [Gauge; 5],
    success: Counter,
    failure: Counter,
    rejected: Counter,
    recovery: Histogram,
    /// `[from][to]`; a no-op counter for pairs that cannot happen, so only
    /// reachable pairs appear as series.
    transitions: [[Counter; 5]; 5],
}

/// Changed only under the lock.
struct Control {
    /// Current open time (grows with the backoff).
    open_for: Duration,
    /// Probes of the current half-open round that succeeded.
    probe_successes: u32,
    /// When the breaker last left closed, for the recovery histogram.
    tripped_at: Option<Instant>,
}

/// Aligned to a cache line so that, inside its `Arc`, the reference counts
/// (bumped by every admitted call's future) sit on a line of their own, away
/// from the read-mostly fields every call reads.
#[repr(align(64))]
pub(crate) struct Shared {
    name: Arc<str>,
    /// Every time below is nanoseconds of this clock.
    clock: Clock,
    ticks: Ticks,
    failure_threshold: u64,
    failure_rate_threshold: Option<f64>,
    minimum_throughput: u64,
    reset_timeout: Duration,
    reset_timeout_max: Option<Duration>,
    half_open_max_calls: u64,
    slow_call_nanos: Option<u64>,
    slow_call_rate_threshold: Option<f64>,

    /// `generation << 8 | state`.
    word: AtomicU64,
    window: Window,
    /// Nanoseconds since the origin at which an open breaker admits a probe.
    open_until: AtomicU64,
    /// `(generation as u32) << 32 | probes admitted in this half-open round`.
    probes: AtomicU64,
    /// Nanoseconds since the origin of the latest probe admission.
    last_probe_at: AtomicU64,
    transitions: AtomicU64,
    control: Mutex<Control>,
    events: broadcast::Sender<Transition>,
    metrics: BreakerMetrics,
}

#[inline]
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Shared {
    /// Builds the state from a validated config, registering its metrics with
    /// the recorder current now.
    pub(crate) fn new(name: Arc<str>, config: &BreakerConfig) -> Self {
        let gauge = |state: BreakerState| metrics::gauge!("resilience_breaker_state", "name" => name.clone(), "state" => state.as_str());
        let calls = |outcome: &'static str| metrics::counter!("resilience_breaker_calls_total", "name" => name.clone(), "outcome" => outcome);
        let metrics = BreakerMetrics {
            state: BreakerState::ALL.map(gauge),
            success: calls("success"),
            failure: calls("failure"),
            rejected: calls("rejected"),
            recovery: metrics::histogram!("resilience_breaker_recovery_seconds", "name" => name.clone()),
            transitions: BreakerState::ALL.map(|from| {
                BreakerState::ALL.map(|to| {
                    if can_happen(from, to) {
                        metrics::counter!(
                            "resilience_breaker_transitions_total",
                            "name" => name.clone(),
                            "from" => from.as_str(),
                            "to" => to.as_str()
                        )
                    } else {
                        Counter::noop()
                    }
                })
            }),
        };
        let initial = if config.enabled {
            BreakerState::Closed
        } else {
            BreakerState::Disabled
        };
        for state in BreakerState::ALL {
            metrics.state[state as usize].set(if state == initial { 1.0 } else { 0.0 });
        }
        let (events, _) = broadcast::channel(64);
        // At least 1 ms once validated; `Ticks` needs 2.
        let tick_nanos = (nanos(config.monitoring_period) / BUCKETS).max(2);
        Self {
            clock: Clock::new(),
            ticks: Ticks::new(tick_nanos),
            failure_threshold: u64::from(config.failure_threshold),
            failure_rate_threshold: config.failure_rate_threshold,
            minimum_throughput: u64::from(config.minimum_throughput),
            reset_timeout: config.reset_timeout,
            reset_timeout_max: config.reset_timeout_max,
            half_open_max_calls: u64::from(config.half_open_max_calls),
            slow_call_nanos: config.slow_call_duration.map(nanos),
            slow_call_rate_threshold: config.slow_call_rate_threshold,
            word: AtomicU64::new(initial as u64),
            window: Window::new(),
            open_until: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            last_probe_at: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            control: Mutex::new(Control {
                open_for: config.reset_timeout,
                probe_successes: 0,
                tripped_at: None,
            }),
            events,
            metrics,
            name,
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_word(self.word.load(Acquire))
    }

    pub(crate) fn transitions(&self) -> u64 {
        self.transitions.load(Relaxed)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Nanoseconds since the breaker was built (see [`crate::clock`]).
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.now()
    }

    fn instant_of(&self, at: u64) -> Instant {
        self.clock.instant_at(at)
    }

    // ---- admission -------------------------------------------------------

    /// Decides at once whether a call may run. Never waits.
    ///
    /// Closed and disabled are decided inline from one load; the other
    /// states go through [`admit_slow`](Self::admit_slow).
    #[inline]
    pub(crate) fn admit(&self) -> Admission {
        let word = self.word.load(Acquire);
        match BreakerState::from_word(word) {
            BreakerState::Closed => {
                let started = if self.slow_call_nanos.is_some() {
                    self.now_nanos()
                } else {
                    0
                };
                Admission::Admitted(Permit { word, started })
            }
            BreakerState::Disabled => Admission::Pass,
            _ => self.admit_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn admit_slow(&self) -> Admission {
        loop {
            let word = self.word.load(Acquire);
            match BreakerState::from_word(word) {
                BreakerState::Closed => {
                    let started = if self.slow_call_nanos.is_some() {
                        self.now_nanos()
                    } else {
                        0
                    };
                    return Admission::Admitted(Permit { word, started });
                }
                BreakerState::Disabled => return Admission::Pass,
                BreakerState::ForcedOpen => {
                    self.metrics.rejected.increment(1);
                    return Admission::Rejected(self.reset_timeout);
                }
                BreakerState::Open => {
                    let now = self.now_nanos();
                    let until = self.open_until.load(Acquire);
                    if now < until {
                        self.metrics.rejected.increment(1);
                        return Admission::Rejected(Duration::from_nanos(until - now));
                    }
                    self.half_open_after_timeout(word, now);
                }
                BreakerState::HalfOpen => {
                    let now = self.now_nanos();
                    match self.take_probe_slot(word, now) {
                        Slot::Taken => {
                            return Admission::Admitted(Permit { word, started: now });
                        }
                        Slot::StateChanged => {}
                        Slot::Full => {
                            let forget_at = self
                                .last_probe_at
                                .load(Acquire)
                                .saturating_add(nanos(self.reset_timeout));
                            if now < forget_at {
                                self.metrics.rejected.increment(1);
                                return Admission::Rejected(Duration::from_nanos(forget_at - now));
                            }
                            self.forget_probes(word, now);
                        }
                    }
                }
            }
        }
    }

    fn take_probe_slot(&self, word: u64, now: u64) -> Slot {
        let generation = probe_generation(word);
        let mut probes = self.probes.load(Acquire);
        loop {
            if probes >> 32 != generation {
                return Slot::StateChanged;
            }
            if probes & 0xffff_ffff >= self.half_open_max_calls {
                return Slot::Full;
            }
            match self
                .probes
                .compare_exchange_weak(probes, probes + 1, AcqRel, Acquire)
            {
                Ok(_) => {
                    self.last_probe_at.fetch_max(now, AcqRel);
                    return Slot::Taken;
                }
                Err(actual) => probes = actual,
            }
        }
    }

    // ---- completion ------------------------------------------------------

    /// Reports the outcome of an admitted call.
    ///
    /// Inline: a closed call that leaves the window without anything bad in
    /// it costs one clock read (the time-stamp counter, see
    /// [`crate::clock`]), a multiply to find its bucket and one counter
    /// increment.
    #[inline]
    pub(crate) fn complete(&self, permit: Permit, failure: bool) {
        if failure {
            self.metrics.failure.increment(1);
        } else {
            self.metrics.success.increment(1);
        }
        if self.word.load(Acquire) != permit.word {
            // Admitted under a state that has since changed: its outcome
            // says nothing about the current one.
            return;
        }
        let now = self.now_nanos();
        if permit.is_probe() || self.slow_call_nanos.is_some() {
            self.complete_timed(permit, failure, now);
            return;
        }
        let tick = self.ticks.of(now);
        self.window.record(tick, failure, false);
        // A success can only complete the rule when the window already holds
        // something bad (it may lift the throughput over the minimum).
        if failure || self.window.holds_bad(tick) {
            self.check_rule(permit.word, tick, now);
        }
    }

    /// [`complete`](Self::complete) for a probe, or when calls are timed
    /// (`slow_call_duration` set).
    #[inline(never)]
    fn complete_timed(&self, permit: Permit, failure: bool, now: u64) {
        let slow = self
            .slow_call_nanos
            .is_some_and(|limit| now.saturating_sub(permit.started) > limit);
        if permit.is_probe() {
            let failed = failure || (slow && self.slow_call_rate_threshold.is_some());
            self.probe_finished(permit.word, failed, now);
            return;
        }
        let tick = self.ticks.of(now);
        self.window.record(tick, failure, slow);
        if failure || slow || self.window.holds_bad(tick) {
            self.check_rule(permit.word, tick, now);
        }
    }

    /// Opens the breaker if the window now meets the opening rule.
    #[cold]
    #[inline(never)]
    fn check_rule(&self, word: u64, tick: u64, now: u64) {
        if self.trips(self.window.counts(tick)) {
            let mut control = self.control.lock();
            if self.word.load(Acquire) == word {
                self.transition(&mut control, word, BreakerState::Open, now);
            }
        }
    }

    /// A probe's future was dropped before it finished: free its slot, count
    /// nothing. Any other call's cancellation is a no-op.
    #[inline]
    pub(crate) fn cancel(&self, permit: Permit) {
        if permit.is_probe() {
            self.cancel_probe(permit);
        }
    }

    #[cold]
    #[inline(never)]
    fn cancel_probe(&self, permit: Permit) {
        let _control = self.control.lock();
        if self.word.load(Acquire) != permit.word {
            return;
        }
        let generation = probe_generation(permit.word);
        // Admissions race without the lock; a CAS keeps their counts.
        let _ = self.probes.fetch_update(AcqRel, Acquire, |probes| {
            (probes >> 32 == generation && probes & 0xffff_ffff > 0).then(|| probes - 1)
        });
    }

    fn trips(&self, counts: Counts) -> bool {
        if counts.calls < self.minimum_throughput || counts.calls == 0 {
            return false;
        }
        let calls = counts.calls as f64;
        let failures_trip = match self.failure_rate_threshold {
            None => counts.failures >= self.failure_threshold,
            Some(rate) => counts.failures as f64 / calls >= rate,
        };
        let slow_trips = self
            .slow_call_rate_threshold
            .is_some_and(|rate| counts.slow as f64 / calls >= rate);
        failures_trip || slow_trips
    }

    #[cold]
    #[inline(never)]
    fn probe_finished(&self, word: u64, failed: bool, now: u64) {
        let mut control = self.control.lock();
        if self.word.load(Acquire) != word {
            return;
        }
        if failed {
            control.open_for = match self.reset_timeout_max {
                Some(max) => (control.open_for * 2).min(max),
                None => self.reset_timeout,
            };
            self.transition(&mut control, word, BreakerState::Open, now);
            return;
        }
        control.probe_successes += 1;
        if u64::from(control.probe_successes) >= self.half_open_max_calls {
            self.transition(&mut control, word, BreakerState::Closed, now);
        }
    }

    // ---- transitions -----------------------------------------------------

    fn half_open_after_timeout(&self, word: u64, now: u64) {
        let mut control = self.control.lock();
        if self.word.load(Acquire) == word && now >= self.open_until.load(Acquire) {
            self.transition(&mut control, word, BreakerState::HalfOpen, now);
        }
    }

    /// Every probe slot is taken and the newest probe is older than
    /// `reset_timeout`: forget them and start a new half-open round.
    fn forget_probes(&self, word: u64, now: u64) {
        let mut control = self.control.lock();
        if self.word.load(Acquire) == word {
            self.transition(&mut control, word, BreakerState::HalfOpen, now);
        }
    }

    /// Operator action: go to `to` from whatever state.
    pub(crate) fn set(&self, to: BreakerState) {
        let now = self.now_nanos();
        let mut control = self.control.lock();
        let word = self.word.load(Acquire);
        if to == BreakerState::Closed {
            control.open_for = self.reset_timeout;
        }
        self.transition(&mut control, word, to, now);
    }

    /// Moves to `to`, starting a new generation. Caller holds the lock and
    /// has checked that `from_word` is current.
    fn transition(&self, control: &mut Control, from_word: u64, to: BreakerState, now: u64) {
        let from = BreakerState::from_word(from_word);
        let generation = (from_word >> 8) + 1;
        let at = self.instant_of(now);
        match to {
            BreakerState::Open => {
                if from == BreakerState::Closed {
                    control.tripped_at = Some(at);
                }
                self.open_until
                    .store(now.saturating_add(nanos(control.open_for)), Release);
            }
            BreakerState::HalfOpen => {
                control.probe_successes = 0;
                self.probes.store((generation & 0xffff_ffff) << 32, Release);
            }
            BreakerState::Closed => {
                self.window.clear();
                control.open_for = self.reset_timeout;
                if let Some(tripped_at) = control.tripped_at.take() {
                    self.metrics
                        .recovery
                        .record(at.saturating_duration_since(tripped_at).as_secs_f64());
                }
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => {
                control.tripped_at = None;
            }
        }
        self.word.store(generation << 8 | to as u64, Release);
        if from == to {
            // A new half-open round, or an operator repeating themselves.
            return;
        }
        self.transitions.fetch_add(1, Relaxed);
        self.metrics.state[from as usize].set(0.0);
        self.metrics.state[to as usize].set(1.0);
        self.metrics.transitions[from as usize][to as usize].increment(1);
        tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state change");
        // No receiver is not an error.
        let _ = self.events.send(Transition { from, to, at });
    }

    // ---- observation -----------------------------------------------------

    /// Window counts now, and the time until the next probe if open.
    pub(crate) fn observe(&self) -> (BreakerState, Counts, Option<Duration>) {
        let now = self.now_nanos();
        let state = self.state();
        let counts = self.window.counts(self.ticks.of(now));
        let next_probe_in = (state == BreakerState::Open)
            .then(|| Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(now)));
        (state, counts, next_probe_in)
    }
}

/// Whether the breaker can ever go from `from` to `to`: the automatic cycle,
/// or an operator action (reset, force open, disable) from any other state.
fn can_happen(from: BreakerState, to: BreakerState) -> bool {
    use BreakerState::*;
    from != to
        && matches!(
            (from, to),
            (Closed, Open)
                | (Open, HalfOpen)
                | (HalfOpen, Open)
                | (_, Closed)
                | (_, ForcedOpen)
                | (_, Disabled)
        )
}

enum Slot {
    Taken,
    Full,
    StateChanged,
}

fn probe_generation(word: u64) -> u64 {
    (word >> 8) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    fn config(monitoring_period: Duration) -> BreakerConfig {
        BreakerConfig {
            monitoring_period,
            ..BreakerConfig::default()
        }
    }

    fn succeed(state: &Shared) {
        let Admission::Admitted(permit) = state.admit() else {
            panic!("a closed breaker admits");
        };
        state.complete(permit, false);
    }

    /// A breaker dropped and another built in the very same memory (what an
    /// allocator may well do) starts from its own clock and empty buckets:
    /// nothing of the old one's window (or of any per-thread state keyed by
    /// address) carries over.
    #[tokio::test(start_paused = true)]
    async fn a_state_built_where_a_dropped_one_was_gets_its_own_buckets() {
        let mut state = Arc::new(Shared::new(
            "before".into(),
            &config(Duration::from_secs(100)),
        ));
        advance(Duration::from_secs(25)).await;
        succeed(&state); // its tick 2 of 10 s: [20 s, 30 s)
        let address = Arc::as_ptr(&state);

        // Drops the old state in place; 1 s buckets from 25 s on.
        *Arc::get_mut(&mut state).expect("the only owner") =
            Shared::new("after".into(), &config(Duration::from_secs(10)));
        assert_eq!(Arc::as_ptr(&state), address, "same address");
        succeed(&state); // its tick 0
        assert_eq!(state.observe().1.calls, 1, "counted in the current bucket");
        advance(Duration::from_secs(3)).await;
        succeed(&state); // its tick 3
        assert_eq!(state.observe().1.calls, 2);
        advance(Duration::from_secs(7)).await;
        assert_eq!(state.observe().1.calls, 1, "tick 0 has left the window");
        advance(Duration::from_secs(3)).await;
        assert_eq!(state.observe().1.calls, 0, "tick 3 has left the window");
    }
}
