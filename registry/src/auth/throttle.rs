//! Slowing down repeated login failures from one client: after a few
//! failures within a window, each further attempt from that address waits
//! longer (doubling, capped) before its credentials are even checked, so
//! guessing a password or a robot secret from one place gets slow while
//! a user who mistyped twice notices nothing. A success clears the
//! address's record. The table is bounded; the oldest records go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are slowed.
pub const FREE_FAILURES: u32 = 5;

/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The longest wait.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Addresses remembered, at most.
const MAX_CLIENTS: usize = 100_000;

/// Login failures per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// How long an attempt from `ip` waits before it is checked.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((n, last)) if *n >= FREE_FAILURES && last.elapsed() < WINDOW => {
                let doublings = (n - FREE_FAILURES).min(16);
                (Duration::from_millis(250) * 2u32.pow(doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    /// `ip` failed a login: its failures within the window so far.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_CLIENTS {
            failures.retain(|_, (_, last)| last.elapsed() < WINDOW);
            if failures.len() >= MAX_CLIENTS {
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
        entry.0
    }

    /// `ip` logged in.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_a_few_are_slowed_and_a_success_clears_them() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.delay(ip), Duration::ZERO);
            t.failed(ip);
        }
        assert_eq!(t.delay(ip), Duration::from_millis(250));
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::from_millis(500));
        for _ in 0..20 {
            t.failed(ip);
        }
        assert_eq!(t.delay(ip), MAX_DELAY);
        assert_eq!(t.delay(other), Duration::ZERO, "per client");
        t.succeeded(ip);
        assert_eq!(t.delay(ip), Duration::ZERO);
    }
}
