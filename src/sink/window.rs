//! When a window closes: a pure function of the window's state, the limits and the clock.
//!
//! A window opens with its first event (or, with `skip_empty = false`, as soon as the previous
//! one closed, so that a quiet partition still gets its empty file as with Capture) and closes
//! when it reaches `max_age` or `max_bytes`, whichever comes first. Shutdown closes it too, but
//! that is the partition's decision, not the window's.

use std::time::{Duration, Instant};

/// When windows close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    pub max_age: Duration,
    pub max_bytes: u64,
    /// Write nothing for a window without events.
    pub skip_empty: bool,
}

/// What the rollover decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub opened_at: Instant,
    pub events: u64,
    /// Encoded bytes so far, buffered or written.
    pub bytes: u64,
}

/// Why a window is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollover {
    /// Keep the window open.
    Keep,
    /// It reached `max_age`.
    Age,
    /// It reached `max_bytes`.
    Size,
}

impl WindowSettings {
    /// Whether the open window must close now. Size is checked first: a window that is both
    /// full and old is reported as full (either way it closes).
    pub fn rollover(&self, window: &WindowState, now: Instant) -> Rollover {
        if window.bytes >= self.max_bytes {
            Rollover::Size
        } else if now >= self.deadline(window) {
            Rollover::Age
        } else {
            Rollover::Keep
        }
    }

    /// When the window reaches its maximum age.
    pub fn deadline(&self, window: &WindowState) -> Instant {
        window.opened_at + self.max_age
    }

    /// Whether a window should be open while no event has arrived.
    pub fn opens_empty(&self) -> bool {
        !self.skip_empty
    }

    /// Whether closing this window writes anything.
    pub fn writes(&self, window: &WindowState) -> bool {
        window.events > 0 || !self.skip_empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(10);
    const BYTES: u64 = 1000;

    fn settings(skip_empty: bool) -> WindowSettings {
        WindowSettings {
            max_age: AGE,
            max_bytes: BYTES,
            skip_empty,
        }
    }

    /// Every combination of age (before, at, after the limit), size (below, at, above) and
    /// emptiness, for both `skip_empty` settings.
    #[test]
    fn rollover_is_size_first_then_age_at_or_past_the_limits() {
        let opened_at = Instant::now();
        let ages = [
            (Duration::ZERO, false),
            (AGE - Duration::from_millis(1), false),
            (AGE, true),
            (AGE + Duration::from_secs(5), true),
        ];
        let sizes = [
            (0, false),
            (BYTES - 1, false),
            (BYTES, true),
            (BYTES * 3, true),
        ];
        for skip_empty in [true, false] {
            let settings = settings(skip_empty);
            for (age, old) in ages {
                for (bytes, full) in sizes {
                    for events in [0, 1, 500] {
                        let window = WindowState {
                            opened_at,
                            events,
                            bytes,
                        };
                        let expected = match (full, old) {
                            (true, _) => Rollover::Size,
                            (false, true) => Rollover::Age,
                            (false, false) => Rollover::Keep,
                        };
                        assert_eq!(
                            settings.rollover(&window, opened_at + age),
                            expected,
                            "age {age:?}, {bytes} bytes, {events} events, skip_empty {skip_empty}"
                        );
                        assert_eq!(settings.deadline(&window), opened_at + AGE);
                        assert_eq!(settings.writes(&window), events > 0 || !skip_empty);
                    }
                }
            }
            assert_eq!(settings.opens_empty(), !skip_empty);
        }
    }

    #[test]
    fn a_clock_before_the_opening_keeps_the_window() {
        let opened_at = Instant::now() + Duration::from_secs(60);
        let window = WindowState {
            opened_at,
            events: 1,
            bytes: 1,
        };
        assert_eq!(
            settings(true).rollover(&window, Instant::now()),
            Rollover::Keep
        );
    }
}
