//! Content routing over libp2p: Kademlia provider records keyed by digest,
//! over TCP with a private-network key (pnet: a node without the key cannot
//! even finish a handshake), noise and yamux. Each node tells the others its
//! mirror's HTTP URL in identify's agent version (`berth-mirror <url>`), so
//! a provider's peer id maps to where its blobs are fetched; peer data goes
//! over HTTP, never over libp2p. The swarm runs in one task; [`P2p`] talks
//! to it through a channel. Announcements are made as content is
//! published, a batch at a time, never all at once on a timer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;
use futures_util::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Transport, identify, identity, kad, noise, pnet, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::routing::{BoxFuture, Kind, Provider, Routing};

/// How long a provider record lives.
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Every record this node provides is re-announced once per this period,
/// spread evenly over it.
const REANNOUNCE: Duration = Duration::from_secs(12 * 3600);
/// How often a slice of the re-announcements goes out.
const TICK: Duration = Duration::from_secs(10);

/// The agent-version prefix that carries a node's mirror URL.
const AGENT: &str = "berth-mirror ";

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
}

enum Command {
    Provide(Vec<Digest>),
    Unprovide(Vec<Digest>),
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
}

/// A node's handle on the libp2p routing.
#[derive(Debug)]
pub struct P2p {
    tx: mpsc::UnboundedSender<Command>,
    urls: Arc<Mutex<BTreeMap<PeerId, String>>>,
    me: PeerId,
    /// Where this node listens for libp2p (the first address).
    pub listen_addr: Multiaddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Provide(d) => write!(f, "Provide({})", d.len()),
            Self::Unprovide(d) => write!(f, "Unprovide({})", d.len()),
            Self::Providers(d, _) => write!(f, "Providers({d})"),
        }
    }
}

fn key(d: &Digest) -> kad::RecordKey {
    kad::RecordKey::new(&d.to_string())
}

fn transport(
    keypair: &identity::Keypair,
    psk: Option<[u8; 32]>,
) -> io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let noise = noise::Config::new(keypair).map_err(io::Error::other)?;
    // /dns4/… bootstrap addresses (a headless Service) resolve through the
    // system resolver.
    let tcp = libp2p::dns::tokio::Transport::system(tcp::tokio::Transport::new(
        tcp::Config::default().nodelay(true),
    ))?;
    let t = match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| {
                pnet::PnetConfig::new(pnet::PreSharedKey::new(psk)).handshake(socket)
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    };
    Ok(t)
}

impl P2p {
    /// Start a node that serves blobs at `http_url`, listening on `listen`
    /// (e.g. `/ip4/0.0.0.0/tcp/5002`), joining through `bootstrap`, with the
    /// cluster's private-network key `psk`.
    pub async fn start(
        http_url: &str,
        listen: Multiaddr,
        bootstrap: Vec<Multiaddr>,
        psk: Option<[u8; 32]>,
    ) -> io::Result<Self> {
        let keypair = identity::Keypair::generate_ed25519();
        let me = keypair.public().to_peer_id();
        let transport = transport(&keypair, psk)?;
        let agent = format!("{AGENT}{http_url}");
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|_| transport)
            .map_err(io::Error::other)?
            .with_behaviour(|key| {
                let mut cfg = kad::Config::new(StreamProtocol::new("/berth/kad/1.0.0"));
                cfg.set_query_timeout(Duration::from_secs(10));
                // Records live a day; this node re-announces its own in a
                // steady trickle (below), not all at once on Kademlia's
                // republish timer.
                cfg.set_provider_record_ttl(Some(RECORD_TTL));
                cfg.set_provider_publication_interval(None);
                let mut kad =
                    kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg);
                // Private addresses are never "confirmed": serve anyway.
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    kad,
                    identify: identify::Behaviour::new(
                        identify::Config::new("/berth/1.0.0".into(), key.public())
                            .with_agent_version(agent.clone()),
                    ),
                }
            })
            .map_err(io::Error::other)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        swarm.listen_on(listen).map_err(io::Error::other)?;
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        for addr in bootstrap {
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial a bootstrap peer");
            }
        }
        let urls = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let known = urls.clone();
        tokio::spawn(async move {
            let mut pending: HashMap<
                kad::QueryId,
                (oneshot::Sender<Vec<PeerId>>, HashSet<PeerId>),
            > = HashMap::new();
            let mut bootstrapped = false;
            // What this node provides, re-announced in rotation.
            let mut provided: Vec<Digest> = Vec::new();
            let mut seen: HashSet<Digest> = HashSet::new();
            let mut cursor = 0usize;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // Refresh the table now and then: two nodes that
                        // joined through the same bootstrap peer at once
                        // learn of each other here, not minutes later at
                        // Kademlia's own periodic bootstrap.
                        if bootstrapped {
                            let _ = swarm.behaviour_mut().kad.bootstrap();
                        }
                        // ceil(len / (REANNOUNCE / TICK)) per tick: each
                        // record once per period, no spikes.
                        let per_tick = provided
                            .len()
                            .div_ceil((REANNOUNCE.as_secs() / TICK.as_secs()) as usize);
                        for _ in 0..per_tick.min(provided.len()) {
                            cursor %= provided.len();
                            let _ = swarm.behaviour_mut().kad.start_providing(key(&provided[cursor]));
                            cursor += 1;
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        None => return,
                        Some(Command::Provide(digests)) => {
                            for d in digests {
                                if let Err(e) = swarm.behaviour_mut().kad.start_providing(key(&d)) {
                                    tracing::warn!(error = %e, "cannot announce a digest");
                                }
                                if seen.insert(d.clone()) {
                                    provided.push(d);
                                }
                            }
                        }
                        Some(Command::Unprovide(digests)) => {
                            let gone: HashSet<Digest> = digests.into_iter().collect();
                            for d in &gone {
                                seen.remove(d);
                                swarm.behaviour_mut().kad.stop_providing(&key(d));
                            }
                            provided.retain(|d| !gone.contains(d));
                        }
                        Some(Command::Providers(d, reply)) => {
                            let id = swarm.behaviour_mut().kad.get_providers(key(&d));
                            pending.insert(id, (reply, HashSet::new()));
                        }
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                            if let Some(url) = info.agent_version.strip_prefix(AGENT) {
                                known.lock().unwrap_or_else(|e| e.into_inner()).insert(peer_id, url.to_owned());
                                for a in info.listen_addrs {
                                    swarm.behaviour_mut().kad.add_address(&peer_id, a);
                                }
                                if !bootstrapped {
                                    bootstrapped = true;
                                    let _ = swarm.behaviour_mut().kad.bootstrap();
                                }
                            }
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            known.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer_id);
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                            id, result: kad::QueryResult::GetProviders(result), step, ..
                        })) => {
                            if let Some((_, found)) = pending.get_mut(&id) {
                                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                                    found.extend(providers);
                                }
                            }
                            // Every provider the lookup finds (the caller
                            // bounds the wait); in a cluster's small table a
                            // lookup ends within milliseconds.
                            if step.last {
                                if let Some((reply, found)) = pending.remove(&id) {
                                    let _ = reply.send(found.into_iter().collect());
                                }
                                if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Self {
            tx,
            urls,
            me,
            listen_addr,
        })
    }

    /// This node's libp2p id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }
}

impl Routing for P2p {
    fn provide(&self, digests: &[Digest]) {
        let _ = self.tx.send(Command::Provide(digests.to_vec()));
    }

    fn unprovide(&self, digests: &[Digest]) {
        let _ = self.tx.send(Command::Unprovide(digests.to_vec()));
    }

    fn providers<'a>(
        &'a self,
        digest: &'a Digest,
        _kind: Kind,
        deadline: Duration,
    ) -> BoxFuture<'a, Vec<Provider>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if self
                .tx
                .send(Command::Providers(digest.clone(), reply))
                .is_err()
            {
                return Vec::new();
            }
            let Ok(Ok(peers)) = tokio::time::timeout(deadline, answer).await else {
                return Vec::new();
            };
            let urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
            peers
                .into_iter()
                .filter(|p| *p != self.me)
                .filter_map(|p| urls.get(&p).cloned())
                .map(|url| Provider {
                    url,
                    size: None,
                    in_flight: false,
                })
                .collect()
        })
    }

    fn members(&self) -> Vec<String> {
        self.urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::conformance;

    async fn cluster(
        psk: Option<[u8; 32]>,
        other_psk: Option<[u8; 32]>,
    ) -> (Vec<Arc<P2p>>, Vec<String>) {
        let urls: Vec<String> = (0..3).map(|i| format!("http://node{i}:5001")).collect();
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let first = Arc::new(
            P2p::start(&urls[0], local.clone(), vec![], psk)
                .await
                .unwrap(),
        );
        let mut nodes = vec![first.clone()];
        for (i, url) in urls.iter().enumerate().skip(1) {
            let key = if i == 2 { other_psk } else { psk };
            nodes.push(Arc::new(
                P2p::start(url, local.clone(), vec![first.listen_addr.clone()], key)
                    .await
                    .unwrap(),
            ));
        }
        (nodes, urls)
    }

    async fn settle(nodes: &[Arc<P2p>], want: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if nodes.iter().all(|n| n.members().len() == want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn libp2p_passes_the_conformance_suite() {
        let (nodes, urls) = cluster(Some([7; 32]), Some([7; 32])).await;
        assert!(
            settle(&nodes, 2).await,
            "the three nodes did not find each other"
        );
        let dyn_nodes: Vec<Arc<dyn Routing>> = nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn Routing>)
            .collect();
        conformance(&dyn_nodes, &urls).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_join_through_a_dns_name() {
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let first = Arc::new(
            P2p::start("http://node0:5001", local.clone(), vec![], None)
                .await
                .unwrap(),
        );
        let port = first
            .listen_addr
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap();
        // What a headless Service name gives: resolved by the system
        // resolver (here from /etc/hosts).
        let by_name: Multiaddr = format!("/dns4/localhost/tcp/{port}").parse().unwrap();
        let second = Arc::new(
            P2p::start("http://node1:5001", local, vec![by_name], None)
                .await
                .unwrap(),
        );
        assert!(settle(&[first, second], 1).await, "joined through the name");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_the_cluster_key_cannot_join() {
        let (nodes, _) = cluster(Some([7; 32]), Some([9; 32])).await;
        settle(&nodes[..2], 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(nodes[2].members().is_empty(), "{:?}", nodes[2].members());
        assert!(
            !nodes[0].members().iter().any(|u| u.contains("node2")),
            "{:?}",
            nodes[0].members()
        );
    }
}
