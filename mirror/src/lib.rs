//! `berth-mirror` is the node daemon that containerd pulls through: a
//! containerd-facing `/v2` API served from the node's containerd content store
//! and its own bounded cache, content routing between nodes with libp2p
//! Kademlia, peer and upstream fetches verified against their digests while
//! streaming, and writers for containerd `hosts.toml`, Talos and k3s config.
//!
//! Not built yet (issue "Mirror"). It must never serve or cache a byte it has
//! not verified against its digest, and never trust a tag from a peer.
