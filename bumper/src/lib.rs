//! `berth-bumper` finds image references in a GitOps checkout (pod specs,
//! kustomizations, Helm values, ArgoCD Applications, Flux HelmReleases),
//! rewrites their digests by splicing at parser spans, checks that nothing
//! else changed, and pushes a branch and upserts one pull request per target
//! on Forgejo, Gitea or GitHub; `berth bot` drives it from registry webhooks.
//!
//! Not built yet (issue "Bumper and bot"). It must never reformat a byte it
//! did not mean to change.
