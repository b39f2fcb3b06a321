//! The body each playbook template sends (`@triggerBody()` of its trigger) to
//! the path it names is what the running service accepts, with the app role
//! the playbook's identity is given in docs/setup.md.

use serde_json::{Value, json};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::helpers::*;

/// (folder, HTTP action's URI path, body expression, trigger path) of each playbook.
fn playbooks() -> Vec<(String, String, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut out = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path().join("azuredeploy.json");
        if !path.exists() {
            continue;
        }
        let t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let wf = t["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Microsoft.Logic/workflows")
            .expect("a workflow");
        let def = &wf["properties"]["definition"];
        let (_, http) = def["actions"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, a)| a["type"] == "Http")
            .expect("an HTTP action");
        let uri = http["inputs"]["uri"].as_str().unwrap();
        let route = uri.split_once("}").map(|(_, r)| r.to_string()).unwrap();
        let trigger_path = def["triggers"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["inputs"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        let folder = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.push((
            folder,
            route,
            http["inputs"]["body"].as_str().unwrap_or("").to_string(),
            trigger_path,
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_playbook_sends_a_body_wipehook_accepts() {
    let Some(app) = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1
    })
    .await
    else {
        return;
    };
    let sim = &app.h.sim;
    for (u, i) in [("pb1@contoso.com", 1), ("pb2@contoso.com", 2)] {
        sim.add_user(u, &format!("c1000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let mut incident = app.h.incident_body(
        "inc-playbooks",
        91,
        "High",
        &["pb1@contoso.com", "pb2@contoso.com"],
    );
    // The analyst's tag for Wipehook-Contain-Tagged-Account.
    incident["object"]["properties"]["labels"] =
        json!([{"labelName": "wipehook:contain:pb1@contoso.com", "labelType": "User"}]);
    sim.add_incident(
        "inc-playbooks",
        incident["object"]["properties"]["relatedEntities"].clone(),
    );
    let entity = json!({"Entity": {"properties": {"Name": "pb1", "UPNSuffix": "contoso.com", "AadUserId": "c1000000-0000-4000-8000-000000000001"}}, "IncidentArmID": app.incident_id("inc-playbooks")});

    let books = playbooks();
    assert_eq!(books.len(), 5, "{books:?}");
    // Order matters: contain (held: two users over a limit of one), approve,
    // cancel, then one tagged account of the incident.
    let order = [
        "Wipehook-Contain-Incident",
        "Wipehook-Contain-Account",
        "Wipehook-Approve-Run",
        "Wipehook-Cancel-Run",
        "Wipehook-Contain-Tagged-Account",
    ];
    for name in order {
        let (folder, route, body_expr, trigger_path) = books
            .iter()
            .find(|b| b.0 == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            body_expr, "@triggerBody()",
            "{folder} forwards the trigger body"
        );
        let body = if trigger_path.starts_with("/entity/") {
            &entity
        } else {
            &incident
        };
        let token = if route.ends_with("/approve") || route.ends_with("/cancel") {
            app.h.approver_token()
        } else {
            app.h.run_token()
        };
        let r = app.post(route, Some(&token), body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            status == 200 || status == 202,
            "{folder}: POST {route} -> {status} {text}"
        );
        if route.ends_with("/incidents") || route.ends_with("/accounts") {
            let v: Value = serde_json::from_str(&text).unwrap();
            let result = app
                .wait_done(&format!(
                    "{}/api/v1/runs/{}",
                    app.base,
                    v["run_id"].as_str().unwrap()
                ))
                .await;
            assert!(
                result["status"] == "held" || result["status"] == "completed",
                "{folder}: {result}"
            );
        } else if route.ends_with("/approve") {
            app.eventually("wipes after approval", || {
                !app.successful_clears().is_empty()
            })
            .await;
        }
    }
    assert_safe(&sim.exchange_calls());
}
