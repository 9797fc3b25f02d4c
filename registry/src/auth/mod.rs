//! Who may do what in the registry (issue 13, in progress): the access
//! model of projects, roles and robot accounts, and the bearer tokens that
//! carry what was granted. Not wired into the request path yet: `berth
//! serve` is still open to anyone who can reach it (README says so, and it
//! warns when it listens beyond loopback).
//!
//! # Layout
//! - [`model`]: projects, roles, robots, principals and `Policy::grant`,
//!   the one answer to "may this principal take these actions here".
//! - [`token`]: EdDSA-signed JWTs with strict verification.
//! - [`credentials`]: argon2id hashes, htpasswd bcrypt entries, checks of
//!   equal cost for unknown names, and a short cache of successes.

pub mod credentials;
pub mod model;
pub mod token;
