//! The one retry policy of berth's clients: exponential backoff with a
//! cap. The push client waits by it between attempts at a request that
//! failed transiently (a connection error, 429, 5xx); the webhook bot waits
//! by it between runs of a bump that failed. Pure arithmetic: callers
//! sleep.

use std::time::Duration;

/// Exponential backoff: `initial`, then `factor` times longer each attempt,
/// never longer than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// Each wait is this many times the previous one.
    pub factor: u32,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The client's policy for one request: 0.2 s, 0.8 s, 3.2 s, 12.8 s,
    /// then 51.2 s.
    pub const REQUEST: Self = Self {
        initial: Duration::from_millis(200),
        factor: 4,
        max: Duration::from_millis(51_200),
    };

    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.initial;
        for _ in 1..attempt.max(1) {
            if d >= self.max {
                break;
            }
            d = d.saturating_mul(self.factor);
        }
        d.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stop_at_the_cap() {
        let ms = |a| Backoff::REQUEST.delay(a).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(60)],
            [200, 200, 800, 3200, 12800, 51200, 51200, 51200]
        );
        let bot = Backoff {
            initial: Duration::from_millis(500),
            factor: 2,
            max: Duration::from_secs(600),
        };
        assert_eq!(bot.delay(3), Duration::from_secs(2));
        assert_eq!(bot.delay(u32::MAX), Duration::from_secs(600));
    }
}
