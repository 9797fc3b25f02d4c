//! Tag retention, Harbor's way: per project, a tag is kept when a rule
//! whose repository and tag patterns match it keeps it (the N most recently
//! pushed per repository, those pushed within D days, or always); every
//! other tag of a project with rules goes, except immutable ones. With
//! `remove_untagged`, the project's untagged manifests go too (older than
//! the GC grace window; a kept index keeps its children and a kept subject
//! its referrers). The bytes are freed by the next garbage collection.
//!
//! A plan reads the tags; each deletion re-checks that the tag still points
//! where it did when planned, so a tag pushed again meanwhile stays. A dry
//! run returns the plan; a run applies it and audits each deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::metadata::TagRow;
use crate::policy::{Keep, ProjectPolicy};

/// What retention removed (or would remove).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionReport {
    /// A dry run: nothing was removed.
    pub dry_run: bool,
    /// Tags removed, as `repository:tag`.
    pub tags: Vec<String>,
    /// Tags no rule keeps that stay because they are immutable.
    pub immutable: Vec<String>,
    /// Untagged manifests removed, as `repository@digest`.
    pub manifests: Vec<String>,
    /// Tags kept.
    pub kept: u64,
}

/// The tags of one project that `policy` does not keep, as of `now`.
pub fn doomed_tags(
    policy: &ProjectPolicy,
    project: &str,
    rows: &[TagRow],
    now: u64,
) -> Vec<TagRow> {
    if policy.retention.is_empty() {
        return Vec::new();
    }
    let mut by_repo: BTreeMap<&str, Vec<&TagRow>> = BTreeMap::new();
    for r in rows {
        by_repo.entry(r.repository.as_str()).or_default().push(r);
    }
    let mut doomed = Vec::new();
    for (repo, mut tags) in by_repo {
        let path = repo
            .strip_prefix(project)
            .map(|p| p.trim_start_matches('/'))
            .unwrap_or(repo);
        // Most recently pushed first; the name breaks ties.
        tags.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.tag.cmp(&b.tag)));
        let mut kept: BTreeSet<&str> = BTreeSet::new();
        for rule in policy
            .retention
            .iter()
            .filter(|r| r.repositories.matches(path))
        {
            let matching = tags.iter().filter(|t| rule.tags.matches(&t.tag));
            match rule.keep {
                Keep::Latest(n) => kept.extend(matching.take(n).map(|t| t.tag.as_str())),
                Keep::Days(d) => kept.extend(
                    matching
                        .filter(|t| t.pushed_at + d * 86_400 > now)
                        .map(|t| t.tag.as_str()),
                ),
                Keep::Always => kept.extend(matching.map(|t| t.tag.as_str())),
            }
        }
        doomed.extend(
            tags.iter()
                .filter(|t| !kept.contains(t.tag.as_str()))
                .map(|t| (*t).clone()),
        );
    }
    doomed
}

/// Apply retention to `project` (or every project with rules) as of `now`;
/// with `dry_run`, only report.
pub async fn run(
    r: &Arc<Registry>,
    project: Option<&str>,
    dry_run: bool,
    now: u64,
) -> Result<RetentionReport, String> {
    // A preview changes nothing and may run anywhere; a run is one
    // replica's at a time.
    let _everywhere = if dry_run {
        None
    } else {
        match crate::on_meta(r, |m| m.try_job("retention")).await? {
            Some(guard) => Some(guard),
            None => return Err(crate::gc::BUSY.to_owned()),
        }
    };
    let policies = r.policies();
    let mut report = RetentionReport {
        dry_run,
        ..RetentionReport::default()
    };
    let grace_cutoff = now.saturating_sub(r.gc.grace_minutes * 60);
    for (name, policy) in policies.projects() {
        if project.is_some_and(|p| p != name) || policy.retention.is_empty() {
            continue;
        }
        let n = name.clone();
        let rows = crate::on_meta(r, move |m| m.project_tags(&n)).await?;
        let doomed = doomed_tags(policy, name, &rows, now);
        report.kept += (rows.len() - doomed.len()) as u64;
        let mut removed: Vec<TagRow> = Vec::new();
        for t in doomed {
            let label = format!("{}:{}", t.repository, t.tag);
            if policies.immutable(&t.repository, &t.tag).is_some() {
                report.kept += 1;
                report.immutable.push(label);
                continue;
            }
            if dry_run {
                report.tags.push(label);
                removed.push(t);
                continue;
            }
            let row = t.clone();
            if crate::on_meta(r, move |m| m.retention_delete_tag(&row)).await? {
                r.audit.record_system(
                    "retention.delete",
                    &label,
                    &format!("{} (pushed {})", t.digest, t.pushed_at),
                );
                report.tags.push(label);
            } else {
                report.kept += 1;
            }
        }
        if policy.remove_untagged {
            let n = name.clone();
            // A dry run sees the manifests as the run would: without the
            // tags it removes.
            let untagged = crate::on_meta(r, move |m| {
                m.untagged_in_project(&n, grace_cutoff, &removed)
            })
            .await?;
            let mut by_repo: BTreeMap<String, Vec<berth_oci::Digest>> = BTreeMap::new();
            for m in untagged {
                by_repo.entry(m.repository).or_default().push(m.digest);
            }
            for (repo, digests) in by_repo {
                let labels = digests.iter().map(|d| format!("{repo}@{d}"));
                if dry_run {
                    report.manifests.extend(labels);
                    continue;
                }
                let (rr, dd) = (repo.clone(), digests.clone());
                if crate::on_meta(r, move |m| m.gc_remove_manifests(&rr, &dd)).await? > 0 {
                    for l in labels {
                        r.audit
                            .record_system("retention.delete", &l, "untagged manifest");
                        report.manifests.push(l);
                    }
                }
            }
        }
    }
    report.tags.sort();
    report.manifests.sort();
    report.immutable.sort();
    let removed_any = !(report.tags.is_empty() && report.manifests.is_empty());
    if !dry_run && removed_any {
        tracing::info!(
            tags = report.tags.len(),
            manifests = report.manifests.len(),
            "retention removed tags; the next garbage collection frees their bytes"
        );
        if let Some(hooks) = &r.webhooks {
            let removed: Vec<String> = report
                .tags
                .iter()
                .chain(&report.manifests)
                .cloned()
                .collect();
            let events = hooks.removal_events(&removed, "retention", now);
            if !events.is_empty() {
                crate::on_meta(r, move |m| m.outbox_add(&events)).await?;
                hooks.wake.notify_one();
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyConfig, RetentionRule};

    fn row(repo: &str, tag: &str, at: u64) -> TagRow {
        TagRow {
            repository: repo.into(),
            tag: tag.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            pushed_at: at,
        }
    }

    fn rule(tags: &str, latest: Option<usize>, days: Option<u64>, always: bool) -> RetentionRule {
        RetentionRule {
            repositories: "*".into(),
            tags: tags.into(),
            latest,
            days,
            always,
        }
    }

    #[test]
    fn rules_keep_the_union_of_what_each_keeps() {
        let policy = PolicyConfig {
            project: "team".into(),
            retention: vec![
                rule("re:main-[0-9a-f]+", Some(2), None, false),
                rule("pr-*", None, Some(7), false),
                rule("v*", None, None, true),
            ],
            ..PolicyConfig::default()
        }
        .load(false)
        .unwrap();
        let day = 86_400;
        let now = 100 * day;
        let rows = vec![
            row("team/app", "main-aaa", now - 1),
            row("team/app", "main-bbb", now - 2),
            row("team/app", "main-ccc", now - 3),
            row("team/app", "pr-1", now - 2 * day),
            row("team/app", "pr-2", now - 9 * day),
            row("team/app", "v1.0", 1),
            row("team/app", "latest", now),
            // Latest N counts per repository.
            row("team/other", "main-ddd", now - 50),
        ];
        let doomed: Vec<String> = doomed_tags(&policy, "team", &rows, now)
            .into_iter()
            .map(|t| format!("{}:{}", t.repository, t.tag))
            .collect();
        assert_eq!(
            doomed,
            vec!["team/app:latest", "team/app:main-ccc", "team/app:pr-2"]
        );
        // No rules: nothing goes.
        let none = PolicyConfig {
            project: "team".into(),
            ..PolicyConfig::default()
        }
        .load(false)
        .unwrap();
        assert!(doomed_tags(&none, "team", &rows, now).is_empty());
    }
}
