//! Content digests (`sha256:<hex>`, `sha512:<hex>`): parsing and validation
//! against the OCI image-spec digest grammar, incremental hashing, and
//! streaming verification of content against an expected digest.
//!
//! A [`Digest`] is always well formed and of a supported algorithm, so code
//! that holds one may use its encoded part as a file name or object key
//! without further checks. This module does no I/O of its own.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::Digest as _;

/// A hash algorithm that berth computes and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the OCI default.
    Sha256,
    /// SHA-512, registered by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded hash.
    pub const fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// A fresh incremental hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }

    /// Hash a whole byte slice.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `:` between algorithm and encoded part.
    #[error("digest {0:?} has no algorithm prefix (expected algorithm:hex)")]
    MissingAlgorithm(String),
    /// The algorithm part does not match the grammar.
    #[error("digest {0:?} has a malformed algorithm")]
    MalformedAlgorithm(String),
    /// Well-formed, but berth does not compute this algorithm.
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not lowercase hex of the algorithm's length.
    #[error("digest {0:?} is not {1} lowercase hex characters after the algorithm")]
    MalformedHex(String, usize),
    /// Content hashed to another digest than the one expected.
    #[error("content digest {actual} does not match the expected {expected}")]
    Mismatch {
        /// What the caller said the content hashes to.
        expected: Digest,
        /// What it actually hashes to.
        actual: Digest,
    },
}

/// A validated content digest of a supported algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// Lowercase hex of exactly `algorithm.hex_len()` characters.
    hex: String,
}

impl Digest {
    /// Build a digest from an algorithm and raw hash bytes.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Self {
            algorithm,
            hex: hex::encode(bytes),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex-encoded hash (safe to use as a path component).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Hash a whole byte slice with SHA-256.
    pub fn sha256(data: &[u8]) -> Self {
        Algorithm::Sha256.digest(data)
    }

    /// Check that `data` hashes to this digest.
    pub fn verify(&self, data: &[u8]) -> Result<(), DigestError> {
        let actual = self.algorithm.digest(data);
        if &actual == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }
}

/// True if `s` is a well-formed digest algorithm component:
/// `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn algorithm_grammar_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut prev_sep = true;
    for &c in b {
        match c {
            b'a'..=b'z' | b'0'..=b'9' => prev_sep = false,
            b'+' | b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, enc)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        if !algorithm_grammar_ok(alg) {
            return Err(DigestError::MalformedAlgorithm(s.to_owned()));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let ok = enc.len() == algorithm.hex_len()
            && enc.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(DigestError::MalformedHex(s.to_owned(), algorithm.hex_len()));
        }
        Ok(Self {
            algorithm,
            hex: enc.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // Both grammars accept every sha256/sha512 digest berth can hold.
        d.to_string()
            .parse()
            .unwrap_or_else(|e| unreachable!("a berth digest is an OCI digest: {e}"))
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    /// Only sha256 and sha512 digests (with valid hex) are berth digests.
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, DigestError> {
        d.to_string().parse()
    }
}

/// An incremental hasher for one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm())
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            Self::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// Checks content against an expected digest and size while it streams past.
///
/// Feed every chunk with [`Verifier::update`]; [`Verifier::finish`] says
/// whether the whole matched. Callers that forward bytes before the end must
/// abort the transfer when `finish` fails.
#[derive(Debug)]
pub struct Verifier {
    expected: Digest,
    hasher: Hasher,
    seen: u64,
}

impl Verifier {
    /// Start verifying content that should hash to `expected`.
    pub fn new(expected: Digest) -> Self {
        let hasher = expected.algorithm().hasher();
        Self {
            expected,
            hasher,
            seen: 0,
        }
    }

    /// Feed the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.seen += chunk.len() as u64;
        self.hasher.update(chunk);
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.seen
    }

    /// True if nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Check the content fed so far against the expected digest.
    pub fn finish(self) -> Result<Digest, DigestError> {
        let actual = self.hasher.finish();
        if actual == self.expected {
            Ok(actual)
        } else {
            Err(DigestError::Mismatch {
                expected: self.expected,
                actual,
            })
        }
    }
}

/// A [`Read`] adapter that verifies the bytes it passes on: at end of input
/// it returns an `InvalidData` error instead of EOF if the content does not
/// match the expected digest, so a consumer can never mistake bad content for
/// a complete, good read.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Option<Verifier>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wrap `inner`, which should yield content hashing to `expected`.
    pub fn new(inner: R, expected: Digest) -> Self {
        Self {
            inner,
            verifier: Some(Verifier::new(expected)),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(v) = self.verifier.as_mut() {
                v.update(&buf[..n]);
            }
        } else if !buf.is_empty() {
            if let Some(v) = self.verifier.take() {
                v.finish()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn converts_to_and_from_oci_spec_digests() {
        for d in [
            Algorithm::Sha256.digest(b"x"),
            Algorithm::Sha512.digest(b"x"),
        ] {
            let spec = oci_spec::image::Digest::from(&d);
            assert_eq!(spec.to_string(), d.to_string());
            assert_eq!(Digest::try_from(&spec).unwrap(), d);
        }
        let other: oci_spec::image::Digest = format!("blake3:{}", "a".repeat(64)).parse().unwrap();
        assert!(Digest::try_from(&other).is_err());
    }

    #[test]
    fn parse_table() {
        let sha512_empty = format!(
            "sha512:{}",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        let cases: &[(&str, Result<Algorithm, &str>)] = &[
            (EMPTY256, Ok(Algorithm::Sha256)),
            (&sha512_empty, Ok(Algorithm::Sha512)),
            ("sha256", Err("no algorithm prefix")),
            ("", Err("no algorithm prefix")),
            (":abc", Err("malformed algorithm")),
            ("SHA256:abc", Err("malformed algorithm")),
            ("sha256+:abc", Err("malformed algorithm")),
            ("multihash+base58:abc", Err("not supported")),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", Err("not supported")),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err("lowercase hex"),
            ),
            ("sha256:e3b0", Err("lowercase hex")),
            ("sha256:../../../../etc/passwd", Err("lowercase hex")),
            (
                "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                Err("lowercase hex"),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<Digest>();
            match (want, got) {
                (Ok(alg), Ok(d)) => {
                    assert_eq!(d.algorithm(), *alg, "{input}");
                    assert_eq!(d.to_string(), *input);
                }
                (Err(msg), Err(e)) => assert!(e.to_string().contains(msg), "{input}: {e}"),
                (want, got) => panic!("{input}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn hashing_and_verification() {
        assert_eq!(Digest::sha256(b"").to_string(), EMPTY256);
        let d = Digest::sha256(b"hello");
        assert!(d.verify(b"hello").is_ok());
        assert!(matches!(
            d.verify(b"hellO"),
            Err(DigestError::Mismatch { .. })
        ));

        let mut v = Verifier::new(d.clone());
        v.update(b"hel");
        v.update(b"lo");
        assert_eq!(v.len(), 5);
        assert_eq!(v.finish().unwrap(), d);
    }

    #[test]
    fn verifying_reader_fails_at_eof_on_mismatch() {
        let d = Digest::sha256(b"good content");
        let mut ok = String::new();
        VerifyingReader::new(&b"good content"[..], d.clone())
            .read_to_string(&mut ok)
            .unwrap();
        assert_eq!(ok, "good content");
        let mut bad = Vec::new();
        let err = VerifyingReader::new(&b"evil content"[..], d)
            .read_to_end(&mut bad)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn serde_roundtrip_validates() {
        let d: Digest = serde_json::from_str(&format!("\"{EMPTY256}\"")).unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{EMPTY256}\"")
        );
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }
}
