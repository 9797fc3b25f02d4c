//! Hand-written edge cases: each input is bumped and compared byte for
//! byte with the expected output, so any reformatting fails the test.

use std::path::Path;

use berth_bumper::{Form, Plan, Target, scan_text};
use berth_oci::Digest;

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const NEW_HEX: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn bump(text: &str, targets: &[&str]) -> (String, Plan) {
    let file = scan_text(Path::new("f.yaml"), text.to_owned()).unwrap();
    let d: Digest = NEW.parse().unwrap();
    let targets: Vec<_> = targets
        .iter()
        .map(|t| (Target::parse(t).unwrap(), d.clone()))
        .collect();
    let files = vec![file];
    let plan = Plan::new(&files, &targets);
    let out = plan.render(&files).unwrap();
    let text = out.into_iter().next().map_or(text.to_owned(), |(_, t)| t);
    (text, plan)
}

#[test]
fn pod_specs_every_container_list_crlf_comments_anchors_flow_and_ports() {
    let old = format!(
        "# top comment\r\n---\r\napiVersion: apps/v1\r\nkind: Deployment\r\nspec:\r\n  template:\r\n    spec:\r\n      initContainers:\r\n        - name: init   # trailing\r\n          image: &app ghcr.io/org/app:1.4\r\n      containers:\r\n        - {{name: main, image: \"ghcr.io/org/app:1.4@{OLD}\", args: [a, b]}}\r\n        - name: side\r\n          image: 'localhost:5000/tools/side:2'\r\n      ephemeralContainers:\r\n        - name: dbg\r\n          image: ghcr.io/org/app@{OLD}\r\n---\r\nkind: CronJob\r\nspec:\r\n  jobTemplate:\r\n    spec:\r\n      template:\r\n        spec:\r\n          containers:\r\n            - image: *app\r\n"
    );
    let (new, plan) = bump(&old, &["ghcr.io/org/app", "localhost:5000/tools/side:2"]);
    let want = format!(
        "# top comment\r\n---\r\napiVersion: apps/v1\r\nkind: Deployment\r\nspec:\r\n  template:\r\n    spec:\r\n      initContainers:\r\n        - name: init   # trailing\r\n          image: &app ghcr.io/org/app:1.4@{NEW}\r\n      containers:\r\n        - {{name: main, image: \"ghcr.io/org/app:1.4@{NEW}\", args: [a, b]}}\r\n        - name: side\r\n          image: 'localhost:5000/tools/side:2@{NEW}'\r\n      ephemeralContainers:\r\n        - name: dbg\r\n          image: ghcr.io/org/app@{NEW}\r\n---\r\nkind: CronJob\r\nspec:\r\n  jobTemplate:\r\n    spec:\r\n      template:\r\n        spec:\r\n          containers:\r\n            - image: *app\r\n"
    );
    assert_eq!(new, want);
    // The alias shares the anchored scalar: four edits, not five.
    assert_eq!(plan.changes.len(), 4);
    assert!(plan.changes.iter().all(|c| c.form == Form::Image));
}

#[test]
fn tag_filter_matches_only_that_tag() {
    let old = "a:\n  image: ghcr.io/org/app:1.4\nb:\n  image: ghcr.io/org/app:1.5\n";
    let (new, plan) = bump(old, &["ghcr.io/org/app:1.5"]);
    assert_eq!(
        new,
        format!("a:\n  image: ghcr.io/org/app:1.4\nb:\n  image: ghcr.io/org/app:1.5@{NEW}\n")
    );
    assert_eq!(plan.changes.len(), 1);
    // Docker Hub names match however they are written.
    let (new, _) = bump("image: nginx:1.27\n", &["docker.io/library/nginx"]);
    assert_eq!(new, format!("image: nginx:1.27@{NEW}\n"));
}

#[test]
fn helm_values_pairs() {
    let old = format!(
        "image:\n  registry: ghcr.io\n  repository: org/app\n  tag: \"1.4\" # pinned\nsidecar:\n  image:\n    repository: ghcr.io/org/app\n    tag: 1.4@{OLD}\nother:\n  repository: ghcr.io/org/app\n  tag: '1.4'\n  digest: {OLD}\nchartDefault:\n  repository: ghcr.io/org/app\n  pullPolicy: Always\n"
    );
    let (new, plan) = bump(&old, &["ghcr.io/org/app"]);
    let want = format!(
        "image:\n  registry: ghcr.io\n  repository: org/app\n  tag: \"1.4@{NEW}\" # pinned\nsidecar:\n  image:\n    repository: ghcr.io/org/app\n    tag: 1.4@{NEW}\nother:\n  repository: ghcr.io/org/app\n  tag: '1.4'\n  digest: {NEW}\nchartDefault:\n  repository: ghcr.io/org/app\n  pullPolicy: Always\n"
    );
    assert_eq!(new, want);
    assert_eq!(plan.changes.len(), 3);
    assert!(
        plan.changes
            .iter()
            .all(|c| c.form == Form::HelmValues && c.tag.as_deref() == Some("1.4"))
    );
}

#[test]
fn helm_values_lists_named_images_are_helm_blocks() {
    let old = "images:\n  - name: web\n    repository: ghcr.io/org/app\n    tag: \"1.4\"\n";
    let (new, plan) = bump(old, &["ghcr.io/org/app"]);
    assert_eq!(
        new,
        format!(
            "images:\n  - name: web\n    repository: ghcr.io/org/app\n    tag: \"1.4@{NEW}\"\n"
        )
    );
    assert_eq!(plan.changes[0].form, Form::HelmValues);
}

#[test]
fn kustomize_images_entries() {
    let old = format!(
        "resources: [d.yaml]\nimages:\n- name: app:replaceme\n  newName: ghcr.io/org/app\n  newTag: \"1.4\"\n- name: ghcr.io/org/app\n  digest: {OLD}\n- name: x\n  newName: ghcr.io/org/app@sha256\n  newTag: 1111111111111111111111111111111111111111111111111111111111111111\n- name: ghcr.io/org/app\n  newName: ghcr.io/org/other\n"
    );
    let (new, plan) = bump(&old, &["ghcr.io/org/app"]);
    let want = format!(
        "resources: [d.yaml]\nimages:\n- name: app:replaceme\n  newName: ghcr.io/org/app\n  newTag: \"1.4@{NEW}\"\n- name: ghcr.io/org/app\n  digest: {NEW}\n- name: x\n  newName: ghcr.io/org/app@sha256\n  newTag: {NEW_HEX}\n- name: ghcr.io/org/app\n  newName: ghcr.io/org/other\n"
    );
    assert_eq!(new, want);
    assert_eq!(plan.changes.len(), 3);
    let (_, plan) = bump(&old, &["ghcr.io/org/other"]);
    assert_eq!(
        plan.unpinnable.len(),
        1,
        "newName alone cannot hold a digest"
    );
}

#[test]
fn argocd_application_kustomize_strings_inline_values_and_values_object() {
    let old = "apiVersion: argoproj.io/v1alpha1\r\nkind: Application\r\nspec:\r\n  source:\r\n    kustomize:\r\n      images:\r\n        - ghcr.io/org/app:1.4\r\n        - \"app=ghcr.io/org/app:1.4\"\r\n    helm:\r\n      values: |\r\n        # values\r\n        image:\r\n          repository: ghcr.io/org/app\r\n          tag: \"1.4\"\r\n\r\n        worker:\r\n          image: ghcr.io/org/app:1.4\r\n      valuesObject:\r\n        image: {repository: ghcr.io/org/app, tag: \"1.4\"}\r\n";
    let (new, plan) = bump(old, &["ghcr.io/org/app:1.4"]);
    let want = format!(
        "apiVersion: argoproj.io/v1alpha1\r\nkind: Application\r\nspec:\r\n  source:\r\n    kustomize:\r\n      images:\r\n        - ghcr.io/org/app:1.4@{NEW}\r\n        - \"app=ghcr.io/org/app:1.4@{NEW}\"\r\n    helm:\r\n      values: |\r\n        # values\r\n        image:\r\n          repository: ghcr.io/org/app\r\n          tag: \"1.4@{NEW}\"\r\n\r\n        worker:\r\n          image: ghcr.io/org/app:1.4@{NEW}\r\n      valuesObject:\r\n        image: {{repository: ghcr.io/org/app, tag: \"1.4@{NEW}\"}}\r\n"
    );
    assert_eq!(new, want);
    assert_eq!(plan.changes.len(), 5);
    let lines: Vec<_> = plan.changes.iter().map(|c| c.line).collect();
    assert_eq!(lines, [7, 8, 14, 17, 19]);
}

#[test]
fn flux_helmrelease_values_and_templates_left_alone() {
    let old = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nspec:\n  values:\n    controllers:\n      main:\n        containers:\n          app:\n            image:\n              repository: ghcr.io/org/app\n              tag: 1.4\n    templated:\n      image: \"{{ .Values.image }}\"\n";
    let (new, plan) = bump(old, &["ghcr.io/org/app"]);
    assert_eq!(new, old.replace("tag: 1.4\n", &format!("tag: 1.4@{NEW}\n")));
    assert_eq!(plan.changes.len(), 1);
}

#[test]
fn second_run_changes_nothing() {
    let old = format!("image: ghcr.io/org/app:1.4@{OLD}\n");
    let (once, _) = bump(&old, &["ghcr.io/org/app"]);
    let (twice, plan) = bump(&once, &["ghcr.io/org/app"]);
    assert_eq!(once, twice);
    assert!(plan.changes.is_empty());
    assert_eq!(plan.unchanged, 1);
}

#[test]
fn escaped_or_folded_values_are_refused_not_reformatted() {
    let old = "a:\n  image: \"ghcr.io/org/\\\n    app:1.4\"\n";
    let (new, plan) = bump(old, &["ghcr.io/org/app"]);
    assert_eq!(new, old);
    assert_eq!(plan.unpinnable.len(), 1);
}
