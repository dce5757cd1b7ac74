//! Quiet hours: a daily window in the recipient's own time zone during which
//! only `urgent` notifications go out; the rest wait until the window ends.
//!
//! The window is wall-clock time in an IANA zone, so "22:00 to 07:00 in
//! Europe/London" stays 22:00-07:00 local across daylight-saving changes.
//! When the end time does not exist that day (it falls in the spring-forward
//! gap), the window ends at the first local time after the gap; when it
//! exists twice (fall back), at its first occurrence.
//!
//! ```
//! use boardroom::notifications::quiet::QuietHours;
//! use chrono::{TimeZone, Utc};
//!
//! let quiet = QuietHours::parse("22:00", "07:00", "Europe/London").unwrap();
//! // 23:30 UTC in January is 23:30 in London: held until 07:00 local.
//! let at = Utc.with_ymd_and_hms(2026, 1, 10, 23, 30, 0).unwrap();
//! assert_eq!(quiet.ends_after(at), Some(Utc.with_ymd_and_hms(2026, 1, 11, 7, 0, 0).unwrap()));
//! ```

use std::str::FromStr;

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// A validated quiet-hours window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Local start (inclusive).
    pub start: NaiveTime,
    /// Local end (exclusive).
    pub end: NaiveTime,
    /// The recipient's zone.
    pub zone: Tz,
}

/// Why a quiet-hours value was refused: the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHoursError {
    /// `start`, `end` or `timezone`.
    pub field: &'static str,
    /// What is allowed.
    pub message: String,
}

/// Parses `HH:MM` (or `HH:MM:SS`), 00:00 to 23:59.
pub fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .ok()
        // No leap seconds (chrono reads `:60` as one).
        .filter(|t| (text.len() == 5 || text.len() == 8) && t.nanosecond() < 1_000_000_000)
}

impl QuietHours {
    /// Validates the three API fields.
    pub fn parse(start: &str, end: &str, zone: &str) -> Result<Self, QuietHoursError> {
        let time = |field: &'static str, text: &str| {
            parse_time(text).ok_or_else(|| QuietHoursError {
                field,
                message: format!("`{field}` must be a time of day as HH:MM (00:00 to 23:59)"),
            })
        };
        let start = time("start", start)?;
        let end = time("end", end)?;
        if start == end {
            return Err(QuietHoursError {
                field: "end",
                message: "`end` must differ from `start`".into(),
            });
        }
        let zone = Tz::from_str(zone).map_err(|_| QuietHoursError {
            field: "timezone",
            message: "`timezone` must be an IANA time zone name such as Europe/London".into(),
        })?;
        Ok(Self { start, end, zone })
    }

    /// Whether the local time of day `t` is inside the window.
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            // Across midnight: 22:00-07:00.
            t >= self.start || t < self.end
        }
    }

    /// `None` when `at` is outside the window; otherwise the instant the
    /// window ends, in UTC.
    pub fn ends_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone).naive_local();
        let t = local.time();
        if !self.contains(t) {
            return None;
        }
        let mut day = local.date();
        if self.start > self.end && t >= self.start {
            day = day.succ_opt()?;
        }
        let end = resolve(self.zone, day, self.end);
        // A window ending in a DST gap may resolve to an instant not after `at`
        // only in pathological zones; never defer into the past.
        Some(end.max(at))
    }
}

/// The first instant at which the wall clock of `zone` shows `time` on `day`
/// or, when it never does (a spring-forward gap), the first instant after.
fn resolve(zone: Tz, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut naive = NaiveDateTime::new(day, time);
    // Gaps are at most a few hours; step through by minutes.
    for _ in 0..(24 * 60) {
        match zone.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => {
                naive += Duration::minutes(1);
                // Round up to the whole minute.
                naive = naive.with_second(0).unwrap_or(naive);
            }
        }
    }
    // Unreachable for real zones; fall back to reading the time as UTC.
    Utc.from_utc_datetime(&NaiveDateTime::new(day, time))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn a_window_across_midnight_holds_until_the_morning() {
        let quiet = QuietHours::parse("22:00", "07:00", "UTC").unwrap();
        // Before midnight: until tomorrow 07:00.
        assert_eq!(
            quiet.ends_after(utc(2026, 3, 3, 23, 15)),
            Some(utc(2026, 3, 4, 7, 0))
        );
        // After midnight: until today 07:00.
        assert_eq!(
            quiet.ends_after(utc(2026, 3, 4, 3, 0)),
            Some(utc(2026, 3, 4, 7, 0))
        );
        // The edges: 22:00 is inside, 07:00 outside, 21:59 outside.
        assert!(quiet.ends_after(utc(2026, 3, 4, 22, 0)).is_some());
        assert_eq!(quiet.ends_after(utc(2026, 3, 4, 7, 0)), None);
        assert_eq!(quiet.ends_after(utc(2026, 3, 4, 21, 59)), None);
        assert_eq!(quiet.ends_after(utc(2026, 3, 4, 12, 0)), None);
    }

    #[test]
    fn a_window_within_one_day() {
        let quiet = QuietHours::parse("12:00", "13:30", "UTC").unwrap();
        assert_eq!(
            quiet.ends_after(utc(2026, 3, 4, 12, 45)),
            Some(utc(2026, 3, 4, 13, 30))
        );
        assert_eq!(quiet.ends_after(utc(2026, 3, 4, 11, 59)), None);
        assert_eq!(quiet.ends_after(utc(2026, 3, 4, 13, 30)), None);
    }

    #[test]
    fn the_recipients_zone_decides_not_the_servers() {
        // 22:00-07:00 in Tokyo (UTC+9, no DST). 14:00 UTC is 23:00 in Tokyo.
        let quiet = QuietHours::parse("22:00", "07:00", "Asia/Tokyo").unwrap();
        assert_eq!(
            quiet.ends_after(utc(2026, 6, 1, 14, 0)),
            Some(utc(2026, 6, 1, 22, 0)) // 07:00 on 2 June in Tokyo
        );
        // 02:00 UTC is 11:00 in Tokyo: not quiet, though it is night in UTC.
        assert_eq!(quiet.ends_after(utc(2026, 6, 1, 2, 0)), None);
        // Los Angeles (UTC-7 in June): 05:30 UTC is 22:30 the day before.
        let quiet = QuietHours::parse("22:00", "07:00", "America/Los_Angeles").unwrap();
        assert_eq!(
            quiet.ends_after(utc(2026, 6, 2, 5, 30)),
            Some(utc(2026, 6, 2, 14, 0))
        );
    }

    #[test]
    fn london_spring_forward_ends_at_local_seven_which_is_six_utc() {
        // Clocks go 01:00 GMT -> 02:00 BST on Sunday 29 March 2026.
        let quiet = QuietHours::parse("22:00", "07:00", "Europe/London").unwrap();
        // 22:30 GMT on Saturday: the window ends at 07:00 BST = 06:00 UTC.
        assert_eq!(
            quiet.ends_after(utc(2026, 3, 28, 22, 30)),
            Some(utc(2026, 3, 29, 6, 0))
        );
        // A window ending inside the gap (01:30 does not exist that night)
        // ends when the clock jumps: 02:00 BST = 01:00 UTC.
        let gap = QuietHours::parse("23:00", "01:30", "Europe/London").unwrap();
        assert_eq!(
            gap.ends_after(utc(2026, 3, 28, 23, 30)),
            Some(utc(2026, 3, 29, 1, 0))
        );
    }

    #[test]
    fn london_fall_back_ends_at_local_seven_which_is_seven_utc() {
        // Clocks go 02:00 BST -> 01:00 GMT on Sunday 25 October 2026.
        let quiet = QuietHours::parse("22:00", "07:00", "Europe/London").unwrap();
        // 21:30 UTC on Saturday is 22:30 BST: inside; ends 07:00 GMT = 07:00 UTC.
        assert_eq!(
            quiet.ends_after(utc(2026, 10, 24, 21, 30)),
            Some(utc(2026, 10, 25, 7, 0))
        );
        // A window ending at 01:30, which happens twice: the first one (BST).
        let twice = QuietHours::parse("23:00", "01:30", "Europe/London").unwrap();
        assert_eq!(
            twice.ends_after(utc(2026, 10, 24, 22, 30)),
            Some(utc(2026, 10, 25, 0, 30))
        );
    }

    #[test]
    fn new_york_dst_changes() {
        let quiet = QuietHours::parse("22:00", "07:00", "America/New_York").unwrap();
        // Spring forward on Sunday 8 March 2026 (02:00 EST -> 03:00 EDT).
        // 03:30 UTC on 8 March is 22:30 EST on 7 March; ends 07:00 EDT = 11:00 UTC.
        assert_eq!(
            quiet.ends_after(utc(2026, 3, 8, 3, 30)),
            Some(utc(2026, 3, 8, 11, 0))
        );
        // Fall back on Sunday 1 November 2026 (02:00 EDT -> 01:00 EST).
        // 02:30 UTC on 1 November is 22:30 EDT on 31 October; ends 07:00 EST = 12:00 UTC.
        assert_eq!(
            quiet.ends_after(utc(2026, 11, 1, 2, 30)),
            Some(utc(2026, 11, 1, 12, 0))
        );
        // A window ending at 02:30 on the spring-forward night ends at 03:00 EDT = 07:00 UTC.
        let gap = QuietHours::parse("23:00", "02:30", "America/New_York").unwrap();
        assert_eq!(
            gap.ends_after(utc(2026, 3, 8, 5, 0)),
            Some(utc(2026, 3, 8, 7, 0))
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert_eq!(
            QuietHours::parse("25:00", "07:00", "UTC")
                .unwrap_err()
                .field,
            "start"
        );
        assert_eq!(
            QuietHours::parse("22:00", "7", "UTC").unwrap_err().field,
            "end"
        );
        assert_eq!(
            QuietHours::parse("22:00", "07:00", "Mars/Olympus")
                .unwrap_err()
                .field,
            "timezone"
        );
        assert_eq!(
            QuietHours::parse("22:00", "22:00", "UTC")
                .unwrap_err()
                .field,
            "end"
        );
        assert!(QuietHours::parse("22:00:00", "06:59", "Europe/London").is_ok());
    }
}
