//! Static checks of the Logic App (Sentinel playbook) ARM templates under `playbooks/`.
//!
//! These tests read the JSON files only; they do not deploy anything and do not use any
//! wipehook code. They pin the contract between the playbooks and wipehook: which endpoint
//! each playbook calls, that it authenticates with its managed identity for the wipehook
//! audience, that it forwards the raw trigger body, and that it keeps the Logic Apps
//! asynchronous (202 + Location polling) pattern enabled.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What kind of Microsoft Sentinel trigger a playbook must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// "Microsoft Sentinel incident" (automation rules, manual run on an incident).
    Incident,
    /// "Microsoft Sentinel entity" for Account entities.
    AccountEntity,
}

struct Expected {
    folder: &'static str,
    trigger: Trigger,
    uri_suffix: &'static str,
    /// The run ends Failed when wipehook's final answer says a person must
    /// act (`outcome` `not_contained` or `partially_contained`).
    fails_when_not_contained: bool,
}

const EXPECTED: &[Expected] = &[
    Expected {
        folder: "Wipehook-Contain-Incident",
        trigger: Trigger::Incident,
        uri_suffix: "/api/v1/sentinel/incidents",
        fails_when_not_contained: true,
    },
    Expected {
        folder: "Wipehook-Contain-Account",
        trigger: Trigger::AccountEntity,
        uri_suffix: "/api/v1/sentinel/incidents",
        fails_when_not_contained: true,
    },
    Expected {
        folder: "Wipehook-Contain-Tagged-Account",
        trigger: Trigger::Incident,
        uri_suffix: "/api/v1/sentinel/incidents/accounts",
        fails_when_not_contained: true,
    },
    Expected {
        folder: "Wipehook-Approve-Run",
        trigger: Trigger::Incident,
        uri_suffix: "/api/v1/sentinel/incidents/approve",
        fails_when_not_contained: false,
    },
    Expected {
        folder: "Wipehook-Cancel-Run",
        trigger: Trigger::Incident,
        uri_suffix: "/api/v1/sentinel/incidents/cancel",
        fails_when_not_contained: false,
    },
];

const INCIDENT_PATH: &str = "/incident-creation";
const ACCOUNT_ENTITY_PATH: &str = "/entity/@{encodeURIComponent('Account')}";
const AUDIENCE: &str = "[parameters('WipehookAudience')]";
const URI_PREFIX: &str = "@{parameters('WipehookUrl')}";

/// The run outcomes docs/openapi.yaml documents (a line of the form
/// `enum: [contained, partially_contained, ...]` under `RunOutcome:`).
fn run_outcomes() -> Vec<String> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    let from = doc.find("    RunOutcome:").expect("RunOutcome schema");
    let line = doc[from..]
        .lines()
        .find(|l| l.trim_start().starts_with("enum: ["))
        .expect("RunOutcome enum");
    line.trim()
        .trim_start_matches("enum: [")
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn playbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")
}

fn load(folder: &str) -> Value {
    let path = playbooks_dir().join(folder).join("azuredeploy.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// The single `Microsoft.Logic/workflows` resource of a template.
fn workflow<'a>(template: &'a Value, folder: &str) -> &'a Value {
    let resources = template["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{folder}: `resources` is not an array"));
    let workflows: Vec<&Value> = resources
        .iter()
        .filter(|r| r["type"].as_str() == Some("Microsoft.Logic/workflows"))
        .collect();
    assert_eq!(
        workflows.len(),
        1,
        "{folder}: expected exactly one Microsoft.Logic/workflows resource"
    );
    workflows[0]
}

/// Every action of the workflow definition with `"type": "Http"`, searched recursively
/// (scopes, conditions and loops nest their actions under `actions` / `else.actions`).
fn http_actions<'a>(actions: &'a Value, found: &mut Vec<(&'a str, &'a Value)>) {
    let Some(map) = actions.as_object() else {
        return;
    };
    for (name, action) in map {
        if action["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Http"))
        {
            found.push((name.as_str(), action));
        }
        http_actions(&action["actions"], found);
        http_actions(&action["else"]["actions"], found);
    }
}

fn check_playbook(expected: &Expected) {
    let folder = expected.folder;
    let template = load(folder);

    // Template basics.
    assert!(
        template["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("deploymentTemplate.json")),
        "{folder}: missing or wrong $schema"
    );
    assert!(
        template["contentVersion"].is_string(),
        "{folder}: missing contentVersion"
    );

    // Parameters.
    let params = &template["parameters"];
    for name in ["PlaybookName", "WipehookUrl", "WipehookAudience"] {
        assert!(
            params[name].is_object(),
            "{folder}: parameter {name} is missing"
        );
    }
    assert!(
        params["PlaybookName"]["defaultValue"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{folder}: PlaybookName needs a non-empty defaultValue"
    );

    // Metadata block (Azure-Sentinel conventions).
    let metadata = &template["metadata"];
    assert!(metadata.is_object(), "{folder}: metadata block is missing");
    for field in ["title", "description", "lastUpdateTime"] {
        assert!(
            metadata[field].as_str().is_some_and(|s| !s.is_empty()),
            "{folder}: metadata.{field} is missing or empty"
        );
    }
    for field in [
        "prerequisites",
        "postDeployment",
        "entities",
        "tags",
        "releaseNotes",
    ] {
        assert!(
            metadata[field].is_array(),
            "{folder}: metadata.{field} is missing or not an array"
        );
    }
    assert_eq!(
        metadata["support"]["tier"].as_str(),
        Some("community"),
        "{folder}: metadata.support.tier must be community"
    );
    assert!(
        metadata["author"]["name"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{folder}: metadata.author.name is missing"
    );

    // Sentinel API connection using the managed identity.
    let resources = template["resources"].as_array().expect("resources array");
    let connection = resources
        .iter()
        .find(|r| r["type"].as_str() == Some("Microsoft.Web/connections"))
        .unwrap_or_else(|| panic!("{folder}: no Microsoft.Web/connections resource"));
    assert_eq!(
        connection["apiVersion"].as_str(),
        Some("2016-06-01"),
        "{folder}"
    );
    assert_eq!(
        connection["properties"]["parameterValueType"].as_str(),
        Some("Alternative"),
        "{folder}: the Sentinel connection must use parameterValueType Alternative (MSI)"
    );
    assert!(
        connection["properties"]["api"]["id"]
            .as_str()
            .is_some_and(|s| s.contains("/managedApis/azuresentinel")),
        "{folder}: the connection must use the azuresentinel managed API"
    );

    // The workflow.
    let wf = workflow(&template, folder);
    assert_eq!(wf["apiVersion"].as_str(), Some("2017-07-01"), "{folder}");
    assert_eq!(
        wf["identity"]["type"].as_str(),
        Some("SystemAssigned"),
        "{folder}: the workflow must have a system-assigned managed identity"
    );
    assert_eq!(
        wf["tags"]["LogicAppsCategory"].as_str(),
        Some("security"),
        "{folder}"
    );
    assert!(
        wf["tags"]["hidden-SentinelTemplateName"].is_string(),
        "{folder}"
    );
    assert!(
        wf["tags"]["hidden-SentinelTemplateVersion"].is_string(),
        "{folder}"
    );

    let connections = wf["properties"]["parameters"]["$connections"]["value"]
        .as_object()
        .unwrap_or_else(|| panic!("{folder}: $connections value is missing"));
    assert!(!connections.is_empty(), "{folder}: $connections is empty");
    for (name, conn) in connections {
        assert_eq!(
            conn["connectionProperties"]["authentication"]["type"].as_str(),
            Some("ManagedServiceIdentity"),
            "{folder}: connection {name} must authenticate with the managed identity"
        );
    }

    let definition = &wf["properties"]["definition"];

    // Trigger.
    let triggers = definition["triggers"]
        .as_object()
        .unwrap_or_else(|| panic!("{folder}: no triggers"));
    assert_eq!(triggers.len(), 1, "{folder}: expected exactly one trigger");
    let (trigger_name, trigger) = triggers.iter().next().expect("one trigger");
    assert_eq!(
        trigger["type"].as_str(),
        Some("ApiConnectionWebhook"),
        "{folder}: trigger {trigger_name} must be an ApiConnectionWebhook"
    );
    let trigger_path = trigger["inputs"]["path"].as_str();
    match expected.trigger {
        Trigger::Incident => {
            assert_eq!(
                trigger_path,
                Some(INCIDENT_PATH),
                "{folder}: expected the Microsoft Sentinel incident trigger"
            );
            assert_eq!(
                trigger_name.as_str(),
                "Microsoft_Sentinel_incident",
                "{folder}"
            );
        }
        Trigger::AccountEntity => {
            assert_eq!(
                trigger_path,
                Some(ACCOUNT_ENTITY_PATH),
                "{folder}: expected the Microsoft Sentinel entity trigger for Account"
            );
        }
    }
    assert!(
        trigger["inputs"]["host"]["connection"]["name"]
            .as_str()
            .is_some_and(|s| s.contains("$connections")),
        "{folder}: the trigger must use the Sentinel connection"
    );

    // The HTTP action.
    let mut found = Vec::new();
    http_actions(&definition["actions"], &mut found);
    assert_eq!(
        found.len(),
        1,
        "{folder}: expected exactly one HTTP action, found {}",
        found.len()
    );
    let (action_name, action) = found[0];
    let inputs = &action["inputs"];
    assert!(
        inputs["method"]
            .as_str()
            .is_some_and(|m| m.eq_ignore_ascii_case("POST")),
        "{folder}: {action_name} must POST"
    );
    let uri = inputs["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{folder}: {action_name} has no uri"));
    assert_eq!(
        uri,
        format!("{URI_PREFIX}{}", expected.uri_suffix),
        "{folder}: {action_name} calls the wrong endpoint"
    );
    assert_eq!(
        inputs["body"].as_str(),
        Some("@triggerBody()"),
        "{folder}: {action_name} must forward the raw trigger body"
    );
    assert_eq!(
        inputs["authentication"]["type"].as_str(),
        Some("ManagedServiceIdentity"),
        "{folder}: {action_name} must authenticate with the managed identity"
    );
    assert_eq!(
        inputs["authentication"]["audience"].as_str(),
        Some(AUDIENCE),
        "{folder}: {action_name} must request a token for the wipehook audience"
    );
    // wipehook answers 202 + Location + Retry-After; the action must keep polling.
    let action_text = action.to_string();
    assert!(
        !action_text.contains("DisableAsyncPattern"),
        "{folder}: {action_name} must keep the asynchronous pattern enabled"
    );
    assert!(
        action["operationOptions"].is_null(),
        "{folder}: {action_name} must not set operationOptions"
    );
    // Retry policy left at the Logic Apps default (wipehook deduplicates retries).
    assert!(
        inputs["retryPolicy"].is_null(),
        "{folder}: {action_name} must keep the default retry policy"
    );

    // A run that did not contain everyone ends Failed, so the run history
    // (and any alert on failed playbook runs) shows that a person must act.
    let branch = &definition["actions"]["Fail_the_run_when_not_contained"];
    if expected.fails_when_not_contained {
        assert_eq!(
            branch["type"], "If",
            "{folder}: no condition on the outcome"
        );
        assert_eq!(
            branch["runAfter"][action_name],
            serde_json::json!(["Succeeded"]),
            "{folder}: the condition reads the final answer of {action_name}"
        );
        let expr = branch["expression"].to_string();
        let outcomes = run_outcomes();
        for o in ["not_contained", "partially_contained"] {
            assert!(
                outcomes.contains(&o.to_string()),
                "{o} is not a documented outcome"
            );
            assert!(
                expr.contains(&format!("\"{o}\"")),
                "{folder}: the condition does not test {o}: {expr}"
            );
        }
        assert!(
            expr.contains(&format!("body('{action_name}')?['outcome']")),
            "{folder}: the condition must read `outcome` of the answer: {expr}"
        );
        let stop = &branch["actions"]["Terminate_-_not_contained"];
        assert_eq!(stop["type"], "Terminate", "{folder}");
        assert_eq!(stop["inputs"]["runStatus"], "Failed", "{folder}");
    } else {
        assert!(
            branch.is_null(),
            "{folder}: only containment playbooks read the outcome"
        );
    }

    // The workflow parameter the uri refers to must be wired to the ARM parameter.
    assert!(
        definition["parameters"]["WipehookUrl"].is_object(),
        "{folder}: workflow parameter WipehookUrl is not declared in the definition"
    );
    assert_eq!(
        wf["properties"]["parameters"]["WipehookUrl"]["value"].as_str(),
        Some("[parameters('WipehookUrl')]"),
        "{folder}: workflow parameter WipehookUrl must take the ARM parameter"
    );
}

#[test]
fn contain_incident_playbook() {
    check_playbook(&EXPECTED[0]);
}

#[test]
fn contain_account_playbook() {
    check_playbook(&EXPECTED[1]);
}

#[test]
fn contain_tagged_account_playbook() {
    check_playbook(&EXPECTED[2]);
}

#[test]
fn approve_run_playbook() {
    check_playbook(&EXPECTED[3]);
}

#[test]
fn cancel_run_playbook() {
    check_playbook(&EXPECTED[4]);
}

/// Every folder under playbooks/ is a playbook with a valid template and a readme, and
/// every playbook folder is one this file knows about (so a new playbook gets checked too).
#[test]
fn every_playbook_folder_is_known_and_complete() {
    let dir = playbooks_dir();
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.expect("directory entry");
        if entry.file_type().expect("file type").is_dir() {
            folders.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    folders.sort();

    let mut known: Vec<String> = EXPECTED.iter().map(|e| e.folder.to_string()).collect();
    known.sort();
    assert_eq!(
        folders, known,
        "playbook folders differ from the expected set"
    );

    for folder in &folders {
        let template = load(folder);
        assert!(
            template.is_object(),
            "{folder}: template is not a JSON object"
        );
        let readme = dir.join(folder).join("readme.md");
        assert!(readme.is_file(), "{folder}: readme.md is missing");
    }
}
