//! End-to-end suites: the real `berth` binary against real clients. One
//! test binary with a module per peer program (ripgrep's layout), so the
//! harness compiles once.

mod admin;
mod auth;
mod bad_input;
mod base;
mod bot;
mod build;
mod bump;
mod clients;
mod crash;
mod deploy;
mod disk_full;
mod gc;
mod mirror;
mod mission;
mod newcomer;
mod nix;
mod policy;
mod replicas;
mod s3;
mod slow_links;
mod tls;
mod ui;
mod walkthrough;
