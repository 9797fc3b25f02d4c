//! Slowing down repeated login failures from one client: after a few
//! failures within a window, each further attempt from that address waits
//! longer (doubling, capped) before its credentials are even checked, so
//! guessing a password or a robot secret from one place gets slow while
//! a user who mistyped twice notices nothing. A success clears the
//! address's record. The counts live in the metadata database
//! ([`crate::metadata::LoginFailures`]), so replicas behind one balancer
//! slow a client down together; this module owns the rule.

use std::time::Duration;

/// Failures allowed before attempts are slowed.
pub const FREE_FAILURES: u32 = 5;

/// Failures further apart than this (seconds) start the count again.
pub const WINDOW_SECS: u64 = 15 * 60;

/// The longest wait.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// How long the next attempt of a client with `failures` recent failures
/// waits before it is checked.
pub fn delay(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16);
    (Duration::from_millis(250) * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_a_few_are_slowed_doubling_up_to_a_cap() {
        for n in 0..FREE_FAILURES {
            assert_eq!(delay(n), Duration::ZERO);
        }
        assert_eq!(delay(FREE_FAILURES), Duration::from_millis(250));
        assert_eq!(delay(FREE_FAILURES + 1), Duration::from_millis(500));
        assert_eq!(delay(FREE_FAILURES + 20), MAX_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }
}
