//! How long sources are given, from what the mirror measures: the time
//! from asking a node or the registry to its first bytes, and the longest
//! silence within each download (moving averages). The configured
//! timeouts are the floor, what a fast, idle link needs; on a slow or
//! shared link first bytes and silences take longer, and the timeouts grow
//! with them, so a node that is merely slow (joining a fetch that still
//! waits for the registry, or sharing its link with four others) is not
//! abandoned for the registry — which would cost egress and, on a shared
//! link, time.

use std::sync::Mutex;
use std::time::Duration;

use crate::sources::SourceKind;

/// How long sources are given before the next one is asked.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A source that sends nothing for this long is left for the next.
    pub stall: Duration,
    /// A node that has not sent its first bytes this long after being
    /// asked is left for the next.
    pub first_byte: Duration,
    /// A node that has not started this long after being asked is joined
    /// by a request to the next node (a hedged request).
    pub hedge: Duration,
}

/// Upper bounds, so a measurement gone wild cannot park a download.
const MAX_FIRST_BYTE: Duration = Duration::from_secs(20);
const MAX_STALL: Duration = Duration::from_secs(30);

/// Moving averages of what sources did, in seconds.
#[derive(Debug, Default)]
struct Averages {
    first_byte_node: Option<f64>,
    first_byte_registry: Option<f64>,
    longest_silence: Option<f64>,
}

/// What the mirror measured of its sources, and the timeouts that follow.
#[derive(Debug)]
pub struct Measured {
    floor: Timeouts,
    averages: Mutex<Averages>,
}

/// Weight of the newest sample.
const ALPHA: f64 = 0.3;

fn blend(avg: &mut Option<f64>, sample: f64) {
    *avg = Some(match *avg {
        Some(a) => a + ALPHA * (sample - a),
        None => sample,
    });
}

impl Measured {
    /// Nothing measured yet: the timeouts are `floor`.
    pub fn new(floor: Timeouts) -> Self {
        Self {
            floor,
            averages: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Averages> {
        self.averages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A source of `kind` sent its first bytes `took` after being asked.
    pub fn first_byte(&self, kind: SourceKind, took: Duration) {
        let mut a = self.lock();
        let avg = if kind.is_node() {
            &mut a.first_byte_node
        } else if kind == SourceKind::Registry {
            &mut a.first_byte_registry
        } else {
            return;
        };
        blend(avg, took.as_secs_f64());
    }

    /// A download from a source fell silent for at most `longest`.
    pub fn silence(&self, longest: Duration) {
        blend(&mut self.lock().longest_silence, longest.as_secs_f64());
    }

    /// The timeouts now: each the floor, or more where measurements say
    /// sources need it. A node's first bytes may wait for the registry's
    /// (it may be joining a fetch that just started): four times both
    /// together. Silence: eight times the longest usually seen. Hedging:
    /// twice a node's usual first-byte time.
    pub fn timeouts(&self) -> Timeouts {
        let a = self.lock();
        let secs = Duration::from_secs_f64;
        let node = a.first_byte_node.unwrap_or(0.0);
        let registry = a.first_byte_registry.unwrap_or(0.0);
        let first_byte = self
            .floor
            .first_byte
            .max(secs(4.0 * (node + registry)).min(MAX_FIRST_BYTE));
        let stall = self
            .floor
            .stall
            .max(secs(8.0 * a.longest_silence.unwrap_or(0.0)).min(MAX_STALL));
        let hedge = self.floor.hedge.max(secs(2.0 * node)).min(first_byte);
        Timeouts {
            stall,
            first_byte,
            hedge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor() -> Timeouts {
        Timeouts {
            stall: Duration::from_secs(2),
            first_byte: Duration::from_millis(500),
            hedge: Duration::from_millis(150),
        }
    }

    #[test]
    fn timeouts_are_the_floor_until_sources_are_slower() {
        let m = Measured::new(floor());
        let t = m.timeouts();
        assert_eq!(t.first_byte, Duration::from_millis(500));
        assert_eq!(t.stall, Duration::from_secs(2));
        // Fast sources keep the floor.
        m.first_byte(SourceKind::Registry, Duration::from_millis(5));
        m.first_byte(SourceKind::Peer, Duration::from_millis(2));
        m.silence(Duration::from_millis(20));
        let t = m.timeouts();
        assert_eq!(t.first_byte, Duration::from_millis(500));
        assert_eq!(t.stall, Duration::from_secs(2));
        assert_eq!(t.hedge, Duration::from_millis(150));
    }

    #[test]
    fn slow_links_stretch_the_timeouts_within_bounds() {
        let m = Measured::new(floor());
        for _ in 0..20 {
            m.first_byte(SourceKind::Registry, Duration::from_millis(400));
            m.first_byte(SourceKind::Fetcher, Duration::from_millis(300));
            m.silence(Duration::from_millis(600));
        }
        let t = m.timeouts();
        assert!(
            t.first_byte >= Duration::from_millis(2700),
            "{:?}",
            t.first_byte
        );
        assert!(t.stall >= Duration::from_millis(4700), "{:?}", t.stall);
        assert!(t.hedge >= Duration::from_millis(590), "{:?}", t.hedge);
        // The cache and local files are not sources with a first byte.
        m.first_byte(SourceKind::Cache, Duration::from_secs(100));
        for _ in 0..50 {
            m.silence(Duration::from_secs(3600));
        }
        let t = m.timeouts();
        assert_eq!(t.stall, MAX_STALL);
        assert!(t.first_byte <= MAX_FIRST_BYTE);
    }
}
