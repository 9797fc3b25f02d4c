//! Whether each mirrored registry can be reached, as the mirror last saw
//! it: from the answers to its own requests (tag resolution) and from the
//! probes `/readyz` sends. A change is logged once at info level (down:
//! what still works; back: since when it was down) and shown as the gauge
//! `berth_mirror_registry_up{registry}`, so an operator learns of an outage
//! without reading WARN lines about stale tags.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::Metrics;

/// The registries' reachability.
#[derive(Debug)]
pub struct Health {
    /// Registry → `None` while reachable, or since when it has been
    /// unreachable and why. A registry not in the map was never seen.
    state: Mutex<BTreeMap<String, Option<(Instant, String)>>>,
    metrics: Arc<Metrics>,
}

impl Health {
    /// All registries assumed reachable until shown otherwise.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// `registry` answered (anything, even a refusal). Called on every tag
    /// resolution: only a change touches the gauge or the log.
    pub fn up(&self, registry: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was = match state.get_mut(registry) {
            Some(None) => return,
            Some(s) => s.take(),
            None => {
                state.insert(registry.to_owned(), None);
                None
            }
        };
        drop(state);
        self.metrics.registry_up(registry, true);
        if let Some((since, _)) = was {
            tracing::info!(
                registry,
                down_for_s = since.elapsed().as_secs(),
                "registry reachable again"
            );
        }
    }

    /// `registry` could not be reached, because of `why`.
    pub fn unreachable(&self, registry: &str, why: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(state.get(registry), Some(Some(_))) {
            return;
        }
        state.insert(registry.to_owned(), Some((Instant::now(), why.to_owned())));
        drop(state);
        self.metrics.registry_up(registry, false);
        tracing::info!(
            registry,
            %why,
            "registry unreachable: serving cached content, content from other nodes and the last verified tags until it is back"
        );
    }

    /// The registries unreachable now, with why.
    pub fn unreachable_now(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(r, s)| s.as_ref().map(|(_, why)| (r.clone(), why.clone())))
            .collect()
    }
}
