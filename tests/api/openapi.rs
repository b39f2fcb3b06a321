//! docs/openapi.yaml against the running service: every documented operation
//! is served, every route of the route table (src/routes/mod.rs) is documented, and the answers the
//! service gives (status, headers, JSON body) are the documented ones.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wipehook_sim::{DeviceSpec, SimOptions};

use crate::helpers::*;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");

const INC: &str = "/api/v1/sentinel/incidents";
const INC_APPROVE: &str = "/api/v1/sentinel/incidents/approve";
const INC_CANCEL: &str = "/api/v1/sentinel/incidents/cancel";
const RUN: &str = "/api/v1/runs/{id}";
const RUN_APPROVE: &str = "/api/v1/runs/{id}/approve";
const RUN_CANCEL: &str = "/api/v1/runs/{id}/cancel";
/// Pseudo path under which unknown-route answers are recorded.
const ANY_ROUTE: &str = "<unknown route>";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ------------------------------------------------------------------ the document

struct Spec {
    doc: Value,
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

/// One checked answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    }
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Spec {
    fn load() -> Spec {
        let text = std::fs::read_to_string(SPEC).expect("docs/openapi.yaml");
        let doc: Value = serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "OpenAPI 3.1 document"
        );
        Spec {
            doc,
            seen: Mutex::default(),
        }
    }

    /// Follow `$ref`s (local `#/...` references only).
    fn deref<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => v = self.pointer(r),
                None => return v,
            }
        }
        panic!("$ref loop at {v}")
    }

    fn pointer(&self, r: &str) -> &Value {
        let p = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $ref is supported: {r}"));
        self.doc
            .pointer(p)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"))
    }

    /// Every (path, method) the document declares.
    fn operations(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (m, _) in item.as_object().unwrap() {
                if METHODS.contains(&m.as_str()) {
                    out.push((path.clone(), m.clone()));
                }
            }
        }
        out
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        op
    }

    fn response(&self, path: &str, method: &str, status: u16) -> Option<&Value> {
        if path == ANY_ROUTE {
            assert_eq!(status, 404, "unknown routes answer 404");
            return Some(self.pointer("#/components/responses/RouteNotFound"));
        }
        self.operation(path, method)["responses"]
            .get(status.to_string())
            .map(|r| self.deref(r))
    }

    /// Check an answer against the document: the status is documented for
    /// the operation, the required headers are there, the content type is a
    /// documented one and a JSON body validates against its schema.
    async fn check(&self, path: &str, method: &str, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let what = format!("{} {path} ({url}) -> {status}", method.to_uppercase());
        let doc = self
            .response(path, method, status)
            .unwrap_or_else(|| panic!("{what}: status not documented for the operation: {text}"));

        for (name, h) in doc["headers"].as_object().into_iter().flatten() {
            let h = self.deref(h);
            let got = headers.get(name.to_ascii_lowercase());
            if h["required"] != true && got.is_none() {
                continue;
            }
            let got = got
                .unwrap_or_else(|| panic!("{what}: documented header {name} missing"))
                .to_str()
                .unwrap();
            let schema = self.deref(&h["schema"]);
            let value = if schema["type"] == "integer" {
                json!(
                    got.parse::<i64>()
                        .unwrap_or_else(|_| panic!("{what}: {name}: {got} is not an integer"))
                )
            } else {
                json!(got)
            };
            if schema["format"] == "uri" {
                assert!(
                    got.starts_with("http://") || got.starts_with("https://"),
                    "{what}: {name}: {got} is not an absolute URL"
                );
            }
            self.assert_valid(schema, &value, &format!("{what}: header {name}"));
        }

        let content_type = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase();
        if method.eq_ignore_ascii_case("head") {
            assert!(text.is_empty(), "{what}: a HEAD answer has no body");
            self.seen
                .lock()
                .unwrap()
                .insert((path.to_string(), method.to_string(), status));
            return Answer {
                status,
                headers,
                body: Value::Null,
            };
        }
        let content = doc["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: the document gives no content"));
        let media = content.get(&mime).unwrap_or_else(|| {
            panic!(
                "{what}: content type '{content_type}' not documented ({:?}): {text}",
                content.keys().collect::<Vec<_>>()
            )
        });
        let body = if mime == "application/json" {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"));
            self.assert_valid(&media["schema"], &body, &what);
            body
        } else {
            self.assert_valid(&media["schema"], &json!(text), &what);
            Value::Null
        };
        self.seen
            .lock()
            .unwrap()
            .insert((path.to_string(), method.to_string(), status));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn assert_valid(&self, schema: &Value, v: &Value, what: &str) {
        let mut errs = vec![];
        self.validate(schema, v, "$", &mut errs);
        assert!(
            errs.is_empty(),
            "{what}: does not match the document:\n  {}\nin {}",
            errs.join("\n  "),
            serde_json::to_string_pretty(v).unwrap()
        );
    }

    fn is_valid(&self, schema: &Value, v: &Value) -> bool {
        let mut errs = vec![];
        self.validate(schema, v, "$", &mut errs);
        errs.is_empty()
    }

    /// JSON Schema, the subset docs/openapi.yaml uses. An unknown keyword is
    /// an error, so the document cannot outgrow the validator unnoticed.
    fn validate(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let Some(s) = schema.as_object() else {
            match schema {
                Value::Bool(true) => {}
                _ => errs.push(format!("{at}: schema {schema} is not an object")),
            }
            return;
        };
        for (k, kv) in s {
            match k.as_str() {
                "$ref" => {
                    let target = self.pointer(kv.as_str().expect("$ref string"));
                    self.validate(target, v, at, errs);
                }
                "type" => {
                    let types: Vec<&str> = match kv {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        _ => panic!("bad type {kv}"),
                    };
                    if !types.iter().any(|t| type_matches(t, v)) {
                        errs.push(format!("{at}: {v} is not of type {kv}"));
                    }
                }
                "enum" => {
                    if !kv.as_array().expect("enum array").contains(v) {
                        errs.push(format!("{at}: {v} is not one of {kv}"));
                    }
                }
                "const" => {
                    if kv != v {
                        errs.push(format!("{at}: {v} is not {kv}"));
                    }
                }
                "required" => {
                    if let Some(o) = v.as_object() {
                        for r in kv.as_array().expect("required array") {
                            let r = r.as_str().unwrap();
                            if !o.contains_key(r) {
                                errs.push(format!("{at}: required member '{r}' missing"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(o) = v.as_object() {
                        for (name, ps) in kv.as_object().expect("properties object") {
                            if let Some(mv) = o.get(name) {
                                self.validate(ps, mv, &format!("{at}.{name}"), errs);
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(o) = v.as_object() {
                        let known = s.get("properties").and_then(Value::as_object);
                        for (name, mv) in o {
                            if known.is_some_and(|p| p.contains_key(name)) {
                                continue;
                            }
                            if kv == &Value::Bool(false) {
                                errs.push(format!("{at}: undocumented member '{name}'"));
                            } else {
                                self.validate(kv, mv, &format!("{at}.{name}"), errs);
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(a) = v.as_array() {
                        for (i, item) in a.iter().enumerate() {
                            self.validate(kv, item, &format!("{at}[{i}]"), errs);
                        }
                    }
                }
                "allOf" => {
                    for sub in kv.as_array().expect("allOf array") {
                        self.validate(sub, v, at, errs);
                    }
                }
                "oneOf" => {
                    let n = kv
                        .as_array()
                        .expect("oneOf array")
                        .iter()
                        .filter(|sub| self.is_valid(sub, v))
                        .count();
                    if n != 1 {
                        errs.push(format!("{at}: {v} matches {n} of oneOf, not exactly 1"));
                    }
                }
                "anyOf" => {
                    if !kv
                        .as_array()
                        .expect("anyOf array")
                        .iter()
                        .any(|sub| self.is_valid(sub, v))
                    {
                        errs.push(format!("{at}: {v} matches none of anyOf"));
                    }
                }
                "minimum" => {
                    if let (Some(n), Some(min)) = (v.as_f64(), kv.as_f64())
                        && n < min
                    {
                        errs.push(format!("{at}: {n} < minimum {min}"));
                    }
                }
                "maxLength" => {
                    if let (Some(t), Some(max)) = (v.as_str(), kv.as_u64())
                        && t.chars().count() as u64 > max
                    {
                        errs.push(format!("{at}: longer than {max}"));
                    }
                }
                "format" => {
                    if let Some(t) = v.as_str() {
                        let ok = match kv.as_str() {
                            Some("uuid") => uuid::Uuid::parse_str(t).is_ok(),
                            Some("date-time") => time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .is_ok(),
                            Some("uri") => t.starts_with("http://") || t.starts_with("https://"),
                            _ => true,
                        };
                        if !ok {
                            errs.push(format!("{at}: '{t}' is not a {kv}"));
                        }
                    }
                }
                // Annotations.
                "description" | "title" | "default" | "example" | "examples" => {}
                other => errs.push(format!(
                    "{at}: schema keyword '{other}' is not supported by this validator"
                )),
            }
        }
    }

    /// Fail unless each of these (path, method, status) was checked.
    fn assert_seen(&self, expected: &[(&str, &str, u16)]) {
        let seen = self.seen.lock().unwrap();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(p, m, s)| !seen.contains(&(p.to_string(), m.to_string(), *s)))
            .collect();
        assert!(missing.is_empty(), "not exercised: {missing:?}");
        eprintln!("exercised: {seen:?}");
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Every `$ref` anywhere in the document.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "$ref"
                    && let Some(r) = x.as_str()
                {
                    out.push(r.to_string());
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The route table the server registers (`wipehook::routes::ROUTES`).
fn routes_served() -> BTreeSet<(String, String)> {
    wipehook::routes::ROUTES
        .iter()
        .map(|(method, path)| (path.to_string(), method.to_string()))
        .collect()
}

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

fn run_path(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

// ------------------------------------------------------------------ document only

#[test]
fn openapi_document_is_complete_and_matches_the_route_table() {
    let spec = Spec::load();

    let mut all = vec![];
    refs(&spec.doc, &mut all);
    for r in &all {
        spec.pointer(r);
    }

    let documented: BTreeSet<(String, String)> = spec.operations().into_iter().collect();
    let served = routes_served();
    assert!(served.len() >= 9, "routes served: {served:?}");
    assert_eq!(
        documented, served,
        "docs/openapi.yaml paths differ from the routes served (src/routes/mod.rs)"
    );

    for (path, method) in spec.operations() {
        let op = spec.operation(&path, &method);
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
        let secured = op.get("security").map(|s| s != &json!([])).unwrap_or(true);
        let responses = &op["responses"];
        for (status, r) in responses.as_object().unwrap() {
            let r = spec.deref(r);
            let what = format!("{method} {path} {status}");
            assert!(r["description"].is_string(), "{what}: description");
            assert!(
                r["headers"].get("x-request-id").is_some(),
                "{what}: x-request-id is on every response"
            );
            if status == "202" {
                for h in ["Location", "Retry-After"] {
                    assert!(r["headers"].get(h).is_some(), "{what}: {h}");
                }
            }
            // The challenge on 401, and on an authenticated operation's 503
            // (keys_unavailable).
            if status == "401" || (secured && status == "503") {
                assert!(r["headers"].get("WWW-Authenticate").is_some(), "{what}");
            }
            // HEAD answers carry no body.
            assert!(
                method == "head" || r["content"].is_object(),
                "{what}: content"
            );
            if status.starts_with('4') || status.starts_with('5') {
                // Every error is the JSON error body: no plain-text answer.
                let types: Vec<&String> = r["content"].as_object().unwrap().keys().collect();
                assert_eq!(types, ["application/json"], "{what}: error content types");
            }
        }
        // Operations with query parameters answer a bad query string with
        // 400 bad_query; the others never do.
        let takes_query = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| spec.deref(p)["in"] == "query");
        let bad_query = json!({"error": {"code": "bad_query", "message": "m"}});
        let documents_bad_query = responses.get("400").is_some_and(|r| {
            let schema = &spec.deref(r)["content"]["application/json"]["schema"];
            spec.is_valid(schema, &bad_query)
        });
        assert_eq!(
            takes_query, documents_bad_query,
            "{method} {path}: 400 bad_query is documented exactly where query parameters are"
        );
        assert_eq!(
            secured,
            responses.get("401").is_some(),
            "{method} {path}: authenticated operations, and only those, document 401"
        );
    }
}

#[test]
fn the_validator_rejects_what_the_document_forbids() {
    let spec = Spec::load();
    let schema = json!({"$ref": "#/components/schemas/RunReportDone"});
    let good = json!({
        "run_id": "0190a3c2-7d6e-7abc-8def-0123456789ab", "status": "completed",
        "outcome": "pending_acknowledgement", "reason": null, "hold_expires_at": null,
        "done": true, "tenant_id": "11111111-2222-4333-8444-555555555555", "trigger": "incident",
        "mode": "enforce", "force": false, "caller": "oid x",
        "incident": {"arm_id": "/subscriptions/x", "number": 7, "title": null, "severity": "High"},
        "created_at": "2026-01-01T00:00:00Z", "finished_at": null, "approved": null, "approvals": [], "attack_disruption": false,
        "cancelled": {"by": "oid y", "at": "2026-01-01T00:01:00Z"},
        "summary": {"users": 1, "devices": 1, "wipes_requested": 1, "would_request": 0,
            "acknowledged": 0, "already_requested": 0, "skipped": 0, "failed": 0, "cancelled": 0,
            "held_users": 0, "refused_users": 0, "protected_users": 0, "expired_users": 0,
            "unresolved_entities": 0,
            "outcomes": {"contained": 0, "no_devices": 0, "pending_acknowledgement": 1,
                "not_contained": 0, "held": 0, "dry_run": 0, "cancelled": 0, "in_progress": 0}},
        "users": [{"upn": "a@contoso.com", "mailbox_upn": "a@contoso.com", "display_name": "A", "object_id": null, "notes": [], "source": "s", "state": "done", "reason": null,
            "outcome": "pending_acknowledgement", "needs": [],
            "devices": [{"guid": "g", "device_id": "d", "device_type": "iPhone", "model": "m",
                "os": "o", "client_type": "EAS", "client_version": "16", "outcome": "requested",
                "reason": null, "notes": [], "requested_at": "2026-01-01T00:00:01Z",
                "acknowledged_at": null, "verification": "pending",
                "verify_until": "2026-01-02T00:00:01Z", "prior_run_id": null,
                "prior_requested_at": null, "prior_state": null, "skip_cause": null,
                "triage": "normal", "triage_reason": "an active device", "blocked_at": null}],
            "account_steps": []}],
        "unresolved": [], "errors": []
    });
    spec.assert_valid(&schema, &good, "a good report");
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        assert!(!spec.is_valid(&schema, &v), "accepted: {v}");
    };
    bad(&|v| {
        v.as_object_mut().unwrap().remove("finished_at");
    });
    bad(&|v| v["surprise"] = json!(1));
    bad(&|v| v["reason"] = json!(3));
    bad(&|v| v["done"] = json!(false));
    bad(&|v| v["status"] = json!("running"));
    bad(&|v| v["trigger"] = json!("alert"));
    bad(&|v| v["incident"]["number"] = json!("7"));
    bad(&|v| v["incident"] = json!("x"));
    bad(&|v| v["approved"] = json!({"by": "x"}));
    bad(&|v| v["summary"]["users"] = json!(-1));
    bad(&|v| v["users"][0]["devices"][0]["outcome"] = json!("wiped"));
    bad(&|v| v["users"][0]["devices"][0]["verification"] = json!("maybe"));
    bad(&|v| v["outcome"] = json!("completed"));
    bad(&|v| v["users"][0]["outcome"] = json!("partially_contained"));
    bad(&|v| v["users"][0]["devices"][0]["skip_cause"] = json!("old"));
    bad(&|v| v["users"][0]["devices"][0]["notes"] = json!([1]));
    bad(&|v| v["created_at"] = json!("yesterday"));
    bad(&|v| v["run_id"] = json!("not-a-uuid"));
    let mut ok = good.clone();
    ok["incident"] = Value::Null;
    ok["users"][0]["devices"][0]["verification"] = Value::Null;
    spec.assert_valid(&schema, &ok, "nullable members");

    let e401 = json!({"$ref": "#/components/schemas/Error401"});
    spec.assert_valid(
        &e401,
        &json!({"error": {"code": "invalid_token", "message": "m"}}),
        "401",
    );
    for v in [
        json!({"error": {"code": "run_not_found", "message": "m"}}),
        json!({"error": {"code": "invalid_token"}}),
        json!({"error": {"code": "invalid_token", "message": "m", "x": 1}}),
        json!({"code": "invalid_token", "message": "m"}),
    ] {
        assert!(!spec.is_valid(&e401, &v), "accepted: {v}");
    }

    let cancelled = json!({"$ref": "#/components/schemas/IncidentCancelled"});
    let one = json!({"run_id": "0190a3c2-7d6e-7abc-8def-0123456789ab", "cancellation": "requested", "cancelled_by": "oid y"});
    spec.assert_valid(
        &cancelled,
        &json!({"cancelled": [one.clone(), one.clone()]}),
        "an incident cancel answer",
    );
    let mut with_url = one.clone();
    with_url["status_url"] = json!("http://x/api/v1/runs/1");
    for v in [
        one.clone(),
        json!({"cancelled": [with_url]}),
        json!({"cancelled": [{"run_id": "0190a3c2-7d6e-7abc-8def-0123456789ab", "cancellation": "done", "cancelled_by": "oid y"}]}),
        json!({"cancelled": one}),
    ] {
        assert!(!spec.is_valid(&cancelled, &v), "accepted: {v}");
    }
}

// ------------------------------------------------------------------ against the service

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_and_nothing_else() {
    let spec = Spec::load();
    let app = spawn_app().await;
    let id = "00000000-0000-4000-8000-000000000000";
    for (path, method) in spec.operations() {
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let r = app
            .client
            .request(m.clone(), url(&app, &run_path(&path, id)))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let a = spec.check(&path, &method, r).await;
        assert!(
            !(a.status == 404 && a.code() == "not_found"),
            "{method} {path} is documented but not routed"
        );
        // A method the path does not document is not an operation: JSON 404.
        let other = [
            reqwest::Method::GET,
            reqwest::Method::DELETE,
            reqwest::Method::PUT,
        ]
        .into_iter()
        .find(|m| spec.doc["paths"][&path][m.as_str().to_ascii_lowercase()].is_null())
        .unwrap();
        let r = app
            .client
            .request(other.clone(), url(&app, &run_path(&path, id)))
            .send()
            .await
            .unwrap();
        let a = spec.check(ANY_ROUTE, other.as_str(), r).await;
        assert_eq!(a.code(), "not_found", "{other} {path}");
    }
    for path in ["/", "/nope", "/api/v1/runs", "/api/v1/runs/x/y/z"] {
        let r = app.client.get(url(&app, path)).send().await.unwrap();
        let a = spec.check(ANY_ROUTE, "GET", r).await;
        assert_eq!(a.code(), "not_found", "{path}");
    }
    // A caller's request id is echoed; an unusable one is replaced.
    let r = app
        .client
        .get(url(&app, "/healthz"))
        .header("x-request-id", "openapi-check-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec.check("/healthz", "get", r)
            .await
            .header("x-request-id"),
        "openapi-check-1"
    );
    let r = app
        .client
        .get(url(&app, "/healthz"))
        .header("x-request-id", "no spaces allowed")
        .send()
        .await
        .unwrap();
    let rid = spec
        .check("/healthz", "get", r)
        .await
        .header("x-request-id");
    assert!(uuid::Uuid::parse_str(&rid).is_ok(), "{rid}");

    spec.assert_seen(&[
        ("/healthz", "get", 200),
        ("/metrics", "get", 200),
        (INC, "post", 401),
        (INC_APPROVE, "post", 401),
        (INC_CANCEL, "post", 401),
        (RUN, "get", 401),
        (RUN_APPROVE, "post", 401),
        (RUN_CANCEL, "post", 401),
        (ANY_ROUTE, "GET", 404),
    ]);
}

/// Poll a run through the document until it answers 200.
async fn poll_done(spec: &Spec, app: &TestApp, location: &str) -> Answer {
    let started = Instant::now();
    loop {
        let r = app
            .client
            .get(location)
            .bearer_auth(app.h.run_token())
            .send()
            .await
            .unwrap();
        let a = spec.check(RUN, "get", r).await;
        if a.status == 200 {
            return a;
        }
        assert_eq!(a.status, 202, "{}", a.body);
        assert!(started.elapsed() < Duration::from_secs(30), "{}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 202 with `Location`: its body's `status_url` (if any) is the same URL.
fn location(a: &Answer) -> String {
    assert_eq!(a.status, 202, "{}", a.body);
    let loc = a.header("location");
    if let Some(s) = a.body.get("status_url") {
        assert_eq!(s, &json!(loc));
    }
    assert!(
        loc.ends_with(&format!(
            "/api/v1/runs/{}",
            a.body["run_id"].as_str().unwrap()
        )),
        "{loc}"
    );
    loc
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut r = app
        .client
        .post(url(app, path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containment_answers_match_the_document() {
    let spec = Spec::load();
    let app = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.server.body_limit_bytes = 64 * 1024
    })
    .await
    .unwrap();
    let sim = &app.h.sim;
    let run_token = app.h.run_token();
    let approver = app.h.approver_token();
    sim.add_user("ana@contoso.com", "b1000000-0000-4000-8000-000000000001");
    sim.add_device("ana@contoso.com", DeviceSpec::iphone());
    sim.add_device("ana@contoso.com", DeviceSpec::outlook());
    sim.add_user("eve@fabrikam.com", "b1000000-0000-4000-8000-000000000002");

    for p in ["/healthz", "/readyz", "/metrics"] {
        let r = app.client.get(url(&app, p)).send().await.unwrap();
        assert_eq!(spec.check(p, "get", r).await.status, 200, "{p}");
    }

    // 202 while work remains (Exchange is slow), then 200.
    sim.set_latency(Duration::from_millis(1500));
    let body = app
        .h
        .incident_body("oa-1", 101, "High", &["ana@contoso.com"]);
    spec.assert_valid(
        &spec.operation(INC, "post")["requestBody"]["content"]["application/json"]["schema"],
        &body,
        "the harness's incident body",
    );
    let a = spec
        .check(INC, "post", app.post_incident(&body).await)
        .await;
    assert_eq!(a.body["deduplicated"], false);
    let loc1 = location(&a);
    let run1 = a.body["run_id"].as_str().unwrap().to_string();
    let r = app
        .client
        .get(&loc1)
        .bearer_auth(&run_token)
        .send()
        .await
        .unwrap();
    let a = spec.check(RUN, "get", r).await;
    assert_eq!(a.status, 202, "still working: {}", a.body);
    location(&a);
    sim.set_latency(Duration::ZERO);
    let done = poll_done(&spec, &app, &loc1).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert_eq!(done.body["summary"]["wipes_requested"], 2);

    // The same delivery again: the same run.
    let a = spec
        .check(INC, "post", app.post_incident(&body).await)
        .await;
    assert_eq!(a.body["deduplicated"], true);
    assert_eq!(a.body["run_id"], run1.as_str());

    // Dry run, per call.
    let body2 = app
        .h
        .incident_body("oa-2", 102, "Medium", &["ana@contoso.com"]);
    let r = app
        .post(&format!("{INC}?mode=dry_run"), Some(&run_token), &body2)
        .await;
    let loc = location(&spec.check(INC, "post", r).await);
    let dry = poll_done(&spec, &app, &loc).await;
    assert_eq!(dry.body["mode"], "dry_run");
    assert_eq!(dry.body["summary"]["would_request"], 2, "{}", dry.body);

    // Entity trigger without incident: incident null, devices already requested.
    let entity = json!({"Entity": {"Type": "account", "Name": "ana", "UPNSuffix": "contoso.com"}});
    spec.assert_valid(
        &spec.operation(INC, "post")["requestBody"]["content"]["application/json"]["schema"],
        &entity,
        "an entity-trigger body",
    );
    let r = app.post(INC, Some(&run_token), &entity).await;
    let loc = location(&spec.check(INC, "post", r).await);
    let ent = poll_done(&spec, &app, &loc).await;
    assert_eq!(ent.body["trigger"], "entity");
    assert!(ent.body["incident"].is_null());
    assert_eq!(ent.body["summary"]["already_requested"], 2, "{}", ent.body);

    // Refused, protected and unresolvable entities.
    let mut body4 = app.h.incident_body(
        "oa-4",
        104,
        "Low",
        &["eve@fabrikam.com", "breakglass@contoso.com"],
    );
    body4["object"]["properties"]["relatedEntities"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kind": "Account", "properties": {"accountName": "ghost"}}));
    let r = app.post_incident(&body4).await;
    let loc = location(&spec.check(INC, "post", r).await);
    let mixed = poll_done(&spec, &app, &loc).await;
    assert_eq!(mixed.body["summary"]["refused_users"], 1, "{}", mixed.body);
    assert_eq!(mixed.body["summary"]["protected_users"], 1);
    assert!(mixed.body["summary"]["unresolved_entities"].as_u64() >= Some(1));

    // 401, and its WWW-Authenticate.
    let r = app.post(INC, None, &body).await;
    let a = spec.check(INC, "post", r).await;
    assert_eq!((a.status, a.code()), (401, "invalid_token"));
    assert!(
        a.header("www-authenticate")
            .starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{}",
        a.header("www-authenticate")
    );
    let r = app.client.get(&loc1).send().await.unwrap();
    assert_eq!(spec.check(RUN, "get", r).await.status, 401);
    let r = app
        .post(&run_path(RUN_APPROVE, &run1), Some(&run_token), &json!({}))
        .await;
    let a = spec.check(RUN_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (401, "invalid_token"), "wrong role");
    for p in [INC_APPROVE, INC_CANCEL] {
        let r = app.post(p, Some(&run_token), &body).await;
        assert_eq!(spec.check(p, "post", r).await.status, 401, "{p}");
    }

    // 400.
    for (p, token) in [
        (INC, &run_token),
        (INC_APPROVE, &approver),
        (INC_CANCEL, &approver),
    ] {
        let a = spec
            .check(p, "post", post_raw(&app, p, Some(token), "{not json").await)
            .await;
        assert_eq!((a.status, a.code()), (400, "malformed_json"), "{p}");
    }
    let r = app
        .post(&format!("{INC}?mode=sometimes"), Some(&run_token), &body)
        .await;
    let a = spec.check(INC, "post", r).await;
    assert_eq!((a.status, a.code()), (400, "bad_mode"));
    // A bad query string: JSON 400 bad_query, only after authentication
    // (an anonymous caller gets 401 whatever its query string).
    let r = app.post(&format!("{INC}?force=maybe"), None, &body).await;
    let a = spec.check(INC, "post", r).await;
    assert_eq!(a.status, 401);
    for (query, token) in [
        ("force=maybe", Some(&run_token)),
        ("force=true&force=false", Some(&run_token)),
        ("force=&mode=dry_run", Some(&run_token)),
    ] {
        let r = app
            .post(&format!("{INC}?{query}"), token.map(String::as_str), &body)
            .await;
        let a = spec.check(INC, "post", r).await;
        assert_eq!((a.status, a.code()), (400, "bad_query"), "{query}");
        assert!(a.headers.get("www-authenticate").is_none(), "{query}");
    }
    // Unknown parameters are ignored; operations without parameters ignore the query.
    let r = app
        .post(
            &format!("{INC}?mode=dry_run&color=blue"),
            Some(&run_token),
            &body2,
        )
        .await;
    let a = spec.check(INC, "post", r).await;
    assert_eq!((a.status, &a.body["deduplicated"]), (202, &json!(true)));
    let r = app
        .post(
            &format!("{INC_APPROVE}?force=maybe"),
            Some(&approver),
            &body,
        )
        .await;
    let a = spec.check(INC_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "not_held"));

    // 413.
    let big = json!({"object": {"id": app.incident_id("big"), "properties": {"description": "x".repeat(70 * 1024)}}});
    for (p, token) in [(INC, &run_token), (INC_APPROVE, &approver)] {
        let r = app.post(p, Some(token), &big).await;
        let a = spec.check(p, "post", r).await;
        assert_eq!((a.status, a.code()), (413, "body_too_large"), "{p}");
    }

    // 422, every code; 403.
    let cases = [
        (json!({"hello": "world"}), 422, "unknown_shape"),
        (
            json!({"SystemAlertId": "x", "Entities": []}),
            422,
            "alert_trigger_unsupported",
        ),
        (
            json!({"object": {"properties": {"relatedEntities": []}}}),
            422,
            "no_incident_id",
        ),
        (
            json!({"object": {"id": "/subscriptions/x/y"}}),
            422,
            "invalid_incident_id",
        ),
        (
            json!({"object": {"id": "/subscriptions/other/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/i"}}),
            403,
            "workspace_not_allowed",
        ),
    ];
    for (b, status, code) in cases {
        let a = spec.check(INC, "post", app.post_incident(&b).await).await;
        assert_eq!((a.status, a.code()), (status, code), "{b}");
    }
    let r = app.post(INC_CANCEL, Some(&approver), &entity).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (422, "no_incident_id"));
    let r = app
        .post(INC_APPROVE, Some(&approver), &json!({"hello": 1}))
        .await;
    let a = spec.check(INC_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (422, "unknown_shape"));

    // 404 run_not_found.
    let nobody = "00000000-0000-4000-8000-000000000000";
    let r = app
        .client
        .get(url(&app, &run_path(RUN, nobody)))
        .bearer_auth(&run_token)
        .send()
        .await
        .unwrap();
    let a = spec.check(RUN, "get", r).await;
    assert_eq!((a.status, a.code()), (404, "run_not_found"));
    for p in [RUN_APPROVE, RUN_CANCEL] {
        let r = app
            .post(&run_path(p, nobody), Some(&approver), &json!({}))
            .await;
        let a = spec.check(p, "post", r).await;
        assert_eq!((a.status, a.code()), (404, "run_not_found"), "{p}");
    }
    let none = app.h.incident_body("oa-none", 199, "High", &[]);
    for p in [INC_APPROVE, INC_CANCEL] {
        let r = app.post(p, Some(&approver), &none).await;
        let a = spec.check(p, "post", r).await;
        assert_eq!((a.status, a.code()), (404, "run_not_found"), "{p}");
    }

    // 409 not_held.
    let r = app
        .post(&run_path(RUN_APPROVE, &run1), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "not_held"));
    let r = app.post(INC_APPROVE, Some(&approver), &body).await;
    let a = spec.check(INC_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "not_held"));

    // Cancel a run: 202, then 409; the report shows who cancelled.
    let r = app
        .post(&run_path(RUN_CANCEL, &run1), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_CANCEL, "post", r).await;
    location(&a);
    let r = app
        .post(&run_path(RUN_CANCEL, &run1), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "already_cancelled"));
    let started = Instant::now();
    loop {
        let a = poll_done(&spec, &app, &loc1).await;
        assert!(a.body["cancelled"]["by"].is_string());
        if a.body["summary"]["cancelled"] == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cancel an incident whose runs have nothing left to undo: its only run
    // was cancelled by id (oa-1), or was a dry run (oa-2).
    for b in [&body, &body2] {
        let r = app.post(INC_CANCEL, Some(&approver), b).await;
        let a = spec.check(INC_CANCEL, "post", r).await;
        assert_eq!((a.status, a.code()), (409, "nothing_to_cancel"));
    }

    // Cancel an incident: 200 with every run that requested wipes (newest
    // first), not its dry run; then 409 nothing_to_cancel.
    let mut runs = vec![];
    let mut locs = vec![];
    for (i, (upn, q)) in [
        ("bob@contoso.com", ""),
        ("carol@contoso.com", ""),
        ("carol@contoso.com", "?mode=dry_run"),
    ]
    .into_iter()
    .enumerate()
    {
        if q.is_empty() {
            sim.add_user(upn, &format!("b1000000-0000-4000-8000-00000000001{i}"));
            sim.add_device(upn, DeviceSpec::iphone());
        }
        let b = app.h.incident_body("oa-5", 105, "High", &[upn]);
        let r = app.post(&format!("{INC}{q}"), Some(&run_token), &b).await;
        let loc = location(&spec.check(INC, "post", r).await);
        let done = poll_done(&spec, &app, &loc).await;
        let key = if q.is_empty() {
            "wipes_requested"
        } else {
            "would_request"
        };
        assert_eq!(done.body["summary"][key], 1, "{}", done.body);
        runs.push(done.body["run_id"].as_str().unwrap().to_string());
        locs.push(loc);
    }
    let b5 = app.h.incident_body("oa-5", 105, "High", &[]);
    let r = app.post(INC_CANCEL, Some(&approver), &b5).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let ids: Vec<&str> = a.body["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [runs[1].as_str(), runs[0].as_str()], "{}", a.body);
    let r = app.post(INC_CANCEL, Some(&approver), &b5).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "nothing_to_cancel"));
    for loc in &locs[..2] {
        let started = Instant::now();
        loop {
            let a = poll_done(&spec, &app, loc).await;
            assert!(a.body["cancelled"]["by"].is_string());
            if a.body["summary"]["cancelled"] == 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{}", a.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let dry = poll_done(&spec, &app, &locs[2]).await;
    assert!(dry.body["cancelled"].is_null(), "{}", dry.body);

    spec.assert_seen(&[
        ("/healthz", "get", 200),
        ("/readyz", "get", 200),
        ("/metrics", "get", 200),
        (INC, "post", 202),
        (INC, "post", 400),
        (INC, "post", 401),
        (INC, "post", 403),
        (INC, "post", 413),
        (INC, "post", 422),
        (INC_APPROVE, "post", 400),
        (INC_APPROVE, "post", 401),
        (INC_APPROVE, "post", 404),
        (INC_APPROVE, "post", 409),
        (INC_APPROVE, "post", 413),
        (INC_APPROVE, "post", 422),
        (INC_CANCEL, "post", 200),
        (INC_CANCEL, "post", 400),
        (INC_CANCEL, "post", 401),
        (INC_CANCEL, "post", 404),
        (INC_CANCEL, "post", 409),
        (INC_CANCEL, "post", 422),
        (RUN, "get", 200),
        (RUN, "get", 202),
        (RUN, "get", 401),
        (RUN, "get", 404),
        (RUN_APPROVE, "post", 401),
        (RUN_APPROVE, "post", 404),
        (RUN_APPROVE, "post", 409),
        (RUN_CANCEL, "post", 202),
        (RUN_CANCEL, "post", 404),
        (RUN_CANCEL, "post", 409),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_run_answers_match_the_document() {
    let spec = Spec::load();
    let app = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.policy.max_targets_per_run = 1
    })
    .await
    .unwrap();
    let sim = &app.h.sim;
    let approver = app.h.approver_token();
    for (u, i) in [("h1@contoso.com", 1), ("h2@contoso.com", 2)] {
        sim.add_user(u, &format!("c1000000-0000-4000-8000-00000000000{i}"));
        sim.add_device(u, DeviceSpec::iphone());
    }
    let held = async |name: &str, number: i64| -> (Value, String, String) {
        let body = app
            .h
            .incident_body(name, number, "High", &["h1@contoso.com", "h2@contoso.com"]);
        sim.add_incident(
            name,
            body["object"]["properties"]["relatedEntities"].clone(),
        );
        let a = spec
            .check(INC, "post", app.post_incident(&body).await)
            .await;
        let loc = location(&a);
        let r = poll_done(&spec, &app, &loc).await;
        assert_eq!(r.body["status"], "held", "{}", r.body);
        assert_eq!(r.body["done"], true);
        assert!(r.body["finished_at"].is_null());
        (body, r.body["run_id"].as_str().unwrap().to_string(), loc)
    };

    // Approve one run: 202, then 409; the run completes with its approver.
    let (_, run, loc) = held("hb-1", 201).await;
    let r = app
        .post(&run_path(RUN_APPROVE, &run), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_APPROVE, "post", r).await;
    location(&a);
    assert_eq!(a.body["targets_released"], 2);
    let r = app
        .post(&run_path(RUN_APPROVE, &run), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "not_held"));
    let done = poll_done(&spec, &app, &loc).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert!(done.body["approved"]["by"].is_string());

    // Approve an incident: 200, then 409.
    let (body, run, loc) = held("hb-2", 202).await;
    let r = app.post(INC_APPROVE, Some(&approver), &body).await;
    let a = spec.check(INC_APPROVE, "post", r).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["approved"][0]["run_id"], run.as_str());
    let r = app.post(INC_APPROVE, Some(&approver), &body).await;
    let a = spec.check(INC_APPROVE, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "not_held"));
    poll_done(&spec, &app, &loc).await;

    // Cancel a held run: 202; it completes with nothing wiped.
    let (body, run, loc) = held("hb-3", 203).await;
    let r = app
        .post(&run_path(RUN_CANCEL, &run), Some(&approver), &json!({}))
        .await;
    location(&spec.check(RUN_CANCEL, "post", r).await);
    let done = poll_done(&spec, &app, &loc).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert_eq!(done.body["users"][0]["state"], "cancelled");
    let r = app.post(INC_CANCEL, Some(&approver), &body).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "nothing_to_cancel"));

    // Cancel an incident with a held run: 200; it completes with nothing wiped.
    let (body, run, loc) = held("hb-4", 204).await;
    let r = app.post(INC_CANCEL, Some(&approver), &body).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["cancelled"],
        json!([{"run_id": run, "cancellation": "requested", "cancelled_by": a.body["cancelled"][0]["cancelled_by"]}])
    );
    let done = poll_done(&spec, &app, &loc).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert_eq!(done.body["users"][0]["state"], "cancelled");
    assert_eq!(done.body["summary"]["wipes_requested"], 0);
    let r = app.post(INC_CANCEL, Some(&approver), &body).await;
    let a = spec.check(INC_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (409, "nothing_to_cancel"));

    spec.assert_seen(&[
        (INC, "post", 202),
        (RUN, "get", 200),
        (RUN_APPROVE, "post", 202),
        (RUN_APPROVE, "post", 409),
        (INC_APPROVE, "post", 200),
        (INC_APPROVE, "post", 409),
        (RUN_CANCEL, "post", 202),
        (INC_CANCEL, "post", 200),
        (INC_CANCEL, "post", 409),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_match_the_document() {
    let spec = Spec::load();
    let app = spawn_app().await;
    let run_token = app.h.run_token();
    let approver = app.h.approver_token();
    let body = app.h.incident_body("oc-1", 301, "High", &[]);
    let id = "00000000-0000-4000-8000-000000000000";

    // Signing keys cannot be fetched: fail closed.
    app.h.sim.set_oidc_available(false);
    let a = spec
        .check(INC, "post", app.post_incident(&body).await)
        .await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    // The token may be fine: bearer auth applies, no error is claimed.
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"wipehook\"");
    assert_eq!(a.header("retry-after"), "30");
    let r = app
        .client
        .get(url(&app, &run_path(RUN, id)))
        .bearer_auth(&run_token)
        .send()
        .await
        .unwrap();
    let a = spec.check(RUN, "get", r).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"wipehook\"");
    assert_eq!(a.header("retry-after"), "30");
    for p in [INC_APPROVE, INC_CANCEL] {
        let r = app.post(p, Some(&approver), &body).await;
        let a = spec.check(p, "post", r).await;
        assert_eq!((a.status, a.code()), (503, "keys_unavailable"), "{p}");
        assert_eq!(a.header("www-authenticate"), "Bearer realm=\"wipehook\"");
    }
    let r = app
        .post(&run_path(RUN_CANCEL, id), Some(&approver), &json!({}))
        .await;
    let a = spec.check(RUN_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"wipehook\"");
    // A missing token is still 401, with the invalid_token challenge.
    let r = app.post(&run_path(RUN_CANCEL, id), None, &json!({})).await;
    let a = spec.check(RUN_CANCEL, "post", r).await;
    assert_eq!((a.status, a.code()), (401, "invalid_token"));
    assert!(
        a.header("www-authenticate")
            .starts_with("Bearer error=\"invalid_token\", error_description=\"")
    );
    let r = app.client.get(url(&app, "/readyz")).send().await.unwrap();
    let a = spec.check("/readyz", "get", r).await;
    assert_eq!((a.status, &a.body["status"]), (503, &json!("not_ready")));

    // Shutting down: every write refused before the token is looked at.
    app.running().shared.begin_shutdown();
    let r = app.client.get(url(&app, "/readyz")).send().await.unwrap();
    let a = spec.check("/readyz", "get", r).await;
    assert_eq!(
        (a.status, &a.body["status"]),
        (503, &json!("shutting_down"))
    );
    for (p, token) in [
        (INC.to_string(), None),
        (INC.to_string(), Some(&run_token)),
        (INC_APPROVE.to_string(), Some(&approver)),
        (INC_CANCEL.to_string(), Some(&approver)),
        (run_path(RUN_APPROVE, id), Some(&approver)),
        (run_path(RUN_CANCEL, id), Some(&approver)),
    ] {
        let template = match p.as_str() {
            INC | INC_APPROVE | INC_CANCEL => p.clone(),
            x if x.ends_with("/approve") => RUN_APPROVE.into(),
            _ => RUN_CANCEL.into(),
        };
        let r = app.post(&p, token.map(String::as_str), &body).await;
        let a = spec.check(&template, "post", r).await;
        assert_eq!((a.status, a.code()), (503, "shutting_down"), "{p}");
        assert_eq!(a.header("retry-after"), "5");
        assert!(a.headers.get("www-authenticate").is_none());
    }
    // A bad query string is looked at only after the shutdown check and
    // authentication.
    let r = app
        .post(&format!("{INC}?force=maybe"), Some(&run_token), &body)
        .await;
    let a = spec.check(INC, "post", r).await;
    assert_eq!((a.status, a.code()), (503, "shutting_down"));
    // Polling is still answered (here: still no keys).
    let r = app
        .client
        .get(url(&app, &run_path(RUN, id)))
        .bearer_auth(&run_token)
        .send()
        .await
        .unwrap();
    let a = spec.check(RUN, "get", r).await;
    assert_eq!(a.code(), "keys_unavailable");
    let r = app.client.get(url(&app, "/healthz")).send().await.unwrap();
    assert_eq!(spec.check("/healthz", "get", r).await.status, 200);

    spec.assert_seen(&[
        ("/readyz", "get", 503),
        (INC, "post", 503),
        (INC_APPROVE, "post", 503),
        (INC_CANCEL, "post", 503),
        (RUN, "get", 503),
        (RUN_APPROVE, "post", 503),
        (RUN_CANCEL, "post", 503),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_readiness_matches_the_document() {
    let spec = Spec::load();
    let app = spawn_with(SimOptions::default(), StoreKind::Sqlite, |s| {
        s.doctor.canary_upn = Some("canary@contoso.com".into());
        s.doctor.canary_interval = Duration::from_millis(200);
    })
    .await
    .unwrap();
    app.h
        .sim
        .add_device("canary@contoso.com", DeviceSpec::outlook());
    app.h
        .sim
        .rename_exchange_field("Get-MobileDevice", "Guid", "ObjectGuid");
    let started = Instant::now();
    loop {
        let r = app.client.get(url(&app, "/readyz")).send().await.unwrap();
        let a = spec.check("/readyz", "get", r).await;
        assert_eq!(a.status, 200, "degraded is still ready");
        if a.body["status"] == "degraded" {
            assert_eq!(a.body["degraded"][0]["check"], "exchange.mobile_device");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
