//! Who fetches a cold blob from the registry for the cluster. The nodes
//! agree without talking on one coordinator per digest (rendezvous hashing
//! over the member list, [`crate::inflight::owner_of`]). A node about to
//! fetch a blob no node has asks that coordinator (`POST
//! /berth/v1/claims/<digest>?by=<its URL>`), which names the first node
//! that asked the fetcher: it takes the registry's bytes directly, so the
//! first pull has no extra hop. Every node asking after it is named a
//! node already in the blob's tree — the earliest that serves fewer than
//! [`FANOUT`] readers — and reads along from that node's download (a
//! peer's `?local=1` GET of a download that is still starting waits for
//! it; a node relays another node's bytes piece by piece as they verify).
//! So the registry sends each blob about once even when every node starts
//! the same pull at the same moment, and no node sends a blob more than
//! [`FANOUT`] times, however many nodes pull it. A coordinator that cannot be reached, or that names a
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

/// Readers a coordinator sends to one node's download: one, so the nodes
/// pulling a cold blob at once form a chain and each sends it at most once
/// — a node's egress, not depth, bounds an all-at-once pull (the
/// simulation in docs/mirror.md compares fan-outs 1, 2 and unbounded: at
/// 50 nodes a chain finishes in 1.6× the time one node's link needs, a
/// binary tree in 2.1×, one fetcher serving everyone in 12×).
pub const FANOUT: usize = 1;

/// The nodes holding or reading one blob, in the order they were named
/// (the first fetches it from the registry), with how many readers each
/// was given.
#[derive(Debug)]
struct Tree {
    nodes: Vec<(String, usize)>,
    since: Instant,
}

/// A coordinator's table: digest → the blob's tree.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<Digest, Tree>>);

impl Claims {
    /// Where node `by` gets `d`: itself (it fetches from the registry) when
    /// it is the first to ask — or `me` when this node, the coordinator,
    /// has or is fetching it (`here`) — else the earliest node of the
    /// blob's tree with fewer than [`FANOUT`] readers that is not under
    /// penalty, remembered for [`TTL`].
    pub fn decide(
        &self,
        d: &Digest,
        by: &str,
        me: &str,
        here: bool,
        penalised: impl Fn(&str) -> bool,
    ) -> String {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.since.elapsed() < TTL);
        let tree = map.entry(d.clone()).or_insert_with(|| {
            let root = if here && by != me { me } else { by };
            Tree {
                nodes: vec![(root.to_owned(), 0)],
                since: Instant::now(),
            }
        });
        if tree.nodes[0].0 == by {
            return by.to_owned();
        }
        let source = tree
            .nodes
            .iter_mut()
            .find(|(n, readers)| n != by && *readers < FANOUT && !penalised(n));
        let named = match source {
            Some((n, readers)) => {
                *readers += 1;
                n.clone()
            }
            // Every node of the tree is full or under penalty: fetch.
            None => by.to_owned(),
        };
        if !tree.nodes.iter().any(|(n, _)| n == by) {
            tree.nodes.push((by.to_owned(), 0));
        }
        named
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
    fn the_first_to_ask_fetches_and_the_others_form_a_tree() {
        let c = Claims::default();
        let d = Digest::sha256(b"x");
        let none = |_: &str| false;
        let ask = |by: &str| c.decide(&d, by, "http://a", false, none);
        assert_eq!(ask("http://b"), "http://b");
        // The coordinator itself asking is told too.
        assert_eq!(ask("http://a"), "http://b");
        assert_eq!(ask("http://c"), "http://a");
        // b serves FANOUT (one) reader; the next reads from a, and so on:
        // a chain.
        assert_eq!(FANOUT, 1);
        assert_eq!(ask("http://d"), "http://c");
        assert_eq!(ask("http://e"), "http://d");
        // The fetcher asking again fetches.
        assert_eq!(ask("http://b"), "http://b");
        // A node under penalty is passed over; with none left, fetch.
        let bad = |p: &str| p == "http://e";
        assert_eq!(c.decide(&d, "http://f", "http://a", false, bad), "http://f");
        assert_eq!(ask("http://g"), "http://e");
        // A coordinator that has the blob names itself.
        let e = Digest::sha256(b"y");
        assert_eq!(c.decide(&e, "http://b", "http://a", true, none), "http://a");
        assert_eq!(c.len(), 2);
    }
}
