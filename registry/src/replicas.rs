//! Keeping a replica's in-memory copies of shared state fresh: the auth
//! directory (accounts made through the admin API) and the stored
//! policies. Every [`FOLLOW`], each replica reads their version numbers
//! from the shared metadata store and reloads what another replica
//! changed, so a robot created, disabled or rotated on one replica is
//! known (or refused) on all of them within seconds. A store serving one
//! process (SQLite) has no versions: the task ends at once, since that
//! process reloads its copies itself after each change.

use std::sync::Arc;
use std::time::Duration;

use crate::Registry;
use crate::metadata::Versioned;

/// How often a replica looks for changes made elsewhere: the staleness
/// bound of its copies.
pub const FOLLOW: Duration = Duration::from_secs(2);

/// Follow changes made on other replicas while the server runs.
pub fn spawn(r: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: [Option<i64>; 2] = [None, None];
        loop {
            for (i, what) in [Versioned::Accounts, Versioned::Policies]
                .into_iter()
                .enumerate()
            {
                let version = match crate::on_meta(&r, move |m| m.version(what)).await {
                    Ok(None) => return,
                    Ok(Some(v)) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read what other replicas changed; retrying");
                        continue;
                    }
                };
                if seen[i] == Some(version) {
                    continue;
                }
                let registry = r.clone();
                let reloaded = tokio::task::spawn_blocking(move || match what {
                    Versioned::Accounts => registry.reload_accounts().map_err(|e| e.to_string()),
                    Versioned::Policies => registry.reload_policies(),
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                match reloaded {
                    Ok(()) => {
                        if seen[i].is_some() {
                            tracing::info!(
                                what = what.key(),
                                version,
                                "reloaded a change made on another replica"
                            );
                        }
                        seen[i] = Some(version);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, what = what.key(), "reloading failed; retrying")
                    }
                }
            }
            tokio::time::sleep(FOLLOW).await;
        }
    })
}
