//! Who gets wiped: the July 2026 Account entity (a name prefix is not a
//! person) and mailboxes judged on every address they have, not on the
//! address an entity happens to name.

use serde_json::{Value, json};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::both_stores;
use crate::helpers::*;

const WILBER: &str = "a1e00000-0000-4000-8000-00000000a11e";
const ALEX: &str = "a1e00000-0000-4000-8000-0000000000a1";

fn user<'a>(result: &'a Value, mailbox_upn: &str) -> Option<&'a Value> {
    result["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["mailbox_upn"] == mailbox_upn)
}

/// An incident body whose only entities are `entities` (ARM shape).
fn incident(app: &TestApp, name: &str, entities: Vec<Value>) -> Value {
    let mut body = app.h.incident_body(name, 77, "High", &[]);
    body["object"]["properties"]["relatedEntities"] = json!(entities);
    app.h.sim.add_incident(name, json!(entities));
    body
}

fn account(props: Value) -> Value {
    json!({"kind": "Account", "properties": props})
}

async fn a_name_prefix_never_wipes_the_other_person(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    let tid = sim.tenant_id();
    // The compromised user and a bystander whose UPN is the other's prefix.
    sim.add_user("alex.wilber@contoso.com", WILBER);
    sim.add_user("alex@contoso.com", ALEX);
    let wilber_phone = sim.add_device("alex.wilber@contoso.com", DeviceSpec::iphone());
    let bystander_phone = sim.add_device("alex@contoso.com", DeviceSpec::iphone());

    // 1. The July 2026 entity without the UPN field: name = prefix, plus the object id.
    let body = incident(
        &app,
        "inc-prefix-1",
        vec![account(
            json!({"accountName": "alex", "upnSuffix": "contoso.com", "aadUserId": WILBER, "aadTenantId": tid}),
        )],
    );
    let r = app.contain(&body).await;
    let w = user(&r, "alex.wilber@contoso.com").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(w["devices"][0]["outcome"], "requested", "{r}");
    assert_eq!(w["object_id"], WILBER);
    assert_eq!(w["display_name"], "Alex Wilber");
    assert!(
        w["notes"][0].as_str().unwrap().contains("alex@contoso.com"),
        "the unused name + suffix is on the record: {w}"
    );
    assert!(user(&r, "alex@contoso.com").is_none(), "{r}");

    // 2. With the UPN field (both casings, incident and entity trigger).
    let body = incident(
        &app,
        "inc-prefix-2",
        vec![account(
            json!({"accountName": "alex", "upnSuffix": "contoso.com", "userPrincipalName": "alex.wilber@contoso.com", "aadUserId": WILBER}),
        )],
    );
    let r = app.contain(&body).await;
    assert!(user(&r, "alex.wilber@contoso.com").is_some(), "{r}");
    assert!(user(&r, "alex@contoso.com").is_none(), "{r}");
    let entity_body = json!({
        "Entity": {"Type": "account", "Name": "alex", "UPNSuffix": "contoso.com",
                   "UserPrincipalName": "Alex.Wilber@contoso.com", "AadUserId": WILBER},
        "IncidentArmID": app.incident_id("inc-prefix-2"),
    });
    let r = app.contain(&entity_body).await;
    let w = user(&r, "alex.wilber@contoso.com").unwrap_or_else(|| panic!("{r}"));
    assert!(w["source"].as_str().unwrap().contains("userPrincipalName"));
    assert!(user(&r, "alex@contoso.com").is_none(), "{r}");

    // 3. A UPN field that names another person than the object id: refused.
    let body = incident(
        &app,
        "inc-prefix-3",
        vec![account(
            json!({"accountName": "alex", "upnSuffix": "contoso.com", "userPrincipalName": "alex@contoso.com", "aadUserId": WILBER}),
        )],
    );
    let r = app.contain(&body).await;
    let u = &r["users"][0];
    assert_eq!(u["state"], "refused", "{r}");
    assert!(
        u["reason"]
            .as_str()
            .unwrap()
            .contains("may be different people"),
        "{u}"
    );
    assert!(u["devices"].as_array().unwrap().is_empty());

    // 4. A display name in the name field (no UPN known): nothing is built from it.
    let body = incident(
        &app,
        "inc-prefix-4",
        vec![account(
            json!({"accountName": "Alex Wilber", "upnSuffix": "contoso.com"}),
        )],
    );
    let r = app.contain(&body).await;
    assert!(r["users"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        r["unresolved"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("display name"),
        "{r}"
    );

    // The comment names the person by display name, UPN and object id.
    let comments = sim.comments(&app.incident_id("inc-prefix-1"));
    let text = &comments.last().expect("a comment").message;
    assert!(
        text.contains("Alex Wilber")
            && text.contains("alex.wilber@contoso.com")
            && text.contains(WILBER),
        "{text}"
    );

    // Across every run: the bystander's phone was never touched.
    assert_eq!(sim.device(&bystander_phone).unwrap().wipe_request_count, 0);
    assert_eq!(sim.device(&wilber_phone).unwrap().wipe_request_count, 1);
    assert!(
        !sim.exchange_calls().iter().any(|c| c
            .parameters
            .to_string()
            .contains("\"alex@contoso.com\"")
            && c.cmdlet == "Get-MobileDevice"),
        "the bystander's devices were never even listed"
    );
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    a_name_prefix_never_wipes_the_other_person_,
    a_name_prefix_never_wipes_the_other_person
);

async fn a_protected_or_foreign_mailbox_is_never_wiped_through_any_of_its_addresses(
    store: StoreKind,
) {
    let Some(app) = spawn_with(SimOptions::default(), store, |s| {
        s.policy.protected_upns.push("*-admin@contoso.com".into());
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    // breakglass's primary SMTP address is not its UPN.
    sim.add_user(
        "breakglass@contoso.com",
        "b0000000-0000-4000-8000-00000000000b",
    );
    sim.set_primary_smtp("breakglass@contoso.com", "bg.ops@contoso.com");
    let bg = sim.add_device("breakglass@contoso.com", DeviceSpec::iphone());
    // A partner's mailbox, outside the allowed domains, with a proxy inside them.
    sim.add_user(
        "mallory@fabrikam-partner.com",
        "b0000000-0000-4000-8000-00000000000c",
    );
    sim.add_proxy_address("mallory@fabrikam-partner.com", "mallory@contoso.com");
    let partner = sim.add_device("mallory@fabrikam-partner.com", DeviceSpec::iphone());
    // A protected admin (by pattern) reachable through a short address.
    sim.add_user(
        "svc-admin@contoso.com",
        "b0000000-0000-4000-8000-00000000000d",
    );
    sim.set_alias("svc-admin@contoso.com", "svcadm");
    sim.add_proxy_address("svc-admin@contoso.com", "svcadm@contoso.com");
    let admin = sim.add_device("svc-admin@contoso.com", DeviceSpec::outlook());
    // Two ordinary users, to show a Mailbox entity can name two people.
    sim.add_user("carol@contoso.com", "b0000000-0000-4000-8000-00000000000e");
    sim.add_user("boss@contoso.com", "b0000000-0000-4000-8000-00000000000f");
    let carol = sim.add_device("carol@contoso.com", DeviceSpec::iphone());
    // And one whose primary SMTP differs from the UPN, who may be wiped.
    sim.add_user(
        "john.doe@contoso.com",
        "b0000000-0000-4000-8000-000000000010",
    );
    sim.set_primary_smtp("john.doe@contoso.com", "john@contoso.com");
    let john = sim.add_device("john.doe@contoso.com", DeviceSpec::iphone());

    let mailbox = |props: Value| json!({"kind": "Mailbox", "properties": props});
    let body = incident(
        &app,
        "inc-addresses",
        vec![
            mailbox(json!({"mailboxPrimaryAddress": "bg.ops@contoso.com"})),
            mailbox(json!({"upn": "mallory@contoso.com"})),
            account(json!({"accountName": "svcadm", "upnSuffix": "contoso.com"})),
            mailbox(
                json!({"upn": "carol@contoso.com", "mailboxPrimaryAddress": "boss@contoso.com"}),
            ),
            mailbox(json!({"mailboxPrimaryAddress": "bre\u{200B}akglass@contoso.com"})),
            account(json!({"userPrincipalName": "al\u{202E}ice@contoso.com"})),
            mailbox(
                json!({"mailboxPrimaryAddress": "John@contoso.com", "externalDirectoryObjectId": "b0000000-0000-4000-8000-000000000010"}),
            ),
        ],
    );
    let r = app.contain(&body).await;
    let by_named = |named: &str| -> &Value {
        r["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["upn"] == named)
            .unwrap_or_else(|| panic!("{named} in {r}"))
    };
    let bgu = by_named("bg.ops@contoso.com");
    assert_eq!(bgu["state"], "protected", "{bgu}");
    assert_eq!(bgu["mailbox_upn"], "breakglass@contoso.com");
    let m = by_named("mallory@contoso.com");
    assert_eq!(m["state"], "refused", "{m}");
    assert!(
        m["reason"]
            .as_str()
            .unwrap()
            .contains("fabrikam-partner.com"),
        "{m}"
    );
    let s = by_named("svcadm@contoso.com");
    assert_eq!(s["state"], "protected", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("*-admin@contoso.com")
    );
    let c = by_named("carol@contoso.com");
    assert_eq!(c["state"], "refused", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("boss@contoso.com"));
    let invisible: Vec<&str> = r["unresolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        invisible
            .iter()
            .filter(|r| r.contains("invisible format character"))
            .count(),
        2,
        "{r}"
    );
    let j = by_named("john@contoso.com");
    assert_eq!(j["mailbox_upn"], "john.doe@contoso.com");
    assert_eq!(j["devices"][0]["outcome"], "requested", "{j}");

    for (guid, who) in [
        (&bg, "breakglass"),
        (&partner, "partner"),
        (&admin, "admin"),
        (&carol, "carol"),
    ] {
        assert_eq!(
            sim.device(guid).unwrap().wipe_request_count,
            0,
            "{who}'s device was wiped"
        );
    }
    assert_eq!(sim.device(&john).unwrap().wipe_request_count, 1);
    // Devices are listed by the mailbox's own UPN, never by the entity's address.
    for c in sim
        .exchange_calls()
        .iter()
        .filter(|c| c.cmdlet == "Get-MobileDevice")
    {
        assert_eq!(c.parameters["Mailbox"], "john.doe@contoso.com", "{c:?}");
    }
    assert_safe(&sim.exchange_calls());
}
both_stores!(
    a_protected_or_foreign_mailbox_is_never_wiped_,
    a_protected_or_foreign_mailbox_is_never_wiped_through_any_of_its_addresses
);

/// Correlation merges alerts into an incident: users the trigger did not
/// name, first seen in the incident's own entity list, are held for
/// approval and named with the alerts added since.
async fn users_found_after_the_trigger_are_held(store: StoreKind) {
    let Some(app) = spawn_with(SimOptions::default(), store, |_| {}).await else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("amy@contoso.com", "c0000000-0000-4000-8000-000000000001");
    sim.add_user("ben@contoso.com", "c0000000-0000-4000-8000-000000000002");
    let amy = sim.add_device("amy@contoso.com", DeviceSpec::iphone());
    let ben = sim.add_device("ben@contoso.com", DeviceSpec::iphone());
    let mut body = app
        .h
        .incident_body("inc-merged", 95, "High", &["amy@contoso.com"]);
    body["object"]["properties"]["alerts"] = json!([
        {"kind": "SecurityAlert", "properties": {"systemAlertId": "alert-sign-in", "alertDisplayName": "Impossible travel"}}
    ]);
    // By the time wipehook re-reads the incident, a phishing alert naming
    // Ben was merged into it.
    sim.add_incident(
        "inc-merged",
        json!([
            wipehook::harness::account_entity("amy@contoso.com"),
            wipehook::harness::account_entity("ben@contoso.com")
        ]),
    );
    sim.add_incident_alert(
        "inc-merged",
        "alert-sign-in",
        "Impossible travel",
        "Microsoft Entra ID Protection",
    );
    sim.add_incident_alert(
        "inc-merged",
        "alert-phish",
        "Phish delivered",
        "Microsoft Defender for Office 365",
    );
    let r = app.contain(&body).await;
    assert_eq!(r["status"], "held", "{r}");
    let a = user(&r, "amy@contoso.com").unwrap();
    assert_eq!(a["devices"][0]["outcome"], "requested");
    let b = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upn"] == "ben@contoso.com")
        .unwrap();
    assert_eq!(b["state"], "held", "{b}");
    let why = b["reason"].as_str().unwrap();
    assert!(
        why.contains("after the trigger")
            && why.contains("'Phish delivered' (Microsoft Defender for Office 365)")
            && !why.contains("Impossible travel"),
        "{why}"
    );
    assert_eq!(sim.device(&ben).unwrap().wipe_request_count, 0);
    // An approver releases him.
    let ok = app
        .post(
            "/api/v1/sentinel/incidents/approve",
            Some(&app.h.approver_token()),
            &body,
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200, "{:?}", ok.text().await);
    app.drain().await;
    app.eventually("ben wiped after approval", || {
        sim.device(&ben).unwrap().wipe_request_count == 1
    })
    .await;
    assert_eq!(sim.device(&amy).unwrap().wipe_request_count, 1);
}
both_stores!(
    users_found_after_the_trigger_are_held_,
    users_found_after_the_trigger_are_held
);

/// A playbook run on an incident not yet synchronised (the body names no
/// account, ARM does not know the incident yet) keeps the run in progress
/// (202) and reads again, instead of ending "no accounts".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_not_yet_synchronised_is_read_again() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.entity_sync_wait = std::time::Duration::from_secs(20)
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    sim.add_user("cid@contoso.com", "c0000000-0000-4000-8000-000000000003");
    let g = sim.add_device("cid@contoso.com", DeviceSpec::iphone());
    let body = app.h.incident_body("inc-late-sync", 96, "High", &[]);
    let r = app.post_incident(&body).await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let poll = app
        .client
        .get(&location)
        .bearer_auth(app.h.run_token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        poll.status().as_u16(),
        202,
        "still waiting for the incident"
    );
    // The incident reaches Sentinel, with its account.
    sim.add_incident(
        "inc-late-sync",
        json!([wipehook::harness::account_entity("cid@contoso.com")]),
    );
    let done = app.wait_done(&location).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.device(&g).unwrap().wipe_request_count, 1);
    assert_eq!(
        done["users"][0]["state"], "done",
        "not held: the trigger named nobody"
    );
}
