//! Compares berth's layer planner with nixpkgs' popularity contest on a
//! synthetic closure of realistic shape, for the changes that happen between
//! two builds of one image: an application update, a patch to a library
//! only that application uses, and a patch to a library several
//! applications share. For each, it counts the layers (and their bytes) of
//! the new image that the old image did not have — what a registry receives
//! and a node pulls again. Prints a Markdown table for docs/layering.md.
//!
//! Run: `cargo run --release -p berth-builder --example layering_compare`

use std::collections::{BTreeMap, BTreeSet};

use berth_builder::ImageSpec;
use berth_builder::plan::plan_layers;

/// name → (size, references by name)
type Closure = BTreeMap<String, (u64, Vec<String>)>;

const MIB: u64 = 1 << 20;

/// A deterministic pseudo-random sequence.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// An image of `apps` applications over a shared base: glibc and a few
/// core libraries, 120 shared libraries, and private libraries per app,
/// with one `env` root referencing the applications (as buildEnv does).
fn synthetic(apps: usize) -> Closure {
    let mut rng = Lcg(42);
    let mut c: Closure = BTreeMap::new();
    c.insert("glibc".into(), (30 * MIB, vec![]));
    c.insert("gcc-lib".into(), (8 * MIB, vec!["glibc".into()]));
    let core: Vec<String> = (0..10).map(|i| format!("core{i}")).collect();
    for name in &core {
        c.insert(
            name.clone(),
            (
                (1 + rng.next() % 4) * MIB,
                vec!["glibc".into(), "gcc-lib".into()],
            ),
        );
    }
    let shared: Vec<String> = (0..120).map(|i| format!("shared{i}")).collect();
    for name in &shared {
        let mut refs = vec!["glibc".to_owned()];
        for _ in 0..3 {
            refs.push(core[(rng.next() % 10) as usize].clone());
        }
        refs.sort();
        refs.dedup();
        c.insert(name.clone(), ((200 + rng.next() % 4000) * 1024, refs));
    }
    for a in 0..apps {
        let mut refs = vec!["glibc".to_owned()];
        for _ in 0..25 {
            refs.push(shared[(rng.next() % 120) as usize].clone());
        }
        for p in 0..8 {
            let name = format!("app{a}-priv{p}");
            c.insert(
                name.clone(),
                ((100 + rng.next() % 2000) * 1024, vec!["glibc".into()]),
            );
            refs.push(name);
        }
        refs.sort();
        refs.dedup();
        c.insert(format!("app{a}"), ((5 + rng.next() % 40) * MIB, refs));
    }
    c.insert(
        "env".into(),
        (64 * 1024, (0..apps).map(|a| format!("app{a}")).collect()),
    );
    // Keep only what the root reaches, as a real closure would.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut todo = vec!["env".to_owned()];
    while let Some(n) = todo.pop() {
        if keep.insert(n.clone()) {
            todo.extend(c[&n].1.iter().cloned());
        }
    }
    c.retain(|n, _| keep.contains(n));
    c
}

/// Store paths change names when they or anything they reference change.
fn rename_with_dependents(c: &Closure, changed: &str, version: u32) -> Closure {
    let mut dirty: BTreeSet<String> = BTreeSet::from([changed.to_owned()]);
    loop {
        let more: Vec<String> = c
            .iter()
            .filter(|(n, (_, refs))| !dirty.contains(*n) && refs.iter().any(|r| dirty.contains(r)))
            .map(|(n, _)| n.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        dirty.extend(more);
    }
    let new_name = |n: &str| {
        if dirty.contains(n) {
            format!("{n}-v{version}")
        } else {
            n.to_owned()
        }
    };
    c.iter()
        .map(|(n, (size, refs))| {
            let size = if n == changed { size + 123_456 } else { *size };
            (
                new_name(n),
                (size, refs.iter().map(|r| new_name(r)).collect()),
            )
        })
        .collect()
}

fn store_path(name: &str) -> String {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let d = berth_oci::Digest::sha256(name.as_bytes());
    let hash: String = d
        .hex()
        .bytes()
        .take(32)
        .map(|c| NIX32[(c as usize) % 32] as char)
        .collect();
    format!("/nix/store/{hash}-{name}")
}

fn spec(c: &Closure, max_layers: usize, previous: &[String]) -> ImageSpec {
    let closure: Vec<serde_json::Value> = c
        .iter()
        .map(|(n, (size, refs))| {
            serde_json::json!({
                "path": store_path(n),
                "narHash": format!("sha256:{n}"),
                "narSize": size,
                "references": refs.iter().map(|r| store_path(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let root = c
        .keys()
        .find(|n| n.starts_with("env"))
        .expect("an env root");
    let json = serde_json::json!({
        "version": 1,
        "closure": closure,
        "roots": [store_path(root)],
        "layering": {"maxLayers": max_layers, "previous": previous},
    });
    ImageSpec::parse(json.to_string().as_bytes()).expect("valid synthetic spec")
}

/// A layer is identified by its set of store paths (its bytes follow).
type Layers = Vec<(BTreeSet<String>, u64)>;

fn berth_layers(c: &Closure, max: usize, previous: &[String]) -> Layers {
    plan_layers(&spec(c, max, previous))
        .layers
        .into_iter()
        .map(|l| (l.paths.into_iter().collect(), l.size))
        .collect()
}

/// nixpkgs' popularity contest (referencesByPopularity + the layered image
/// builder): rank paths by how many paths reference them, transitively;
/// the top `max - 1` get a layer each, everything else shares the last one.
fn popularity_layers(c: &Closure, max: usize) -> Layers {
    let mut ancestors: BTreeMap<&str, BTreeSet<&str>> =
        c.keys().map(|n| (n.as_str(), BTreeSet::new())).collect();
    // Propagate until stable (the closure is small).
    loop {
        let mut changed = false;
        for (n, (_, refs)) in c {
            for r in refs {
                let mut add: BTreeSet<&str> = ancestors[n.as_str()].clone();
                add.insert(n.as_str());
                let entry = ancestors.get_mut(r.as_str()).expect("reference in closure");
                let before = entry.len();
                entry.extend(add);
                changed |= entry.len() != before;
            }
        }
        if !changed {
            break;
        }
    }
    let mut ranked: Vec<&String> = c.keys().collect();
    ranked.sort_by(|a, b| {
        ancestors[b.as_str()]
            .len()
            .cmp(&ancestors[a.as_str()].len())
            .then(a.cmp(b))
    });
    let mut layers: Layers = ranked
        .iter()
        .take(max - 1)
        .map(|n| (BTreeSet::from([store_path(n)]), c[*n].0))
        .collect();
    let rest: Vec<&String> = ranked.iter().skip(max - 1).copied().collect();
    if !rest.is_empty() {
        layers.push((
            rest.iter().map(|n| store_path(n)).collect(),
            rest.iter().map(|n| c[*n].0).sum(),
        ));
    }
    layers
}

/// Layers (and bytes) of `new` that `old` does not have.
fn churn(old: &Layers, new: &Layers) -> (usize, u64) {
    let old: BTreeSet<&BTreeSet<String>> = old.iter().map(|l| &l.0).collect();
    let fresh: Vec<&(BTreeSet<String>, u64)> = new.iter().filter(|l| !old.contains(&l.0)).collect();
    (fresh.len(), fresh.iter().map(|l| l.1).sum())
}

fn anchors(layers: &Layers) -> Vec<String> {
    layers
        .iter()
        .filter(|l| l.0.len() == 1)
        .flat_map(|l| l.0.iter().cloned())
        .collect()
}

fn main() {
    let max = 100;
    let before = synthetic(4);
    let total: u64 = before.values().map(|v| v.0).sum();
    println!(
        "Synthetic closure: {} store paths, {:.0} MiB, one `env` root over 4 applications; budget {max} layers.\n",
        before.len(),
        total as f64 / MIB as f64
    );
    println!(
        "| change | berth: new layers | berth: bytes to push | popularity contest: new layers | popularity contest: bytes to push |"
    );
    println!("|---|---|---|---|---|");
    let scenarios = [
        ("application update (app2)", "app2"),
        ("private library patch (app1-priv3)", "app1-priv3"),
        ("shared library patch (shared7)", "shared7"),
        ("base library patch (core3)", "core3"),
    ];
    let old_berth = berth_layers(&before, max, &[]);
    let old_pop = popularity_layers(&before, max);
    for (label, changed) in scenarios {
        let after = rename_with_dependents(&before, changed, 2);
        let new_berth = berth_layers(&after, max, &anchors(&old_berth));
        let new_pop = popularity_layers(&after, max);
        let (bl, bb) = churn(&old_berth, &new_berth);
        let (pl, pb) = churn(&old_pop, &new_pop);
        println!(
            "| {label} | {bl} | {:.1} MiB | {pl} | {:.1} MiB |",
            bb as f64 / MIB as f64,
            pb as f64 / MIB as f64
        );
    }
}
