//! `wipehook demo`: the whole product on one machine. Starts the simulated
//! tenant and wipehook on its embedded defaults (SQLite), sends a sample
//! incident through the real endpoint with a real signed token, prints the
//! run's result and the incident comment, then keeps serving.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{Harness, account_entity};
use wipehook_sim::{DeviceSpec, SimOptions};

pub async fn run(port: u16, once: bool) -> Result<()> {
    crate::telemetry::init("warn", false);
    let h = Harness::start(SimOptions {
        latency: Duration::from_millis(30),
        ..Default::default()
    })
    .await?;
    let sim = &h.sim;
    // The tenant: three users with phones, and a break-glass admin.
    sim.add_user("alice@contoso.com", "11111111-aaaa-4aaa-8aaa-000000000001");
    sim.add_user("bob@contoso.com", "11111111-aaaa-4aaa-8aaa-000000000002");
    sim.add_user("carol@contoso.com", "11111111-aaaa-4aaa-8aaa-000000000003");
    sim.add_user(
        "breakglass@contoso.com",
        "11111111-aaaa-4aaa-8aaa-000000000004",
    );
    sim.add_device("alice@contoso.com", DeviceSpec::iphone());
    sim.add_device("alice@contoso.com", DeviceSpec::outlook());
    sim.add_device("bob@contoso.com", DeviceSpec::android_native_eas());
    sim.add_device("bob@contoso.com", DeviceSpec::old_eas());
    sim.add_device("carol@contoso.com", DeviceSpec::outlook());
    sim.add_device("breakglass@contoso.com", DeviceSpec::iphone());

    let mut settings = h.settings();
    settings.server.listen = format!("127.0.0.1:{port}");
    settings.policy.verify_interval = Duration::from_secs(2);
    let running = h
        .spawn(settings)
        .await
        .with_context(|| format!("cannot start wipehook on port {port} (try --port 0)"))?;
    let base = format!("http://127.0.0.1:{}", running.port);

    // The incident: the trigger body names Alice, Bob and the break-glass
    // account; Sentinel's own entity list (read through ARM) adds Carol.
    let incident = "7d3f0c2a-5b1e-4c8d-9a6f-2e4b8c1d0f3a";
    let body = h.incident_body(
        incident,
        4711,
        "High",
        &[
            "alice@contoso.com",
            "bob@contoso.com",
            "breakglass@contoso.com",
        ],
    );
    let mut arm_entities = body["object"]["properties"]["relatedEntities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    arm_entities.push(account_entity("carol@contoso.com"));
    sim.add_incident(incident, Value::Array(arm_entities));

    println!("wipehook demo");
    println!(
        "  simulated tenant: {} (Entra, Exchange InvokeCommand, ARM, Graph over HTTPS)",
        sim.https_url()
    );
    println!(
        "  wipehook:         {base} (store: SQLite in {})",
        h.dir.display()
    );
    println!();
    let client = reqwest::Client::new();
    let token = h.run_token();
    let started = Instant::now();
    let resp = client
        .post(format!("{base}/api/v1/sentinel/incidents"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let accepted: Value = resp.json().await?;
    println!("POST /api/v1/sentinel/incidents  ->  {status}  Location: {location}");
    println!("  {}", accepted);
    anyhow::ensure!(status.as_u16() == 202, "the demo incident was not accepted");

    // Poll as Logic Apps does (Retry-After shortened for the demo).
    let result = loop {
        let r = client.get(&location).bearer_auth(&token).send().await?;
        if r.status().as_u16() == 200 {
            break r.json::<Value>().await?;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "GET {location}  ->  200 after {} ms",
        started.elapsed().as_millis()
    );
    print_result(&result);

    // The phones sync: the comment follows the wipes to "acknowledged".
    let requested: Vec<String> = sim
        .exchange_calls()
        .iter()
        .filter(|c| c.cmdlet == "Clear-MobileDevice" && c.response_status == 200)
        .filter_map(|c| c.parameters["Identity"].as_str().map(String::from))
        .collect();
    if let Some(first) = requested.first() {
        sim.sync_device(first);
        println!(
            "\n(the device {first} syncs and acknowledges its wipe; wipehook's verification picks it up)"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let arm_id = sim.incident_arm_id(incident);
    for c in sim.comments(&arm_id) {
        println!(
            "\nIncident comment {} (written {} time(s)):\n{}",
            c.id,
            c.puts,
            html_to_text(&c.message)
        );
    }
    let full_wipes = sim
        .exchange_calls()
        .iter()
        .filter(|c| {
            c.cmdlet == "Clear-MobileDevice"
                && c.parameters.get("AccountOnly") != Some(&Value::Bool(true))
                && c.parameters.get("Cancel").is_none()
        })
        .count();
    println!(
        "\nExchange calls: {} (Clear-MobileDevice without AccountOnly: {full_wipes})",
        sim.exchange_calls().len()
    );

    if once {
        running.stop().await;
        return Ok(());
    }
    let body_file = h.dir.join("incident.json");
    std::fs::write(&body_file, serde_json::to_vec_pretty(&body)?)?;
    println!(
        "\nwipehook keeps serving. Try it (the token is valid for an hour; a new eventUniqueId makes a new run, the same body is deduplicated):"
    );
    println!(
        "  curl -sS -X POST {base}/api/v1/sentinel/incidents -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d @{}",
        h.run_token(),
        body_file.display()
    );
    println!("  curl -sS {base}/metrics");
    println!("Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    Ok(())
}

fn print_result(r: &Value) {
    println!(
        "  status: {}   reason: {}",
        r["status"].as_str().unwrap_or(""),
        r["reason"].as_str().unwrap_or("-")
    );
    println!("  summary: {}", r["summary"]);
    for u in r["users"].as_array().into_iter().flatten() {
        println!(
            "  {}  [{}]{}",
            u["upn"].as_str().unwrap_or(""),
            u["state"].as_str().unwrap_or(""),
            u["reason"]
                .as_str()
                .map(|s| format!(" {s}"))
                .unwrap_or_default()
        );
        for d in u["devices"].as_array().into_iter().flatten() {
            println!(
                "      {} {} ({} {})  ->  {}{}",
                d["model"].as_str().unwrap_or(""),
                d["device_id"].as_str().unwrap_or(""),
                d["client_type"].as_str().unwrap_or(""),
                d["client_version"].as_str().unwrap_or(""),
                d["outcome"].as_str().unwrap_or(""),
                d["reason"]
                    .as_str()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// A terminal rendering of the comment's basic HTML.
fn html_to_text(html: &str) -> String {
    let s = html
        .replace("<br>", "\n  ")
        .replace("</p>", "\n")
        .replace("</tr>", "\n")
        .replace("</td>", " | ")
        .replace("</th>", " | ")
        .replace("<li>", "  - ")
        .replace("</h3>", "\n");
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
