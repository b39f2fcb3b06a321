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
