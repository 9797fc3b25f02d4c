//! Who may do what in the registry: the access model of projects, roles
//! and robot accounts, the credentials that prove who is asking, and the
//! bearer tokens that carry what was granted. With an `[auth]` section in
//! the configuration every `/v2` request passes the [`gate::Gate`]; without
//! one `berth serve` stays open, as before (and warns beyond loopback).
//!
//! # Layout
//! - [`model`]: projects, roles, robots, principals and `Policy::grant`,
//!   the one answer to "may this principal take these actions here".
//! - [`token`]: EdDSA-signed JWTs with strict verification.
//! - [`config`]: the `[auth]` section and loading it into a gate.
//! - [`directory`]: declared and stored accounts merged, swapped whole.
//! - [`gate`]: authenticate, issue tokens, check requests, challenge.
//! - [`throttle`]: repeated login failures from one client slowed down.
//! - [`credentials`]: argon2id hashes, htpasswd bcrypt entries, checks of
//!   equal cost for unknown names, and a short cache of successes.

pub mod config;
pub mod credentials;
pub mod directory;
pub mod gate;
pub mod model;
pub mod throttle;
pub mod token;
