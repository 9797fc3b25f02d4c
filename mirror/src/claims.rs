//! Who fetches a cold blob from the registry for the cluster. The nodes
//! agree without talking on one coordinator per digest (rendezvous hashing
//! over the member list, [`coordinator_of`]). A node about to
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
/// (the first fetches it from the registry).
#[derive(Debug)]
struct Tree {
    nodes: Vec<Member>,
    since: Instant,
}

/// A node in a blob's tree.
#[derive(Debug)]
struct Member {
    url: String,
    /// Readers it was given.
    readers: usize,
    /// Hops from the registry (the fetcher: 0).
    depth: u32,
}

/// A coordinator's answer: where a node gets a cold blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The node to read from (the asking node itself: fetch from the
    /// registry).
    pub url: String,
    /// That node's hops from the registry: each adds about one piece of
    /// delay before its first byte (it shows only verified pieces).
    pub depth: u32,
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
    ) -> Named {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.since.elapsed() < TTL);
        let tree = map.entry(d.clone()).or_insert_with(|| {
            let root = if here && by != me { me } else { by };
            Tree {
                nodes: vec![Member {
                    url: root.to_owned(),
                    readers: 0,
                    depth: 0,
                }],
                since: Instant::now(),
            }
        });
        let fetch = Named {
            url: by.to_owned(),
            depth: 0,
        };
        if tree.nodes[0].url == by {
            return fetch;
        }
        let source = tree
            .nodes
            .iter_mut()
            .find(|m| m.url != by && m.readers < FANOUT && !penalised(&m.url));
        let named = match source {
            Some(m) => {
                m.readers += 1;
                Named {
                    url: m.url.clone(),
                    depth: m.depth,
                }
            }
            // Every node of the tree is full or under penalty: fetch.
            None => fetch,
        };
        if !tree.nodes.iter().any(|m| m.url == by) {
            let depth = if named.url == by { 0 } else { named.depth + 1 };
            tree.nodes.push(Member {
                url: by.to_owned(),
                readers: 0,
                depth,
            });
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

/// The coordinator of `digest` among `members`: rendezvous hashing
/// (highest sha256 of member + digest), the same answer on every node that
/// has the same member list, and about 1/N of the digests for each node.
pub fn coordinator_of<'a>(members: &[&'a str], digest: &Digest) -> Option<&'a str> {
    members
        .iter()
        .map(|m| {
            let mut h = berth_oci::Algorithm::Sha256.hasher();
            h.update(m.as_bytes());
            h.update(b"\n");
            h.update(digest.to_string().as_bytes());
            (h.finish().hex().to_owned(), *m)
        })
        .max()
        .map(|(_, m)| m)
}

impl Mirror {
    /// The node that fetches cold blob `d` from the registry for the
    /// cluster: this node's own URL when it should fetch directly; `None`
    /// without a cluster (no `advertise_url`, no members) or when the
    /// coordinator is under penalty or cannot answer (fetch directly too).
    pub async fn fetcher(&self, d: &Digest) -> Option<Named> {
        let me = self.config.advertise_url.as_deref()?;
        let others = self.routing.members();
        if others.is_empty() {
            return None;
        }
        let mut members: Vec<&str> = others.iter().map(String::as_str).collect();
        members.push(me);
        let coordinator = coordinator_of(&members, d)?;
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
        (named.url == me || others.contains(&named.url)).then_some(named)
    }
}

/// The query of a claim.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ClaimParams {
    by: Option<String>,
}

/// `POST /berth/v1/claims/<digest>?by=<member URL>`: `{"fetcher": URL,
/// "depth": hops from the registry}`.
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
    let named = m.claims.decide(&d, &by, &me, here, |p| m.is_penalised(p));
    m.metrics.claim(named.url == by);
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "fetcher": named.url, "depth": named.depth })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinators_are_agreed_and_spread() {
        let members = ["http://a:5001", "http://b:5001", "http://c:5001"];
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..300u32 {
            let d = Digest::sha256(&i.to_le_bytes());
            let chosen = coordinator_of(&members, &d).unwrap();
            // Order of the list does not matter.
            let mut rev = members;
            rev.reverse();
            assert_eq!(coordinator_of(&rev, &d), Some(chosen));
            *counts.entry(chosen).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n > 60), "{counts:?}");
        assert_eq!(coordinator_of(&[], &Digest::sha256(b"x")), None);
    }

    #[test]
    fn the_first_to_ask_fetches_and_the_others_form_a_chain() {
        let c = Claims::default();
        let d = Digest::sha256(b"x");
        let none = |_: &str| false;
        let answer = |n: Named| (n.url, n.depth);
        let ask = |by: &str| answer(c.decide(&d, by, "http://a", false, none));
        let at = |url: &str, depth| (url.to_owned(), depth);
        assert_eq!(ask("http://b"), at("http://b", 0));
        // The coordinator itself asking is told too.
        assert_eq!(ask("http://a"), at("http://b", 0));
        // b serves FANOUT (one) reader; the next reads from a, and so on:
        // a chain, each node one hop further from the registry.
        assert_eq!(FANOUT, 1);
        assert_eq!(ask("http://c"), at("http://a", 1));
        assert_eq!(ask("http://d"), at("http://c", 2));
        assert_eq!(ask("http://e"), at("http://d", 3));
        // The fetcher asking again fetches.
        assert_eq!(ask("http://b"), at("http://b", 0));
        // A node under penalty is passed over; with none left, fetch.
        let bad = |p: &str| p == "http://e";
        let f = answer(c.decide(&d, "http://f", "http://a", false, bad));
        assert_eq!(f, at("http://f", 0));
        assert_eq!(ask("http://g"), at("http://e", 4));
        // A coordinator that has the blob names itself.
        let e = Digest::sha256(b"y");
        let b = answer(c.decide(&e, "http://b", "http://a", true, none));
        assert_eq!(b, at("http://a", 0));
        assert_eq!(c.len(), 2);
    }
}
