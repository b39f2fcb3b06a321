//! The analytics rules that watch wipehook (deploy/sentinel-rules): a valid
//! ARM template of Sentinel scheduled rules, whose queries, once their
//! parameters are spliced in, are well-formed KQL over the tables they name,
//! and whose kill-switch rule matches the log lines wipehook really writes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/sentinel-rules/azuredeploy.json"))
        .expect("deploy/sentinel-rules/azuredeploy.json");
    serde_json::from_str(&text).expect("the template is JSON")
}

/// `'...'` with `''` for a quote; returns the literal and the rest.
fn literal(s: &str) -> (String, &str) {
    assert!(s.starts_with('\''), "a string literal: {s:.40}");
    let mut out = String::new();
    let mut chars = s[1..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                out.push('\'');
            } else {
                return (out, &s[1 + i + 1..]);
            }
        } else {
            out.push(c);
        }
    }
    panic!("unterminated literal")
}

/// Evaluate the template's `[concat(...)]` of literals, `parameters('x')`
/// and `string(parameters('x'))` with the given values.
fn evaluate(expr: &str, value: &dyn Fn(&str) -> Value) -> String {
    let mut s = expr
        .strip_prefix("[concat(")
        .and_then(|s| s.strip_suffix(")]"))
        .unwrap_or_else(|| panic!("the query is a concat expression: {expr:.60}"));
    let mut out = String::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return out;
        }
        if s.starts_with('\'') {
            let (lit, rest) = literal(s);
            out.push_str(&lit);
            s = rest;
        } else if let Some(rest) = s.strip_prefix("string(parameters(") {
            let (name, rest) = literal(rest);
            let v = value(&name);
            out.push_str(&match v {
                Value::String(t) => t,
                other => other.to_string(),
            });
            s = rest.strip_prefix("))").expect("))");
        } else if let Some(rest) = s.strip_prefix("parameters(") {
            let (name, rest) = literal(rest);
            out.push_str(value(&name).as_str().expect("a string parameter"));
            s = rest.strip_prefix(')').expect(")");
        } else {
            panic!("unexpected in concat: {s:.40}");
        }
        s = s.trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn used_parameters(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("parameters('") {
                rest = &rest[i + "parameters('".len()..];
                let end = rest.find('\'').unwrap();
                out.insert(rest[..end].to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| used_parameters(x, out)),
        Value::Object(o) => o.values().for_each(|x| used_parameters(x, out)),
        _ => {}
    }
}

fn iso_minutes(d: &str) -> u64 {
    let rest = d
        .strip_prefix("PT")
        .unwrap_or_else(|| panic!("ISO 8601 duration: {d}"));
    let (n, unit) = rest.split_at(rest.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d}"));
    match unit {
        "M" => n,
        "H" => n * 60,
        _ => panic!("duration unit in {d}"),
    }
}

/// Brackets and quotes balance; every pipe line starts with a tabular operator.
fn well_formed_kql(q: &str, what: &str) {
    let code: String = q
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut depth = (0i32, 0i32);
    let mut in_string = false;
    for c in code.chars() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth.0 += 1,
            ')' if !in_string => depth.0 -= 1,
            '[' if !in_string => depth.1 += 1,
            ']' if !in_string => depth.1 -= 1,
            _ => {}
        }
        assert!(
            depth.0 >= 0 && depth.1 >= 0,
            "{what}: a bracket closes before it opens"
        );
    }
    assert!(!in_string, "{what}: an unterminated string");
    assert_eq!(depth, (0, 0), "{what}: brackets do not balance");
    let operators = [
        "where",
        "extend",
        "summarize",
        "project",
        "top",
        "order",
        "take",
        "join",
        "union",
        "mv-apply",
    ];
    for l in code.lines().map(str::trim).filter(|l| l.starts_with('|')) {
        let op = l[1..].split_whitespace().next().unwrap_or("");
        assert!(
            operators.contains(&op),
            "{what}: unknown operator '{op}' in: {l}"
        );
    }
    for l in code
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("let "))
    {
        assert!(
            l.ends_with(';'),
            "{what}: a let statement ends with ';': {l}"
        );
    }
}

#[test]
fn the_rules_are_a_valid_template_of_scheduled_rules() {
    let t = template();
    assert_eq!(
        t["$schema"],
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    );
    assert_eq!(t["contentVersion"], "1.0.0.0");
    let declared: BTreeSet<String> = t["parameters"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut used = BTreeSet::new();
    used_parameters(&t["resources"], &mut used);
    used_parameters(&t["outputs"], &mut used);
    assert_eq!(
        used, declared,
        "every parameter declared is used, and only those"
    );
    for p in t["parameters"].as_object().unwrap().values() {
        assert!(p["metadata"]["description"].is_string());
    }
    let tactics = [
        "Reconnaissance",
        "ResourceDevelopment",
        "InitialAccess",
        "Execution",
        "Persistence",
        "PrivilegeEscalation",
        "DefenseEvasion",
        "CredentialAccess",
        "Discovery",
        "LateralMovement",
        "Collection",
        "Exfiltration",
        "CommandAndControl",
        "Impact",
    ];
    let resources = t["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2);
    for r in resources {
        assert_eq!(
            r["type"],
            "Microsoft.OperationalInsights/workspaces/providers/alertRules"
        );
        assert_eq!(r["kind"], "Scheduled");
        assert!(r["apiVersion"].as_str().unwrap().starts_with("20"));
        let name = r["name"].as_str().unwrap();
        assert!(
            name.starts_with(
                "[concat(parameters('workspaceName'), '/Microsoft.SecurityInsights/', "
            ),
            "{name}"
        );
        let p = &r["properties"];
        let what = p["displayName"].as_str().unwrap();
        assert!(
            ["Informational", "Low", "Medium", "High"].contains(&p["severity"].as_str().unwrap())
        );
        assert_eq!(p["enabled"], true);
        let freq = iso_minutes(p["queryFrequency"].as_str().unwrap());
        let period = iso_minutes(p["queryPeriod"].as_str().unwrap());
        assert!(
            (5..=period).contains(&freq),
            "{what}: 5 min <= frequency <= period"
        );
        assert!(period <= 14 * 24 * 60, "{what}: period at most 14 days");
        iso_minutes(p["suppressionDuration"].as_str().unwrap());
        assert!(
            ["GreaterThan", "LessThan", "Equal", "NotEqual"]
                .contains(&p["triggerOperator"].as_str().unwrap())
        );
        assert!(p["triggerThreshold"].is_u64());
        for tac in p["tactics"].as_array().unwrap() {
            assert!(
                tactics.contains(&tac.as_str().unwrap()),
                "{what}: tactic {tac}"
            );
        }
        assert!(
            p["incidentConfiguration"]["createIncident"]
                .as_bool()
                .unwrap()
        );
        // The columns the alert maps are made by the query.
        let q = evaluate(p["query"].as_str().unwrap(), &sample);
        well_formed_kql(&q, what);
        for col in p["customDetails"].as_object().unwrap().values() {
            let col = col.as_str().unwrap();
            assert!(
                q.contains(&format!("{col} =")),
                "{what}: custom detail column {col}"
            );
        }
        for m in p["entityMappings"].as_array().into_iter().flatten() {
            for f in m["fieldMappings"].as_array().unwrap() {
                let col = f["columnName"].as_str().unwrap();
                assert!(
                    q.contains(&format!("{col} =")),
                    "{what}: entity column {col}"
                );
            }
        }
    }
}

fn sample(name: &str) -> Value {
    match name {
        "wipehookIdentities" => {
            serde_json::json!(["11111111-2222-4333-8444-555555555555", "wipehook"])
        }
        "wipeThreshold" => serde_json::json!(20),
        "logTable" => serde_json::json!("ContainerAppConsoleLogs_CL"),
        "logColumn" => serde_json::json!("Log_s"),
        other => panic!("no sample for {other}"),
    }
}

#[test]
fn the_mass_wipe_rule_reads_the_exchange_admin_audit_log() {
    let t = template();
    let q = evaluate(
        t["resources"][0]["properties"]["query"].as_str().unwrap(),
        &sample,
    );
    for needle in [
        "OfficeActivity",
        "RecordType == \"ExchangeAdmin\"",
        "Operation =~ \"Clear-MobileDevice\"",
        "let wipehookIdentities = dynamic([\"11111111-2222-4333-8444-555555555555\",\"wipehook\"]);",
        "let threshold = 20;",
        "Wipes > threshold",
        "FullWipes > 0",
        // Each switch by its value: -AccountOnly:$false is a full wipe, and
        // -Cancel:$false is not a cancel (a bare `has` would miss both).
        "mv-apply p = P on",
        "tostring(p.Name) =~ \"AccountOnly\"",
        "tostring(p.Name) =~ \"Cancel\"",
        "Cancel != \"true\"",
        "FullWipe = AccountOnly != \"true\"",
    ] {
        assert!(q.contains(needle), "the query has {needle}:\n{q}");
    }
}

#[test]
fn the_kill_switch_rule_matches_what_wipehook_logs() {
    let t = template();
    let q = evaluate(
        t["resources"][1]["properties"]["query"].as_str().unwrap(),
        &sample,
    );
    assert!(q.contains("table(\"ContainerAppConsoleLogs_CL\")"), "{q}");
    assert!(q.contains("column_ifexists(\"Log_s\""), "{q}");
    // The phrases the rule looks for are in the messages wipehook logs, with
    // the fields it reads.
    let src = ["src/control.rs", "src/state.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join(f)).unwrap())
        .collect::<String>();
    for phrase in ["kill switch engaged", "kill switch lifted"] {
        assert!(q.contains(&format!("Line has \"{phrase}\"")), "{phrase}");
        assert!(
            src.contains(&format!("\"{phrase}")),
            "wipehook logs '{phrase}...'"
        );
    }
    for field in ["by", "reason", "kill_switch"] {
        assert!(q.contains(&format!("Entry.{field}")), "{field}");
        assert!(
            src.contains(&format!("{field} =")),
            "wipehook logs the field {field}"
        );
    }
}
