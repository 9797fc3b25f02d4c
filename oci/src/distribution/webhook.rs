//! The push webhook of `docs/webhooks.md`, defined once for both ends: the
//! Harbor-shaped `PUSH_ARTIFACT` payload as typed structs (the registry
//! sends it, `berth bot` receives it), the header names, and the signature:
//! `sha256=` + hex HMAC-SHA256 with the shared secret over
//! `<timestamp>.<body>`, compared in constant time, with a freshness window
//! so a captured delivery cannot be replayed later.
//!
//! Pure: no I/O; the caller supplies the clock.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Digest;

/// The event type of a push.
pub const PUSH_ARTIFACT: &str = "PUSH_ARTIFACT";
/// The event type of a manifest or tag deleted through the API.
pub const DELETE_ARTIFACT: &str = "DELETE_ARTIFACT";
/// The event type of a push refused by the project's quota.
pub const QUOTA_EXCEED: &str = "QUOTA_EXCEED";
/// The event type of tags (or untagged manifests) removed by retention or
/// garbage collection.
pub const TAG_RETENTION: &str = "TAG_RETENTION";
/// The CloudEvents content type (structured mode).
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The CloudEvents `type` Harbor sends for an event type.
pub fn cloudevents_type(kind: &str) -> String {
    match kind {
        PUSH_ARTIFACT => "harbor.artifact.pushed".into(),
        DELETE_ARTIFACT => "harbor.artifact.deleted".into(),
        QUOTA_EXCEED => "harbor.quota.exceeded".into(),
        TAG_RETENTION => "harbor.tag_retention.finished".into(),
        other => format!("berth.{}", other.to_ascii_lowercase()),
    }
}
/// The header naming the event type.
pub const HEADER_EVENT: &str = "x-berth-event";
/// The header with the sender's unique delivery id.
pub const HEADER_DELIVERY: &str = "x-berth-delivery";
/// The header with the send time, unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-berth-timestamp";
/// The header with the signature.
pub const HEADER_SIGNATURE: &str = "x-berth-signature-256";
/// How far (seconds) a delivery's timestamp may be from the receiver's
/// clock.
pub const TOLERANCE_S: u64 = 300;
/// The longest delivery id.
pub const MAX_DELIVERY_ID: usize = 128;
/// The largest body a receiver reads.
pub const MAX_BODY: usize = 1 << 20;

/// A webhook payload: `type`, `occur_at`, `operator`, `event_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The event type ([`PUSH_ARTIFACT`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, unix seconds.
    pub occur_at: u64,
    /// Who pushed (a user or robot name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// What was pushed where.
    pub event_data: EventData,
}

/// The `event_data` of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The manifests pushed.
    pub resources: Vec<Resource>,
    /// The repository they were pushed to.
    pub repository: Repository,
    /// Event-specific details (a quota's limit and usage), as Harbor's
    /// `custom_attributes`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom_attributes: std::collections::BTreeMap<String, String>,
}

/// One pushed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its digest (for a multi-architecture image, the index's).
    pub digest: String,
    /// The tag it was pushed as; absent or empty for a push by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `host/repo:tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
}

/// The repository of a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// The last path component.
    #[serde(default)]
    pub name: String,
    /// The project (first component).
    #[serde(default)]
    pub namespace: String,
    /// The whole repository path.
    pub repo_full_name: String,
    /// `public` or `private`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo_type: String,
    /// When the repository was created, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_created: Option<u64>,
}

/// One tagged push, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest digest.
    pub digest: Digest,
    /// `host/repo:tag` as the sender named it.
    pub resource_url: Option<String>,
    /// When, unix seconds.
    pub occur_at: u64,
}

impl Payload {
    /// A `PUSH_ARTIFACT` payload for `digest` pushed to `repository` as
    /// `tag` on registry `host`.
    pub fn push_artifact(
        host: &str,
        repository: &str,
        tag: Option<&str>,
        digest: &Digest,
        occur_at: u64,
        operator: Option<&str>,
    ) -> Self {
        Self::artifact(
            PUSH_ARTIFACT,
            host,
            repository,
            tag,
            digest,
            occur_at,
            operator,
        )
    }

    /// A payload of event type `kind` about `digest` (as `tag`) in
    /// `repository` on registry `host`.
    pub fn artifact(
        kind: &str,
        host: &str,
        repository: &str,
        tag: Option<&str>,
        digest: &Digest,
        occur_at: u64,
        operator: Option<&str>,
    ) -> Self {
        let (namespace, name) = repository.split_once('/').unwrap_or(("", repository));
        let resource_url = match tag {
            Some(t) => format!("{host}/{repository}:{t}"),
            None => format!("{host}/{repository}@{digest}"),
        };
        Self {
            kind: kind.to_owned(),
            occur_at,
            operator: operator.map(str::to_owned),
            event_data: EventData {
                resources: vec![Resource {
                    digest: digest.to_string(),
                    tag: tag.map(str::to_owned),
                    resource_url: Some(resource_url),
                }],
                repository: Repository {
                    name: name.rsplit('/').next().unwrap_or(name).to_owned(),
                    namespace: namespace.to_owned(),
                    repo_full_name: repository.to_owned(),
                    ..Repository::default()
                },
                custom_attributes: Default::default(),
            },
        }
    }

    /// This payload as a CloudEvents 1.0 event in structured mode, as
    /// Harbor 2.8+ sends it: `id` the delivery id, `source` the sender's
    /// (`/projects/<project>/webhook/policies/<target>`), `type` from
    /// [`cloudevents_type`], `data` the `event_data`.
    pub fn cloud_event(&self, id: &str, source: &str) -> serde_json::Value {
        let mut event = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": cloudevents_type(&self.kind),
            "datacontenttype": "application/json",
            "time": rfc3339(self.occur_at),
            "data": self.event_data,
        });
        if let Some(op) = &self.operator {
            event["operator"] = serde_json::Value::String(op.clone());
        }
        event
    }

    /// The push payload in `value`, or `None` for another event type
    /// (which receivers accept and ignore). The error names what is
    /// missing or malformed.
    pub fn from_value(value: serde_json::Value) -> Result<Option<Self>, String> {
        // A CloudEvent (structured mode): its data is the event_data.
        if value.get("specversion").is_some() {
            if value.get("type").and_then(|t| t.as_str()) != Some("harbor.artifact.pushed") {
                return Ok(None);
            }
            let occur_at = value
                .get("time")
                .and_then(|t| t.as_str())
                .and_then(parse_rfc3339)
                .ok_or("a CloudEvent without a valid \"time\"")?;
            let mut plain = serde_json::json!({
                "type": PUSH_ARTIFACT,
                "occur_at": occur_at,
                "event_data": value.get("data").cloned().unwrap_or_default(),
            });
            if let Some(op) = value.get("operator") {
                plain["operator"] = op.clone();
            }
            return Self::from_value(plain);
        }
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or("no \"type\"")?;
        if kind != PUSH_ARTIFACT {
            return Ok(None);
        }
        if !value.get("occur_at").is_some_and(|t| t.is_u64()) {
            return Err("no \"occur_at\" (unix seconds)".into());
        }
        serde_json::from_value(value).map(Some).map_err(|e| {
            let e = e.to_string();
            if e.contains("repo_full_name") || e.contains("repository") {
                "no event_data.repository.repo_full_name".into()
            } else if e.contains("resources") {
                "no event_data.resources".into()
            } else if e.contains("digest") {
                "a resource has no digest".into()
            } else {
                format!("payload: {e}")
            }
        })
    }

    /// The tagged pushes it reports, each name, tag and digest validated; a
    /// resource pushed by digest alone is skipped (it has no tag to bump).
    pub fn pushes(&self) -> Result<Vec<Push>, String> {
        let repo = &self.event_data.repository.repo_full_name;
        crate::validate_name(repo).map_err(|e| format!("repo_full_name: {e}"))?;
        let mut out = Vec::new();
        for r in &self.event_data.resources {
            let digest: Digest = r
                .digest
                .parse()
                .map_err(|e| format!("resource digest: {e}"))?;
            let Some(tag) = r.tag.as_deref().filter(|t| !t.is_empty()) else {
                continue;
            };
            crate::validate_tag(tag).map_err(|e| format!("tag: {e}"))?;
            out.push(Push {
                repository: repo.clone(),
                tag: tag.to_owned(),
                digest,
                resource_url: r.resource_url.clone(),
                occur_at: self.occur_at,
            });
        }
        Ok(out)
    }
}

/// `t` (unix seconds) as RFC 3339 UTC.
fn rfc3339(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Unix seconds from RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let v = o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec - offset).ok()
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `sha256=` signature header.
    #[error("missing X-Berth-Signature-256: sha256=<hex>")]
    Missing,
    /// The signature is not hex.
    #[error("signature is not hex")]
    NotHex,
    /// The signature is not the body's under this secret.
    #[error("signature does not match")]
    Mismatch,
    /// The timestamp header is missing or not a number.
    #[error("bad X-Berth-Timestamp")]
    BadTimestamp,
    /// The timestamp is outside the freshness window.
    #[error("timestamp is more than {TOLERANCE_S} s away")]
    Stale,
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp.to_string(), body).finalize();
    format!("sha256={}", hex::encode(tag.into_bytes()))
}

/// Check a delivery: `signature` must be `body`'s at `timestamp` (the
/// headers' values, empty when absent) under `secret`, and `timestamp`
/// within [`TOLERANCE_S`] of `now`. The signature is checked first, so
/// nothing about an unsigned delivery is looked at.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<u64, SignatureError> {
    let hex_sig = signature
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Missing)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::NotHex)?;
    mac(secret, timestamp, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    let t: u64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(t) > TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_event_carries_the_payload_and_comes_back() {
        let d = Digest::sha256(b"x");
        let p = Payload::push_artifact(
            "reg",
            "team/app",
            Some("v1"),
            &d,
            1_764_470_400,
            Some("robot$ci"),
        );
        let ce = p.cloud_event("delivery-1", "/projects/team/webhook/policies/bot");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "harbor.artifact.pushed");
        assert_eq!(ce["time"], "2025-11-30T02:40:00Z");
        assert_eq!(ce["data"]["repository"]["repo_full_name"], "team/app");
        assert_eq!(Payload::from_value(ce).unwrap().unwrap(), p);
        assert_eq!(
            parse_rfc3339("2025-11-30T03:40:00+01:00"),
            Some(1_764_470_400)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.5Z"), Some(0));
        assert_eq!(parse_rfc3339("yesterday"), None);
        let deleted = Payload::artifact(DELETE_ARTIFACT, "reg", "team/app", None, &d, 1, None);
        assert_eq!(
            Payload::from_value(serde_json::to_value(&deleted).unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn signatures_round_trip_and_expire() {
        let body = br#"{"type":"PUSH_ARTIFACT"}"#;
        let sig = sign(b"k", 1000, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify(b"k", "1000", &sig, body, 1100), Ok(1000));
        assert_eq!(
            verify(b"other", "1000", &sig, body, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1001", &sig, body, 1000),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(b"k", "1000", &sig, b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1000", &sig, body, 1000 + TOLERANCE_S + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"k", "1000", "", body, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"k", "1000", "sha256=zz", body, 1000),
            Err(SignatureError::NotHex)
        );
        // The documented example: HMAC-SHA256("k", "1.{}").
        assert_eq!(
            sign(b"k", 1, b"{}"),
            "sha256=".to_owned()
                + &hex::encode(
                    Hmac::<Sha256>::new_from_slice(b"k")
                        .unwrap()
                        .chain_update(b"1.{}")
                        .finalize()
                        .into_bytes()
                )
        );
    }

    #[test]
    fn payloads_round_trip_and_validate() {
        let d = Digest::sha256(b"m");
        let p = Payload::push_artifact("reg.lan:5000", "apps/web", Some("1.4"), &d, 7, None);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["event_data"]["repository"]["repo_full_name"], "apps/web");
        assert_eq!(v["event_data"]["repository"]["namespace"], "apps");
        assert_eq!(
            v["event_data"]["resources"][0]["resource_url"],
            "reg.lan:5000/apps/web:1.4"
        );
        let back = Payload::from_value(v).unwrap().unwrap();
        assert_eq!(back, p);
        let pushes = back.pushes().unwrap();
        assert_eq!(pushes.len(), 1);
        assert_eq!((pushes[0].tag.as_str(), &pushes[0].digest), ("1.4", &d));
        // By digest only: no tagged push.
        let p = Payload::push_artifact("r", "a", None, &d, 7, None);
        assert!(p.pushes().unwrap().is_empty());
        // Other types are ignored; missing fields are named.
        let other = serde_json::json!({"type": "DELETE_ARTIFACT"});
        assert_eq!(Payload::from_value(other), Ok(None));
        let no_type = serde_json::json!({});
        assert!(Payload::from_value(no_type).unwrap_err().contains("type"));
        let no_time = serde_json::json!({"type": PUSH_ARTIFACT});
        assert!(
            Payload::from_value(no_time)
                .unwrap_err()
                .contains("occur_at")
        );
        let no_repo = serde_json::json!({"type": PUSH_ARTIFACT, "occur_at": 1,
            "event_data": {"resources": []}});
        assert!(
            Payload::from_value(no_repo)
                .unwrap_err()
                .contains("repo_full_name")
        );
        let mut bad = Payload::push_artifact("r", "a", Some("1"), &d, 7, None);
        bad.event_data.resources[0].digest = "sha256:nope".into();
        assert!(bad.pushes().unwrap_err().contains("digest"));
        bad.event_data.repository.repo_full_name = "../etc".into();
        assert!(bad.pushes().is_err());
    }
}
