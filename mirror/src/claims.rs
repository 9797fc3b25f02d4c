//! Who fetches a cold blob from the registry for the cluster. The nodes
//! agree without talking on one coordinator per digest (rendezvous hashing
//! over the member list, [`crate::inflight::owner_of`]). A node about to
//! fetch a blob no node has asks that coordinator (`POST
//! /berth/v1/claims/<digest>?by=<its URL>`), which names the first node
//! that asked — the fetcher — to it and to every node asking after it. The
//! fetcher takes the registry's bytes directly, so the first pull has no
//! extra hop; the others read along from its download (a peer's `?local=1`
//! GET of a download that is still starting waits for it), so the registry
//! sends each blob about once even when every node starts the same pull at
//! the same moment. A coordinator that cannot be reached, or that names a
//! node that is not a member, means fetching directly: claims cost at most
//! egress, never a pull. A claim is remembered for [`TTL`]; by then the
//! fetcher has announced the blob and is found as a provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, ErrorCode};

use crate::Mirror;
use crate::render::error;

/// How long a coordinator remembers who fetches a digest.
pub const TTL: Duration = Duration::from_secs(600);

/// A coordinator's table: digest → the node fetching it, since when.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<Digest, (String, Instant)>>);

impl Claims {
    /// The fetcher of `d`, asked by node `by`: the node named before (unless
    /// it is under penalty or the claim expired), else `me` when this node
    /// has or is fetching it (`here`), else `by`, remembered.
    pub fn decide(
        &self,
        d: &Digest,
        by: &str,
        me: &str,
        here: bool,
        penalised: impl Fn(&str) -> bool,
    ) -> String {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, t)| t.elapsed() < TTL);
        if let Some((f, _)) = map.get(d) {
            if !penalised(f) {
                return f.clone();
            }
        }
        let fetcher = if here && by != me { me } else { by };
        map.insert(d.clone(), (fetcher.to_owned(), Instant::now()));
        fetcher.to_owned()
    }

    /// How many claims are remembered.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Mirror {
    /// The node that fetches cold blob `d` from the registry for the
    /// cluster: this node's own URL when it should fetch directly; `None`
    /// without a cluster (no `advertise_url`, no members) or when the
    /// coordinator is under penalty or cannot answer (fetch directly too).
    pub async fn fetcher(&self, d: &Digest) -> Option<String> {
        let me = self.config.advertise_url.as_deref()?;
        let others = self.routing.members();
        if others.is_empty() {
            return None;
        }
        let mut members: Vec<&str> = others.iter().map(String::as_str).collect();
        members.push(me);
        let coordinator = crate::inflight::owner_of(&members, d)?;
        if coordinator == me {
            // Asked by this node itself: its own download is starting, so
            // "here" would name itself over an earlier claim; it is not.
            return Some(
                self.claims
                    .decide(d, me, me, false, |p| self.is_penalised(p)),
            );
        }
        if self.is_penalised(coordinator) {
            return None;
        }
        let url = format!("{}/berth/v1/claims/{d}", coordinator.trim_end_matches('/'));
        let wait = Duration::from_millis(self.config.upstream.peer_probe_ms);
        let named = self.upstream.claim(&url, me, wait).await?;
        // Only a member (or this node) may be named: a coordinator cannot
        // send this node's requests anywhere else.
        (named == me || others.contains(&named)).then_some(named)
    }
}

/// The query of a claim.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ClaimParams {
    by: Option<String>,
}

/// `POST /berth/v1/claims/<digest>?by=<member URL>`: `{"fetcher": URL}`.
pub(crate) async fn handle(
    State(m): State<Arc<Mirror>>,
    Path(digest): Path<String>,
    Query(params): Query<ClaimParams>,
) -> Response {
    let Ok(d) = digest.parse::<Digest>() else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            format!("{digest:?} is not a digest"),
        );
    };
    let Some(me) = m.config.advertise_url.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            "this mirror has no advertise_url: it coordinates nothing",
        );
    };
    let by = params.by.unwrap_or_default();
    if !m.routing.members().contains(&by) {
        return error(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!("{by:?} is not a member of this mirror's cluster"),
        );
    }
    let here = m.local_sources().local_file(&d).is_some() || m.downloads.is_fetching(&d);
    let fetcher = m.claims.decide(&d, &by, &me, here, |p| m.is_penalised(p));
    m.metrics.claim(fetcher == by);
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "fetcher": fetcher })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_to_ask_fetches_and_the_others_read_from_it() {
        let c = Claims::default();
        let d = Digest::sha256(b"x");
        let none = |_: &str| false;
        assert_eq!(
            c.decide(&d, "http://b", "http://a", false, none),
            "http://b"
        );
        assert_eq!(
            c.decide(&d, "http://c", "http://a", false, none),
            "http://b"
        );
        // The coordinator itself asking is told too.
        assert_eq!(
            c.decide(&d, "http://a", "http://a", false, none),
            "http://b"
        );
        // A fetcher under penalty is replaced by the one asking.
        let b_bad = |p: &str| p == "http://b";
        assert_eq!(
            c.decide(&d, "http://c", "http://a", false, b_bad),
            "http://c"
        );
        assert_eq!(
            c.decide(&d, "http://b", "http://a", false, none),
            "http://c"
        );
        // A coordinator that has the blob names itself.
        let e = Digest::sha256(b"y");
        assert_eq!(c.decide(&e, "http://b", "http://a", true, none), "http://a");
        assert_eq!(c.len(), 2);
    }
}
