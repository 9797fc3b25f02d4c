//! Property: on generated YAML mixing every shape the bumper edits (plain,
//! quoted and flow image strings, Helm blocks, anchors and aliases,
//! comments, literal blocks of inline values, several documents, CRLF),
//! bumping every image adds exactly `@<digest>` once per reference and
//! changes no other byte: removing the new digests gives back the input.

use std::path::Path;

use berth_bumper::{Plan, Target, scan_text};
use berth_oci::Digest;
use proptest::prelude::*;

const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// One generated entry: its shape, a name index, a style and a flag.
type Item = (u8, u8, u8, bool);

fn image(k: u8) -> String {
    format!("reg{}.lan:5000/team/app{}", k % 3, k % 5)
}

/// Render `items` as a block mapping at `indent`; returns how many
/// references it holds that a bump must change.
fn render(
    items: &[Item],
    indent: usize,
    nl: &str,
    out: &mut String,
    anchors: &mut Vec<String>,
) -> usize {
    let pad = " ".repeat(indent);
    let mut refs = 0;
    for (i, &(shape, k, style, flag)) in items.iter().enumerate() {
        let key = format!("k{i}");
        let value = format!("{}:{}.{}", image(k), k % 4, style);
        let quoted = match style % 3 {
            0 => value.clone(),
            1 => format!("'{value}'"),
            _ => format!("\"{value}\""),
        };
        let comment = if flag { "  # keep me" } else { "" };
        match shape % 8 {
            0 => {
                out.push_str(&format!(
                    "{pad}{key}:{nl}{pad}  image: {quoted}{comment}{nl}"
                ));
                refs += 1;
            }
            1 => {
                out.push_str(&format!(
                    "{pad}{key}:{nl}{pad}  image:{nl}{pad}    repository: {}{nl}{pad}    tag: \"{}\"{comment}{nl}",
                    image(k),
                    k % 4
                ));
                refs += 1;
            }
            2 => {
                out.push_str(&format!(
                    "{pad}{key}: {{name: c{i}, image: {quoted}, args: [a, b]}}{nl}"
                ));
                refs += 1;
            }
            3 => {
                let a = format!("a{}{i}", anchors.len());
                out.push_str(&format!("{pad}{key}:{nl}{pad}  image: &{a} {quoted}{nl}"));
                anchors.push(a);
                refs += 1;
            }
            4 if !anchors.is_empty() => {
                let a = &anchors[k as usize % anchors.len()];
                out.push_str(&format!("{pad}{key}:{nl}{pad}  image: *{a}{nl}"));
            }
            5 if indent == 0 => {
                // Inline values: YAML inside a literal block.
                out.push_str(&format!("{pad}{key}:{nl}{pad}  values: |{nl}"));
                let inner: Vec<Item> = (0..(k % 4 + 1))
                    .map(|j| (j % 3, k.wrapping_add(j), style, flag))
                    .collect();
                refs += render(&inner, indent + 4, nl, out, &mut Vec::new());
            }
            6 => {
                out.push_str(&format!("{pad}# a comment line{comment}{nl}{pad}{key}:{nl}{pad}  - {quoted}{nl}{pad}  - plain text{nl}"));
            }
            _ => {
                out.push_str(&format!("{pad}{key}: {} # not an image key{nl}", k));
            }
        }
    }
    refs
}

fn arb_doc() -> impl Strategy<Value = (Vec<Vec<Item>>, bool)> {
    (
        prop::collection::vec(
            prop::collection::vec((0u8..8, any::<u8>(), 0u8..3, any::<bool>()), 1..12),
            1..4,
        ),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn only_the_digests_change((docs, crlf) in arb_doc()) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        let mut refs = 0;
        let mut anchors = Vec::new();
        for (i, items) in docs.iter().enumerate() {
            if i > 0 {
                text.push_str(&format!("---{nl}"));
            }
            refs += render(items, 0, nl, &mut text, &mut anchors);
        }
        let file = scan_text(Path::new("f.yaml"), text.clone()).unwrap();
        let digest: Digest = NEW.parse().unwrap();
        let targets: Vec<(Target, Digest)> = (0..5)
            .flat_map(|k| (0..3).map(move |r| format!("reg{r}.lan:5000/team/app{k}")))
            .map(|t| (Target::parse(&t).unwrap(), digest.clone()))
            .collect();
        let files = vec![file];
        let plan = Plan::new(&files, &targets);
        prop_assert!(plan.unpinnable.is_empty(), "{:?}", plan.unpinnable);
        let out = plan.render(&files).unwrap();
        let new = out.first().map_or(text.clone(), |(_, t)| t.clone());
        let marker = format!("@{NEW}");
        prop_assert_eq!(new.matches(&marker).count(), refs, "{}", new);
        prop_assert_eq!(new.replace(&marker, ""), text);
        // And once pinned, a second bump changes nothing.
        let again = scan_text(Path::new("f.yaml"), new.clone()).unwrap();
        let files = vec![again];
        let plan = Plan::new(&files, &targets);
        prop_assert!(plan.changes.is_empty());
        prop_assert_eq!(plan.unchanged, refs);
    }
}
