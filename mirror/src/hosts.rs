//! The node configuration that sends pulls through the mirror, written
//! from one description so the three runtimes agree: containerd's
//! `hosts.toml` (one per registry under `config_path`, with a short
//! `dial_timeout` so a dead mirror costs little), a Talos machine-config
//! patch (`machine.registries.mirrors`) and k3s's `registries.yaml`. Also
//! the start-up check of a containerd config for the two settings that
//! silently defeat a mirror: no `config_path` (hosts.toml is never read)
//! and `discard_unpacked_layers = true` (the node keeps no layers to share).

use std::fmt::Write as _;

/// The server URL containerd falls back to for `registry` when none is
/// given: HTTPS, as containerd assumes (Docker Hub's API host for
/// `docker.io`).
pub fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://registry-1.docker.io".to_owned()
    } else {
        format!("https://{registry}")
    }
}

/// A mirrored registry: its name as images spell it, and the URL of its
/// API (scheme included) that runtimes fall back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// `HOST[:PORT]`.
    pub host: String,
    /// `http(s)://…`.
    pub server: String,
    /// Whether `server` was assumed (no `=URL` given).
    pub assumed: bool,
}

/// `url` if it is an absolute `http://` or `https://` URL with a host;
/// otherwise why not, naming `what` (the flag) and the fix. Runtimes take
/// an endpoint without a scheme as HTTPS, which bypasses a plain-HTTP
/// mirror or registry without a word.
pub fn check_url(what: &str, url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(url.to_owned()),
        Some(_) => Err(format!(
            "{what} {url:?} must be scheme://host[:port] with no path (e.g. http://127.0.0.1:5001)"
        )),
        None => Err(format!(
            "{what} {url:?} has no scheme; containerd would read it as https://{url}: write http://{url} (plain HTTP, as berth mirror and berth serve without TLS speak) or https://{url}"
        )),
    }
}

/// Parse a `--registry` value, `HOST[:PORT]` or `HOST[:PORT]=URL`.
pub fn parse_registry(arg: &str) -> Result<Mirrored, String> {
    let (host, url) = match arg.split_once('=') {
        Some((h, u)) => (h, Some(u)),
        None => (arg, None),
    };
    if host.starts_with("http://") || host.starts_with("https://") {
        let bare = host.split_once("://").map_or(host, |(_, h)| h);
        return Err(format!(
            "--registry {arg:?}: name the registry as images do, and its URL after '=': {bare}={host}"
        ));
    }
    if !crate::config::valid_host(host) {
        return Err(format!(
            "--registry {host:?} is not a registry host[:port] (e.g. registry.lan:5000, or registry.lan:5000=http://registry.lan:5000)"
        ));
    }
    let (server, assumed) = match url {
        Some(u) => (check_url(&format!("--registry {host}="), u)?, false),
        None => (default_server(host), true),
    };
    Ok(Mirrored {
        host: host.to_owned(),
        server,
        assumed,
    })
}

/// containerd's `<config_path>/<registry>/hosts.toml`: the mirror first,
/// then `server` (the registry itself).
pub fn containerd_hosts_toml(server: &str, mirror_url: &str, dial_timeout_ms: u64) -> String {
    format!(
        "# Written by `berth mirror hosts-config`: pulls try the node's mirror first.\n\
         server = \"{server}\"\n\n\
         [host.\"{mirror_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"{dial_timeout_ms}ms\"\n"
    )
}

/// A Talos machine-config patch mirroring `registries` through `mirror_url`,
/// each falling back to its own server (`talosctl patch mc --patch @file`).
pub fn talos_patch(registries: &[Mirrored], mirror_url: &str) -> String {
    let mut out = String::from("machine:\n  registries:\n    mirrors:\n");
    for r in registries {
        let _ = write!(
            out,
            "      {}:\n        endpoints:\n          - {mirror_url}\n          - {}\n        overridePath: false\n",
            r.host, r.server
        );
    }
    out
}

/// k3s's `/etc/rancher/k3s/registries.yaml` mirroring `registries` through
/// `mirror_url`, each falling back to its own server.
pub fn k3s_registries_yaml(registries: &[Mirrored], mirror_url: &str) -> String {
    let mut out = String::from("mirrors:\n");
    for r in registries {
        let _ = write!(
            out,
            "  \"{}\":\n    endpoint:\n      - \"{mirror_url}\"\n      - \"{}\"\n",
            r.host, r.server
        );
    }
    out
}

/// Problems in a containerd `config.toml` that defeat the mirror, each with
/// its fix.
pub fn check_containerd_config(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let value: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![format!("containerd's config does not parse: {e}")],
    };
    let cri = value
        .get("plugins")
        .and_then(|p| p.get("io.containerd.grpc.v1.cri"));
    let config_path = cri
        .and_then(|c| c.get("registry"))
        .and_then(|r| r.get("config_path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty());
    if config_path.is_none() {
        problems.push(
            "containerd has no registry config_path, so it never reads hosts.toml: set \
             [plugins.\"io.containerd.grpc.v1.cri\".registry] config_path = \"/etc/containerd/certs.d\" \
             and restart containerd"
                .to_owned(),
        );
    }
    let discard = cri
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("discard_unpacked_layers"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    if discard {
        problems.push(
            "containerd discards layers after unpacking (discard_unpacked_layers = true), so this \
             node has nothing to share: set it to false"
                .to_owned(),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers() {
        let t = containerd_hosts_toml("https://registry.lan:5000", "http://127.0.0.1:5001", 200);
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["server"].as_str(), Some("https://registry.lan:5000"));
        assert_eq!(
            v["host"]["http://127.0.0.1:5001"]["capabilities"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let regs = vec![
            parse_registry("registry.lan:5000=http://registry.lan:5000").unwrap(),
            parse_registry("docker.io").unwrap(),
        ];
        let talos = talos_patch(&regs, "http://127.0.0.1:5001");
        assert!(talos.contains("docker.io:\n        endpoints:\n          - http://127.0.0.1:5001\n          - https://registry-1.docker.io"));
        assert!(talos.contains("          - http://registry.lan:5000\n"));
        let k3s = k3s_registries_yaml(&regs, "http://127.0.0.1:5001");
        assert!(k3s.contains(
            "\"registry.lan:5000\":\n    endpoint:\n      - \"http://127.0.0.1:5001\"\n      - \"http://registry.lan:5000\""
        ));
    }

    #[test]
    fn registries_and_urls() {
        let r = parse_registry("registry.lan:5000").unwrap();
        assert_eq!(
            (r.server.as_str(), r.assumed),
            ("https://registry.lan:5000", true)
        );
        let r = parse_registry("r:5000=http://10.0.0.2:5000/").unwrap();
        assert_eq!(
            (r.server.as_str(), r.assumed),
            ("http://10.0.0.2:5000", false)
        );
        for bad in [
            "http://r:5000",
            "r:5000=r:5000",
            "r:5000=ftp://x",
            "a/b",
            "r=http://x/v2",
        ] {
            assert!(parse_registry(bad).is_err(), "{bad}");
        }
        assert!(
            check_url("--mirror-url", "127.0.0.1:5001")
                .unwrap_err()
                .contains("http://127.0.0.1:5001")
        );
        assert_eq!(
            check_url("--mirror-url", "http://127.0.0.1:5001/").unwrap(),
            "http://127.0.0.1:5001"
        );
    }

    #[test]
    fn containerd_checks() {
        let good = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n";
        assert!(check_containerd_config(good).is_empty());
        let none = "version = 2\n";
        assert!(check_containerd_config(none)[0].contains("config_path"));
        let discard = format!(
            "{good}[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndiscard_unpacked_layers = true\n"
        );
        let p = check_containerd_config(&discard);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("discard_unpacked_layers"));
        assert!(check_containerd_config("not toml [")[0].contains("does not parse"));
    }
}
