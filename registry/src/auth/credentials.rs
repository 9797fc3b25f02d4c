//! Passwords and robot secrets at rest and at the door. A secret file may
//! hold the secret itself — kept in memory only as its sha256 and compared
//! in constant time (argon2 would protect nothing the file does not
//! already hold, at 19 MiB a hash) — or its hash: argon2id PHC strings
//! ([`hash_secret`] makes them) and bcrypt, so an existing htpasswd file's
//! entries work as in distribution and zot (other htpasswd schemes — MD5
//! `$apr1$`, `{SHA}`, crypt — are refused with the line that has them). An
//! unknown name is checked against a dummy of the common kind, so it costs
//! what a wrong secret costs; a successful check is remembered briefly
//! ([`RecentlyVerified`]) so a hash is not paid on every token. Secrets
//! never leave this module in any form but a digest or hash.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;

/// Hash `secret` for storage: argon2id with a random salt, as a PHC string.
pub fn hash_secret(secret: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .unwrap_or_else(|e| unreachable!("16 bytes always encode as a salt: {e}"));
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_else(|e| unreachable!("argon2 with default parameters hashes: {e}"))
}

/// A new robot secret: 32 random bytes, base64url.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `secret` matches `stored` (argon2 PHC or bcrypt).
pub fn verify_secret(stored: &str, secret: &str) -> bool {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        return bcrypt::verify(secret, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A secret as the registry keeps it.
#[derive(Debug, Clone)]
pub enum Secret {
    /// Given in plain text (a secret file): kept as its sha256, compared
    /// in constant time. Hashing it with argon2 in memory would protect
    /// nothing the file does not already hold, and would cost 19 MiB.
    Plain([u8; 32]),
    /// An argon2 PHC string or a bcrypt hash.
    Hashed(String),
}

impl Secret {
    /// From a secret file's content: a hash as is, anything else plain.
    pub fn from_file(text: &str) -> Self {
        if text.starts_with("$argon2")
            || text.starts_with("$2a$")
            || text.starts_with("$2b$")
            || text.starts_with("$2y$")
        {
            Self::Hashed(text.to_owned())
        } else {
            Self::Plain(sha256(text))
        }
    }

    /// A new robot secret's stored form: its sha256 (it is 256 random
    /// bits, so a slow hash would add nothing).
    pub fn of_random(secret: &str) -> Self {
        Self::Plain(sha256(secret))
    }

    /// As the metadata database stores it: `sha256:<hex>` or the hash.
    pub fn stored(&self) -> String {
        match self {
            Self::Plain(d) => format!("sha256:{}", hex::encode(d)),
            Self::Hashed(h) => h.clone(),
        }
    }

    /// Back from [`Secret::stored`]; `None` for anything else.
    pub fn from_stored(s: &str) -> Option<Self> {
        if let Some(h) = s.strip_prefix("sha256:") {
            return hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .map(Self::Plain);
        }
        matches!(Self::from_file(s), Self::Hashed(_)).then(|| Self::Hashed(s.to_owned()))
    }

    fn verify(&self, secret: &str) -> bool {
        match self {
            Self::Plain(want) => {
                let got = sha256(secret);
                want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            Self::Hashed(h) => verify_secret(h, secret),
        }
    }
}

fn sha256(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// Names and their secrets, checked in constant shape: an unknown name is
/// verified against a dummy of the kind most entries have, so it costs
/// what a wrong secret costs.
#[derive(Debug)]
pub struct Store {
    secrets: HashMap<String, Secret>,
    dummy: std::sync::OnceLock<Secret>,
    hashed_dummy: bool,
}

impl Store {
    /// The store of `(name, secret)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (String, Secret)>) -> Self {
        let secrets: HashMap<String, Secret> = entries.into_iter().collect();
        let hashed = secrets
            .values()
            .filter(|s| matches!(s, Secret::Hashed(_)))
            .count();
        Self {
            hashed_dummy: hashed * 2 > secrets.len(),
            secrets,
            dummy: std::sync::OnceLock::new(),
        }
    }

    /// Whether `name` exists and `secret` is its secret. Unknown names and
    /// wrong secrets take the same work and give the same answer.
    pub fn check(&self, name: &str, secret: &str) -> bool {
        match self.secrets.get(name) {
            Some(s) => s.verify(secret),
            None => {
                let dummy = self.dummy.get_or_init(|| {
                    if self.hashed_dummy {
                        Secret::Hashed(hash_secret("berth: no such user"))
                    } else {
                        Secret::Plain(sha256("berth: no such user"))
                    }
                });
                let _ = dummy.verify(secret);
                false
            }
        }
    }
}

/// Parse an htpasswd file: `(user, bcrypt hash)` for each entry; other
/// schemes are refused naming their line, so nobody is locked out in
/// silence.
pub fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("htpasswd line {}: not user:hash", i + 1));
        };
        if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
            return Err(format!(
                "htpasswd line {} ({user}): only bcrypt entries are accepted (htpasswd -B)",
                i + 1
            ));
        }
        out.push((user.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

/// Successful checks remembered for a short while, keyed by name and a
/// hash of the secret, so a registry client's many requests do not each
/// pay for argon2; a changed or wrong secret is never found here.
#[derive(Debug)]
pub struct RecentlyVerified {
    ttl: Duration,
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl RecentlyVerified {
    /// Remember successes for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn key(name: &str, secret: &str) -> (String, String) {
        (
            name.to_owned(),
            berth_oci::Digest::sha256(secret.as_bytes())
                .hex()
                .to_owned(),
        )
    }

    /// Whether `name` proved `secret` within the last `ttl`.
    pub fn contains(&self, name: &str, secret: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::key(name, secret))
            .is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// `name` just proved `secret` (expired entries are dropped here, not
    /// on every lookup).
    pub fn insert(&self, name: &str, secret: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, t| t.elapsed() < self.ttl);
        seen.insert(Self::key(name, secret), Instant::now());
    }

    /// Forget everything (accounts changed).
    pub fn clear(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forget `name` (its secret was rotated, or it was disabled).
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _), _| n != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_hashes_verify_and_differ_by_salt() {
        let a = hash_secret("s3cret");
        let b = hash_secret("s3cret");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(verify_secret(&a, "s3cret"));
        assert!(!verify_secret(&a, "s3cret "));
        assert!(!verify_secret("not a hash", "s3cret"));
        let s = new_secret();
        assert_eq!(s.len(), 43);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn htpasswd_bcrypt_entries_are_accepted_and_others_named() {
        let hash = bcrypt::hash_with_salt("pw", 4, [1u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let text = format!("# users\nalice:{hash}\n\n");
        let entries = parse_htpasswd(&text).unwrap();
        assert_eq!(entries.len(), 1);
        let store = Store::new(entries.into_iter().map(|(u, h)| (u, Secret::Hashed(h))));
        assert!(store.check("alice", "pw"));
        assert!(!store.check("alice", "wrong"));
        assert!(!store.check("mallory", "pw"), "unknown users are refused");
        let md5 = "bob:$apr1$abc$def\n";
        assert!(parse_htpasswd(md5).unwrap_err().contains("line 1 (bob)"));
        assert!(parse_htpasswd("nocolon\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn plain_secrets_are_kept_as_digests_and_compared_whole() {
        let store = Store::new([
            ("robot$a+ci".to_owned(), Secret::from_file("s3cret")),
            ("alice".to_owned(), Secret::from_file(&hash_secret("pw"))),
        ]);
        assert!(matches!(Secret::from_file("s3cret"), Secret::Plain(_)));
        assert!(store.check("robot$a+ci", "s3cret"));
        assert!(!store.check("robot$a+ci", "s3cre"));
        assert!(!store.check("robot$a+ci", "s3cret2"));
        assert!(store.check("alice", "pw"));
        assert!(!store.check("nobody", "s3cret"));
        for s in [
            Secret::of_random("x"),
            Secret::from_file(&hash_secret("pw")),
        ] {
            let back = Secret::from_stored(&s.stored()).unwrap();
            assert_eq!(back.stored(), s.stored());
        }
        assert!(
            Secret::from_stored("s3cret").is_none(),
            "never a clear secret"
        );
        assert!(Secret::from_stored("sha256:abcd").is_none());
    }

    /// An unknown name costs what a wrong password costs: with argon2
    /// entries, both pay one argon2 verification (tens of milliseconds);
    /// answering the unknown name at once would take microseconds and
    /// tell who exists. (The fastest of five tries each, within 4× either
    /// way: the leak it guards against is a thousandfold.)
    #[test]
    fn an_unknown_name_takes_as_long_as_a_wrong_password() {
        let store = Store::new([
            ("alice".to_owned(), Secret::from_file(&hash_secret("pw-a"))),
            ("bob".to_owned(), Secret::from_file(&hash_secret("pw-b"))),
        ]);
        let once = |name: &str| {
            let start = std::time::Instant::now();
            assert!(!store.check(name, "wrong"));
            start.elapsed()
        };
        let _ = once("nobody"); // the dummy hash is made on first use
        // The fastest of several tries, interleaved: other work on the
        // machine only ever adds time, so the minimum is the cost itself.
        let (mut wrong, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..5 {
            wrong = wrong.min(once("alice"));
            unknown = unknown.min(once("nobody"));
        }
        assert!(
            unknown * 4 >= wrong && wrong * 4 >= unknown,
            "wrong password {wrong:?}, unknown name {unknown:?}"
        );
    }

    #[test]
    fn recent_successes_are_remembered_briefly_and_per_secret() {
        let cache = RecentlyVerified::new(Duration::from_millis(200));
        cache.insert("robot$team+ci", "secret-1");
        assert!(cache.contains("robot$team+ci", "secret-1"));
        assert!(!cache.contains("robot$team+ci", "secret-2"));
        assert!(!cache.contains("robot$other+ci", "secret-1"));
        cache.forget("robot$team+ci");
        assert!(!cache.contains("robot$team+ci", "secret-1"));
        cache.insert("u", "p");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!cache.contains("u", "p"), "expired");
    }
}
