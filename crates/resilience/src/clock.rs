//! The clock the layers read on their hot paths.
//!
//! Each layer keeps time as nanoseconds since its own origin, read from a
//! [`Clock`] it creates when it is built. There are two sources:
//!
//! - **By default, the CPU's time-stamp counter** through `quanta`
//!   (calibrated once per process against the OS monotonic clock; where the
//!   counter is not invariant, quanta reads the OS clock instead). A read is
//!   a `rdtsc` and a multiply: ≈ 12 ns on this project's KVM machines against
//!   ≈ 24–33 ns for `Instant::now()` (a vDSO `clock_gettime`), and a closed
//!   breaker call, a measured call and a cache hit each read the clock.
//! - **With the crate feature `test-util`, tokio's clock**
//!   (`tokio::time::Instant::now()`), so that `tokio::time::pause` and
//!   `advance` move the layers' time as well. The feature turns on tokio's
//!   `test-util`; this crate's own tests enable it (a dev-dependency on
//!   itself). Enable it in your tests wherever you pause tokio's clock
//!   around these layers — without it the layers keep reading the real
//!   clock, whatever tokio's paused clock says.
//!
//! Both sources are monotonic. Instants handed out (a breaker transition's
//! `at`, an alert's `raised`) are tokio `Instant`s: the origin plus the
//! nanoseconds read, so they agree with `tokio::time::Instant::now()` to
//! within the counter's calibration (parts per million).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A monotonic clock counting nanoseconds from the moment it was created.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    /// The tokio instant of nanosecond 0.
    origin: Instant,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// tokio's (pausable) clock.
    Tokio,
    /// The time-stamp counter, through quanta.
    Counter {
        clock: quanta::Clock,
        /// The raw counter at `origin`.
        origin_raw: u64,
    },
}

/// One calibrated quanta clock per process: calibration takes milliseconds
/// and would otherwise run for every clock.
fn counter() -> &'static quanta::Clock {
    static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

#[inline]
fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock {
    /// The build's clock: the time-stamp counter, or tokio's clock with the
    /// `test-util` feature.
    pub(crate) fn new() -> Self {
        if cfg!(feature = "test-util") {
            Self::tokio()
        } else {
            Self::counter()
        }
    }

    /// A clock reading tokio's clock (follows `tokio::time::pause`).
    pub(crate) fn tokio() -> Self {
        Self {
            origin: Instant::now(),
            source: Source::Tokio,
        }
    }

    /// A clock reading the time-stamp counter.
    pub(crate) fn counter() -> Self {
        let clock = counter().clone();
        let origin_raw = clock.raw();
        Self {
            origin: Instant::now(),
            source: Source::Counter { clock, origin_raw },
        }
    }

    /// Nanoseconds since the clock was created.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.source {
            Source::Tokio => {
                saturating_nanos(Instant::now().saturating_duration_since(self.origin))
            }
            Source::Counter { clock, origin_raw } => clock.delta_as_nanos(*origin_raw, clock.raw()),
        }
    }

    /// The tokio instant of nanosecond `at` of this clock.
    pub(crate) fn instant_at(&self, at: u64) -> Instant {
        self.origin + Duration::from_nanos(at)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production source, which the crate's tests (built with
    /// `test-util`) do not otherwise read: monotonic, and in step with the
    /// OS clock.
    #[test]
    fn the_counter_clock_follows_the_os_clock() {
        let clock = Clock::counter();
        let started = std::time::Instant::now();
        let first = clock.now();
        let mut last = first;
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        std::thread::sleep(Duration::from_millis(20));
        let counted = clock.now() - first;
        let elapsed = saturating_nanos(started.elapsed());
        assert!(
            counted >= 19_000_000 && counted <= elapsed + 1_000_000,
            "counted {counted} ns while the OS clock saw {elapsed} ns"
        );
        let at = clock.instant_at(counted);
        assert_eq!(
            at.saturating_duration_since(clock.origin).as_nanos(),
            u128::from(counted)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_the_paused_clock() {
        let clock = Clock::tokio();
        assert_eq!(clock.now(), 0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now(), 3_000_000_000);
        assert_eq!(clock.instant_at(clock.now()), Instant::now());
        assert_eq!(
            Clock::new().now(),
            0,
            "the crate's tests are built with `test-util`: tokio's clock"
        );
    }
}
