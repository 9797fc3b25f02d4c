//! Registry bearer tokens (the distribution token spec): short-lived JWTs
//! signed with the registry's Ed25519 key (`alg: EdDSA`), whose `access`
//! claims list exactly what was granted. Verification is strict on
//! purpose, since registries shipped every way a JWT goes wrong: the header
//! must be exactly `{"alg":"EdDSA","kid":<ours>,"typ":"JWT"}` — no `none`,
//! no HMAC with the public key as secret, no key carried in the token
//! (`jwk`, `jku`, `x5c`: distribution CVE-2025-24976) — the signature must
//! verify with our key, and `iss`, `aud`, `exp` and `nbf` must hold.
//!
//! Pure apart from key generation: the caller passes the clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::model::Action;

/// The registry's token key.
#[derive(Debug, Clone)]
pub struct Keys {
    signing: SigningKey,
    verifying: VerifyingKey,
    /// The key id: the first 16 hex digits of the public key's sha256.
    pub kid: String,
}

impl Keys {
    /// Keys from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let verifying = signing.verifying_key();
        let kid = berth_oci::Digest::sha256(verifying.as_bytes()).hex()[..16].to_owned();
        Self {
            signing,
            verifying,
            kid,
        }
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// The seed, to store (with owner-only permissions).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
}

/// One `access` entry: a resource and the actions granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// `repository` (or `registry` for the catalog).
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name (`catalog` for the registry).
    pub name: String,
    /// Granted actions, as the spec spells them.
    pub actions: Vec<String>,
}

impl Access {
    /// The granted actions that berth knows.
    pub fn granted(&self) -> Vec<Action> {
        Action::parse_list(&self.actions.join(","))
    }
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The issuer (the registry's service name).
    pub iss: String,
    /// The subject: a user or robot name, empty for anonymous.
    pub sub: String,
    /// The audience (the registry's service name).
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Not before, unix seconds.
    pub nbf: u64,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// A unique id.
    pub jti: String,
    /// What the bearer may do.
    pub access: Vec<Access>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("the token is not a JWT")]
    Malformed,
    /// A header other than ours (another algorithm, a key in the token,
    /// another key id).
    #[error("the token's header is not one this registry issues")]
    Header,
    /// The signature does not verify with our key.
    #[error("the token's signature does not verify")]
    Signature,
    /// Another issuer or audience.
    #[error("the token is for another service")]
    Audience,
    /// Expired, or not valid yet.
    #[error("the token has expired or is not valid yet")]
    Time,
}

/// The only header a token of ours has.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// Sign `claims` with `keys`: the compact JWS.
pub fn issue(keys: &Keys, claims: &Claims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        kid: keys.kid.clone(),
        typ: "JWT".into(),
    };
    let encode = |v: &[u8]| B64.encode(v);
    let signing_input = format!(
        "{}.{}",
        encode(&serde_json::to_vec(&header).unwrap_or_default()),
        encode(&serde_json::to_vec(claims).unwrap_or_default())
    );
    let sig = keys.signing.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", encode(&sig.to_bytes()))
}

/// Verify `token` for `service` at `now`: its claims, or why not.
pub fn verify(keys: &Keys, token: &str, service: &str, now: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |p: &str| B64.decode(p).map_err(|_| TokenError::Malformed);
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Header)?;
    if header.alg != "EdDSA" || header.typ != "JWT" || header.kid != keys.kid {
        return Err(TokenError::Header);
    }
    let sig: [u8; 64] = decode(s)?.try_into().map_err(|_| TokenError::Signature)?;
    keys.verifying
        .verify(format!("{h}.{c}").as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims = serde_json::from_slice(&decode(c)?).map_err(|_| TokenError::Malformed)?;
    if claims.iss != service || claims.aud != service {
        return Err(TokenError::Audience);
    }
    if now >= claims.exp || now < claims.nbf {
        return Err(TokenError::Time);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "registry.lan:5000";
    const NOW: u64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            iss: SERVICE.into(),
            sub: "robot$team+ci".into(),
            aud: SERVICE.into(),
            exp: NOW + 300,
            nbf: NOW,
            iat: NOW,
            jti: "1".into(),
            access: vec![Access {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    fn parts(t: &str) -> Vec<String> {
        t.split('.').map(str::to_owned).collect()
    }

    fn b64(v: &serde_json::Value) -> String {
        B64.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn a_token_round_trips_and_holds_its_claims() {
        let keys = Keys::from_seed([7; 32]);
        let t = issue(&keys, &claims());
        let got = verify(&keys, &t, SERVICE, NOW + 10).unwrap();
        assert_eq!(got, claims());
        assert_eq!(got.access[0].granted(), [Action::Pull]);
        // A key made from the stored seed verifies it too.
        let again = Keys::from_seed(keys.seed());
        assert!(verify(&again, &t, SERVICE, NOW).is_ok());
    }

    /// Each way registries were fooled, refused.
    #[test]
    fn hostile_tokens_are_refused() {
        let keys = Keys::from_seed([7; 32]);
        let good = issue(&keys, &claims());
        let p = parts(&good);
        let claims_json = serde_json::to_value(claims()).unwrap();
        let kid = keys.kid.clone();
        // alg: none, with and without a signature.
        let none = b64(&serde_json::json!({"alg": "none", "kid": kid, "typ": "JWT"}));
        for t in [
            format!("{none}.{}.", p[1]),
            format!("{none}.{}.{}", p[1], p[2]),
        ] {
            assert!(verify(&keys, &t, SERVICE, NOW).is_err(), "{t}");
        }
        // HS256 with the public key as the HMAC secret.
        {
            use hmac::{Hmac, Mac};
            let h = b64(&serde_json::json!({"alg": "HS256", "kid": kid, "typ": "JWT"}));
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(keys.verifying.as_bytes()).unwrap();
            mac.update(format!("{h}.{}", p[1]).as_bytes());
            let sig = B64.encode(mac.finalize().into_bytes());
            let t = format!("{h}.{}.{sig}", p[1]);
            assert_eq!(verify(&keys, &t, SERVICE, NOW), Err(TokenError::Header));
        }
        // An attacker's key carried in the header with our kid.
        let attacker = Keys::from_seed([9; 32]);
        let jwk = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "JWT",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": B64.encode(attacker.verifying.as_bytes())}});
        let h = b64(&jwk);
        let sig = attacker.signing.sign(format!("{h}.{}", p[1]).as_bytes());
        let t = format!("{h}.{}.{}", p[1], B64.encode(sig.to_bytes()));
        assert_eq!(verify(&keys, &t, SERVICE, NOW), Err(TokenError::Header));
        // Signed by another key under our kid.
        let mut forged = issue(&attacker, &claims());
        let fp = parts(&forged);
        let h = b64(&serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"}));
        let sig = attacker.signing.sign(format!("{h}.{}", fp[1]).as_bytes());
        forged = format!("{h}.{}.{}", fp[1], B64.encode(sig.to_bytes()));
        assert_eq!(
            verify(&keys, &forged, SERVICE, NOW),
            Err(TokenError::Signature)
        );
        // Claims edited to widen the scope, signature kept.
        let mut wide = claims_json.clone();
        wide["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
        let t = format!("{}.{}.{}", p[0], b64(&wide), p[2]);
        assert_eq!(verify(&keys, &t, SERVICE, NOW), Err(TokenError::Signature));
        // Expired, not yet valid, another service.
        assert_eq!(
            verify(&keys, &good, SERVICE, NOW + 300),
            Err(TokenError::Time)
        );
        assert_eq!(
            verify(&keys, &good, SERVICE, NOW - 1),
            Err(TokenError::Time)
        );
        assert_eq!(
            verify(&keys, &good, "other:5000", NOW),
            Err(TokenError::Audience)
        );
        // Garbage.
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &format!("{}.{}", p[0], p[1]),
        ] {
            assert!(verify(&keys, t, SERVICE, NOW).is_err(), "{t:?}");
        }
    }
}
