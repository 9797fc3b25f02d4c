//! The metadata conformance suite: each case is written once against the
//! contract's traits and run on both implementations — SQLite (a
//! throwaway file) and PostgreSQL (a real server started for the case,
//! [`berth_tests::postgres::PgServer`]). Concurrent cases race two
//! connections of one store, as two replicas would.

use super::prelude::*;
use super::{AuditEvent, AuditQuery, JobRun, Session};

/// Run `case` on SQLite and on PostgreSQL, as two tests.
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[test]
            fn sqlite() {
                super::$case(&crate::metadata::Sqlite::in_memory().unwrap());
            }

            #[test]
            fn postgres() {
                let pg = berth_tests::postgres::PgServer::start();
                super::$case(&crate::metadata::Postgres::open(&pg.database()).unwrap());
            }
        }
    };
}

fn event(at: u64, actor: &str, action: &str, target: &str, outcome: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at,
        actor: actor.into(),
        client: "127.0.0.1".into(),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        detail: String::new(),
    }
}

both!(audit_events_are_filtered_paged_and_pruned);
fn audit_events_are_filtered_paged_and_pruned(m: &impl AuditLog) {
    m.audit_append(&[
        event(100, "alice", "manifest.push", "team/app:v1", "ok"),
        event(200, "robot$team+ci", "tag.move", "team/app:v1", "ok"),
        event(300, "mallory", "login.failure", "mallory", "denied"),
        event(400, "root", "robot.create", "robot$team+ci", "ok"),
        event(500, "root", "robot.rotate", "robot$team_x+ci", "ok"),
        event(600, "bob", "manifest.push", "teamster/app:v1", "ok"),
    ])
    .unwrap();
    let ids =
        |q: AuditQuery| -> Vec<u64> { m.audit_list(&q).unwrap().iter().map(|e| e.at).collect() };
    assert_eq!(ids(AuditQuery::default()), [600, 500, 400, 300, 200, 100]);
    let team = AuditQuery {
        project: Some("team".into()),
        ..Default::default()
    };
    // `team_x` and `teamster` are other projects: `_` is no wildcard.
    assert_eq!(ids(team), [400, 200, 100]);
    let robots = AuditQuery {
        action: Some("robot.".into()),
        ..Default::default()
    };
    assert_eq!(ids(robots), [500, 400]);
    let exact = AuditQuery {
        action: Some("tag.move".into()),
        actor: Some("robot$team+ci".into()),
        ..Default::default()
    };
    assert_eq!(ids(exact), [200]);
    let denied = AuditQuery {
        outcome: Some("denied".into()),
        ..Default::default()
    };
    assert_eq!(ids(denied), [300]);
    let page = m
        .audit_list(&AuditQuery {
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    let next = AuditQuery {
        before_id: Some(page[1].id),
        limit: Some(2),
        since: Some(150),
        ..Default::default()
    };
    assert_eq!(ids(next), [400, 300]);
    assert_eq!(m.audit_prune(350).unwrap(), 3);
    assert_eq!(ids(AuditQuery::default()), [600, 500, 400]);
}

both!(the_last_run_of_each_kind_replaces_the_one_before);
fn the_last_run_of_each_kind_replaces_the_one_before(m: &impl JobRuns) {
    assert_eq!(m.last_run("gc", "registry", false).unwrap(), None);
    let mut run = JobRun {
        job: "gc".into(),
        scope: "registry".into(),
        dry_run: false,
        finished_at: 10,
        by: "schedule".into(),
        ok: true,
        report: "{}".into(),
    };
    m.record_run(&run).unwrap();
    run.finished_at = 20;
    run.by = "alice".into();
    m.record_run(&run).unwrap();
    let dry = JobRun {
        dry_run: true,
        finished_at: 30,
        ..run.clone()
    };
    m.record_run(&dry).unwrap();
    assert_eq!(m.last_run("gc", "registry", false).unwrap(), Some(run));
    assert_eq!(m.last_run("gc", "registry", true).unwrap(), Some(dry));
    assert_eq!(m.last_run("retention", "registry", false).unwrap(), None);
}

both!(login_failures_count_within_the_window_and_a_success_clears_them);
fn login_failures_count_within_the_window_and_a_success_clears_them(
    m: &(impl LoginFailures + Sync),
) {
    let (a, b) = ("192.0.2.7", "2001:db8::8");
    assert_eq!(m.login_failures(a, 1000, 900).unwrap(), 0);
    for n in 1..=3 {
        assert_eq!(m.login_failed(a, 1000 + n, 900).unwrap(), n as u32);
    }
    assert_eq!(m.login_failures(a, 1003, 900).unwrap(), 3);
    assert_eq!(m.login_failures(b, 1003, 900).unwrap(), 0, "per client");
    // Past the window the count is forgotten, and starts again.
    assert_eq!(m.login_failures(a, 1003 + 901, 900).unwrap(), 0);
    assert_eq!(m.login_failed(a, 1003 + 901, 900).unwrap(), 1);
    // Two replicas recording failures of one client at once: none lost.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10 {
                    m.login_failed(b, 5000, 900).unwrap();
                }
            });
        }
    });
    assert_eq!(m.login_failures(b, 5000, 900).unwrap(), 20);
    // A stale client's record goes when another fails later.
    assert_eq!(m.login_failed("192.0.2.9", 9000, 900).unwrap(), 1);
    assert_eq!(m.login_failures(b, 5000, 900).unwrap(), 0, "pruned");
    m.login_failed(b, 9001, 900).unwrap();
    m.login_succeeded(b).unwrap();
    assert_eq!(m.login_failures(b, 9001, 900).unwrap(), 0);
}

both!(sessions_expire_and_end);
fn sessions_expire_and_end(m: &impl UiSessions) {
    let s = |user: &str, expires_at| Session {
        user: user.into(),
        csrf: format!("csrf-{user}"),
        expires_at,
    };
    m.create_session("a", &s("alice", 100), 10).unwrap();
    m.create_session("b", &s("bob", 50), 10).unwrap();
    assert_eq!(m.session("a", 20).unwrap(), Some(s("alice", 100)));
    // Expired at 50: gone for every reader from then on.
    assert_eq!(m.session("b", 50).unwrap(), None);
    assert_eq!(m.session("b", 49).unwrap(), Some(s("bob", 50)));
    // Ending one session also sweeps expired ones; the others stay.
    m.create_session("c", &s("carol", 200), 10).unwrap();
    m.end_session("a", 60).unwrap();
    assert_eq!(m.session("a", 20).unwrap(), None);
    assert_eq!(m.session("b", 10).unwrap(), None, "swept once expired");
    assert_eq!(m.session("c", 61).unwrap(), Some(s("carol", 200)));
    // Another session under a taken key is refused, not merged.
    assert!(m.create_session("c", &s("mallory", 900), 70).is_err());
    assert_eq!(m.session("c", 71).unwrap(), Some(s("carol", 200)));
}

fn hook(target: &str, n: usize) -> super::OutboxEvent {
    super::OutboxEvent {
        target: target.into(),
        event: "PUSH_ARTIFACT".into(),
        payload: format!("{{\"n\":{n}}}"),
    }
}

both!(the_outbox_claims_each_delivery_once_and_records_attempts);
fn the_outbox_claims_each_delivery_once_and_records_attempts(m: &(impl Outbox + Sync)) {
    m.outbox_add(&[hook("bot", 1), hook("bot", 2), hook("ci", 3)])
        .unwrap();
    assert_eq!(m.outbox_backlog().unwrap(), 3);
    let first = m.outbox_claim(2, 300).unwrap();
    assert_eq!(
        first.iter().map(|d| d.payload.as_str()).collect::<Vec<_>>(),
        ["{\"n\":1}", "{\"n\":2}"]
    );
    // Claimed rows are leased: the next claim gets only the third.
    let second = m.outbox_claim(10, 300).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].target, "ci");
    assert!(m.outbox_claim(10, 300).unwrap().is_empty());
    // Outcomes: delivered, retry (due at once), given up.
    let t = crate::unix_now();
    m.outbox_attempted(first[0].id, "200", true, t, false)
        .unwrap();
    m.outbox_attempted(first[1].id, "connection refused", false, 0, false)
        .unwrap();
    m.outbox_attempted(second[0].id, "410", false, t, true)
        .unwrap();
    assert_eq!(m.outbox_backlog().unwrap(), 1);
    let retry = m.outbox_claim(10, 300).unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempts, 1);
    assert_eq!(retry[0].last_status, "connection refused");
    let recent = m.outbox_recent(None, 10).unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0].target, "ci", "newest first");
    assert!(recent[0].failed);
    assert!(recent[2].delivered_at.is_some());
    assert_eq!(m.outbox_recent(Some("bot"), 10).unwrap().len(), 2);
    // Racing claimers (replicas): every event is claimed exactly once.
    let events: Vec<_> = (0..200).map(|n| hook("race", n)).collect();
    m.outbox_add(&events).unwrap();
    let claimed: Vec<i64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let batch = m.outbox_claim(7, 300).unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.iter().map(|d| d.id));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut unique = claimed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        claimed.len(),
        200,
        "claimed twice: {}",
        claimed.len() - unique.len()
    );
    assert_eq!(unique.len(), 200);
}

fn robot(name: &str) -> super::StoredRobot {
    super::StoredRobot {
        name: name.into(),
        secret: "sha256:00".into(),
        permissions: "[]".into(),
        expires_at: Some(1000),
        disabled: false,
        description: "ci".into(),
        secret_set_at: 10,
        created_by: "root".into(),
        created_at: 10,
    }
}

both!(accounts_are_created_once_changed_and_deleted_with_what_they_own);
fn accounts_are_created_once_changed_and_deleted_with_what_they_own(m: &impl Accounts) {
    use super::{StoredProject, StoredUser};
    let project = |name: &str| StoredProject {
        name: name.into(),
        public: false,
        created_by: "root".into(),
    };
    assert!(m.create_project(&project("team_x")).unwrap());
    assert!(m.create_project(&project("teamax")).unwrap());
    assert!(!m.create_project(&project("team_x")).unwrap(), "exists");
    assert!(m.set_project_public("teamax", true).unwrap());
    assert!(!m.set_project_public("nope", true).unwrap());
    let user = |name: &str| StoredUser {
        name: name.into(),
        secret: "$argon2id$x".into(),
        admin: false,
    };
    assert!(m.create_user(&user("alice"), "root").unwrap());
    assert!(!m.create_user(&user("alice"), "root").unwrap());
    assert!(m.create_user(&user("bob"), "root").unwrap());
    assert!(m.set_user_secret("alice", "$argon2id$y").unwrap());
    assert_eq!(m.put_member("team_x", "alice", "developer").unwrap(), None);
    assert_eq!(
        m.put_member("team_x", "alice", "admin").unwrap().as_deref(),
        Some("developer")
    );
    m.put_member("teamax", "alice", "guest").unwrap();
    m.put_member("team_x", "bob", "guest").unwrap();
    for r in ["robot$team_x+ci", "robot$teamax+ci", "robot$global"] {
        assert!(m.create_robot(&robot(r)).unwrap());
    }
    assert!(!m.create_robot(&robot("robot$global")).unwrap());
    assert!(m.set_robot_disabled("robot$global", true).unwrap());
    assert!(
        m.rotate_robot("robot$teamax+ci", "sha256:11", None)
            .unwrap()
    );
    assert!(
        m.rotate_robot("robot$global", "sha256:22", Some(5000))
            .unwrap()
    );
    let rows = m.auth_rows().unwrap();
    assert_eq!(
        rows.projects
            .iter()
            .map(|p| (p.name.as_str(), p.public))
            .collect::<Vec<_>>(),
        [("team_x", false), ("teamax", true)]
    );
    assert_eq!(rows.users[0].secret, "$argon2id$y");
    assert_eq!(
        rows.members,
        [
            ("team_x".into(), "alice".into(), "admin".into()),
            ("team_x".into(), "bob".into(), "guest".into()),
            ("teamax".into(), "alice".into(), "guest".into()),
        ]
    );
    let by_name = |n: &str| rows.robots.iter().find(|r| r.name == n).unwrap().clone();
    assert!(by_name("robot$global").disabled);
    assert_eq!(by_name("robot$global").expires_at, Some(5000));
    assert_eq!(by_name("robot$teamax+ci").expires_at, Some(1000), "kept");
    assert_eq!(by_name("robot$teamax+ci").secret, "sha256:11");
    assert!(by_name("robot$teamax+ci").secret_set_at > 10);
    // Deleting team_x takes its members and robots, and nothing of
    // teamax (`_` is no wildcard).
    assert!(m.delete_project("team_x").unwrap());
    assert!(m.delete_user("alice").unwrap());
    assert!(
        !m.delete_member("teamax", "alice").unwrap(),
        "went with alice"
    );
    let rows = m.auth_rows().unwrap();
    assert_eq!(rows.projects.len(), 1);
    assert!(rows.members.is_empty(), "{:?}", rows.members);
    assert_eq!(
        rows.robots
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["robot$global", "robot$teamax+ci"]
    );
    // Declared names shadow stored ones: those rows go.
    let dropped = m
        .drop_shadowed(
            &["teamax".into()],
            &["bob".into(), "carol".into()],
            &["robot$global".into()],
        )
        .unwrap();
    assert_eq!(dropped, ["teamax", "bob", "robot$global"]);
    assert!(m.delete_robot("robot$teamax+ci").unwrap());
    assert_eq!(m.auth_rows().unwrap(), super::AuthRows::default());
}

fn manifest<'a>(
    d: &'a berth_oci::Digest,
    subject: Option<&'a berth_oci::Digest>,
    content: &'a [u8],
) -> super::NewManifest<'a> {
    super::NewManifest {
        digest: d,
        media_type: berth_oci::media_type::OCI_MANIFEST,
        artifact_type: Some("application/x.test"),
        subject,
        annotations: None,
        content,
    }
}

/// What a manifest with `refs` in `repo` misses, if anything (a manifest
/// that misses nothing is stored, under a digest of its own).
fn missing(m: &impl Content, repo: &str, refs: &super::ManifestRefs<'_>) -> Option<String> {
    let probe = berth_oci::Digest::sha256(format!("probe {}", rand::random::<u64>()).as_bytes());
    match m.put_manifest_with_events(
        repo,
        &manifest(&probe, None, b"{}"),
        refs,
        &[],
        &[],
        &|_| None,
    ) {
        Ok(_) => None,
        Err(super::MetadataError::Missing { digest }) => Some(digest),
        Err(e) => panic!("{e}"),
    }
}

both!(blobs_are_scoped_to_repositories);
fn blobs_are_scoped_to_repositories(m: &impl Content) {
    use berth_oci::Digest;
    let d = Digest::sha256(b"x");
    assert_eq!(m.repo_blob("a", &d).unwrap(), None);
    m.link_blob("a", &d, 1, None).unwrap();
    assert_eq!(m.repo_blob("a", &d).unwrap(), Some(1));
    assert_eq!(m.repo_blob("b", &d).unwrap(), None);
    assert_eq!(m.blob_size(&d).unwrap(), Some(1));
    assert_eq!(m.linked_blob_size(&d).unwrap(), Some(1));
    let blob = |size| super::ManifestRefs {
        blobs: vec![(&d, size)],
        children: vec![],
    };
    assert_eq!(missing(m, "b", &blob(1)), Some(d.to_string()));
    assert_eq!(missing(m, "a", &blob(1)), None);
    assert_eq!(
        missing(m, "a", &blob(2)),
        Some(d.to_string()),
        "size must match"
    );
    // Mounting links a blob the registry holds into another repository.
    assert_eq!(m.mount_blob("b", &d).unwrap(), Some(1));
    assert_eq!(m.mount_blob("b", &Digest::sha256(b"none")).unwrap(), None);
    assert!(m.unlink_blob("a", &d).unwrap());
    assert!(!m.unlink_blob("a", &d).unwrap());
    assert_eq!(m.repo_blob("a", &d).unwrap(), None);
    assert!(m.unlink_blob("b", &d).unwrap());
    assert_eq!(
        m.linked_blob_size(&d).unwrap(),
        None,
        "no repository links it"
    );
    assert_eq!(m.blob_size(&d).unwrap(), Some(1), "until collected");
}

both!(uploads_live_until_their_blob_is_linked_or_they_go_stale);
fn uploads_live_until_their_blob_is_linked_or_they_go_stale(m: &impl Content) {
    use crate::storage::UploadId;
    let id = UploadId::new();
    let other = UploadId::new();
    m.create_upload(id, "repo").unwrap();
    m.create_upload(other, "repo").unwrap();
    assert_eq!(m.upload_count().unwrap(), 2);
    m.set_upload_size(id, 42).unwrap();
    assert_eq!(
        m.upload(id).unwrap(),
        Some(super::UploadRecord {
            repository: "repo".into(),
            size: 42
        })
    );
    let now = crate::unix_now();
    assert!(m.stale_uploads(now - 3600).unwrap().is_empty());
    let mut stale = m.stale_uploads(now + 1).unwrap();
    stale.sort_by_key(ToString::to_string);
    let mut both = vec![id, other];
    both.sort_by_key(ToString::to_string);
    assert_eq!(stale, both);
    m.link_blob("repo", &berth_oci::Digest::sha256(b"y"), 42, Some(id))
        .unwrap();
    assert_eq!(m.upload(id).unwrap(), None);
    m.delete_upload(other).unwrap();
    assert_eq!(m.upload_count().unwrap(), 0);
}

both!(manifests_tags_and_referrers);
fn manifests_tags_and_referrers(m: &impl Content) {
    use super::{ManifestKey, ManifestRefs};
    use berth_oci::Digest;
    let d1 = Digest::sha256(b"m1");
    let d2 = Digest::sha256(b"m2");
    m.put_manifest("r", &manifest(&d1, None, b"m1"), &["v1".into()])
        .unwrap();
    m.put_manifest("r", &manifest(&d2, Some(&d1), b"m2"), &["v2".into()])
        .unwrap();
    let got = m
        .manifest("r", ManifestKey::Tag("v1"), true)
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.digest.clone(), got.content.as_slice()),
        (d1.clone(), &b"m1"[..])
    );
    assert_eq!(got.media_type, berth_oci::media_type::OCI_MANIFEST);
    let head = m
        .manifest("r", ManifestKey::Digest(&d2), false)
        .unwrap()
        .unwrap();
    assert!(head.content.is_empty());
    assert_eq!(head.size, 2);
    assert!(
        m.manifest("other", ManifestKey::Digest(&d2), false)
            .unwrap()
            .is_none()
    );
    // Retagging moves the tag, and says from where.
    let moved = m
        .put_manifest("r", &manifest(&d2, Some(&d1), b"m2"), &["v1".into()])
        .unwrap();
    assert_eq!(moved, [("v1".to_owned(), d1.clone())]);
    assert_eq!(
        m.manifest("r", ManifestKey::Tag("v1"), false)
            .unwrap()
            .unwrap()
            .digest,
        d2
    );
    assert_eq!(m.tags("r", None, 10).unwrap().unwrap(), ["v1", "v2"]);
    assert_eq!(m.tags("r", Some("v1"), 10).unwrap().unwrap(), ["v2"]);
    assert_eq!(m.tags("r", None, 1).unwrap().unwrap(), ["v1"]);
    assert_eq!(m.tags("nope", None, 1).unwrap(), None);
    assert_eq!(m.catalog(None, 10).unwrap(), ["r"]);
    let refs = m.referrers("r", &d1, None).unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, d2);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x.test"));
    assert!(
        m.referrers("r", &d1, Some("application/other"))
            .unwrap()
            .is_empty()
    );
    let children = ManifestRefs {
        blobs: vec![],
        children: vec![&d1, &d2],
    };
    assert_eq!(missing(m, "r", &children), None);
    assert_eq!(missing(m, "other", &children), Some(d1.to_string()));
    assert!(m.delete_tag("r", "v2").unwrap());
    assert!(!m.delete_tag("r", "v2").unwrap());
    assert!(
        m.manifest("r", ManifestKey::Digest(&d2), false)
            .unwrap()
            .is_some()
    );
    assert!(m.delete_manifest("r", &d2).unwrap());
    assert!(
        m.manifest("r", ManifestKey::Tag("v1"), false)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        m.tags("r", None, 10).unwrap().unwrap(),
        Vec::<String>::new()
    );
    // Tags and the catalog sort by bytes: `Z` before `a`, `-` before `0`.
    for t in ["a", "Z", "a-1", "a0"] {
        m.put_manifest("r", &manifest(&d1, None, b"m1"), &[t.into()])
            .unwrap();
    }
    assert_eq!(
        m.tags("r", None, 10).unwrap().unwrap(),
        ["Z", "a", "a-1", "a0"]
    );
    m.put_manifest("R/x", &manifest(&d1, None, b"m1"), &[])
        .unwrap();
    m.put_manifest("r-x", &manifest(&d1, None, b"m1"), &[])
        .unwrap();
    assert_eq!(m.catalog(None, 10).unwrap(), ["R/x", "r", "r-x"]);
}

both!(immutable_tags_refuse_moves_and_deletes_and_change_nothing);
fn immutable_tags_refuse_moves_and_deletes_and_change_nothing(m: &impl Content) {
    use super::{ManifestKey, ManifestRefs, MetadataError, OutboxEvent};
    use berth_oci::Digest;
    let (d1, d2) = (Digest::sha256(b"i1"), Digest::sha256(b"i2"));
    let rule = |tag: &str| tag.starts_with("release-").then(|| "release-*".to_owned());
    let none = ManifestRefs::default();
    m.put_manifest_with_events(
        "r",
        &manifest(&d1, None, b"i1"),
        &none,
        &["release-1".into()],
        &[],
        &rule,
    )
    .unwrap();
    let event = OutboxEvent {
        target: "bot".into(),
        event: "PUSH_ARTIFACT".into(),
        payload: "{}".into(),
    };
    let err = m
        .put_manifest_with_events(
            "r",
            &manifest(&d2, None, b"i2"),
            &none,
            &["release-1".into()],
            &[event],
            &rule,
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::Immutable { .. }), "{err}");
    // Rolled back: neither the manifest nor the tag move was stored.
    assert!(
        m.manifest("r", ManifestKey::Digest(&d2), false)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        m.manifest("r", ManifestKey::Tag("release-1"), false)
            .unwrap()
            .unwrap()
            .digest,
        d1
    );
    let err = m
        .delete_tag_checked("r", "release-1", &rule, &|_, _| Vec::new())
        .unwrap_err();
    assert!(matches!(err, MetadataError::Immutable { .. }));
    let err = m
        .delete_manifest_checked("r", &d1, &rule, &|_, _| Vec::new())
        .unwrap_err();
    assert!(matches!(err, MetadataError::Immutable { .. }));
    assert_eq!(m.tags("r", None, 10).unwrap().unwrap(), ["release-1"]);
}

both!(racing_pushes_to_one_tag_end_consistent);
fn racing_pushes_to_one_tag_end_consistent(m: &(impl Content + Sync)) {
    use super::{ManifestKey, ManifestRefs, MetadataError};
    use berth_oci::Digest;
    // Eight writers push their own manifest as `latest` 10 times each:
    // every push succeeds, and the moves they report chain up — each
    // digest a push displaced was the tag's value just before it.
    let digests: Vec<Digest> = (0..8)
        .map(|i| Digest::sha256(format!("w{i}").as_bytes()))
        .collect();
    let moves: Vec<(String, Digest)> = std::thread::scope(|s| {
        let workers: Vec<_> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                s.spawn(move || {
                    let content = format!("w{i}");
                    let mut moved = Vec::new();
                    for _ in 0..10 {
                        moved.extend(
                            m.put_manifest(
                                "r",
                                &manifest(d, None, content.as_bytes()),
                                &["latest".into()],
                            )
                            .unwrap(),
                        );
                    }
                    moved
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let last = m
        .manifest("r", ManifestKey::Tag("latest"), false)
        .unwrap()
        .unwrap()
        .digest;
    assert!(digests.contains(&last));
    assert!(
        moves
            .iter()
            .all(|(t, d)| t == "latest" && digests.contains(d))
    );
    assert_eq!(m.tags("r", None, 10).unwrap().unwrap(), ["latest"]);
    // An immutable tag pushed by racing writers: exactly one wins, the
    // others are refused, and the tag holds the winner's digest.
    let rule = |t: &str| (t == "v1").then(|| "v1".to_owned());
    let outcomes: Vec<Result<(), ()>> = std::thread::scope(|s| {
        let workers: Vec<_> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                s.spawn(move || {
                    let content = format!("w{i}");
                    match m.put_manifest_with_events(
                        "r",
                        &manifest(d, None, content.as_bytes()),
                        &ManifestRefs::default(),
                        &["v1".into()],
                        &[],
                        &rule,
                    ) {
                        Ok(_) => Ok(()),
                        Err(MetadataError::Immutable { .. }) => Err(()),
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let v1 = m
        .manifest("r", ManifestKey::Tag("v1"), false)
        .unwrap()
        .unwrap()
        .digest;
    for (i, o) in outcomes.iter().enumerate() {
        if o.is_ok() {
            assert_eq!(digests[i], v1, "only the tag's own digest may succeed");
        }
    }
}

#[test]
fn one_replica_runs_a_job_and_the_gate_spans_replicas() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let pg = berth_tests::postgres::PgServer::start();
    let url = pg.database();
    // Two stores on one database: two replicas.
    let a = crate::metadata::Postgres::open(&url).unwrap();
    let b = crate::metadata::Postgres::open(&url).unwrap();
    let held = a.try_job("gc").unwrap().expect("free");
    assert!(b.try_job("gc").unwrap().is_none(), "a runs it");
    assert!(
        b.try_job("retention").unwrap().is_some(),
        "another job is free"
    );
    drop(held);
    assert!(b.try_job("gc").unwrap().is_some(), "a let go");
    // Publishing (shared) on both at once; deleting (exclusive) waits for
    // both to finish.
    let p1 = a.gate_stripe(7, false).unwrap();
    let p2 = b.gate_stripe(7, false).unwrap();
    let _other = b.gate_stripe(8, true).unwrap();
    let deleted = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _w = a.gate_stripe(7, true).unwrap();
            deleted.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!deleted.load(Ordering::SeqCst), "waits for the publishers");
        drop(p1);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!deleted.load(Ordering::SeqCst), "one is still publishing");
        drop(p2);
    });
    assert!(deleted.load(Ordering::SeqCst));
    // SQLite serves one process: its guards hold nothing.
    let s = crate::metadata::Sqlite::in_memory().unwrap();
    let _x = s.gate_stripe(7, true).unwrap();
    assert!(s.gate_stripe(7, true).is_ok());
    assert!(s.try_job("gc").unwrap().is_some());
}

#[test]
fn an_upload_is_written_on_one_replica_at_a_time() {
    use crate::storage::UploadId;
    let mut pg = berth_tests::postgres::PgServer::start();
    let url = pg.database();
    let a = crate::metadata::Postgres::open(&url).unwrap();
    let b = crate::metadata::Postgres::open(&url).unwrap();
    let (x, y) = (UploadId::new(), UploadId::new());
    let held = a.claim_upload(x).unwrap().expect("free");
    assert!(b.claim_upload(x).unwrap().is_none(), "a writes it");
    let other = b.claim_upload(y).unwrap().expect("another session is free");
    drop(held);
    let on_b = b.claim_upload(x).unwrap().expect("a let go");
    // b dies holding both: its connections close, and PostgreSQL lets go
    // of its claims without b's help.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        if let Some(g) = a.claim_upload(x).unwrap() {
            break g;
        }
        assert!(std::time::Instant::now() < deadline, "b's claim outlived b");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop((on_b, other, again));
    // A restarted database: the claims connection is opened again.
    pg.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.claim_upload(y).map(|g| g.is_none()).unwrap_or(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "no claims after a restart"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SQLite serves one process: the registry's own claim suffices.
    let s = crate::metadata::Sqlite::in_memory().unwrap();
    let _x = s.claim_upload(x).unwrap().expect("always");
    assert!(s.claim_upload(x).unwrap().is_some());
}

#[test]
fn sqlite_metadata_moves_to_postgres_whole() {
    use super::{ManifestKey, ManifestRefs, StoredProject, StoredUser};
    use berth_oci::Digest;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.sqlite");
    {
        let s = super::Sqlite::open(&file).unwrap();
        let blob = Digest::sha256(b"layer");
        s.link_blob("team/app", &blob, 5, None).unwrap();
        let d = Digest::sha256(b"m");
        let refs = ManifestRefs {
            blobs: vec![(&blob, 5)],
            children: vec![],
        };
        s.put_manifest_with_events(
            "team/app",
            &manifest(&d, None, b"m"),
            &refs,
            &["v1".into()],
            &[hook("bot", 1)],
            &|_| None,
        )
        .unwrap();
        s.create_project(&StoredProject {
            name: "team".into(),
            public: true,
            created_by: "root".into(),
        })
        .unwrap();
        s.create_user(
            &StoredUser {
                name: "alice".into(),
                secret: "$argon2id$x".into(),
                admin: false,
            },
            "root",
        )
        .unwrap();
        s.put_member("team", "alice", "developer").unwrap();
        s.create_robot(&robot("robot$team+ci")).unwrap();
        s.audit_append(&[event(100, "alice", "manifest.push", "team/app:v1", "ok")])
            .unwrap();
        s.record_run(&JobRun {
            job: "gc".into(),
            scope: "registry".into(),
            dry_run: true,
            finished_at: 5,
            by: "root".into(),
            ok: true,
            report: "{}".into(),
        })
        .unwrap();
        s.create_session(
            "h",
            &Session {
                user: "alice".into(),
                csrf: "c".into(),
                expires_at: u64::MAX / 4,
            },
            1,
        )
        .unwrap();
    }
    let pg = berth_tests::postgres::PgServer::start();
    let target = crate::metadata::Postgres::open(&pg.database()).unwrap();
    let copied = super::migrate::sqlite_to_postgres(&file, &target).unwrap();
    let count = |t: &str| copied.iter().find(|(n, _)| *n == t).map(|(_, n)| *n);
    assert_eq!(count("tags"), Some(1));
    assert_eq!(count("manifest_refs"), Some(1));
    assert_eq!(count("auth_members"), Some(1));
    // Everything reads back through the PostgreSQL store.
    let got = target
        .manifest("team/app", ManifestKey::Tag("v1"), true)
        .unwrap()
        .unwrap();
    assert_eq!(got.content, b"m");
    assert_eq!(
        target
            .repo_blob("team/app", &Digest::sha256(b"layer"))
            .unwrap(),
        Some(5)
    );
    let rows = target.auth_rows().unwrap();
    assert_eq!(rows.projects.len(), 1);
    assert!(rows.projects[0].public);
    assert_eq!(
        rows.members,
        [("team".into(), "alice".into(), "developer".into())]
    );
    assert_eq!(rows.robots[0].expires_at, Some(1000));
    assert_eq!(
        target.audit_list(&AuditQuery::default()).unwrap()[0].target,
        "team/app:v1"
    );
    assert_eq!(target.outbox_backlog().unwrap(), 1);
    assert!(target.last_run("gc", "registry", true).unwrap().is_some());
    assert_eq!(target.session("h", 2).unwrap().unwrap().user, "alice");
    // New rows continue after the copied ids.
    target
        .put_manifest(
            "other/app",
            &manifest(&Digest::sha256(b"n"), None, b"n"),
            &["x".into()],
        )
        .unwrap();
    target
        .audit_append(&[event(200, "bob", "x", "y", "ok")])
        .unwrap();
    assert_eq!(target.catalog(None, 10).unwrap(), ["other/app", "team/app"]);
    // Never into a database that holds a registry.
    let again = super::migrate::sqlite_to_postgres(&file, &target).unwrap_err();
    assert!(again.to_string().contains("already holds"), "{again}");
}

#[test]
fn locks_held_never_starve_the_work_under_them() {
    let pg = berth_tests::postgres::PgServer::start();
    // One connection for work; many uploads under the gate at once.
    let m =
        std::sync::Arc::new(crate::metadata::Postgres::open_with(&pg.database(), None, 1).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = m.clone();
    // A plain thread: if it hangs, the test fails instead of waiting.
    std::thread::spawn(move || {
        let m = worker;
        let guards: Vec<_> = (0..8)
            .map(|i| m.gate_stripe(i % 3, false).unwrap())
            .collect();
        // Each upload links its blob while holding its stripe.
        let d = berth_oci::Digest::sha256(b"under the gate");
        m.link_blob("team/app", &d, 14, None).unwrap();
        let size = m.blob_size(&d).unwrap();
        drop(guards);
        let _ = tx.send(size);
    });
    let size = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("work under held locks finishes");
    assert_eq!(size, Some(14));
}
