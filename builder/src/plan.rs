//! The layer plan: which store paths go into which layer. A pure function of
//! the closure graph, the sizes and the layering options — no clock, no
//! hash-map order, and independent of the order the spec lists paths and
//! references in — so the same closure gives the same layers everywhere.
//!
//! # The algorithm: anchored dominator layering
//!
//! 1. Every store path is a unit, except that each explicit group is one
//!    unit.
//! 2. Some units become *anchors* and get a layer of their own: groups,
//!    roots (what changes most often), paths that had their own layer in
//!    the previous image, then the rest by `size × popularity` (popularity:
//!    how many closure paths reference the path, transitively), as long as
//!    the budget lasts and the path is at least `minLayerSize`.
//! 3. Every other path joins the layer of its nearest anchor *dominator*
//!    (the closest path that every chain of references from the roots to it
//!    passes through): a path only reachable through an application belongs
//!    with it and changes with it. A path dominated by no anchor (shared by
//!    several, small) goes to one last shared layer.
//! 4. Layers are ordered most popular first, so the bottom of every image is
//!    its most widely shared base.
//!
//! Compared with nixpkgs' popularity contest, which gives the most popular
//! paths their own layers and puts everything else — including the roots,
//! the least popular paths of all — into one final layer, a change to an
//! application here touches only its own layer, not a layer holding the
//! whole long tail. `docs/layering.md` has the numbers.

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::ImageSpec;

/// Why a path is in its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerKind {
    /// An explicit group from the spec.
    Group,
    /// An anchor path and the paths it dominates.
    Anchor,
    /// Paths dominated by no anchor.
    Shared,
}

/// One planned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Why these paths are together.
    pub kind: LayerKind,
    /// The store paths, sorted.
    pub paths: Vec<String>,
    /// Their total NAR size.
    pub size: u64,
}

/// The plan for a whole image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// Store-path layers, bottom first.
    pub layers: Vec<PlannedLayer>,
    /// Whether an extra-files layer goes on top.
    pub extra_files_layer: bool,
}

impl LayerPlan {
    /// Layers in the image, the extra-files layer included.
    pub fn layer_count(&self) -> usize {
        self.layers.len() + usize::from(self.extra_files_layer)
    }
}

/// The closure as dense indices in path order.
struct Graph {
    paths: Vec<String>,
    size: Vec<u64>,
    /// References, without self-references, sorted.
    refs: Vec<Vec<usize>>,
    /// Reverse edges, sorted.
    referrers: Vec<Vec<usize>>,
    roots: Vec<usize>,
}

impl Graph {
    fn new(spec: &ImageSpec) -> Self {
        let mut sorted: Vec<&crate::spec::StorePathInfo> = spec.closure.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let index: BTreeMap<&str, usize> = sorted
            .iter()
            .enumerate()
            .map(|(i, p)| (p.path.as_str(), i))
            .collect();
        let n = sorted.len();
        let mut refs = vec![Vec::new(); n];
        let mut referrers = vec![Vec::new(); n];
        for (i, p) in sorted.iter().enumerate() {
            let mut r: Vec<usize> = p
                .references
                .iter()
                .filter_map(|r| index.get(r.as_str()).copied())
                .filter(|&j| j != i)
                .collect();
            r.sort_unstable();
            r.dedup();
            for &j in &r {
                referrers[j].push(i);
            }
            refs[i] = r;
        }
        for r in &mut referrers {
            r.sort_unstable();
        }
        let mut roots: Vec<usize> = spec
            .roots
            .iter()
            .filter_map(|r| index.get(r.as_str()).copied())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        Self {
            paths: sorted.iter().map(|p| p.path.clone()).collect(),
            size: sorted.iter().map(|p| p.nar_size).collect(),
            refs,
            referrers,
            roots,
        }
    }

    /// Nodes in an order where every referrer comes before what it
    /// references (the spec is validated acyclic).
    fn topological(&self) -> Vec<usize> {
        let n = self.paths.len();
        let mut pending: Vec<usize> = (0..n).map(|i| self.referrers[i].len()).collect();
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &j in &self.refs[i] {
                pending[j] -= 1;
                if pending[j] == 0 {
                    ready.insert(j);
                }
            }
        }
        order
    }

    /// For each path, how many other closure paths reach it.
    fn popularity(&self, topo: &[usize]) -> Vec<u64> {
        let n = self.paths.len();
        // Ancestor sets as bitsets: fine for closures of thousands of paths.
        let words = n.div_ceil(64);
        let mut anc = vec![vec![0u64; words]; n];
        for &i in topo {
            for k in 0..self.referrers[i].len() {
                let p = self.referrers[i][k];
                let (src, dst) = if p < i {
                    let (a, b) = anc.split_at_mut(i);
                    (&a[p], &mut b[0])
                } else {
                    let (a, b) = anc.split_at_mut(p);
                    (&b[0], &mut a[i])
                };
                for w in 0..words {
                    dst[w] |= src[w];
                }
                dst[p / 64] |= 1 << (p % 64);
            }
        }
        anc.iter()
            .map(|a| a.iter().map(|w| u64::from(w.count_ones())).sum())
            .collect()
    }

    /// Immediate dominators from a virtual root above every root (`None`
    /// means the virtual root).
    fn dominators(&self, topo: &[usize]) -> Vec<Option<usize>> {
        let n = self.paths.len();
        let mut idom: Vec<Option<usize>> = vec![None; n];
        let mut depth = vec![0usize; n];
        let is_root: BTreeSet<usize> = self.roots.iter().copied().collect();
        let lca = |idom: &[Option<usize>],
                   depth: &[usize],
                   mut a: Option<usize>,
                   mut b: Option<usize>| {
            loop {
                match (a, b) {
                    (Some(x), Some(y)) if x == y => return a,
                    (Some(x), Some(y)) => {
                        if depth[x] >= depth[y] {
                            a = idom[x];
                        } else {
                            b = idom[y];
                        }
                    }
                    _ => return None,
                }
            }
        };
        for &i in topo {
            // A root hangs off the virtual root; so does anything with a
            // referrer outside the roots' reach (not possible once the spec
            // is validated, but harmless).
            let dom = if is_root.contains(&i) || self.referrers[i].is_empty() {
                None
            } else {
                let mut it = self.referrers[i].iter().map(|&p| Some(p));
                let first = it.next().flatten();
                it.fold(first, |acc, p| lca(&idom, &depth, acc, p))
            };
            idom[i] = dom;
            depth[i] = dom.map_or(1, |d| depth[d] + 1);
        }
        idom
    }
}

/// Plan the layers of `spec`.
pub fn plan_layers(spec: &ImageSpec) -> LayerPlan {
    let g = Graph::new(spec);
    let n = g.paths.len();
    let topo = g.topological();
    let popularity = g.popularity(&topo);
    let idom = g.dominators(&topo);
    let index: BTreeMap<&str, usize> = g
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let extra_files_layer = spec.has_extra_layer();
    let budget = spec.layering.max_layers - usize::from(extra_files_layer);

    // Units: groups are one unit each; every other path is its own.
    let mut unit_of: Vec<Option<usize>> = vec![None; n];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for group in &spec.layering.groups {
        let mut members: Vec<usize> = group
            .iter()
            .filter_map(|p| index.get(p.as_str()).copied())
            .collect();
        members.sort_unstable();
        for &m in &members {
            unit_of[m] = Some(groups.len());
        }
        groups.push(members);
    }

    // Anchor candidates in priority order.
    let previous: BTreeSet<usize> = spec
        .layering
        .previous
        .iter()
        .filter_map(|p| index.get(p.as_str()).copied())
        .collect();
    let roots: BTreeSet<usize> = g.roots.iter().copied().collect();
    let min = spec.layering.min_layer_size;
    let mut candidates: Vec<(u8, std::cmp::Reverse<u128>, usize)> = (0..n)
        .filter(|&i| unit_of[i].is_none())
        .filter(|&i| roots.contains(&i) || previous.contains(&i) || g.size[i] >= min)
        .map(|i| {
            let tier = if roots.contains(&i) {
                0
            } else if previous.contains(&i) {
                1
            } else {
                2
            };
            let score = u128::from(g.size[i]) * u128::from(popularity[i] + 1);
            (tier, std::cmp::Reverse(score), i)
        })
        .collect();
    candidates.sort();

    // Leave one layer for the paths no anchor dominates, unless there are
    // none.
    let free = budget.saturating_sub(groups.len());
    let everyone_fits = candidates.len() + groups.iter().map(Vec::len).sum::<usize>() == n;
    let anchor_slots = if everyone_fits && candidates.len() <= free {
        free
    } else {
        free.saturating_sub(1)
    };
    let anchors: BTreeSet<usize> = candidates.iter().take(anchor_slots).map(|c| c.2).collect();

    // Assign every path: group, own anchor, nearest anchor dominator, or
    // the shared layer.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Slot {
        Group(usize),
        Anchor(usize),
        Shared,
    }
    let slot_of = |i: usize| -> Slot {
        let mut cur = Some(i);
        while let Some(c) = cur {
            if let Some(gid) = unit_of[c] {
                return Slot::Group(gid);
            }
            if anchors.contains(&c) {
                return Slot::Anchor(c);
            }
            cur = idom[c];
        }
        Slot::Shared
    };
    let mut members: BTreeMap<Slot, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        members.entry(slot_of(i)).or_default().push(i);
    }

    let mut layers: Vec<(LayerKind, u64, u64, PlannedLayer)> = members
        .into_iter()
        .map(|(slot, paths)| {
            let size: u64 = paths.iter().map(|&i| g.size[i]).sum();
            let pop = paths.iter().map(|&i| popularity[i]).max().unwrap_or(0);
            let kind = match slot {
                Slot::Group(_) => LayerKind::Group,
                Slot::Anchor(_) => LayerKind::Anchor,
                Slot::Shared => LayerKind::Shared,
            };
            let layer = PlannedLayer {
                kind,
                paths: paths.iter().map(|&i| g.paths[i].clone()).collect(),
                size,
            };
            (kind, pop, size, layer)
        })
        .collect();
    // Most popular first; the shared layer last; ties by size, then paths.
    layers.sort_by(|a, b| {
        let shared = |k: LayerKind| k == LayerKind::Shared;
        shared(a.0)
            .cmp(&shared(b.0))
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
            .then(a.3.paths.cmp(&b.3.paths))
    });
    LayerPlan {
        layers: layers.into_iter().map(|l| l.3).collect(),
        extra_files_layer,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::spec::tests::{info, sp};
    use crate::spec::{Layering, StorePathInfo};

    fn spec(closure: Vec<StorePathInfo>, roots: &[&str], layering: Layering) -> ImageSpec {
        let json = serde_json::json!({
            "version": 1,
            "closure": closure,
            "roots": roots.iter().map(|r| sp(r)).collect::<Vec<_>>(),
            "layering": layering,
        });
        ImageSpec::parse(json.to_string().as_bytes()).unwrap()
    }

    /// Each layer's package names, sorted.
    fn names(plan: &LayerPlan) -> Vec<Vec<String>> {
        plan.layers
            .iter()
            .map(|l| {
                let mut v: Vec<String> = l
                    .paths
                    .iter()
                    .map(|p| p.split_once('-').unwrap().1.to_owned())
                    .collect();
                v.sort();
                v
            })
            .collect()
    }

    /// app → {libfoo → glibc, libbar → glibc}; tool → glibc.
    fn closure() -> Vec<StorePathInfo> {
        vec![
            info("app", 100, &["libfoo", "libbar", "app"]),
            info("tool", 50, &["glibc"]),
            info("libfoo", 30, &["glibc"]),
            info("libbar", 20, &["glibc", "priv"]),
            info("priv", 5, &[]),
            info("glibc", 1000, &[]),
        ]
    }

    #[test]
    fn everything_fits_one_layer_each() {
        let plan = plan_layers(&spec(closure(), &["app", "tool"], Layering::default()));
        assert_eq!(
            names(&plan),
            [
                ["glibc"],
                ["priv"],
                ["libfoo"],
                ["libbar"],
                ["app"],
                ["tool"]
            ],
            "most popular first, then larger first"
        );
    }

    #[test]
    fn small_budget_merges_by_dominator() {
        let l = Layering {
            max_layers: 4,
            ..Layering::default()
        };
        let plan = plan_layers(&spec(closure(), &["app", "tool"], l));
        // Roots are anchored; glibc scores highest of the rest; libfoo,
        // libbar and priv are only reachable through app, so they join it.
        assert_eq!(
            names(&plan),
            [
                vec!["glibc"],
                vec!["app", "libbar", "libfoo", "priv"],
                vec!["tool"]
            ]
        );
    }

    #[test]
    fn groups_and_min_size() {
        let l = Layering {
            min_layer_size: 40,
            groups: vec![vec![sp("libfoo"), sp("libbar")]],
            ..Layering::default()
        };
        let plan = plan_layers(&spec(closure(), &["app", "tool"], l));
        // priv (5 bytes) is below the minimum: it goes with its dominator,
        // libbar, which is in the group.
        assert_eq!(
            names(&plan),
            [
                vec!["glibc"],
                vec!["libbar", "libfoo", "priv"],
                vec!["app"],
                vec!["tool"]
            ]
        );
        assert_eq!(plan.layers[1].kind, LayerKind::Group);
    }

    /// A random DAG: node i may reference nodes j > i; roots are the nodes
    /// nothing references.
    fn arb_closure() -> impl Strategy<Value = (Vec<StorePathInfo>, Vec<String>)> {
        (1usize..40).prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n),
                proptest::collection::vec(0u64..1_000_000, n),
            )
                .prop_map(move |(adj, sizes)| {
                    let name = |i: usize| format!("p{i}");
                    let closure: Vec<StorePathInfo> = (0..n)
                        .map(|i| {
                            let refs: Vec<String> = (i + 1..n)
                                .filter(|&j| adj[i][j] && (i + j) % 3 != 0)
                                .map(name)
                                .collect();
                            let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                            info(&name(i), sizes[i], &refs)
                        })
                        .collect();
                    let referenced: BTreeSet<&String> =
                        closure.iter().flat_map(|p| &p.references).collect();
                    let roots = closure
                        .iter()
                        .filter(|p| !referenced.contains(&p.path))
                        .map(|p| p.path.split_once('-').unwrap().1.to_owned())
                        .collect();
                    (closure, roots)
                })
        })
    }

    proptest! {
        #[test]
        fn plans_are_partitions_within_budget_and_order_independent(
            (closure, roots) in arb_closure(),
            budget in 1usize..50,
            min in 0u64..500_000,
            seed in any::<u64>(),
        ) {
            let layering = Layering { max_layers: budget, min_layer_size: min, ..Layering::default() };
            let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
            let s = spec(closure.clone(), &root_refs, layering.clone());
            let plan = plan_layers(&s);

            // Every store path in exactly one layer.
            let mut seen = BTreeSet::new();
            for l in &plan.layers {
                prop_assert!(!l.paths.is_empty());
                for p in &l.paths {
                    prop_assert!(seen.insert(p.clone()), "{p} in two layers");
                }
            }
            prop_assert_eq!(seen.len(), closure.len());
            // Budget respected.
            prop_assert!(plan.layer_count() <= budget, "{} layers for a budget of {budget}", plan.layer_count());
            // Same input, same plan; and the listing order does not matter.
            prop_assert_eq!(&plan_layers(&s), &plan);
            let mut shuffled = closure.clone();
            let mut rng = seed;
            for i in (1..shuffled.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (rng >> 33) as usize % (i + 1));
                shuffled[i].references.reverse();
            }
            let mut rev_roots = root_refs.clone();
            rev_roots.reverse();
            prop_assert_eq!(&plan_layers(&spec(shuffled, &rev_roots, layering)), &plan);
        }
    }
}
