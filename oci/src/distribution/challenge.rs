//! The `WWW-Authenticate` response header (RFC 9110 §11.6.1): one or more
//! challenges, each an auth scheme followed by either a token68 or a
//! comma-separated list of `name=value` parameters whose values are tokens
//! or quoted strings (with `\` escapes). A registry's Bearer challenge
//! names the token endpoint (`realm`), the `service` and the `scope`, and a
//! scope such as `repository:team/app:pull,push` holds a comma inside its
//! quotes, so the value must be read as a quoted string, never split on
//! commas. Every client (the push client, the mirror's upstream, the
//! bumper) reads challenges through [`parse_challenges`].
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

/// One challenge: its scheme and parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme, lower-case (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters by lower-case name, values unquoted and unescaped.
    pub params: BTreeMap<String, String>,
    /// A token68 given instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The query a token endpoint is asked with: `service` and `scope`,
    /// when the challenge names them.
    pub fn token_query(&self) -> Vec<(&'static str, &str)> {
        ["service", "scope"]
            .into_iter()
            .filter_map(|k| Some((k, self.param(k)?)))
            .collect()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// A quoted string after its opening quote; `None` if it never closes.
    fn quoted(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.pos += 1;
                    out.push(self.peek()?);
                    self.pos += 1;
                }
                b => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

/// Every challenge in a `WWW-Authenticate` value, in order. Parsing stops
/// at the first malformed part; the challenges before it are kept.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        while matches!(c.peek(), Some(b' ' | b'\t' | b',')) {
            c.pos += 1;
        }
        let scheme = c.take_while(is_tchar);
        if scheme.is_empty() {
            return out;
        }
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            ..Challenge::default()
        };
        // A token68 or parameters, until the next challenge or the end. A
        // token68 can only come first, before any comma.
        let mut first = true;
        loop {
            c.skip_ows();
            match c.peek() {
                None => {
                    out.push(ch);
                    return out;
                }
                Some(b',') => {
                    c.pos += 1;
                    first = false;
                    continue;
                }
                Some(_) => {}
            }
            let start = c.pos;
            let name = c.take_while(is_tchar);
            c.skip_ows();
            let value = if c.peek() == Some(b'=') {
                c.pos += 1;
                c.skip_ows();
                match c.peek() {
                    Some(b'"') => {
                        c.pos += 1;
                        let Some(v) = c.quoted() else {
                            // Never closed: keep what came before.
                            out.push(ch);
                            return out;
                        };
                        Some(v)
                    }
                    Some(b) if is_tchar(b) => Some(c.take_while(is_tchar)),
                    _ => None,
                }
            } else {
                None
            };
            match value {
                Some(v) if !name.is_empty() => {
                    ch.params.insert(name.to_ascii_lowercase(), v);
                    first = false;
                }
                _ if first => {
                    c.pos = start;
                    let mut t = c.take_while(is_token68);
                    t.push_str(&c.take_while(|b| b == b'='));
                    if t.is_empty() {
                        out.push(ch);
                        return out;
                    }
                    ch.token68 = Some(t);
                    first = false;
                }
                // A token not followed by `=`: the next challenge's scheme.
                None if !name.is_empty() && c.peek() != Some(b'=') => {
                    c.pos = start;
                    break;
                }
                _ => {
                    out.push(ch);
                    return out;
                }
            }
        }
        out.push(ch);
    }
}

/// The first challenge of `scheme` (case-insensitive) in `header`.
pub fn challenge(header: &str, scheme: &str) -> Option<Challenge> {
    parse_challenges(header)
        .into_iter()
        .find(|c| c.scheme.eq_ignore_ascii_case(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn bearer_with_a_comma_in_its_scope() {
        let c = challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
            "bearer",
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(
            params(&c),
            [
                ("realm", "https://auth.example/token"),
                ("scope", "repository:a/b:pull,push"),
                ("service", "registry.example"),
            ]
        );
        assert_eq!(
            c.token_query(),
            [
                ("service", "registry.example"),
                ("scope", "repository:a/b:pull,push")
            ]
        );
    }

    #[test]
    fn table() {
        type Want<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];
        let cases: &[(&str, Want)] = &[
            ("", &[]),
            ("Basic", &[("basic", &[])]),
            (r#"Basic realm="x""#, &[("basic", &[("realm", "x")])]),
            // Case-insensitive scheme and names; BWS around `=`.
            (
                r#"BEARER Realm = "r" , Service=svc"#,
                &[("bearer", &[("realm", "r"), ("service", "svc")])],
            ),
            // Escapes inside quoted strings.
            (
                r#"Bearer realm="a\"b\\c",scope="x""#,
                &[("bearer", &[("realm", r#"a"b\c"#), ("scope", "x")])],
            ),
            // Several challenges in one value.
            (
                r#"Bearer realm="r",scope="repository:a:pull,push", Basic realm="b""#,
                &[
                    (
                        "bearer",
                        &[("realm", "r"), ("scope", "repository:a:pull,push")],
                    ),
                    ("basic", &[("realm", "b")]),
                ],
            ),
            (
                r#"Basic realm="b", Bearer realm="r""#,
                &[("basic", &[("realm", "b")]), ("bearer", &[("realm", "r")])],
            ),
            // Empty list elements are allowed.
            (
                r#"Bearer ,realm="r",,scope="s","#,
                &[("bearer", &[("realm", "r"), ("scope", "s")])],
            ),
            // An unterminated quote ends parsing; what came before stays.
            (
                r#"Bearer realm="r",scope="unterminated"#,
                &[("bearer", &[("realm", "r")])],
            ),
        ];
        for (header, want) in cases {
            let got = parse_challenges(header);
            let got: Vec<(&str, Vec<(&str, &str)>)> =
                got.iter().map(|c| (c.scheme.as_str(), params(c))).collect();
            let want: Vec<(&str, Vec<(&str, &str)>)> =
                want.iter().map(|(s, p)| (*s, p.to_vec())).collect();
            assert_eq!(got, want, "{header}");
        }
    }

    #[test]
    fn token68() {
        let c = parse_challenges("Negotiate YWJjZA==");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].token68.as_deref(), Some("YWJjZA=="));
        let c = parse_challenges("Negotiate abc, Basic realm=\"x\"");
        assert_eq!(c[0].token68.as_deref(), Some("abc"));
        assert_eq!(c[1].param("realm"), Some("x"));
    }
}
