//! Webhooks, the sending side of `docs/webhooks.md`: `[[webhooks]]`
//! targets (URL, secret file, projects, event kinds, format), the
//! Harbor-shaped payloads of [`berth_oci::distribution::webhook`] (the
//! `PUSH_ARTIFACT` one is what `berth bot` parses) — pushes, API deletes,
//! refused quotas, retention and GC removals — sent as they are or as
//! CloudEvents 1.0 (Harbor 2.8+'s format), queued in the metadata database
//! in the same transaction as the push or delete they report, and a sender
//! task that delivers due events signed
//! with `X-Berth-Signature-256`, with a stable `X-Berth-Delivery` id,
//! retrying with backoff across restarts and recording each attempt.
//!
//! SSRF guard: a target may not reach loopback, link-local, private,
//! unique-local, CGNAT (Tailscale) or unspecified addresses unless
//! `[webhook] allow` names its host or a CIDR holding the address. The
//! check runs when the configuration is loaded and again on every
//! delivery, on the addresses actually connected to (a resolver that
//! filters them), so DNS rebinding gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_oci::Digest;
use berth_oci::distribution::webhook;
use serde::Deserialize;

use crate::metadata::{Delivery, OutboxEvent};
use crate::{Registry, unix_now as now};

/// Attempts before a delivery is given up (about a day with the backoff).
pub const MAX_ATTEMPTS: u32 = 30;

/// `[[webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for the target (deliveries are listed by it).
    pub name: String,
    /// Where to POST (`http://bot.berth.svc:8080/webhook`).
    pub url: String,
    /// A file holding the shared secret.
    pub secret_file: PathBuf,
    /// Only these projects (first path components); default: all.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Event kinds: `push` (the default), `delete`, `quota`, `retention`.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// `default` (Harbor's Default JSON) or `cloudevents`.
    #[serde(default)]
    pub format: Format,
}

/// A target's payload format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Harbor's Default JSON (what `berth bot` reads).
    #[default]
    Default,
    /// CloudEvents 1.0, structured mode (`application/cloudevents+json`).
    Cloudevents,
}

/// The event kinds a target may ask for, with the event type of each.
const KINDS: [(&str, &str); 4] = [
    ("push", webhook::PUSH_ARTIFACT),
    ("delete", webhook::DELETE_ARTIFACT),
    ("quota", webhook::QUOTA_EXCEED),
    ("retention", webhook::TAG_RETENTION),
];

fn default_events() -> Vec<String> {
    vec!["push".into()]
}

/// `[webhook]`: what targets may reach beyond the public internet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPolicy {
    /// Host names and CIDRs (`bot.berth.svc`, `10.42.0.0/16`,
    /// `127.0.0.1/32`) that may resolve to loopback, private or
    /// link-local addresses.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A network: an address, or an address and a prefix length.
#[derive(Debug, Clone)]
pub(crate) struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip.parse().ok()?, bits.parse().ok()?),
            None => {
                let ip: IpAddr = s.parse().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
        (bits <= max).then_some(Self { net: ip, bits })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What webhook targets may connect to.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    hosts: Vec<String>,
    nets: Vec<Cidr>,
}

/// Whether `ip` is an address webhooks may not reach by default.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| internal(IpAddr::V4(v4)))
        }
    }
}

impl Allow {
    /// From `[webhook] allow`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allow = Self::default();
        for e in entries {
            if let Some(c) = Cidr::parse(e) {
                allow.nets.push(c);
            } else if !e.is_empty()
                && e.len() <= 253
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                allow.hosts.push(e.to_ascii_lowercase());
            } else if e.contains('/') {
                return Err(format!(
                    "webhook.allow: {e:?} is not a CIDR (10.0.0.0/8, fd00::/8)"
                ));
            } else {
                return Err(format!(
                    "webhook.allow: {e:?} is neither a host name nor an address"
                ));
            }
        }
        Ok(allow)
    }

    /// Whether a target named `host` may connect to `ip`.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        !internal(ip)
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self.nets.iter().any(|n| n.contains(ip))
    }
}

/// A resolver that drops the addresses a target may not reach.
#[derive(Debug)]
struct Guarded(Arc<Allow>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow.permits(&host, a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(refused(&host).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn refused(host: &str) -> String {
    format!(
        "{host} resolves only to addresses webhooks may not reach (loopback, private, link-local, CGNAT): add it to [webhook] allow if it is meant"
    )
}

/// A loaded target.
#[derive(Debug)]
struct Target {
    name: String,
    url: reqwest::Url,
    secret: Vec<u8>,
    projects: Vec<String>,
    /// The event types it wants.
    kinds: Vec<&'static str>,
    format: Format,
}

/// The configured targets and the client that delivers to them.
#[derive(Debug)]
pub struct Webhooks {
    targets: Vec<Target>,
    allow: Arc<Allow>,
    client: reqwest::Client,
    /// Woken when an event is queued.
    pub wake: tokio::sync::Notify,
}

impl Webhooks {
    /// Read the secret files, check each URL (and, for host names, what
    /// they resolve to now) against `allow`.
    pub fn load(configs: &[WebhookConfig], policy: &WebhookPolicy) -> Result<Self, String> {
        let allow = Arc::new(Allow::parse(&policy.allow)?);
        let mut targets = Vec::new();
        for c in configs {
            let what = format!("webhooks {:?}", c.name);
            if c.name.is_empty() || targets.iter().any(|t: &Target| t.name == c.name) {
                return Err(format!("{what}: every target needs its own name"));
            }
            let url =
                reqwest::Url::parse(&c.url).map_err(|e| format!("{what}: url {:?}: {e}", c.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!("{what}: url {:?} must be http(s)://host/…", c.url));
            }
            let mut kinds = Vec::new();
            for e in &c.events {
                let Some((_, kind)) = KINDS.iter().find(|(k, _)| k == e) else {
                    return Err(format!(
                        "{what}: event {e:?} is not one berth sends (push, delete, quota, retention)"
                    ));
                };
                kinds.push(*kind);
            }
            check_host(&url, &allow).map_err(|e| format!("{what}: {e}"))?;
            let secret =
                crate::config::read_secret_file(&format!("{what}: secret_file"), &c.secret_file)?
                    .into_bytes();
            if secret.len() < 16 {
                return Err(format!(
                    "{what}: the secret in {:?} is shorter than 16 bytes",
                    c.secret_file.display()
                ));
            }
            targets.push(Target {
                name: c.name.clone(),
                url,
                secret,
                projects: c.projects.clone(),
                kinds,
                format: c.format,
            });
        }
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Guarded(allow.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhooks: {e}"))?;
        Ok(Self {
            targets,
            allow,
            client,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// `(name, url, projects)` of every target.
    pub fn targets(&self) -> Vec<(String, String, Vec<String>)> {
        self.targets
            .iter()
            .map(|t| (t.name.clone(), t.url.to_string(), t.projects.clone()))
            .collect()
    }

    /// Nothing configured.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The events of type `kind` about `digest` in `repo`: a push as `tags`
    /// (on registry `host`, by `operator`), or a delete through the API
    /// (`tags` are those that went); one per target that wants it.
    #[allow(clippy::too_many_arguments)]
    pub fn artifact_events(
        &self,
        kind: &str,
        host: &str,
        repo: &str,
        tags: &[String],
        digest: &Digest,
        operator: Option<&str>,
        now: u64,
    ) -> Vec<OutboxEvent> {
        let payload = tagged(kind, host, repo, tags, digest, operator, now);
        self.queue(crate::auth::model::project_of(repo), &payload)
    }

    /// One event per target that wants `payload`'s type for `project`.
    fn queue(&self, project: &str, payload: &webhook::Payload) -> Vec<OutboxEvent> {
        let body = serde_json::to_string(payload).unwrap_or_default();
        self.targets
            .iter()
            .filter(|t| {
                t.kinds.contains(&payload.kind.as_str())
                    && (t.projects.is_empty() || t.projects.iter().any(|p| p == project))
            })
            .map(|t| OutboxEvent {
                target: t.name.clone(),
                event: payload.kind.clone(),
                payload: body.clone(),
            })
            .collect()
    }

    /// The events a push refused by `repo`'s project quota queues: `q` is
    /// (quota, usage, wanted) in bytes.
    pub fn quota_events(
        &self,
        repo: &str,
        digest: &Digest,
        q: (u64, u64, u64),
        operator: Option<&str>,
        now: u64,
    ) -> Vec<OutboxEvent> {
        let (quota, usage, wanted) = q;
        let mut payload = webhook::Payload::artifact(
            webhook::QUOTA_EXCEED,
            "",
            repo,
            None,
            digest,
            now,
            operator,
        );
        payload.event_data.resources[0].resource_url = None;
        let attrs = &mut payload.event_data.custom_attributes;
        attrs.insert("quota_bytes".into(), quota.to_string());
        attrs.insert("usage_bytes".into(), usage.to_string());
        attrs.insert("requested_bytes".into(), wanted.to_string());
        attrs.insert(
            "Details".into(),
            format!(
                "adding {wanted} bytes to the {usage} bytes of project {} would exceed its quota of {quota} bytes",
                crate::auth::model::project_of(repo)
            ),
        );
        self.queue(crate::auth::model::project_of(repo), &payload)
    }

    /// The events removals by retention (or garbage collection, with
    /// `operator` `gc`) queue: one per repository, listing what went —
    /// tags as `repo:tag`, untagged manifests as `repo@digest`.
    pub fn removal_events(&self, removed: &[String], operator: &str, now: u64) -> Vec<OutboxEvent> {
        let mut by_repo: std::collections::BTreeMap<&str, Vec<webhook::Resource>> =
            Default::default();
        for r in removed {
            let (repo, resource) = match r.split_once('@') {
                Some((repo, digest)) => (
                    repo,
                    webhook::Resource {
                        digest: digest.to_owned(),
                        tag: None,
                        resource_url: None,
                    },
                ),
                None => match r.rsplit_once(':') {
                    Some((repo, tag)) => (
                        repo,
                        webhook::Resource {
                            digest: String::new(),
                            tag: Some(tag.to_owned()),
                            resource_url: None,
                        },
                    ),
                    None => continue,
                },
            };
            by_repo.entry(repo).or_default().push(resource);
        }
        let mut events = Vec::new();
        for (repo, resources) in by_repo {
            let (namespace, name) = repo.split_once('/').unwrap_or(("", repo));
            let payload = webhook::Payload {
                kind: webhook::TAG_RETENTION.to_owned(),
                occur_at: now,
                operator: Some(operator.to_owned()),
                event_data: webhook::EventData {
                    resources,
                    repository: webhook::Repository {
                        name: name.rsplit('/').next().unwrap_or(name).to_owned(),
                        namespace: namespace.to_owned(),
                        repo_full_name: repo.to_owned(),
                        ..webhook::Repository::default()
                    },
                    custom_attributes: Default::default(),
                },
            };
            events.extend(self.queue(crate::auth::model::project_of(repo), &payload));
        }
        events
    }

    /// Send one delivery: `Ok` with the HTTP status on a 2xx, `Err` with
    /// what happened otherwise.
    async fn send(&self, d: &Delivery, now: u64) -> Result<String, (String, bool)> {
        let Some(t) = self.targets.iter().find(|t| t.name == d.target) else {
            return Err(("the target is no longer configured".into(), true));
        };
        check_host(&t.url, &self.allow).map_err(|e| (e, false))?;
        // The outbox holds the Default payload; a CloudEvents target gets
        // it wrapped, the same bytes on every attempt.
        let (body, content_type) = match t.format {
            Format::Default => (d.payload.clone(), "application/json"),
            Format::Cloudevents => {
                let payload: webhook::Payload = serde_json::from_str(&d.payload)
                    .map_err(|e| (format!("a queued payload does not parse: {e}"), true))?;
                let project = payload
                    .event_data
                    .repository
                    .repo_full_name
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let source = format!("/projects/{project}/webhook/policies/{}", t.name);
                (
                    payload.cloud_event(&d.delivery, &source).to_string(),
                    webhook::CLOUDEVENTS_JSON,
                )
            }
        };
        let signature = webhook::sign(&t.secret, now, body.as_bytes());
        let resp = self
            .client
            .post(t.url.clone())
            .header("content-type", content_type)
            .header(webhook::HEADER_EVENT, &d.event)
            .header(webhook::HEADER_DELIVERY, &d.delivery)
            .header(webhook::HEADER_TIMESTAMP, now.to_string())
            .header(webhook::HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| (berth_oci::error::error_chain(&e), false))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(status.to_string()),
            // The receiver already has this delivery id: an earlier
            // attempt arrived and only its answer was lost.
            409 => Ok("409 (already delivered)".into()),
            // Retryable, as docs/webhooks.md says: 5xx, timeouts, throttling.
            408 | 429 | 500..=599 => Err((format!("HTTP {status}"), false)),
            // Any other 4xx will be refused again: given up at once.
            _ => Err((format!("HTTP {status} (permanent)"), true)),
        }
    }
}

/// A payload of type `kind` about `digest` in `repo` with one resource per
/// tag (the first carried by [`webhook::Payload::artifact`]).
fn tagged(
    kind: &str,
    host: &str,
    repo: &str,
    tags: &[String],
    digest: &Digest,
    operator: Option<&str>,
    now: u64,
) -> webhook::Payload {
    let mut payload = webhook::Payload::artifact(
        kind,
        host,
        repo,
        tags.first().map(String::as_str),
        digest,
        now,
        operator,
    );
    for t in tags.iter().skip(1) {
        payload.event_data.resources.push(webhook::Resource {
            digest: digest.to_string(),
            tag: Some(t.clone()),
            resource_url: Some(format!("{host}/{repo}:{t}")),
        });
    }
    payload
}

/// An IP-literal URL is checked here (the resolver sees only names).
fn check_host(url: &reqwest::Url, allow: &Allow) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if !allow.permits(literal, ip) {
            return Err(refused(host));
        }
        return Ok(());
    }
    if allow.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Ok(());
    }
    // A name: what it resolves to now (delivery checks again).
    let port = url.port_or_known_default().unwrap_or(80);
    if let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)) {
        let addrs: Vec<SocketAddr> = addrs.collect();
        if !addrs.is_empty() && addrs.iter().all(|a| !allow.permits(host, a.ip())) {
            return Err(refused(host));
        }
    }
    Ok(())
}

/// Seconds until the next attempt after `attempts` failures: 5 s
/// doubling, at most an hour, with up to 20% jitter.
fn backoff(attempts: u32) -> u64 {
    let base = (5u64 << attempts.min(10)).min(3600);
    base + rand::random::<u64>() % (base / 5 + 1)
}

/// How long a claimed batch of deliveries is this replica's: longer than
/// delivering 32 events takes, short enough that a replica that died
/// mid-batch delays them minutes, not hours.
const LEASE_SECS: u64 = 300;

/// Deliver due events for as long as the server runs: woken when one is
/// queued, and every second for retries. Every replica runs this; each
/// claims its batch ([`crate::metadata::Outbox::outbox_claim`]), so an
/// event is delivered by one of them.
pub fn spawn(r: Arc<Registry>) -> Option<tokio::task::JoinHandle<()>> {
    r.webhooks.as_ref()?;
    Some(tokio::spawn(async move {
        let Some(hooks) = r.webhooks.as_ref() else {
            return;
        };
        loop {
            tokio::select! {
                () = hooks.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let meta = r.meta.clone();
            let due = match tokio::task::spawn_blocking(move || meta.outbox_claim(32, LEASE_SECS))
                .await
            {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the webhook outbox failed");
                    continue;
                }
                Err(_) => continue,
            };
            for d in due {
                let t = now();
                let (status, delivered, give_up) = match hooks.send(&d, t).await {
                    Ok(s) => (s, true, false),
                    Err((s, fatal)) => (s, false, fatal || d.attempts + 1 >= MAX_ATTEMPTS),
                };
                if delivered {
                    tracing::info!(target_ = %d.target, delivery = %d.delivery, "webhook delivered");
                } else {
                    tracing::warn!(
                        target_ = %d.target,
                        delivery = %d.delivery,
                        attempt = d.attempts + 1,
                        status = %status,
                        give_up,
                        "webhook not delivered"
                    );
                }
                let next = t + backoff(d.attempts);
                let meta = r.meta.clone();
                let id = d.id;
                let _ = tokio::task::spawn_blocking(move || {
                    meta.outbox_attempted(id, &status, delivered, next, give_up)
                })
                .await;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let none = Allow::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "169.254.169.254",
            "100.100.1.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!none.permits("x", ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(none.permits("x", ip.parse().unwrap()), "{ip}");
        }
        let allow = Allow::parse(&[
            "10.42.0.0/16".into(),
            "127.0.0.1".into(),
            "bot.berth.svc".into(),
        ])
        .unwrap();
        assert!(allow.permits("x", "10.42.9.9".parse().unwrap()));
        assert!(!allow.permits("x", "10.43.0.1".parse().unwrap()));
        assert!(allow.permits("x", "127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("x", "127.0.0.2".parse().unwrap()));
        assert!(allow.permits("BOT.berth.svc", "10.0.0.5".parse().unwrap()));
        assert!(!allow.permits("x", "169.254.169.254".parse().unwrap()));
        assert!(Allow::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Allow::parse(&["bad host!".into()]).is_err());
    }

    #[test]
    fn targets_reaching_inside_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "a-webhook-secret-of-some-length").unwrap();
        let target = |url: &str| WebhookConfig {
            name: "bot".into(),
            url: url.into(),
            secret_file: secret.clone(),
            projects: vec![],
            events: default_events(),
            format: Format::Default,
        };
        let none = WebhookPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:8080/webhook",
            "http://[::1]/x",
            "http://localhost:8080/webhook",
        ] {
            let e = Webhooks::load(&[target(url)], &none).unwrap_err();
            assert!(e.contains("may not reach"), "{url}: {e}");
        }
        let allowed = WebhookPolicy {
            allow: vec!["127.0.0.1/32".into()],
        };
        assert!(Webhooks::load(&[target("http://127.0.0.1:8080/webhook")], &allowed).is_ok());
        let e = Webhooks::load(&[target("ftp://bot/x")], &none).unwrap_err();
        assert!(e.contains("http(s)"), "{e}");
    }

    #[test]
    fn a_push_queues_one_event_per_interested_target() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "a-webhook-secret-of-some-length").unwrap();
        let policy = WebhookPolicy {
            allow: vec!["127.0.0.1/32".into()],
        };
        let t = |name: &str, projects: &[&str]| WebhookConfig {
            name: name.into(),
            url: "http://127.0.0.1:9/webhook".into(),
            secret_file: secret.clone(),
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
            events: default_events(),
            format: Format::Default,
        };
        let hooks = Webhooks::load(
            &[t("all", &[]), t("team", &["team"]), t("other", &["other"])],
            &policy,
        )
        .unwrap();
        let d = Digest::sha256(b"m");
        let events = hooks.artifact_events(
            webhook::PUSH_ARTIFACT,
            "reg.lan",
            "team/app",
            &["v1".into(), "latest".into()],
            &d,
            Some("robot$team+ci"),
            7,
        );
        let names: Vec<&str> = events.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(names, ["all", "team"]);
        let p = webhook::Payload::from_value(serde_json::from_str(&events[0].payload).unwrap())
            .unwrap()
            .unwrap();
        let pushes = p.pushes().unwrap();
        assert_eq!(pushes.len(), 2);
        assert_eq!(pushes[0].tag, "v1");
        assert_eq!(
            pushes[1].resource_url.as_deref(),
            Some("reg.lan/team/app:latest")
        );
        assert_eq!(p.operator.as_deref(), Some("robot$team+ci"));
    }
}
