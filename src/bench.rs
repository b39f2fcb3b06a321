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
    /// all | latency | storm | intake | fairness | faults | storm-5000 |
    /// storm-replicas | store-1m | tenants (comma-separated for several)
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
    /// (g) users of the large storm.
    #[arg(long, default_value_t = 5000)]
    pub large_storm_users: usize,
    /// (g) the large storm's Exchange cap (the storm's C: its bound is 20,000 calls x L / C).
    #[arg(long, default_value_t = 9)]
    pub large_storm_cap: usize,
    /// (h, i) PostgreSQL server where the benchmark creates (and drops) its own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_admin_url: String,
    /// (i) finished runs generated into the store.
    #[arg(long, default_value_t = 1_000_000)]
    pub history_runs: usize,
    /// (j) incidents of the noisy, busy and quiet tenants.
    #[arg(long, value_delimiter = ',', default_value = "300,100,40")]
    pub tenant_users: Vec<usize>,
    /// (j) their Exchange caps.
    #[arg(long, value_delimiter = ',', default_value = "9,4,2")]
    pub tenant_caps: Vec<usize>,
    /// (i) authenticated calls sent to each store.
    #[arg(long, default_value_t = 5000)]
    pub history_intake: usize,
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
    /// SQLite's `synchronous` for the service: full (the default and the
    /// figures') or normal (to see what the fsyncs cost).
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
    /// `store.sqlite_cache_mib` for the service (default: the service's own
    /// default), to see what the page cache costs in memory and time.
    #[arg(long)]
    pub sqlite_cache_mib: Option<u32>,
    /// The service binary to start (default: this one). The deployed image
    /// is built with `--no-default-features` (no simulated tenant, demo or
    /// bench): point this at such a build to measure the service as deployed.
    #[arg(long)]
    pub service_bin: Option<std::path::PathBuf>,
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
    /// The process's private resident memory now (RssAnon: heap and
    /// stacks, without the mapped executable's pages), in MiB.
    fn anon_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// CPU time the service process has used (user + system), in seconds.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

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
    // The service's log: in the harness folder (removed at the end), or
    // kept in WIPEHOOK_BENCH_LOGS when that names a folder.
    let log_dir = std::env::var_os("WIPEHOOK_BENCH_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| h.dir.clone());
    std::fs::create_dir_all(&log_dir)?;
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    let bin = match SERVICE_BIN.get() {
        Some(Some(p)) => p.clone(),
        _ => std::env::current_exe()?,
    };
    let mut cmd = Command::new(bin);
    // The service dies with the benchmark, even when the benchmark is
    // killed (a left-over service retrying against a gone tenant took 18 %
    // of a core from every later run).
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
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
    if args.sqlite_synchronous == "normal" {
        s.store.sqlite_synchronous = crate::config::SqliteSynchronous::Normal;
    }
    if let Some(mib) = args.sqlite_cache_mib {
        s.store.sqlite_cache_mib = mib;
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

/// `--service-bin`, set once at the start.
static SERVICE_BIN: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

pub async fn run(args: BenchArgs) -> Result<()> {
    let _ = SERVICE_BIN.set(args.service_bin.clone());
    // The simulated tenant's dropped connections (scenario f) are its own
    // doing, not worth an ERROR line each.
    crate::telemetry::init(
        "warn,actix_http::h1::dispatcher=off,sqlx::query=error",
        false,
    );
    println!(
        "wipehook bench: {} core(s), {}; service binary: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        machine(),
        args.service_bin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "this one".into())
    );
    let wanted: Vec<&str> = args.scenario.split(',').map(str::trim).collect();
    for w in &wanted {
        anyhow::ensure!(
            *w == "all" || SCENARIOS.contains(w),
            "unknown scenario '{w}': one of all, {}",
            SCENARIOS.join(", ")
        );
    }
    let mut report: Rows = vec![];
    for name in SCENARIOS {
        if !wanted.contains(&"all") && !wanted.contains(&name) {
            continue;
        }
        let rows = match name {
            "latency" => latency(&args).await,
            "storm" => storm(&args).await,
            "intake" => intake(&args).await,
            "fairness" => fairness(&args).await,
            "faults" => faults(&args).await,
            "storm-5000" => storm_large(&args).await,
            "storm-replicas" => storm_replicas(&args).await,
            "store-1m" => history(&args).await,
            "tenants" => tenants(&args).await,
            _ => unreachable!("listed in SCENARIOS"),
        };
        match rows {
            Ok(rows) => report.extend(rows),
            Err(e) => {
                println!("\n({name}) not measured: {e:#}");
                report.push(Row::new(
                    &format!("({name}) not measured"),
                    format!("{e:#}"),
                    "-".into(),
                    None,
                    "-".into(),
                    false,
                ));
            }
        }
    }
    println!("\n| figure | measured | bound | ratio | target | met |\n|---|---|---|---|---|---|");
    for r in &report {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            r.measured,
            r.bound,
            r.ratio
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.target,
            if r.met { "yes" } else { "**no**" }
        );
    }
    Ok(())
}

/// Every scenario, in the order `all` runs them.
const SCENARIOS: [&str; 9] = [
    "latency",
    "storm",
    "intake",
    "fairness",
    "faults",
    "storm-5000",
    "storm-replicas",
    "store-1m",
    "tenants",
];

/// One line of the summary table: figure, bound, ratio and target side by side.
struct Row {
    figure: String,
    measured: String,
    bound: String,
    ratio: Option<f64>,
    target: String,
    met: bool,
}

impl Row {
    fn new(
        figure: &str,
        measured: String,
        bound: String,
        ratio: Option<f64>,
        target: String,
        met: bool,
    ) -> Row {
        Row {
            figure: figure.to_string(),
            measured,
            bound,
            ratio,
            target,
            met,
        }
    }
}

type Rows = Vec<Row>;

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

/// Upstream calls one after another on the way from the POST to the record:
/// the person through Graph (the entity's address is never listed in
/// Exchange as it is: the person's own UPN is), Get-MobileDevice (its
/// statistics beside it), both Clear-MobileDevice calls side by side, the
/// comment PUT. The ARM entity read runs beside the first.
const CRITICAL_PATH_CALLS: usize = 4;

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
    let mut hops: [Vec<f64>; 4] = Default::default();
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
        let accepted_in = Some(started.elapsed());
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
            // Where the time over the bound goes, hop by hop, from the
            // tenant's arrival and answer times.
            let calls = h.sim.exchange_calls();
            let mine: Vec<_> = calls
                .iter()
                .filter(|c| {
                    c.parameters["Mailbox"] == upn.as_str()
                        || c.parameters["Identity"] == g1.as_str()
                        || c.parameters["Identity"] == g2.as_str()
                })
                .collect();
            let get = mine.iter().find(|c| c.cmdlet == "Get-MobileDevice");
            let first_clear = mine
                .iter()
                .filter(|c| c.cmdlet == "Clear-MobileDevice")
                .map(|c| c.at)
                .min();
            let last_answer = mine
                .iter()
                .filter(|c| c.cmdlet == "Clear-MobileDevice")
                .filter_map(|c| c.answered_at)
                .max();
            if let (Some(get), Some(fc), Some(la), Some(posted)) =
                (get, first_clear, last_answer, accepted_in)
            {
                let since =
                    |a: SystemTime, b: SystemTime| ms(a.duration_since(b).unwrap_or_default());
                hops[0].push(ms(posted));
                hops[1].push(since(get.at, t0) - ms(posted) - ms(l));
                hops[2].push(since(fc, get.answered_at.unwrap_or(get.at)));
                hops[3].push(ms(commented.unwrap_or_default()) - since(la, t0) - ms(l));
            }
        }
    }
    drop(svc);
    for h in &mut hops {
        h.sort_by(f64::total_cmp);
    }
    to_wipe.sort_by(f64::total_cmp);
    to_comment.sort_by(f64::total_cmp);
    let bound = CRITICAL_PATH_CALLS as f64 * args.latency_ms as f64;
    println!(
        "\n(a) time to containment, L = {} ms, {} incidents (after one warm-up)",
        args.latency_ms,
        to_wipe.len()
    );
    println!(
        "    POST -> last Clear-MobileDevice answered: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (lower bound {} x L = {:.0} ms)",
        percentile(&to_wipe, 0.5),
        percentile(&to_wipe, 0.95),
        percentile(&to_wipe, 1.0),
        CRITICAL_PATH_CALLS - 1,
        (CRITICAL_PATH_CALLS - 1) as f64 * args.latency_ms as f64
    );
    println!(
        "    POST -> comment written:               p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (lower bound {CRITICAL_PATH_CALLS} x L = {bound:.0} ms)",
        percentile(&to_comment, 0.5),
        percentile(&to_comment, 0.95),
        percentile(&to_comment, 1.0)
    );
    println!(
        "    over the bound, p50 per hop: POST -> 202 {:.1} ms; 202 -> Get-MobileDevice sent, less one L (wake, claim, Graph) {:.1} ms; list answered -> first wipe sent {:.1} ms; last wipe answered -> comment stored, less one L {:.1} ms",
        percentile(&hops[0], 0.5),
        percentile(&hops[1], 0.5),
        percentile(&hops[2], 0.5),
        percentile(&hops[3], 0.5)
    );
    let wipe_bound = (CRITICAL_PATH_CALLS - 1) as f64 * args.latency_ms as f64;
    let p50 = percentile(&to_comment, 0.5);
    Ok(vec![
        Row::new(
            "(a) POST -> last wipe requested, p50",
            format!("{:.0} ms", percentile(&to_wipe, 0.5)),
            format!("{} x L = {wipe_bound:.0} ms", CRITICAL_PATH_CALLS - 1),
            Some(percentile(&to_wipe, 0.5) / wipe_bound),
            "-".into(),
            true,
        ),
        Row::new(
            "(a) POST -> comment written, p50",
            format!("{p50:.0} ms (p95 {:.0} ms)", percentile(&to_comment, 0.95)),
            format!("{CRITICAL_PATH_CALLS} x L = {bound:.0} ms"),
            Some(p50 / bound),
            format!("<= bound + 20 ms = {:.0} ms", bound + 20.0),
            p50 <= bound + 20.0,
        ),
    ])
}

/// A storm: N users in N incidents, two devices each, Exchange capped at C
/// concurrent calls per tenant, on one store with one or more replicas.
struct StormSpec {
    label: String,
    users: usize,
    cap: usize,
    senders: usize,
    /// None: SQLite in the harness folder.
    store_url: Option<String>,
    replicas: usize,
}

struct StormResult {
    /// p50 and p90 over the users of Exchange's answer to the device list
    /// -> the first wipe's arrival, in ms.
    list_to_wipe: (f64, f64),
    /// The Exchange limiter's limit, on average over the scrapes until the
    /// last wipe (summed over replicas).
    mean_limit: f64,
    accepted: usize,
    intake_done: Duration,
    wiped_at: Duration,
    /// Every device has a wipe request and every incident its record.
    contained_at: Duration,
    needed: usize,
    bound: f64,
    throttled: usize,
    missing: usize,
    repeated: usize,
    /// Peak RSS of the largest replica (VmHWM: with the executable's pages).
    peak_rss: f64,
    /// The largest private resident memory sampled (RssAnon).
    peak_anon: f64,
    /// CPU seconds the service used (every replica) until the last record.
    cpu: f64,
    /// The largest `wipehook_oldest_unfinished_work_seconds` seen.
    oldest_pending: f64,
    /// Comments per incident, fewest and most.
    comments: (usize, usize),
    /// Exchange calls in flight at the tenant, on average over the storm
    /// (the sum of every call's time at the tenant over the time to the last
    /// wipe): how much of the cap C was used.
    mean_in_flight: f64,
    /// Exchange calls holding a place of the service's limiter, on average
    /// over the scrapes until the last wipe (`wipehook_exchange_calls_in_flight`).
    mean_held: f64,
    /// One Exchange call that answered 200, mean: as the service timed it
    /// (request sent -> answer read, `wipehook_upstream_request_duration_seconds`)
    /// and at the tenant (handler entered -> answer made), in ms.
    call_ms: (f64, f64),
}

/// The Exchange calls that did the storm's work (each needs one of the C
/// places for L): the device list, its statistics, each wipe.
const WORK_CMDLETS: [&str; 3] = [
    "Get-MobileDevice",
    "Get-MobileDeviceStatistics",
    "Clear-MobileDevice",
];

async fn storm_run(args: &BenchArgs, spec: &StormSpec) -> Result<StormResult> {
    let l = Duration::from_millis(args.latency_ms);
    let h = Harness::start(SimOptions {
        latency: l,
        exchange_concurrency_cap: Some(spec.cap),
        workers: 2,
        ..Default::default()
    })
    .await?;
    let mut settings = bench_settings(&h, args);
    if let Some(u) = &spec.store_url {
        settings.store.url = u.clone().into();
    }
    let n = spec.users;
    let mut bodies = vec![];
    let mut devices = vec![];
    // Who each device list and wipe was for (by UPN, object id or GUID).
    let mut whose: std::collections::HashMap<String, usize> = Default::default();
    for i in 0..n {
        let upn = format!("storm{i}@contoso.com");
        let oid = uuid::Uuid::new_v4().to_string();
        h.sim.add_user(&upn, &oid);
        whose.insert(upn.clone(), i);
        whose.insert(oid, i);
        devices.push(h.sim.add_device(&upn, DeviceSpec::iphone()));
        devices.push(h.sim.add_device(&upn, DeviceSpec::outlook()));
        for g in &devices[devices.len() - 2..] {
            whose.insert(g.to_ascii_lowercase(), i);
        }
        let name = format!("storm-{i}");
        let body = h.incident_body(&name, 10_000 + i as i64, "High", &[upn.as_str()]);
        h.sim.add_incident(
            &name,
            body["object"]["properties"]["relatedEntities"].clone(),
        );
        bodies.push((name, body));
    }
    let mut services = vec![];
    for r in 0..spec.replicas.max(1) {
        services.push(start_service(&h, &settings, &format!("{}-{r}", spec.label)).await?);
    }
    let client = reqwest::Client::new();
    let token = h.run_token();
    let started = Instant::now();
    // The wave arrives as fast as the playbooks can send it, spread over
    // the replicas (a load balancer's round robin).
    let bases: Arc<Vec<String>> = Arc::new(services.iter().map(|s| s.base.clone()).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies_arc = Arc::new(
        bodies
            .iter()
            .map(|(_, b)| b.clone())
            .collect::<Vec<Value>>(),
    );
    let senders: Vec<_> = (0..spec.senders.max(1))
        .map(|_| {
            let (client, token, next, bodies, bases) = (
                client.clone(),
                token.clone(),
                next.clone(),
                bodies_arc.clone(),
                bases.clone(),
            );
            tokio::spawn(async move {
                let mut statuses = vec![];
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { break };
                    let url = format!("{}/api/v1/sentinel/incidents", bases[i % bases.len()]);
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
    let mut oldest = 0.0f64;
    let mut last_scrape = Instant::now() - Duration::from_secs(1);
    let incidents: Vec<String> = bodies
        .iter()
        .map(|(name, _)| h.sim.incident_arm_id(name))
        .collect();
    let mut peak_anon = 0.0f64;
    let (mut wiped, mut recorded) = (Cursor::default(), Cursor::default());
    // Scrapes in a row that found no unfinished work: a storm whose runs
    // have all ended with a device never wiped (a user who failed) ends
    // here, with the device counted as failed, not at the time limit.
    let mut idle_scrapes = 0;
    // The limiter's limit at each scrape until the last wipe (replicas summed).
    let mut limits: Vec<f64> = vec![];
    let mut held: Vec<f64> = vec![];
    let contained_at = loop {
        for s in &services {
            peak = peak.max(s.peak_rss_mib().unwrap_or(0.0));
            peak_anon = peak_anon.max(s.anon_rss_mib().unwrap_or(0.0));
        }
        if last_scrape.elapsed() >= Duration::from_millis(500) {
            last_scrape = Instant::now();
            let mut busy = false;
            for s in &services {
                let now = oldest_unfinished(&client, &s.base).await;
                oldest = oldest.max(now.map_or(0.0, |n| n.0));
                busy |= now.is_none_or(|n| n.0 > 0.0);
                if wiped_at.is_none()
                    && let Some((_, limit, in_flight)) = now
                {
                    limits.push(limit);
                    held.push(in_flight);
                }
            }
            idle_scrapes = if busy { 0 } else { idle_scrapes + 1 };
        }
        if wiped_at.is_none() && wiped.all(&devices, |g| wipe_requested(&h, g)) {
            wiped_at = Some(started.elapsed());
        }
        let records = recorded.all(&incidents, |i| !h.sim.comments(i).is_empty());
        if wiped_at.is_some() && records {
            break started.elapsed();
        }
        if idle_scrapes >= 3 && records {
            println!("    the service's runs all ended with devices not wiped: see failed");
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1200),
            "storm {} not contained in 20 minutes",
            spec.label
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu: f64 = services.iter().filter_map(Service::cpu_seconds).sum();
    let (mut seen_sum, mut seen_count) = (0.0, 0.0);
    for s in &services {
        if let Some((sum, count)) = exchange_latency(&client, &s.base).await {
            seen_sum += sum;
            seen_count += count;
        }
    }
    for s in &services {
        peak = peak.max(s.peak_rss_mib().unwrap_or(0.0));
    }
    // Late records (a second phase) would show here: let them land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = incidents.iter().map(|i| h.sim.comments(i).len()).collect();
    let wiped_at = wiped_at.unwrap_or(contained_at);
    let calls = h.sim.exchange_calls();
    let needed = calls
        .iter()
        .filter(|c| c.response_status == 200 && WORK_CMDLETS.contains(&c.cmdlet.as_str()))
        .count();
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
    let busy: f64 = calls
        .iter()
        .filter(|c| c.response_status == 200)
        .filter_map(|c| c.answered_at.and_then(|a| a.duration_since(c.at).ok()))
        .map(|d| d.as_secs_f64())
        .sum();
    // Each user's time between Exchange's answer to the device list and the
    // first wipe's arrival: the service's own work between the two calls
    // (the ledger's claim, the guard's reservation) and the wait for a place
    // under the cap.
    let mut listed: Vec<Option<std::time::SystemTime>> = vec![None; n];
    let mut first_wipe: Vec<Option<std::time::SystemTime>> = vec![None; n];
    for c in calls.iter().filter(|c| c.response_status == 200) {
        let key = |k: &str| {
            c.parameters[k]
                .as_str()
                .and_then(|v| whose.get(&v.to_ascii_lowercase()))
                .copied()
        };
        match c.cmdlet.as_str() {
            "Get-MobileDevice" => {
                if let Some(i) = key("Mailbox") {
                    listed[i] = listed[i].or(c.answered_at);
                }
            }
            "Clear-MobileDevice" => {
                if let Some(i) = key("Identity") {
                    first_wipe[i] = Some(first_wipe[i].map_or(c.at, |t| t.min(c.at)));
                }
            }
            _ => {}
        }
    }
    let mut list_to_wipe: Vec<f64> = listed
        .iter()
        .zip(&first_wipe)
        .filter_map(|(l, w)| w.as_ref()?.duration_since((*l)?).ok())
        .map(ms)
        .collect();
    list_to_wipe.sort_by(f64::total_cmp);
    Ok(StormResult {
        mean_limit: limits.iter().sum::<f64>() / limits.len().max(1) as f64,
        list_to_wipe: (
            percentile(&list_to_wipe, 0.5),
            percentile(&list_to_wipe, 0.9),
        ),
        mean_in_flight: busy / wiped_at.as_secs_f64().max(0.001),
        mean_held: held.iter().sum::<f64>() / held.len().max(1) as f64,
        call_ms: (
            1000.0 * seen_sum / seen_count.max(1.0),
            1000.0 * busy
                / calls
                    .iter()
                    .filter(|c| c.response_status == 200)
                    .count()
                    .max(1) as f64,
        ),
        accepted,
        intake_done,
        wiped_at,
        contained_at,
        needed,
        bound: needed as f64 * l.as_secs_f64() / spec.cap as f64,
        throttled: h.sim.throttled_count(),
        missing,
        repeated,
        peak_rss: peak,
        peak_anon,
        cpu,
        oldest_pending: oldest,
        comments: (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        ),
    })
}

/// How far a list of things the simulated tenant shows (devices with a wipe
/// request, incidents with a record) has come. What is done stays done, so
/// each poll checks from the first item not yet seen done: checking every
/// item on every 20 ms poll made the watcher's own work grow with the square
/// of the storm (each look-up is a scan of the simulated tenant), on the
/// service's two cores.
#[derive(Clone, Default)]
struct Cursor {
    next: usize,
}

impl Cursor {
    fn all(&mut self, items: &[String], done: impl Fn(&str) -> bool) -> bool {
        while let Some(item) = items.get(self.next)
            && done(item)
        {
            self.next += 1;
        }
        self.next == items.len()
    }
}

fn wipe_requested(h: &Harness, guid: &str) -> bool {
    h.sim.device(guid).is_some_and(|d| d.wipe_request_count > 0)
}

/// The service's `/metrics` text.
async fn metrics_text(client: &reqwest::Client, base: &str) -> Option<String> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(text)
}

/// A metric line's value (its last field).
fn metric_value(line: &str) -> Option<f64> {
    line.split_whitespace().last()?.parse().ok()
}

/// The service's `wipehook_oldest_unfinished_work_seconds`, and the sums
/// over its tenants of `wipehook_exchange_concurrency_limit` (the limiter's
/// limit) and `wipehook_exchange_calls_in_flight` (places held).
async fn oldest_unfinished(client: &reqwest::Client, base: &str) -> Option<(f64, f64, f64)> {
    let text = metrics_text(client, base).await?;
    let oldest = text
        .lines()
        .find(|l| l.starts_with("wipehook_oldest_unfinished_work_seconds"))
        .and_then(metric_value)?;
    let limit = text
        .lines()
        .filter(|l| l.starts_with("wipehook_exchange_concurrency_limit"))
        .filter_map(metric_value)
        .sum();
    let in_flight = text
        .lines()
        .filter(|l| l.starts_with("wipehook_exchange_calls_in_flight"))
        .filter_map(metric_value)
        .sum();
    Some((oldest, limit, in_flight))
}

/// The sum (seconds) and count of the service's Exchange calls that
/// answered 200, from `wipehook_upstream_request_duration_seconds`.
async fn exchange_latency(client: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = metrics_text(client, base).await?;
    let (mut sum, mut count) = (0.0, 0.0);
    for l in text.lines() {
        if !l.starts_with("wipehook_upstream_request_duration_seconds")
            || !l.contains("upstream=\"exchange\"")
            || !l.contains("status=\"200\"")
        {
            continue;
        }
        let v = metric_value(l).unwrap_or(0.0);
        let name = l.split('{').next().unwrap_or_default();
        if name.ends_with("_sum") {
            sum += v;
        } else if name.ends_with("_count") {
            count += v;
        }
    }
    Some((sum, count))
}

fn print_storm(args: &BenchArgs, spec: &StormSpec, r: &StormResult) {
    let n = spec.users;
    println!(
        "\n({}) storm: {n} users in {n} incidents, 2 devices each, cap C = {}, L = {} ms, {} replica(s), {}",
        spec.label,
        spec.cap,
        args.latency_ms,
        spec.replicas,
        if spec
            .store_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"))
        {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!(
        "    accepted {}/{n} in {:.2} s",
        r.accepted,
        r.intake_done.as_secs_f64()
    );
    println!(
        "    all {} wipes requested after {:.2} s; every incident recorded after {:.2} s (records trail the wipes by {:.2} s)",
        2 * n,
        r.wiped_at.as_secs_f64(),
        r.contained_at.as_secs_f64(),
        (r.contained_at.as_secs_f64() - r.wiped_at.as_secs_f64()).max(0.0)
    );
    println!(
        "    Exchange calls that did work (Get-MobileDevice, its statistics, Clear-MobileDevice): {}; bound = calls x L / C = {:.2} s; ratio {:.3}",
        r.needed,
        r.bound,
        r.contained_at.as_secs_f64() / r.bound
    );
    println!(
        "    throttled answers: {}; failed wipes: {}; repeated wipe requests: {}; comments per incident {}-{}",
        r.throttled, r.missing, r.repeated, r.comments.0, r.comments.1
    );
    println!(
        "    peak RSS {:.1} MiB (private, sampled: {:.1} MiB); oldest unfinished work seen {:.1} s; Exchange calls in flight on average {:.2} of C = {}",
        r.peak_rss, r.peak_anon, r.oldest_pending, r.mean_in_flight, spec.cap
    );
    println!(
        "    device list answered -> first wipe at Exchange, per user: p50 {:.1} ms, p90 {:.1} ms (the service's claim and reservation, and the wait for a place under the cap); the limiter's limit on average {:.2}",
        r.list_to_wipe.0, r.list_to_wipe.1, r.mean_limit
    );
    println!(
        "    places of the limiter held on average {:.2}; one Exchange call (200), mean: {:.1} ms as the service timed it (sent -> answer read), {:.1} ms at the tenant (handler in -> answer made)",
        r.mean_held, r.call_ms.0, r.call_ms.1
    );
    println!(
        "    service CPU {:.1} s over {:.1} s ({:.0} % of one core; the machine has {} cores, shared with the simulated tenant and the load)",
        r.cpu,
        r.contained_at.as_secs_f64(),
        100.0 * r.cpu / r.contained_at.as_secs_f64().max(0.001),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
}

fn storm_rows(spec: &StormSpec, r: &StormResult, ratio_target: f64, rss_target: f64) -> Rows {
    let ratio = r.contained_at.as_secs_f64() / r.bound;
    vec![
        Row::new(
            &format!(
                "({}) storm, {} incidents: every wipe requested and every record written",
                spec.label, spec.users
            ),
            format!(
                "{:.2} s (wipes {:.2} s)",
                r.contained_at.as_secs_f64(),
                r.wiped_at.as_secs_f64()
            ),
            format!("{} calls x L / {} = {:.2} s", r.needed, spec.cap, r.bound),
            Some(ratio),
            format!("<= {ratio_target:.2} x, 0 failed"),
            ratio <= ratio_target && r.missing == 0,
        ),
        Row::new(
            &format!(
                "({}) failed / repeated wipes, comments per incident",
                spec.label
            ),
            format!(
                "{} / {}, {}-{}",
                r.missing, r.repeated, r.comments.0, r.comments.1
            ),
            "-".into(),
            None,
            "0 / 0, one record each".into(),
            r.missing == 0 && r.repeated == 0 && r.comments == (1, 1),
        ),
        Row::new(
            &format!("({}) peak RSS (private part)", spec.label),
            format!("{:.1} MiB ({:.1} MiB)", r.peak_rss, r.peak_anon),
            "-".into(),
            None,
            format!("< {rss_target:.0} MB"),
            r.peak_rss * 1.048_576 < rss_target,
        ),
        Row::new(
            &format!("({}) oldest unfinished work (no task starved)", spec.label),
            format!("{:.1} s", r.oldest_pending),
            format!(
                "the storm's own time, {:.1} s",
                r.contained_at.as_secs_f64()
            ),
            Some(r.oldest_pending / r.contained_at.as_secs_f64().max(0.001)),
            "<= 1.0 x (nothing older than the storm)".into(),
            r.oldest_pending <= r.contained_at.as_secs_f64() + 1.0,
        ),
    ]
}

/// (b) A phishing wave: 500 users in 500 incidents, C = 9. (d) peak RSS.
async fn storm(args: &BenchArgs) -> Result<Rows> {
    let spec = StormSpec {
        label: "b".into(),
        users: args.storm_users,
        cap: args.cap,
        senders: args.storm_senders,
        store_url: args.store_url.clone(),
        replicas: 1,
    };
    let r = storm_run(args, &spec).await?;
    print_storm(args, &spec, &r);
    Ok(storm_rows(&spec, &r, 1.08, 32.0))
}

/// (g) A 5,000-user storm: time, memory, and no task starved.
async fn storm_large(args: &BenchArgs) -> Result<Rows> {
    let spec = StormSpec {
        label: "g".into(),
        users: args.large_storm_users,
        cap: args.large_storm_cap,
        senders: args.storm_senders,
        store_url: args.store_url.clone(),
        replicas: 1,
    };
    let r = storm_run(args, &spec).await?;
    print_storm(args, &spec, &r);
    Ok(storm_rows(&spec, &r, 1.08, 64.0))
}

/// (h) The storm on PostgreSQL with two replicas sharing the store.
async fn storm_replicas(args: &BenchArgs) -> Result<Rows> {
    let url = match &args.store_url {
        Some(u) if u.starts_with("postgres") => u.clone(),
        _ => fresh_pg_database(&args.pg_admin_url).await?,
    };
    let spec = StormSpec {
        label: "h".into(),
        users: args.storm_users,
        cap: args.cap,
        senders: args.storm_senders,
        store_url: Some(url.clone()),
        replicas: 2,
    };
    let r = storm_run(args, &spec).await;
    drop_pg_database(&args.pg_admin_url, &url).await;
    let r = r?;
    print_storm(args, &spec, &r);
    Ok(storm_rows(&spec, &r, 1.10, 64.0))
}

/// A new, empty database on the PostgreSQL server of `admin` (dropped after).
async fn fresh_pg_database(admin: &str) -> Result<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin)
        .await
        .with_context(|| format!("PostgreSQL at {admin} (--pg-admin-url)"))?;
    let name = format!("wipehook_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let _ = c.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    Ok(format!("{base}/{name}"))
}

async fn drop_pg_database(admin: &str, url: &str) {
    use sqlx::Connection;
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if !name.starts_with("wipehook_bench_") {
        return;
    }
    if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

/// What an intake load measured.
struct IntakeLoad {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: usize,
    /// The runs created.
    run_ids: Vec<String>,
}

/// `total` authenticated entity-trigger calls, `concurrency` in flight: each
/// for a user outside the allowed domains, so the run needs no follow-up
/// work and the figure is the intake path alone (authenticated, parsed,
/// decided and durably committed before the 202).
async fn intake_load(
    base: &str,
    token: &str,
    total: usize,
    concurrency: usize,
    offset: usize,
) -> Result<IntakeLoad> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = Arc::new(format!("{base}/api/v1/sentinel/incidents"));
    let token = Arc::new(token.to_string());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency.max(1) {
        let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut ids = vec![];
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let b = json!({"Entity": {"properties": {"Name": format!("u{}", i + offset), "UPNSuffix": "outside.example"}}, "IncidentArmID": Value::Null});
                match client.post(url.as_str()).bearer_auth(token.as_str()).json(&b).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: Value = r.json().await.unwrap_or_default();
                        lat.push(ms(t.elapsed()));
                        if let Some(id) = v["run_id"].as_str() {
                            ids.push(id.to_string());
                        }
                    }
                    _ => errors += 1,
                }
            }
            (lat, ids, errors)
        }));
    }
    let mut lat = vec![];
    let mut run_ids = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, ids, e) = t.await?;
        lat.extend(l);
        run_ids.extend(ids);
        errors += e;
    }
    let elapsed = started.elapsed();
    lat.sort_by(f64::total_cmp);
    Ok(IntakeLoad {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors,
        run_ids,
    })
}

/// (c) Authenticated intake: calls per second and latency of the 202.
async fn intake(args: &BenchArgs) -> Result<Rows> {
    let h = Harness::start(SimOptions::default()).await?;
    let settings = bench_settings(&h, args);
    let svc = start_service(&h, &settings, "intake").await?;
    let token = h.run_token();
    intake_load(&svc.base, &token, 200, 8, 1_000_000).await?; // warm-up
    let r = intake_load(
        &svc.base,
        &token,
        args.intake_requests,
        args.intake_concurrency,
        0,
    )
    .await?;
    let peak = svc.peak_rss_mib().unwrap_or(0.0);
    drop(svc);
    println!(
        "\n(c) authenticated intake, {} calls, {} in flight, SQLite (synchronous=FULL)",
        args.intake_requests, args.intake_concurrency
    );
    println!(
        "    {:.0} calls/s; 202 latency p50 {:.2} ms, p99 {:.2} ms; errors {}; service peak RSS {peak:.1} MiB",
        r.rps, r.p50, r.p99, r.errors
    );
    Ok(vec![
        Row::new(
            &format!(
                "(c) intake throughput, {} in flight",
                args.intake_concurrency
            ),
            format!("{:.0} calls/s", r.rps),
            "-".into(),
            None,
            ">= 5,000 calls/s".into(),
            r.rps >= 5000.0 && r.errors == 0,
        ),
        Row::new(
            "(c) intake 202 latency p50 / p99",
            format!("{:.2} / {:.2} ms", r.p50, r.p99),
            "-".into(),
            None,
            "p99 < 20 ms".into(),
            r.p99 < 20.0,
        ),
    ])
}

/// GET /api/v1/runs/{id} for each id, `concurrency` at a time: p50, p99 (ms).
async fn read_load(
    base: &str,
    token: &str,
    ids: &[String],
    concurrency: usize,
) -> Result<(f64, f64)> {
    let client = reqwest::Client::new();
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..concurrency.max(1) {
        let (client, ids, next) = (client.clone(), ids.clone(), next.clone());
        let (base, token) = (base.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/api/v1/runs/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "GET run {id}: {}", r.status());
                let _ = r.bytes().await;
                lat.push(ms(t.elapsed()));
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort_by(f64::total_cmp);
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// What one store measured in (i).
struct StoreFigures {
    intake: IntakeLoad,
    read: (f64, f64),
    history_read: Option<(f64, f64)>,
    claim: (f64, f64),
    plan: Vec<String>,
}

/// One store, empty or holding `history` finished runs: intake, reads of
/// the runs just created (and of history runs), then task claims measured
/// in this process with the service stopped, and the claim's plan.
async fn store_figures(
    args: &BenchArgs,
    h: &Harness,
    url: &str,
    history: usize,
    label: &str,
) -> Result<StoreFigures> {
    let mut settings = bench_settings(h, args);
    settings.store.url = url.to_string().into();
    if history > 0 {
        let started = Instant::now();
        let store = crate::store::Store::connect(&settings.store).await?;
        store
            .fill_history(
                &h.sim.tenant_id(),
                &h.sim.workspace_arm_id(),
                history as i64,
            )
            .await
            .context("generating the history")?;
        drop(store);
        println!(
            "    {label}: {history} finished runs generated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let svc = start_service(h, &settings, label).await?;
    let token = h.run_token();
    intake_load(&svc.base, &token, 200, 8, 1_000_000).await?; // warm-up
    let intake = intake_load(&svc.base, &token, args.history_intake, 64, 0).await?;
    let ids: Vec<String> = intake.run_ids.iter().take(2000).cloned().collect();
    let read = read_load(&svc.base, &token, &ids, 4).await?;
    let history_read = if history > 0 {
        let picks: Vec<String> = (0..2000usize)
            .map(|k| {
                let i = 1 + (k * 7919 * 104_729) % history;
                format!("00000000-0000-4000-8000-{i:012}")
            })
            .collect();
        Some(read_load(&svc.base, &token, &picks, 4).await?)
    } else {
        None
    };
    drop(svc);
    // Claims: 2,000 ready contain tasks of one run, claimed one by one.
    let store = crate::store::Store::connect(&settings.store).await?;
    let run = crate::domain::RunId::new();
    let tenant: crate::domain::TenantId = h.sim.tenant_id().parse().map_err(anyhow::Error::msg)?;
    for k in 0..2000 {
        let upn = crate::domain::Upn::parse(&format!("claim{k}@contoso.com"))
            .map_err(anyhow::Error::msg)?;
        store
            .enqueue(&run, &tenant, &crate::domain::Job::Contain { upn }, 0)
            .await?;
    }
    let plan = store.explain_claim().await?;
    let mut lat = vec![];
    let lease = Duration::from_secs(600);
    for _ in 0..2000 {
        let t = Instant::now();
        let got = store
            .claim_in("bench", lease, crate::domain::Lane::Exchange, &[])
            .await?;
        lat.push(ms(t.elapsed()));
        anyhow::ensure!(got.is_some(), "a ready task was not claimed");
    }
    lat.sort_by(f64::total_cmp);
    Ok(StoreFigures {
        intake,
        read,
        history_read,
        claim: (percentile(&lat, 0.5), percentile(&lat, 0.99)),
        plan,
    })
}

/// (i) Cost as the store grows: an empty store against one holding a
/// million finished runs, on SQLite and on PostgreSQL (when reachable).
async fn history(args: &BenchArgs) -> Result<Rows> {
    let h = Harness::start(SimOptions::default()).await?;
    let mut rows = vec![];
    let mut backends: Vec<(&str, Option<(String, String)>)> = vec![(
        "SQLite",
        Some((
            format!("sqlite://{}", h.dir.join("empty.db").display()),
            format!("sqlite://{}", h.dir.join("history.db").display()),
        )),
    )];
    let pg = match (
        fresh_pg_database(&args.pg_admin_url).await,
        fresh_pg_database(&args.pg_admin_url).await,
    ) {
        (Ok(a), Ok(b)) => Some((a, b)),
        (a, b) => {
            let why = a.err().or(b.err()).map(|e| format!("{e:#}"));
            println!("    PostgreSQL not measured: {}", why.unwrap_or_default());
            None
        }
    };
    backends.push(("PostgreSQL", pg));
    for (db, urls) in backends {
        let Some((empty_url, full_url)) = urls else {
            continue;
        };
        println!(
            "\n(i) {db}: an empty store, then one holding {} finished runs",
            args.history_runs
        );
        let res = async {
            let empty = store_figures(args, &h, &empty_url, 0, &format!("i-{db}-empty")).await?;
            let full = store_figures(
                args,
                &h,
                &full_url,
                args.history_runs,
                &format!("i-{db}-full"),
            )
            .await?;
            Ok::<_, anyhow::Error>((empty, full))
        }
        .await;
        drop_pg_database(&args.pg_admin_url, &empty_url).await;
        drop_pg_database(&args.pg_admin_url, &full_url).await;
        let (empty, full) = res?;
        for (name, f) in [("empty", &empty), ("1M runs", &full)] {
            println!(
                "    {name}: intake {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms (errors {}); GET run p50 {:.2} ms, p99 {:.2} ms{}; claim p50 {:.3} ms, p99 {:.3} ms",
                f.intake.rps,
                f.intake.p50,
                f.intake.p99,
                f.intake.errors,
                f.read.0,
                f.read.1,
                f.history_read
                    .map(|(a, b)| format!(" (a history run: p50 {a:.2} ms, p99 {b:.2} ms)"))
                    .unwrap_or_default(),
                f.claim.0,
                f.claim.1
            );
        }
        println!("    the claim's plan on {db} holding the history:");
        for l in &full.plan {
            println!("      {l}");
        }
        let mut push = |figure: &str, e: f64, f: f64, unit: &str| {
            let ratio = f / e;
            rows.push(Row::new(
                &format!("(i) {db}, 1M finished runs: {figure}"),
                format!("{f:.2} {unit} (empty: {e:.2} {unit})"),
                format!("empty store: {e:.2} {unit}"),
                Some(ratio),
                "<= 1.2 x empty".into(),
                ratio <= 1.2,
            ));
        };
        push("intake p99", empty.intake.p99, full.intake.p99, "ms");
        push("task claim p99", empty.claim.1, full.claim.1, "ms");
        push("GET /api/v1/runs/{id} p99", empty.read.1, full.read.1, "ms");
    }
    Ok(rows)
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
    let mut big = Cursor::default();
    let big_done = loop {
        if small_done.is_none()
            && h.sim
                .device(&small_dev)
                .is_some_and(|d| d.wipe_request_count > 0)
        {
            small_done = Some(t_small.elapsed());
        }
        if big.all(&big_devices, |g| wipe_requested(&h, g)) && small_done.is_some() {
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
    // Its own path (Graph, the list, the wipe) plus what was already queued
    // for Exchange: at most C calls in flight ahead of it.
    let own = 3.0 * args.latency_ms as f64;
    Ok(vec![Row::new(
        "(e) 1-user run posted 0.5 s into a 200-user run: its wipe",
        format!(
            "{:.0} ms (large run {:.1} s)",
            ms(small_done),
            big_done.as_secs_f64()
        ),
        format!("own path 3 x L = {own:.0} ms"),
        Some(ms(small_done) / own),
        "well before the large run ends".into(),
        small_done < big_done / 2,
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
        Row::new(
            "(f) faults: POST -> first wipe per phone, median / p90 / max",
            format!(
                "{:.2} / {:.2} / {:.2} s",
                percentile(&to_wipe, 0.5),
                percentile(&to_wipe, 0.9),
                percentile(&to_wipe, 1.0)
            ),
            "-".into(),
            None,
            "median <= 2 s, max <= 15 s".into(),
            percentile(&to_wipe, 0.5) <= 2.0 && percentile(&to_wipe, 1.0) <= 15.0,
        ),
        Row::new(
            "(f) faults: POST -> first record, median / max",
            format!(
                "{:.2} / {:.2} s",
                percentile(&to_record, 0.5),
                percentile(&to_record, 1.0)
            ),
            "-".into(),
            None,
            "-".into(),
            true,
        ),
    ])
}

/// One tenant of (j): its name, users and Exchange cap.
struct TenantWave {
    label: &'static str,
    tenant: String,
    workspace: String,
    users: usize,
    cap: usize,
    token: String,
}

/// (j) Three tenants storming at once, each with its own Exchange cap: each
/// finishes (every wipe requested, every record written) within 1.1 x its
/// own throttle bound; a noisy tenant does not slow a quiet one.
async fn tenants(args: &BenchArgs) -> Result<Rows> {
    use crate::harness::{APPROVER_OID, AUDIENCE, PLAYBOOK_OID};
    let l = Duration::from_millis(args.latency_ms);
    let sizes = [
        ("noisy", args.tenant_users[0], args.tenant_caps[0]),
        ("busy", args.tenant_users[1], args.tenant_caps[1]),
        ("quiet", args.tenant_users[2], args.tenant_caps[2]),
    ];
    let h = Harness::start(SimOptions {
        latency: l,
        exchange_concurrency_cap: Some(sizes[0].2),
        workers: 2,
        ..Default::default()
    })
    .await?;
    let mut settings = bench_settings(&h, args);
    let mut waves = vec![];
    for (k, (label, users, cap)) in sizes.into_iter().enumerate() {
        let (tenant, workspace) = if k == 0 {
            (h.sim.tenant_id(), h.sim.workspace_arm_id())
        } else {
            let tid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, label.as_bytes()).to_string();
            let ws = h
                .sim
                .host_tenant(&tid, &format!("soc-ws-{label}"), Some(cap));
            (tid, ws)
        };
        let token = h
            .sim
            .playbook_token_in(&tenant, AUDIENCE, PLAYBOOK_OID, &["Containment.Run"]);
        waves.push(TenantWave {
            label,
            tenant,
            workspace,
            users,
            cap,
            token,
        });
    }
    // One [[tenants]] block each, its own workspace and callers.
    let first = settings.tenants[0].clone();
    settings.inbound.allowed_callers = vec![];
    settings.tenants = waves
        .iter()
        .map(|w| {
            let mut t = first.clone();
            t.id = w.tenant.clone();
            t.workspaces = vec![w.workspace.clone()];
            t.allowed_callers = vec![PLAYBOOK_OID.into(), APPROVER_OID.into()];
            t
        })
        .collect();
    // Each tenant's users, phones and incidents (names unique across tenants).
    let mut bodies: Vec<(usize, Value)> = vec![];
    let mut devices: Vec<Vec<(String, String)>> = vec![];
    let mut incidents: Vec<Vec<String>> = vec![];
    for (k, w) in waves.iter().enumerate() {
        let (mut devs, mut incs) = (vec![], vec![]);
        for i in 0..w.users {
            let upn = format!("{}{i}@contoso.com", w.label);
            h.sim.add_user(&upn, &uuid::Uuid::new_v4().to_string());
            devs.push((
                h.sim.add_device(&upn, DeviceSpec::iphone()).to_string(),
                upn.clone(),
            ));
            devs.push((
                h.sim.add_device(&upn, DeviceSpec::outlook()).to_string(),
                upn.clone(),
            ));
            let name = format!("{}-{i}", w.label);
            let mut body = h.incident_body(
                &name,
                20_000 + (k * 10_000 + i) as i64,
                "High",
                &[upn.as_str()],
            );
            let ws_name = w
                .workspace
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let arm_id = h.sim.incident_arm_id_in(&w.workspace, &name);
            body["workspaceInfo"]["WorkspaceName"] = json!(ws_name);
            body["object"]["id"] = json!(arm_id);
            h.sim.add_incident(
                &name,
                body["object"]["properties"]["relatedEntities"].clone(),
            );
            incs.push(arm_id);
            bodies.push((k, body));
        }
        devices.push(devs);
        incidents.push(incs);
    }
    // The waves interleaved, as three SOCs' playbooks would send them.
    bodies.sort_by_key(|(k, b)| {
        (
            b["object"]["properties"]["incidentNumber"]
                .as_i64()
                .unwrap_or(0)
                % 10_000,
            *k,
        )
    });
    let svc = start_service(&h, &settings, "tenants").await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sentinel/incidents", svc.base);
    let started = Instant::now();
    let tokens: Vec<String> = waves.iter().map(|w| w.token.clone()).collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = vec![];
    for _ in 0..args.storm_senders.max(1) {
        let (client, url, bodies, next, tokens) = (
            client.clone(),
            url.clone(),
            bodies.clone(),
            next.clone(),
            tokens.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut refused = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((k, b)) = bodies.get(i) else { break };
                match client
                    .post(&url)
                    .bearer_auth(&tokens[*k])
                    .json(b)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => {}
                    _ => refused += 1,
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for s in senders {
        refused += s.await?;
    }
    anyhow::ensure!(refused == 0, "{refused} calls were not accepted");
    let mut done: Vec<Option<Duration>> = vec![None; waves.len()];
    let guids: Vec<Vec<String>> = devices
        .iter()
        .map(|d| d.iter().map(|(g, _)| g.clone()).collect())
        .collect();
    let mut cursors = vec![(Cursor::default(), Cursor::default()); waves.len()];
    while done.iter().any(Option::is_none) {
        for (k, d) in done.iter_mut().enumerate() {
            let (wiped, recorded) = &mut cursors[k];
            if d.is_none()
                && wiped.all(&guids[k], |g| wipe_requested(&h, g))
                && recorded.all(&incidents[k], |i| !h.sim.comments(i).is_empty())
            {
                *d = Some(started.elapsed());
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "three tenants not contained in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(svc);
    // Each tenant's calls that did work: by mailbox, or by the phone's GUID.
    let calls = h.sim.exchange_calls();
    let mut rows = vec![];
    println!(
        "\n(j) three tenants at once, L = {} ms, their waves interleaved",
        args.latency_ms
    );
    for (k, w) in waves.iter().enumerate() {
        let prefix = w.label;
        let needed = calls
            .iter()
            .filter(|c| c.response_status == 200 && WORK_CMDLETS.contains(&c.cmdlet.as_str()))
            .filter(|c| {
                let mailbox = c.parameters["Mailbox"].as_str().unwrap_or_default();
                let guid = c.parameters["Identity"].as_str().unwrap_or_default();
                mailbox.starts_with(prefix)
                    || devices[k].iter().any(|(g, _)| g.eq_ignore_ascii_case(guid))
            })
            .count();
        let bound = needed as f64 * l.as_secs_f64() / w.cap as f64;
        let t = done[k].unwrap_or_default().as_secs_f64();
        println!(
            "    {}: {} users, cap {}: every wipe and record after {t:.2} s; {needed} calls x L / {} = {bound:.2} s; ratio {:.3}",
            w.label,
            w.users,
            w.cap,
            w.cap,
            t / bound
        );
        rows.push(Row::new(
            &format!(
                "(j) tenant '{}' ({} incidents, cap {}) beside the others",
                w.label, w.users, w.cap
            ),
            format!("{t:.2} s"),
            format!("{needed} calls x L / {} = {bound:.2} s", w.cap),
            Some(t / bound),
            "<= 1.1 x its own bound".into(),
            t / bound <= 1.1,
        ));
    }
    Ok(rows)
}
