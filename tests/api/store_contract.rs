//! The store contract: every public store function on SQLite and on
//! PostgreSQL, so a query only one driver accepts fails here (the SQL is one
//! text compiled for both; sqlx checks nothing at compile time).

use std::time::Duration;

use wipehook::config::StoreSettings;
use wipehook::domain::{
    AuditAction, Claims, DeviceGuid, DeviceOutcome, DirectoryUser, IncidentRef, Job, Lane,
    MobileDevice, Mode, NewTarget, RunId, RunStatus, Severity, TargetState, TaskKind, TenantId,
    TriggerKind, TriggerScope, Upn, Verification, WipeState,
};
use wipehook::store::{
    AuditEntry, BudgetLimits, DeviceRecord, NewRun, Reservation, Store, Unresolved, WipeClaim,
    now_ms,
};

use crate::both_stores;
use crate::helpers::*;

const TENANT: &str = "6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e";
const INC: &str = "/subscriptions/0b9f8e7d-6c5b-4a39-8271-605f4e3d2c1b/resourceGroups/soc-rg/providers/Microsoft.OperationalInsights/workspaces/soc-ws/providers/Microsoft.SecurityInsights/Incidents/inc-contract";

/// A fresh store of this kind, and what keeps it alive (the temporary
/// folder or the PostgreSQL database).
struct Fresh {
    store: Store,
    _dir: Option<tempdir::Dir>,
    _pg: Option<PgDatabase>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn fresh(kind: StoreKind) -> Option<Fresh> {
    let (url, dir, pg) = match kind {
        StoreKind::Sqlite => {
            let dir = std::env::temp_dir().join(format!("wh-store-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("s.db").display());
            (url, Some(tempdir::Dir(dir)), None)
        }
        StoreKind::Postgres => {
            let db = PgDatabase::create().await?;
            (db.url.clone(), None, Some(db))
        }
    };
    let settings = StoreSettings {
        url: url.into(),
        ..Default::default()
    };
    Some(Fresh {
        store: Store::connect(&settings).await.expect("store connects"),
        _dir: dir,
        _pg: pg,
    })
}

fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

fn upn(s: &str) -> Upn {
    Upn::parse(s).unwrap()
}

/// A run of one pending user with its contain task.
fn one_user_run(key: &str, user: &str) -> NewRun {
    new_run(
        key,
        &[(user, TargetState::Pending)],
        vec![Job::Contain { upn: upn(user) }],
    )
}

fn new_run(key: &str, targets: &[(&str, TargetState)], jobs: Vec<Job>) -> NewRun {
    NewRun {
        id: RunId::new(),
        delivery_key: key.into(),
        tenant: tenant(),
        incident: Some(IncidentRef::parse(INC).unwrap()),
        incident_number: Some(7),
        incident_title: Some("contract".into()),
        severity: Some(Severity::High),
        trigger: TriggerKind::Incident,
        caller: "oid test".into(),
        caller_oid: "test-oid".into(),
        first_activity_at: None,
        attack_disruption: false,
        mode: Mode::Enforce,
        force: false,
        status: RunStatus::Queued,
        reason: None,
        comment_id: Some("c-1".into()),
        targets: targets
            .iter()
            .map(|(u, s)| NewTarget {
                upn: upn(u),
                source: "test".into(),
                state: *s,
                reason: None,
                claims: Claims::default(),
            })
            .collect(),
        unresolved: vec![Unresolved {
            entity: "Account name='x'".into(),
            reason: "no suffix".into(),
        }],
        jobs,
        expire_at: None,
        trigger_scope: TriggerScope {
            addresses: targets.iter().map(|(u, _)| upn(u)).collect(),
            object_ids: vec![],
            alert_ids: vec!["alert-1".into()],
            notes: vec![],
        },
        provider_incident_id: Some("4711".into()),
        comments_baseline: Some(3),
    }
}

fn device(run: &RunId, target: &str, guid: &str) -> DeviceRecord {
    let d = MobileDevice {
        guid: DeviceGuid::parse(guid).unwrap(),
        identity: "x\\ExchangeActiveSyncDevices\\y".into(),
        device_id: "D1".into(),
        device_type: "iPhone".into(),
        model: "iPhone15C2".into(),
        os: "iOS 17".into(),
        user_agent: String::new(),
        client_type: wipehook::domain::ClientType::Eas,
        client_version: "16.1".into(),
        eas_version: wipehook::domain::EasVersion::parse("16.1"),
        first_sync_ms: None,
        last_sync_ms: None,
        class: Some((
            wipehook::domain::DeviceClass::Normal,
            "an active device".into(),
        )),
    };
    DeviceRecord::decided(
        run,
        &upn(target),
        &d,
        DeviceOutcome::Requested,
        None,
        vec!["a note".into(), "another".into()],
    )
}

async fn runs_targets_and_devices(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    s.ping().await.unwrap();
    assert_eq!(
        s.schema_version().await.unwrap(),
        wipehook::store::LATEST_SCHEMA
    );

    // accept: a new run, then the same key again (same run, not created).
    let first = new_run(
        "k1",
        &[("a@contoso.com", TargetState::Pending)],
        vec![
            Job::Contain {
                upn: upn("a@contoso.com"),
            },
            Job::Entities,
        ],
    );
    let acc = s.accept(&first).await.unwrap();
    assert!(acc.created);
    assert_eq!(acc.status, RunStatus::Queued);
    let dup = s.accept(&new_run("k1", &[], vec![])).await.unwrap();
    assert!(!dup.created);
    assert_eq!(dup.run_id, acc.run_id);
    // Calls arriving together share a commit and each gets its own run.
    let many: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            async move { s.accept(&new_run(&format!("m{i}"), &[], vec![])).await }
        })
        .collect();
    let accepted = futures_util::future::join_all(many).await;
    assert!(accepted.iter().all(|a| a.as_ref().unwrap().created));

    let id = &acc.run_id;
    let run = s.run(id).await.unwrap().expect("run");
    assert_eq!(run.tenant, tenant());
    assert_eq!(run.severity, Some(Severity::High));
    assert_eq!(run.trigger, TriggerKind::Incident);
    assert_eq!(run.mode, Mode::Enforce);
    assert_eq!(run.incident.as_ref().unwrap().name, "inc-contract");
    assert_eq!(run.trigger_scope.alert_ids, vec!["alert-1"]);
    assert!(run.trigger_scope.names(&upn("a@contoso.com"), None));
    assert!(s.run(&RunId::new()).await.unwrap().is_none());
    assert_eq!(s.list_runs(5).await.unwrap().len(), 5);
    let of_incident = s
        .runs_for_incident(&IncidentRef::parse(&INC.to_ascii_lowercase()).unwrap())
        .await
        .unwrap();
    assert_eq!(of_incident.len(), 21, "matched case-insensitively");
    s.mark_running(id).await.unwrap();
    assert_eq!(s.run(id).await.unwrap().unwrap().status, RunStatus::Running);

    // targets
    let a = upn("a@contoso.com");
    let t = s.target(id, &a).await.unwrap().unwrap();
    assert_eq!(t.state, TargetState::Pending);
    assert!(t.person.is_none());
    let claims = Claims {
        object_ids: vec!["b0000000-0000-4000-8000-00000000000b".into()],
        addresses: vec![upn("c.alias@contoso.com")],
        notes: vec!["n".into()],
    };
    let added = s
        .add_targets(
            id,
            &tenant(),
            &[
                NewTarget {
                    upn: upn("b@contoso.com"),
                    source: "later".into(),
                    state: TargetState::Pending,
                    reason: None,
                    claims: claims.clone(),
                },
                NewTarget {
                    upn: upn("c@contoso.com"),
                    source: "later".into(),
                    state: TargetState::Pending,
                    reason: None,
                    claims: Claims::default(),
                },
                NewTarget {
                    upn: a.clone(),
                    source: "dup".into(),
                    state: TargetState::Pending,
                    reason: None,
                    claims: Claims::default(),
                },
            ],
            &[Unresolved {
                entity: "later entity".into(),
                reason: "r".into(),
            }],
            Some(2),
        )
        .await
        .unwrap();
    assert_eq!(added, vec![upn("b@contoso.com"), upn("c@contoso.com")]);
    let targets = s.targets(id).await.unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[1].claims, claims, "claims round-trip");
    assert_eq!(
        targets[2].state,
        TargetState::Held,
        "beyond the blast radius"
    );
    assert_eq!(s.unresolved(id).await.unwrap().len(), 2);
    s.add_unresolved(
        id,
        &Unresolved {
            entity: "later entity".into(),
            reason: "again".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.unresolved(id).await.unwrap().len(), 2, "one per entity");
    s.set_target(id, &a, TargetState::Refused, Some("why"))
        .await
        .unwrap();
    let person = DirectoryUser {
        upn: upn("alex.wilber@contoso.com"),
        display_name: "Alex Wilber".into(),
        object_id: "a1e00000-0000-4000-8000-00000000a11e".into(),
        mail: None,
        addresses: vec![],
    };
    s.set_target_person(id, &a, &person).await.unwrap();
    let t = s.target(id, &a).await.unwrap().unwrap();
    assert_eq!(
        (t.state, t.reason.as_deref()),
        (TargetState::Refused, Some("why"))
    );
    assert_eq!(t.mailbox(), &person.upn);
    assert_eq!(t.person.unwrap().display_name, "Alex Wilber");

    // devices
    let g1 = "6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a";
    let g2 = "6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5b";
    s.put_device(&device(id, "a@contoso.com", g1))
        .await
        .unwrap();
    s.put_device(&device(id, "b@contoso.com", g2))
        .await
        .unwrap();
    let mut d = device(id, "a@contoso.com", g1);
    d.outcome = DeviceOutcome::Skipped;
    s.put_device(&d).await.unwrap(); // replaces
    assert_eq!(s.devices(id).await.unwrap().len(), 2);
    let mine = s.devices_of(id, &a).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].outcome, DeviceOutcome::Skipped);
    assert_eq!(mine[0].notes, vec!["a note", "another"]);
    let guid1 = DeviceGuid::parse(g1).unwrap();
    s.set_verify(id, &guid1, Verification::Unconfirmed)
        .await
        .unwrap();
    let d1 = s.device(id, &guid1).await.unwrap().unwrap();
    assert_eq!(d1.verification, Some(Verification::Unconfirmed));
    assert!(s.undoable(id).await.unwrap(), "b's wipe is unacknowledged");
}
both_stores!(runs_targets_and_devices_, runs_targets_and_devices);

/// Intake's group commit: calls accepted together are one batch (one
/// multi-row statement per table); a key repeated in the batch or already
/// stored returns its one run.
async fn a_batch_with_repeated_keys(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let runs: Vec<NewRun> = (0..40)
        .map(|i| one_user_run(&format!("batch-{}", i % 20), &format!("u{i}@contoso.com")))
        .collect();
    let accepted = futures_util::future::join_all(runs.iter().map(|r| s.accept(r))).await;
    let accepted: Vec<_> = accepted.into_iter().map(Result::unwrap).collect();
    assert_eq!(accepted.iter().filter(|a| a.created).count(), 20);
    for i in 0..20 {
        assert_eq!(accepted[i].run_id, accepted[i + 20].run_id, "key batch-{i}");
        assert!(accepted[i].created != accepted[i + 20].created);
    }
    for a in accepted.iter().filter(|a| a.created) {
        let targets = s.targets(&a.run_id).await.unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(s.unresolved(&a.run_id).await.unwrap().len(), 1);
    }
    // Each created run has its one contain task, nothing more.
    let lease = Duration::from_secs(30);
    let mut claimed = 0;
    while let Some(t) = s.claim("me", lease).await.unwrap() {
        assert_eq!(t.job.kind(), TaskKind::Contain);
        claimed += 1;
    }
    assert_eq!(claimed, 20);
    // Accepted again later: the stored run, not a new one.
    let again = s.accept(&runs[3]).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.run_id, accepted[3].run_id);
}
both_stores!(a_batch_with_repeated_keys_, a_batch_with_repeated_keys);

/// The worker's lanes: a record is claimed beside contain tasks, never
/// behind them; a tenant holding its share is skipped; a finished contain
/// task hands its run's record to its worker in the same commit.
async fn lanes_shares_and_the_handed_record(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let lease = Duration::from_secs(30);
    let acc = s
        .accept(&new_run(
            "lanes",
            &[
                ("a@contoso.com", TargetState::Pending),
                ("b@contoso.com", TargetState::Pending),
            ],
            vec![
                Job::Contain {
                    upn: upn("a@contoso.com"),
                },
                Job::Contain {
                    upn: upn("b@contoso.com"),
                },
            ],
        ))
        .await
        .unwrap();
    let id = &acc.run_id;
    s.enqueue(id, &tenant(), &Job::Entities, now_ms())
        .await
        .unwrap();
    // The ARM/Graph lane takes the entity read though contain tasks came first.
    let e = s
        .claim_in("me", lease, Lane::ArmGraph, &[])
        .await
        .unwrap()
        .expect("entities");
    assert_eq!(e.job, Job::Entities);
    assert!(
        s.claim_in("me", lease, Lane::ArmGraph, &[])
            .await
            .unwrap()
            .is_none()
    );
    // A tenant at its share: its Exchange work waits.
    assert!(
        s.claim_in("me", lease, Lane::Exchange, &[tenant()])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.next_due_in(Lane::Exchange, &[tenant()], now_ms())
            .await
            .unwrap()
            .is_none()
    );
    let a = s
        .claim_in("me", lease, Lane::Exchange, &[])
        .await
        .unwrap()
        .expect("contain a");
    let b = s
        .claim_in("me", lease, Lane::Exchange, &[])
        .await
        .unwrap()
        .expect("contain b");
    assert_eq!(s.complete(&e, lease).await.unwrap(), None);
    // a's end queues no record (b is pending); b's end hands it over, leased.
    let (_, none) = s.complete_handing_over(&a, lease, lease).await.unwrap();
    assert!(none.is_none());
    let (status, handed) = s.complete_handing_over(&b, lease, lease).await.unwrap();
    assert_eq!(status, Some(RunStatus::Completed));
    let handed = handed.expect("the record handed on");
    assert_eq!(handed.job, Job::Comment);
    assert_eq!(handed.owner, "me");
    assert_eq!(handed.attempts, 1);
    assert!(
        s.claim("other", lease).await.unwrap().is_none(),
        "leased to me"
    );
    assert_eq!(s.complete(&handed, lease).await.unwrap(), None);
}
both_stores!(
    lanes_shares_and_the_handed_record_,
    lanes_shares_and_the_handed_record
);

/// A lane's next due time is its own earliest task still to come: another
/// lane's work, a task due now (its claim would have found it) and a tenant
/// at its share are not in it.
async fn a_lanes_next_due_is_its_own(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let lease = Duration::from_secs(30);
    let before = now_ms() - 1;
    let acc = s
        .accept(&one_user_run("due", "a@contoso.com"))
        .await
        .unwrap();
    let id = &acc.run_id;
    let soon = now_ms() + 60_000;
    let later = now_ms() + 3_600_000;
    s.enqueue(id, &tenant(), &Job::Comment, soon).await.unwrap();
    s.enqueue(
        id,
        &tenant(),
        &Job::Verify {
            upn: upn("a@contoso.com"),
        },
        later,
    )
    .await
    .unwrap();
    // The contain task is due now; the lane's next is the verify.
    assert_eq!(
        s.next_due_in(Lane::Exchange, &[], now_ms()).await.unwrap(),
        Some(later)
    );
    assert_eq!(
        s.next_due_in(Lane::ArmGraph, &[], now_ms()).await.unwrap(),
        Some(soon)
    );
    assert_eq!(
        s.next_due_in(Lane::Exchange, &[tenant()], now_ms())
            .await
            .unwrap(),
        None
    );
    // Read from the instant of a claim made before the contain task fell
    // due, the lane reports that task (the worker then claims at once, not
    // at its idle poll).
    let due = s
        .next_due_in(Lane::Exchange, &[], before)
        .await
        .unwrap()
        .expect("the contain task");
    assert!(due > before && due <= now_ms(), "{due} after {before}");
    // Each lane claims only its own kinds: nothing of the ARM/Graph lane is due.
    assert!(
        s.claim_in("me", lease, Lane::ArmGraph, &[])
            .await
            .unwrap()
            .is_none()
    );
    let c = s
        .claim_in("me", lease, Lane::Exchange, &[])
        .await
        .unwrap()
        .expect("the contain task");
    assert_eq!(c.job.kind(), TaskKind::Contain);
    assert!(
        s.claim_in("me", lease, Lane::Exchange, &[])
            .await
            .unwrap()
            .is_none()
    );
    // Held now, the contain task is no reason to claim again, even read
    // from an instant before it fell due: the lane's next is the verify.
    assert_eq!(
        s.next_due_in(Lane::Exchange, &[], before).await.unwrap(),
        Some(later)
    );
    // Every lane at once (the tests' drain): the earliest, the lease included.
    assert!(s.next_due().await.unwrap().unwrap() <= soon);
}
both_stores!(a_lanes_next_due_is_its_own_, a_lanes_next_due_is_its_own);

async fn the_queue(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let lease = Duration::from_secs(30);
    assert_eq!(s.next_due().await.unwrap(), None, "empty queue");
    let acc = s
        .accept(&one_user_run("q1", "a@contoso.com"))
        .await
        .unwrap();
    let id = &acc.run_id;
    // A task due now: next_due is in the past or now.
    assert!(s.next_due().await.unwrap().unwrap() <= now_ms());
    let t = s.claim("me", lease).await.unwrap().expect("claimed");
    assert_eq!(t.job.kind(), TaskKind::Contain);
    assert_eq!(t.attempts, 1);
    assert!(s.claim("other", lease).await.unwrap().is_none(), "leased");
    assert_eq!(s.in_flight().await.unwrap(), 1);
    // While another worker holds it, it is due when its lease ends.
    let due = s.next_due().await.unwrap().unwrap();
    assert!(
        due > now_ms() + 20_000,
        "the lease end, not the past: {due}"
    );
    assert!(s.renew(&t, lease).await.unwrap());
    let mut stolen = t.clone();
    stolen.owner = "other".into();
    assert!(!s.renew(&stolen, lease).await.unwrap(), "not its lease");
    // A failed attempt: ready again at the retry time (future: not claimable).
    let at = now_ms() + 60_000;
    assert!(!s.fail(&t, "transient", at, Some(3), lease).await.unwrap());
    assert!(s.claim("me", lease).await.unwrap().is_none());
    let due = s.next_due().await.unwrap().unwrap();
    assert!((at - 5..=at + 5).contains(&due), "{due} vs {at}");
    // Re-enqueued: due now again (and dirty).
    s.enqueue(
        id,
        &tenant(),
        &Job::Contain {
            upn: upn("a@contoso.com"),
        },
        now_ms(),
    )
    .await
    .unwrap();
    let t = s.claim("me", lease).await.unwrap().expect("claimed again");
    // An expired lease is claimable by anyone.
    s.renew(&t, Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(s.next_due().await.unwrap().unwrap() <= now_ms());
    let t = s
        .claim("other", lease)
        .await
        .unwrap()
        .expect("expired lease");
    assert_eq!(t.owner, "other");
    // Given up: dead, listed in the run's errors, and the run finalised.
    assert!(
        s.fail(&t, "broken", now_ms(), Some(1), lease)
            .await
            .unwrap()
    );
    let summary = s.task_summary(id).await.unwrap();
    assert_eq!(summary.pending_work, 0);
    assert_eq!(summary.errors, vec!["contain a@contoso.com: broken"]);
    assert_eq!(
        s.run(id).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
    // The record was queued by the run's end; complete it.
    let c = s.claim("me", lease).await.unwrap().expect("comment task");
    assert_eq!(c.job, Job::Comment);
    assert_eq!(s.complete(&c, lease).await.unwrap(), None, "already final");
    // Reschedule: the running task comes back later.
    s.enqueue(
        id,
        &tenant(),
        &Job::Verify {
            upn: upn("a@contoso.com"),
        },
        now_ms(),
    )
    .await
    .unwrap();
    let v = s.claim("me", lease).await.unwrap().expect("verify");
    s.reschedule(&v, now_ms() + 3_600_000).await.unwrap();
    assert!(s.claim("me", lease).await.unwrap().is_none());
    // release_all gives back this owner's leases.
    s.enqueue(id, &tenant(), &Job::Cancel, now_ms())
        .await
        .unwrap();
    let _held = s.claim("me", lease).await.unwrap().expect("cancel");
    assert_eq!(s.release_all("me").await.unwrap(), 1);
    let again = s.claim("other", lease).await.unwrap().expect("released");
    assert_eq!(again.job, Job::Cancel);
    assert_eq!(again.attempts, 1, "a released claim does not count");
    // A dead predecessor's lease: SQLite takes it back at start-up (one
    // process per store); PostgreSQL leaves it to expire.
    let reclaimed = s.reclaim_predecessor_leases().await.unwrap();
    let next = s.claim("successor", lease).await.unwrap();
    match kind {
        StoreKind::Sqlite => {
            assert_eq!(reclaimed, 1);
            let t = next.expect("reclaimed");
            assert_eq!(t.job, Job::Cancel);
            assert_eq!(t.attempts, 2, "the interrupted attempt counts");
        }
        StoreKind::Postgres => {
            assert_eq!(reclaimed, 0);
            assert!(next.is_none(), "the lease holds");
        }
    }
    // stats
    let st = s.stats().await.unwrap();
    assert_eq!(st.dead_tasks, 1);
    assert!(
        st.runs_by_status
            .iter()
            .any(|(k, n)| *k == RunStatus::Completed && *n == 1)
    );
}
both_stores!(the_queue_, the_queue);

async fn the_wipe_ledger(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let t = tenant();
    let r1 = s.accept(&new_run("l1", &[], vec![])).await.unwrap().run_id;
    let r2 = s.accept(&new_run("l2", &[], vec![])).await.unwrap().run_id;
    let g = DeviceGuid::parse("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5a").unwrap();
    let a = upn("a@contoso.com");
    assert_eq!(
        s.claim_wipe(&t, &g, &r1, &a, false).await.unwrap(),
        WipeClaim::Mine
    );
    assert!(matches!(
        s.claim_wipe(&t, &g, &r2, &a, false).await.unwrap(),
        WipeClaim::Existing {
            state: WipeState::Sending,
            ..
        }
    ));
    // Exchange refused: released, another run may claim.
    s.release_wipe(&t, &g, &r1).await.unwrap();
    assert_eq!(
        s.claim_wipe(&t, &g, &r2, &a, false).await.unwrap(),
        WipeClaim::Mine
    );
    let mut d = device(&r2, "a@contoso.com", g.as_str());
    d.requested_at = Some(now_ms());
    s.wipe_requested(&t, &d).await.unwrap();
    assert_eq!(s.wipes_since(now_ms() - 60_000).await.unwrap(), 1);
    let ledger = s.ledger(&t).await.unwrap();
    assert_eq!(
        (ledger.len(), ledger[0].state, &ledger[0].run_id),
        (1, WipeState::Requested, &r2)
    );
    assert_eq!(
        s.devices(&r2).await.unwrap().len(),
        1,
        "with its device row"
    );
    s.wipe_acknowledged(&t, &r2, &g, now_ms()).await.unwrap();
    assert!(s.device(&r2, &g).await.unwrap().unwrap().acked_at.is_some());
    s.wipe_cancelled(&t, &r2, &g, "analyst").await.unwrap();
    assert_eq!(
        s.device(&r2, &g).await.unwrap().unwrap().outcome,
        DeviceOutcome::Cancelled
    );
    assert_eq!(
        s.wipes_since(0).await.unwrap(),
        0,
        "cancelled wipes do not count"
    );
    // release_claims frees only claims still sending.
    let g2 = DeviceGuid::parse("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e5b").unwrap();
    s.claim_wipe(&t, &g2, &r1, &a, false).await.unwrap();
    assert_eq!(s.release_claims(&t, &r1, &a).await.unwrap(), 1);
    assert_eq!(s.ledger(&t).await.unwrap().len(), 1);
}
both_stores!(the_wipe_ledger_, the_wipe_ledger);

async fn the_guard(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let t = tenant();
    let r1 = s.accept(&new_run("g1", &[], vec![])).await.unwrap().run_id;
    let r2 = s.accept(&new_run("g2", &[], vec![])).await.unwrap().run_id;
    let a = upn("a@contoso.com");
    let g =
        |n: u8| DeviceGuid::parse(&format!("6b1d0c2e-8c3a-4b7e-9a55-0f1f3c2d4e{n:02x}")).unwrap();
    let limits = BudgetLimits {
        tenant_max: 3,
        service_max: 10,
        window_ms: 3_600_000,
    };
    // All or nothing; a device reserved before is not counted again.
    assert_eq!(
        s.reserve_wipes(&t, &r1, &a, &[g(1), g(2)], limits, false)
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert_eq!(
        s.reserve_wipes(&t, &r1, &a, &[g(1), g(2)], limits, false)
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert_eq!(
        s.reserve_wipes(&t, &r2, &a, &[g(3), g(4)], limits, false)
            .await
            .unwrap(),
        Reservation::OverBudget {
            scope: "tenant",
            used: 2,
            max: 3,
            wanted: 2
        }
    );
    assert_eq!(s.budget_used(&t, 3_600_000).await.unwrap(), (2, 2));
    // An approved run reserves beyond the limit, and counts.
    assert_eq!(
        s.reserve_wipes(&t, &r2, &a, &[g(3), g(4)], limits, true)
            .await
            .unwrap(),
        Reservation::Reserved
    );
    assert_eq!(s.budget_used(&t, 3_600_000).await.unwrap(), (4, 4));
    // A send made marks it used; a claim released frees its reservation.
    s.claim_wipe(&t, &g(1), &r1, &a, false).await.unwrap();
    s.claim_wipe(&t, &g(2), &r1, &a, false).await.unwrap();
    let mut d = device(&r1, "a@contoso.com", g(1).as_str());
    d.requested_at = Some(now_ms());
    s.wipe_requested(&t, &d).await.unwrap();
    s.release_wipe(&t, &g(2), &r1).await.unwrap();
    s.claim_wipe(&t, &g(3), &r2, &a, false).await.unwrap();
    s.claim_wipe(&t, &g(4), &r2, &a, false).await.unwrap();
    s.release_claims(&t, &r2, &a).await.unwrap();
    assert_eq!(s.budget_used(&t, 3_600_000).await.unwrap(), (1, 1));
    // The kill switch: nothing is reserved while it is engaged.
    assert!(!s.kill_switch().await.unwrap().engaged);
    assert!(
        s.set_kill_switch(true, "soc lead", &t, Some("storm"))
            .await
            .unwrap()
    );
    assert!(
        !s.set_kill_switch(true, "soc lead", &t, None).await.unwrap(),
        "already engaged"
    );
    let ks = s.kill_switch().await.unwrap();
    assert_eq!(
        (ks.engaged, ks.by.as_deref(), ks.reason.as_deref()),
        (true, Some("soc lead"), Some("storm"))
    );
    assert!(matches!(
        s.reserve_wipes(&t, &r1, &a, &[g(5)], limits, true)
            .await
            .unwrap(),
        Reservation::KillSwitch(_)
    ));
    assert!(
        s.set_kill_switch(false, "soc lead", &t, None)
            .await
            .unwrap()
    );
    // Approvals: one per approver.
    s.add_approval(&r1, "oid-1", "Alice").await.unwrap();
    let all = s.add_approval(&r1, "oid-1", "Alice").await.unwrap();
    assert_eq!(all.len(), 1);
    let all = s.add_approval(&r1, "oid-2", "Bob").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(s.approvals(&r1).await.unwrap().len(), 2);
    // The audit trail, by tenant (with the service-wide entries) and by run.
    for (tenant, run, action) in [
        (Some(t.clone()), Some(r1.clone()), AuditAction::Approved),
        (None, None, AuditAction::KillSwitchEngaged),
        (
            Some(TenantId::parse("00000000-0000-4000-8000-0000000000ff").unwrap()),
            None,
            AuditAction::Cancelled,
        ),
    ] {
        s.audit(&AuditEntry {
            at: now_ms(),
            tenant,
            actor: "Alice".into(),
            actor_oid: "oid-1".into(),
            action,
            run_id: run,
            detail: "d".into(),
        })
        .await
        .unwrap();
    }
    // Only the tenant's own entries (not another tenant's, not untenanted ones).
    assert_eq!(s.audit_log(&t, None, 100).await.unwrap().len(), 1);
    let of_run = s.audit_log(&t, Some(&r1), 100).await.unwrap();
    assert_eq!(of_run.len(), 1);
    assert_eq!(of_run[0].action, AuditAction::Approved);
}
both_stores!(the_guard_, the_guard);

async fn approval_cancellation_expiry_and_retention(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let lease = Duration::from_secs(30);
    let mut held = new_run(
        "h1",
        &[
            ("a@contoso.com", TargetState::Held),
            ("b@contoso.com", TargetState::Held),
        ],
        vec![],
    );
    held.status = RunStatus::Held;
    held.expire_at = Some(now_ms() + 3_600_000);
    let id = s.accept(&held).await.unwrap().run_id;
    assert!(s.undoable(&id).await.unwrap(), "held users");
    assert_eq!(s.approve(&id, "approver").await.unwrap(), 2);
    assert_eq!(s.approve(&id, "approver").await.unwrap(), 0, "once");
    let run = s.run(&id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.approved.unwrap().by, "approver");
    // Approval queued both contain tasks and the record, in its transaction.
    let mut kinds = vec![];
    while let Some(t) = s.claim("me", lease).await.unwrap() {
        kinds.push(t.job.kind());
        s.complete(&t, lease).await.unwrap();
    }
    assert!(kinds.contains(&TaskKind::Comment), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == TaskKind::Contain).count(), 2);

    // Expiry: a hold due to expire cannot be approved, and expires.
    let mut late = new_run("h2", &[("c@contoso.com", TargetState::Held)], vec![]);
    late.status = RunStatus::Held;
    late.expire_at = Some(now_ms() - 1);
    let late_id = s.accept(&late).await.unwrap().run_id;
    assert_eq!(s.approve(&late_id, "approver").await.unwrap(), 0);
    assert!(s.expire_hold(&late_id).await.unwrap());
    assert!(!s.expire_hold(&late_id).await.unwrap(), "once");
    let t = s.targets(&late_id).await.unwrap();
    assert_eq!(t[0].state, TargetState::Expired);
    assert!(!s.undoable(&late_id).await.unwrap());

    // Cancellation: held and pending users are released, once.
    let mut third = new_run("h3", &[("d@contoso.com", TargetState::Held)], vec![]);
    third.status = RunStatus::Held;
    let third_id = s.accept(&third).await.unwrap().run_id;
    assert!(
        s.request_cancel(&third_id, &tenant(), "analyst")
            .await
            .unwrap()
    );
    assert!(
        !s.request_cancel(&third_id, &tenant(), "analyst")
            .await
            .unwrap()
    );
    let run = s.run(&third_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.cancelled.unwrap().by, "analyst");
    assert_eq!(
        s.targets(&third_id).await.unwrap()[0].state,
        TargetState::Cancelled
    );

    // Retention: finished runs older than the cut go, with their keys.
    while let Some(t) = s.claim("me", lease).await.unwrap() {
        s.complete(&t, lease).await.unwrap();
    }
    let (runs, _keys) = s
        .prune(Duration::from_secs(3600), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(runs, 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (runs, keys) = s.prune(Duration::ZERO, Duration::ZERO).await.unwrap();
    // The approved run still has its (future) expiry task: it is kept.
    assert_eq!((runs, keys), (2, 3), "two finished runs; every old key");
    assert!(s.run(&late_id).await.unwrap().is_none());
}
both_stores!(
    approval_cancellation_expiry_and_retention_,
    approval_cancellation_expiry_and_retention
);

/// A store created before the schema had a version table is recorded as
/// version 1 and migrated forward, with its data.
async fn an_unversioned_store_is_migrated(kind: StoreKind) {
    let Some(f) = fresh(kind).await else { return };
    let s = &f.store;
    let id = s
        .accept(&new_run(
            "v1",
            &[("a@contoso.com", TargetState::Pending)],
            vec![],
        ))
        .await
        .unwrap()
        .run_id;
    let url = match kind {
        StoreKind::Sqlite => format!(
            "sqlite://{}",
            f._dir.as_ref().unwrap().0.join("s.db").display()
        ),
        StoreKind::Postgres => f._pg.as_ref().unwrap().url.clone(),
    };
    // Make it look like a store from before versioning.
    raw(
        &url,
        &[
            "DROP TABLE schema_version",
            "ALTER TABLE targets DROP COLUMN claims",
            "ALTER TABLE targets DROP COLUMN mailbox_upn",
            "ALTER TABLE targets DROP COLUMN display_name",
            "ALTER TABLE targets DROP COLUMN object_id",
            "ALTER TABLE runs DROP COLUMN trigger_scope",
            "ALTER TABLE devices DROP COLUMN skip_cause",
            "ALTER TABLE devices DROP COLUMN prior_state",
            "ALTER TABLE devices DROP COLUMN verify_until",
            "ALTER TABLE runs DROP COLUMN hold_until",
            "ALTER TABLE runs DROP COLUMN provider_incident_id",
            "ALTER TABLE runs DROP COLUMN comments_baseline",
            "DROP TABLE records",
            "ALTER TABLE runs DROP COLUMN caller_oid",
            "DROP TABLE budget",
            "DROP TABLE guard",
            "DROP TABLE approvals",
            "DROP TABLE audit",
            "ALTER TABLE devices DROP COLUMN triage",
            "ALTER TABLE devices DROP COLUMN triage_reason",
            "ALTER TABLE devices DROP COLUMN blocked_at",
            "ALTER TABLE runs DROP COLUMN first_activity_at",
            "ALTER TABLE runs DROP COLUMN attack_disruption",
            "DROP TABLE account_ledger",
            "DROP TABLE user_steps",
            "DROP TABLE device_blocks",
            "DROP INDEX tasks_lane_claim",
            "DROP INDEX tasks_lane_due",
            "DROP INDEX runs_incident_lower",
            "ALTER TABLE tasks DROP COLUMN lane",
        ],
    )
    .await;
    let again = Store::connect(&StoreSettings {
        url: url.into(),
        ..Default::default()
    })
    .await
    .expect("migrates");
    assert_eq!(
        again.schema_version().await.unwrap(),
        wipehook::store::LATEST_SCHEMA
    );
    let t = again.targets(&id).await.unwrap();
    assert_eq!(t.len(), 1, "data kept");
    assert_eq!(t[0].claims, Claims::default());
}
both_stores!(
    an_unversioned_store_is_migrated_,
    an_unversioned_store_is_migrated
);

async fn raw(url: &str, statements: &[&str]) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}
