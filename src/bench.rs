//! `wipehook bench`: the real service (this binary, `serve`, as a child
//! process with the embedded SQLite store) against the simulated tenant with
//! a configurable latency and Exchange concurrency cap. Figures and targets
//! are in docs/performance.md; nothing here asserts a time.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::harness::Harness;
use wipehook_sim::{DeviceSpec, Fault, FaultRule, SimOptions};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// all | latency | storm | intake | fairness | faults
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// Simulated latency of every Exchange, ARM and Graph call (ms).
    #[arg(long, default_value_t = 100)]
    pub latency_ms: u64,
    /// Simulated Exchange concurrency cap per tenant.
    #[arg(long, default_value_t = 9)]
    pub cap: usize,
    /// (a) incidents measured one after another (after one warm-up).
    #[arg(long, default_value_t = 21)]
    pub latency_runs: usize,
    /// (b) users, one incident each, two devices each.
    #[arg(long, default_value_t = 500)]
    pub storm_users: usize,
    /// (b) calls in flight at once while the wave is sent.
    #[arg(long, default_value_t = 64)]
    pub storm_senders: usize,
    /// (c) authenticated calls sent.
    #[arg(long, default_value_t = 20000)]
    pub intake_requests: usize,
    /// (c) calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub intake_concurrency: usize,
    /// (f) incidents sent at once, two users of two phones each.
    #[arg(long, default_value_t = 15)]
    pub fault_incidents: usize,
    /// (f) share of Exchange calls that fail (503, 504, dropped, 4 s hang,
    /// 429 with a 1.5 s Retry-After, in equal parts).
    #[arg(long, default_value_t = 0.3)]
    pub fault_rate: f64,
    /// (f) the seed of the faults (the same seed, the same faults per device).
    #[arg(long, default_value_t = 12)]
    pub fault_seed: u64,
    /// Store for the service (default: SQLite in a temporary folder).
    #[arg(long)]
    pub store_url: Option<String>,
}

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Peak resident set size of the service process (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
}

async fn start_service(h: &Harness, settings: &Settings, name: &str) -> Result<Service> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut s = settings.clone();
    s.server.listen = format!("127.0.0.1:{port}");
    s.server.public_url = format!("http://127.0.0.1:{port}");
    let config = h.dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml::to_string(&s)?)?;
    let log = std::fs::File::create(h.dir.join(format!("{name}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting the service")?;
    let svc = Service {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", svc.base)).await
            && r.status().is_success()
        {
            return Ok(svc);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not start; see {}",
            h.dir.join(format!("{name}.log")).display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bench_settings(h: &Harness, args: &BenchArgs) -> Settings {
    let mut s = h.settings();
    if let Some(u) = &args.store_url {
        s.store.url = u.clone().into();
    }
    // Follow-up checks are not part of any figure.
    s.policy.verify_interval = Duration::from_secs(3600);
    s.policy.max_targets_per_run = 1000;
    s.policy.max_wipes_per_hour = 1_000_000;
    s.guard.max_wipes_per_hour = 1_000_000;
    s.worker.exchange_max_concurrency = 32;
    // The canary's reads are not part of any figure.
    s.doctor.canary_interval = Duration::ZERO;
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> Result<()> {
    // The simulated tenant's dropped connections (scenario f) are its own
    // doing, not worth an ERROR line each.
    crate::telemetry::init("warn,actix_http::h1::dispatcher=off", false);
    println!(
        "wipehook bench: {} core(s), {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        machine()
    );
    let all = args.scenario == "all";
    let mut report = vec![];
    if all || args.scenario == "latency" {
        report.push(latency(&args).await?);
    }
    if all || args.scenario == "storm" {
        report.push(storm(&args).await?);
    }
    if all || args.scenario == "intake" {
        report.push(intake(&args).await?);
    }
    if all || args.scenario == "fairness" {
        report.push(fairness(&args).await?);
    }
    if all || args.scenario == "faults" {
        report.push(faults(&args).await?);
    }
    println!("\n| figure | measured | target | bound |\n|---|---|---|---|");
    for r in report.iter().flatten() {
        println!("| {} | {} | {} | {} |", r.0, r.1, r.2, r.3);
    }
    Ok(())
}

type Rows = Vec<(String, String, String, String)>;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    format!(
        "{cpu}, {} GiB",
        mem.parse::<f64>().unwrap_or(0.0) / 1024.0 / 1024.0
    )
}

/// (a) One incident, one user, two devices: POST -> last wipe, POST -> comment.
async fn latency(args: &BenchArgs) -> Result<Rows> {
    let l = Duration::from_millis(args.latency_ms);
    let h = Harness::start(SimOptions {
        latency: l,
        ..Default::default()
    })
    .await?;
    let settings = bench_settings(&h, args);
    let svc = start_service(&h, &settings, "latency").await?;
    let client = reqwest::Client::new();
    let token = h.run_token();
    let mut to_wipe = vec![];
    let mut to_comment = vec![];
    for i in 0..=args.latency_runs {
        let upn = format!("lat{i}@contoso.com");
        h.sim.add_user(&upn, &uuid::Uuid::new_v4().to_string());
        let g1 = h.sim.add_device(&upn, DeviceSpec::iphone());
        let g2 = h.sim.add_device(&upn, DeviceSpec::outlook());
        let name = format!("lat-{i}");
        let body = h.incident_body(&name, 9000 + i as i64, "High", &[upn.as_str()]);
        h.sim.add_incident(
            &name,
            body["object"]["properties"]["relatedEntities"].clone(),
        );
        let incident = h.sim.incident_arm_id(&name);
        let t0 = SystemTime::now();
        let started = Instant::now();
        let r = client
            .post(format!("{}/api/v1/sentinel/incidents", svc.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "not accepted: {}", r.status());
        // Watch the tenant: the second Clear-MobileDevice's answer and the comment.
        let (mut wiped, mut commented) = (None, None);
        while wiped.is_none() || commented.is_none() {
            if wiped.is_none() {
                let clears: Vec<SystemTime> = h
                    .sim
                    .exchange_calls()
                    .iter()
                    .filter(|c| {
                        c.cmdlet == "Clear-MobileDevice"
                            && c.response_status == 200
                            && (c.parameters["Identity"] == g1.as_str()
                                || c.parameters["Identity"] == g2.as_str())
                    })
                    .map(|c| c.at)
                    .collect();
                if clears.len() == 2 {
                    // Recorded on arrival; answered one latency later.
                    let last = clears.into_iter().max().unwrap_or(t0);
                    wiped = Some(last.duration_since(t0).unwrap_or_default() + l);
                }
            }
            if commented.is_none() && !h.sim.comments(&incident).is_empty() {
                commented = Some(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "incident {i} not contained in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i > 0 {
            to_wipe.push(ms(wiped.unwrap_or_default()));
            to_comment.push(ms(commented.unwrap_or_default()));
        }
    }
    drop(svc);
    to_wipe.sort_by(f64::total_cmp);
    to_comment.sort_by(f64::total_cmp);
    let bound = 3.0 * args.latency_ms as f64;
    println!(
        "\n(a) time to containment, L = {} ms, {} incidents (after one warm-up)",
        args.latency_ms,
        to_wipe.len()
    );
    println!(
        "    POST -> last Clear-MobileDevice answered: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (lower bound 2 x L = {:.0} ms)",
        percentile(&to_wipe, 0.5),
        percentile(&to_wipe, 0.95),
        percentile(&to_wipe, 1.0),
        2.0 * args.latency_ms as f64
    );
    println!(
        "    POST -> comment written:               p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (lower bound 3 x L = {bound:.0} ms)",
        percentile(&to_comment, 0.5),
        percentile(&to_comment, 0.95),
        percentile(&to_comment, 1.0)
    );
    Ok(vec![
        (
            "(a) POST -> last wipe requested, p50".into(),
            format!("{:.0} ms", percentile(&to_wipe, 0.5)),
            "-".into(),
            format!("2 x L = {:.0} ms", 2.0 * args.latency_ms as f64),
        ),
        (
            "(a) POST -> comment written, p50".into(),
            format!("{:.0} ms", percentile(&to_comment, 0.5)),
            format!("<= 3 x L + 50 ms = {:.0} ms", bound + 50.0),
            format!("3 x L = {bound:.0} ms"),
        ),
    ])
}

/// (b) A phishing wave: N users in N incidents, two devices each, Exchange
/// capped at C concurrent calls per tenant. (d) peak RSS during it.
async fn storm(args: &BenchArgs) -> Result<Rows> {
    let l = Duration::from_millis(args.latency_ms);
    let h = Harness::start(SimOptions {
        latency: l,
        exchange_concurrency_cap: Some(args.cap),
        workers: 2,
        ..Default::default()
    })
    .await?;
    let settings = bench_settings(&h, args);
    let n = args.storm_users;
    let mut bodies = vec![];
    let mut devices = vec![];
    for i in 0..n {
        let upn = format!("storm{i}@contoso.com");
        h.sim.add_user(&upn, &uuid::Uuid::new_v4().to_string());
        devices.push(h.sim.add_device(&upn, DeviceSpec::iphone()));
        devices.push(h.sim.add_device(&upn, DeviceSpec::outlook()));
        let name = format!("storm-{i}");
        let body = h.incident_body(&name, 10_000 + i as i64, "High", &[upn.as_str()]);
        h.sim.add_incident(
            &name,
            body["object"]["properties"]["relatedEntities"].clone(),
        );
        bodies.push((name, body));
    }
    let svc = start_service(&h, &settings, "storm").await?;
    let client = reqwest::Client::new();
    let token = h.run_token();
    let started = Instant::now();
    // The wave arrives as fast as the playbooks can send it.
    let base = svc.base.clone();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies_arc = Arc::new(
        bodies
            .iter()
            .map(|(_, b)| b.clone())
            .collect::<Vec<Value>>(),
    );
    let senders: Vec<_> = (0..args.storm_senders.max(1))
        .map(|_| {
            let (client, token, next, bodies) = (
                client.clone(),
                token.clone(),
                next.clone(),
                bodies_arc.clone(),
            );
            let url = format!("{base}/api/v1/sentinel/incidents");
            tokio::spawn(async move {
                let mut statuses = vec![];
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { break };
                    statuses.push(
                        client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(b)
                            .send()
                            .await
                            .map(|r| r.status().as_u16()),
                    );
                }
                statuses
            })
        })
        .collect();
    let mut sends = vec![];
    for s in senders {
        sends.extend(s.await?);
    }
    let accepted = sends.iter().filter(|s| matches!(s, Ok(202))).count();
    let intake_done = started.elapsed();
    let mut wiped_at = None;
    let mut peak = 0.0f64;
    let incidents: Vec<String> = bodies
        .iter()
        .map(|(name, _)| h.sim.incident_arm_id(name))
        .collect();
    let commented_at = loop {
        peak = peak.max(svc.peak_rss_mib().unwrap_or(0.0));
        if wiped_at.is_none()
            && devices
                .iter()
                .all(|g| h.sim.device(g).is_some_and(|d| d.wipe_request_count > 0))
        {
            wiped_at = Some(started.elapsed());
        }
        if wiped_at.is_some() && incidents.iter().all(|i| !h.sim.comments(i).is_empty()) {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "storm not contained in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    peak = peak.max(svc.peak_rss_mib().unwrap_or(0.0));
    let wiped_at = wiped_at.unwrap_or_default();
    let calls = h.sim.exchange_calls();
    let needed = calls
        .iter()
        .filter(|c| {
            c.response_status == 200
                && (c.cmdlet == "Get-MobileDevice" || c.cmdlet == "Clear-MobileDevice")
        })
        .count();
    let throttled = h.sim.throttled_count();
    let repeated: usize = devices
        .iter()
        .map(|g| {
            h.sim
                .device(g)
                .map(|d| d.wipe_request_count.saturating_sub(1))
                .unwrap_or(0)
        })
        .sum();
    let missing = devices
        .iter()
        .filter(|g| h.sim.device(g).is_none_or(|d| d.wipe_request_count == 0))
        .count();
    let bound = needed as f64 * l.as_secs_f64() / args.cap as f64;
    drop(svc);
    println!(
        "\n(b) storm: {n} users in {n} incidents, 2 devices each, cap C = {}, L = {} ms",
        args.cap, args.latency_ms
    );
    println!(
        "    accepted {accepted}/{n} in {:.2} s",
        intake_done.as_secs_f64()
    );
    println!(
        "    all {} wipes requested after {:.2} s; all comments after {:.2} s",
        devices.len(),
        wiped_at.as_secs_f64(),
        commented_at.as_secs_f64()
    );
    println!(
        "    Exchange calls that did work: {needed}; throttle bound = calls x L / C = {bound:.2} s; ratio {:.3}",
        wiped_at.as_secs_f64() / bound
    );
    println!(
        "    throttled answers: {throttled}; failed wipes: {missing}; repeated wipe requests: {repeated}"
    );
    println!("(d) peak RSS of the service during (b): {peak:.1} MiB");
    Ok(vec![
        (
            "(b) storm: all wipes requested".into(),
            format!(
                "{:.2} s ({:.3} x bound)",
                wiped_at.as_secs_f64(),
                wiped_at.as_secs_f64() / bound
            ),
            "<= 1.15 x bound, 0 failed".into(),
            format!("{needed} calls x L / C = {bound:.2} s"),
        ),
        (
            "(b) storm: all comments written".into(),
            format!("{:.2} s", commented_at.as_secs_f64()),
            "-".into(),
            "-".into(),
        ),
        (
            "(b) throttled answers / failed wipes".into(),
            format!("{throttled} / {missing}"),
            "0 failed".into(),
            "-".into(),
        ),
        (
            "(d) peak RSS during (b)".into(),
            format!("{peak:.1} MiB"),
            "< 40 MB".into(),
            "-".into(),
        ),
    ])
}

/// (c) Authenticated intake: calls per second and latency of the 202.
async fn intake(args: &BenchArgs) -> Result<Rows> {
    let h = Harness::start(SimOptions::default()).await?;
    let settings = bench_settings(&h, args);
    let svc = start_service(&h, &settings, "intake").await?;
    let token = Arc::new(h.run_token());
    // Each call is a fresh entity-trigger run for a user outside the allowed
    // domains: fully authenticated, parsed, decided and committed (durably),
    // with no follow-up work, so the figure is the intake path alone.
    let body = |i: usize| json!({"Entity": {"properties": {"Name": format!("u{i}"), "UPNSuffix": "outside.example"}}, "IncidentArmID": Value::Null});
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.intake_concurrency)
        .build()?;
    let url = Arc::new(format!("{}/api/v1/sentinel/incidents", svc.base));
    // Warm-up.
    for i in 0..200 {
        client
            .post(url.as_str())
            .bearer_auth(token.as_str())
            .json(&body(1_000_000 + i))
            .send()
            .await?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = args.intake_requests;
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..args.intake_concurrency {
        let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let b = json!({"Entity": {"properties": {"Name": format!("u{i}"), "UPNSuffix": "outside.example"}}, "IncidentArmID": Value::Null});
                match client.post(url.as_str()).bearer_auth(token.as_str()).json(&b).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        lat.push(ms(t.elapsed()));
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    let peak = svc.peak_rss_mib().unwrap_or(0.0);
    drop(svc);
    lat.sort_by(f64::total_cmp);
    let rps = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "\n(c) authenticated intake, {} calls, {} in flight, SQLite (synchronous=FULL)",
        total, args.intake_concurrency
    );
    println!(
        "    {rps:.0} calls/s; 202 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {errors}; service peak RSS {peak:.1} MiB",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    Ok(vec![
        (
            "(c) intake throughput".into(),
            format!("{rps:.0} calls/s"),
            ">= 5,000 calls/s".into(),
            "-".into(),
        ),
        (
            "(c) intake 202 latency p50 / p99".into(),
            format!(
                "{:.2} / {:.2} ms",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            ),
            "p99 < 20 ms".into(),
            "-".into(),
        ),
    ])
}

/// Fairness: a 1-user incident arriving after a 200-user one is contained
/// without waiting for the large one.
async fn fairness(args: &BenchArgs) -> Result<Rows> {
    let l = Duration::from_millis(args.latency_ms);
    let h = Harness::start(SimOptions {
        latency: l,
        exchange_concurrency_cap: Some(args.cap),
        ..Default::default()
    })
    .await?;
    let settings = bench_settings(&h, args);
    let mut upns = vec![];
    let mut big_devices = vec![];
    for i in 0..200 {
        let upn = format!("big{i}@contoso.com");
        h.sim.add_user(&upn, &uuid::Uuid::new_v4().to_string());
        big_devices.push(h.sim.add_device(&upn, DeviceSpec::iphone()));
        upns.push(upn);
    }
    let refs: Vec<&str> = upns.iter().map(String::as_str).collect();
    let big = h.incident_body("fair-big", 1, "High", &refs);
    h.sim.add_incident(
        "fair-big",
        big["object"]["properties"]["relatedEntities"].clone(),
    );
    h.sim
        .add_user("small@contoso.com", &uuid::Uuid::new_v4().to_string());
    let small_dev = h.sim.add_device("small@contoso.com", DeviceSpec::iphone());
    let small = h.incident_body("fair-small", 2, "High", &["small@contoso.com"]);
    h.sim.add_incident(
        "fair-small",
        small["object"]["properties"]["relatedEntities"].clone(),
    );
    let svc = start_service(&h, &settings, "fairness").await?;
    let client = reqwest::Client::new();
    let token = h.run_token();
    let started = Instant::now();
    client
        .post(format!("{}/api/v1/sentinel/incidents", svc.base))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t_small = Instant::now();
    client
        .post(format!("{}/api/v1/sentinel/incidents", svc.base))
        .bearer_auth(&token)
        .json(&small)
        .send()
        .await?;
    let mut small_done = None;
    let big_done = loop {
        if small_done.is_none()
            && h.sim
                .device(&small_dev)
                .is_some_and(|d| d.wipe_request_count > 0)
        {
            small_done = Some(t_small.elapsed());
        }
        if big_devices
            .iter()
            .all(|g| h.sim.device(g).is_some_and(|d| d.wipe_request_count > 0))
            && small_done.is_some()
        {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "fairness run not done"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(svc);
    let small_done = small_done.unwrap_or_default();
    println!(
        "\n(e) fairness: a 1-user incident 0.5 s after a 200-user one (cap {}, L = {} ms)",
        args.cap, args.latency_ms
    );
    println!(
        "    1-user incident: wipe requested {:.0} ms after its POST; 200-user incident: all wipes after {:.2} s",
        ms(small_done),
        big_done.as_secs_f64()
    );
    Ok(vec![(
        "(e) 1-user run behind a 200-user run: its wipe".into(),
        format!("{:.0} ms", ms(small_done)),
        "not behind the large run".into(),
        format!("large run: {:.1} s", big_done.as_secs_f64()),
    )])
}

/// (f) A flaky Exchange: incidents of two users with two phones each, sent
/// at once, with a share of Exchange calls failing (seeded): time from each
/// incident's POST to each phone's first accepted wipe, and to the
/// incident's first record.
async fn faults(args: &BenchArgs) -> Result<Rows> {
    let l = Duration::from_millis(args.latency_ms);
    let h = Harness::start(SimOptions {
        latency: l,
        ..Default::default()
    })
    .await?;
    let settings = bench_settings(&h, args);
    let mut incidents = vec![];
    for i in 0..args.fault_incidents {
        let mut upns = vec![];
        let mut devices = vec![];
        for u in 0..2 {
            let upn = format!("flaky{i}-{u}@contoso.com");
            h.sim.add_user(&upn, &uuid::Uuid::new_v4().to_string());
            devices.push(h.sim.add_device(&upn, DeviceSpec::iphone()));
            devices.push(h.sim.add_device(&upn, DeviceSpec::outlook()));
            upns.push(upn);
        }
        let name = format!("flaky-{i}");
        let refs: Vec<&str> = upns.iter().map(String::as_str).collect();
        let body = h.incident_body(&name, 20_000 + i as i64, "High", &refs);
        h.sim.add_incident(
            &name,
            body["object"]["properties"]["relatedEntities"].clone(),
        );
        incidents.push((h.sim.incident_arm_id(&name), body, devices));
    }
    h.sim.set_fault_seed(args.fault_seed);
    h.sim.add_fault_rule(FaultRule::mix(
        wipehook_sim::Service::Exchange,
        args.fault_rate,
        vec![
            (1, Fault::Status(503)),
            (1, Fault::PlainStatus(504)),
            (1, Fault::Dropped),
            (1, Fault::Hang { ms: 4_000 }),
            (
                1,
                Fault::Throttle429 {
                    retry_after_secs: 1.5,
                },
            ),
        ],
    ));
    let svc = start_service(&h, &settings, "faults").await?;
    let client = reqwest::Client::new();
    let token = h.run_token();
    let url = format!("{}/api/v1/sentinel/incidents", svc.base);
    let started = Instant::now();
    let posts: Vec<_> = incidents
        .iter()
        .map(|(_, body, _)| {
            let (client, token, url, body) =
                (client.clone(), token.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let t0 = SystemTime::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                (t0, r.map(|r| r.status().as_u16()))
            })
        })
        .collect();
    let mut t0s = vec![];
    for p in posts {
        let (t0, status) = p.await?;
        anyhow::ensure!(matches!(status, Ok(202)), "not accepted: {status:?}");
        t0s.push(t0);
    }
    let mut recorded: Vec<Option<Duration>> = vec![None; incidents.len()];
    loop {
        for (i, (id, _, _)) in incidents.iter().enumerate() {
            if recorded[i].is_none() && !h.sim.comments(id).is_empty() {
                recorded[i] = Some(SystemTime::now().duration_since(t0s[i]).unwrap_or_default());
            }
        }
        let all_wiped = incidents
            .iter()
            .flat_map(|(_, _, d)| d)
            .all(|g| h.sim.device(g).is_some_and(|d| d.wipe_request_count > 0));
        if all_wiped && recorded.iter().all(Option::is_some) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "faults scenario not contained and recorded in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = client
        .get(format!("{}/metrics", svc.base))
        .send()
        .await?
        .text()
        .await?;
    drop(svc);
    let limit = metrics
        .lines()
        .find(|l| l.starts_with("wipehook_exchange_concurrency_limit"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_string();
    let calls = h.sim.exchange_calls();
    let mut to_wipe = vec![];
    for (i, (_, _, devices)) in incidents.iter().enumerate() {
        for g in devices {
            // The first Clear-MobileDevice Exchange accepted for the phone.
            let first = calls
                .iter()
                .filter(|c| {
                    c.cmdlet == "Clear-MobileDevice"
                        && c.response_status == 200
                        && c.parameters.get("Cancel").is_none()
                        && c.parameters["Identity"] == g.as_str()
                })
                .filter_map(|c| c.answered_at)
                .min()
                .unwrap_or(t0s[i]);
            to_wipe.push(
                first
                    .duration_since(t0s[i])
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }
    to_wipe.sort_by(f64::total_cmp);
    let mut to_record: Vec<f64> = recorded
        .iter()
        .map(|d| d.unwrap_or_default().as_secs_f64())
        .collect();
    to_record.sort_by(f64::total_cmp);
    let injected = h.sim.injected_faults();
    let count = |f: fn(&Fault) -> bool| injected.iter().filter(|i| f(&i.fault)).count();
    let repeated: usize = incidents
        .iter()
        .flat_map(|(_, _, d)| d)
        .map(|g| {
            h.sim
                .device(g)
                .map(|d| d.wipe_request_count.saturating_sub(1))
                .unwrap_or(0)
        })
        .sum();
    println!(
        "\n(f) faults: {} incidents x 2 users x 2 phones, {:.0} % of Exchange calls failing (seed {}), L = {} ms",
        incidents.len(),
        args.fault_rate * 100.0,
        args.fault_seed,
        args.latency_ms
    );
    println!(
        "    Exchange calls {}; injected: 503 {}, 504 {}, dropped {}, 4 s hang {}, 429 {}; repeated wipe requests {repeated}; final limit {limit}",
        calls.len(),
        count(|f| matches!(f, Fault::Status(_))),
        count(|f| matches!(f, Fault::PlainStatus(_))),
        count(|f| matches!(f, Fault::Dropped)),
        count(|f| matches!(f, Fault::Hang { .. })),
        count(|f| matches!(f, Fault::Throttle429 { .. })),
    );
    println!(
        "    POST -> first wipe per phone ({}): median {:.2} s, p90 {:.2} s, max {:.2} s",
        to_wipe.len(),
        percentile(&to_wipe, 0.5),
        percentile(&to_wipe, 0.9),
        percentile(&to_wipe, 1.0)
    );
    println!(
        "    POST -> first record per incident: median {:.2} s, max {:.2} s",
        percentile(&to_record, 0.5),
        percentile(&to_record, 1.0)
    );
    Ok(vec![
        (
            "(f) faults: POST -> first wipe per phone, median / p90 / max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} s",
                percentile(&to_wipe, 0.5),
                percentile(&to_wipe, 0.9),
                percentile(&to_wipe, 1.0)
            ),
            "median <= 2 s, max <= 15 s".into(),
            "-".into(),
        ),
        (
            "(f) faults: POST -> first record, median / max".into(),
            format!(
                "{:.2} / {:.2} s",
                percentile(&to_record, 0.5),
                percentile(&to_record, 1.0)
            ),
            "-".into(),
            "-".into(),
        ),
    ])
}
