//! The command line: `serve` (default), `demo`, `check-config`, `doctor`,
//! `runs`, `replay`, `healthcheck`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};

#[derive(Parser)]
#[command(
    name = "wipehook",
    version,
    about = "Contain a compromised Microsoft 365 account from a Sentinel playbook: account-only Exchange mobile wipes, written back to the incident."
)]
struct Cli {
    /// Configuration file (TOML). Without it: the file inline in
    /// WIPEHOOK_CONFIG_TOML, else the path in WIPEHOOK_CONFIG; then
    /// WIPEHOOK_<SECTION>__<KEY> variables override.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Start wipehook on its embedded defaults against the simulated tenant,
    /// contain a sample incident through the real endpoint, keep serving.
    #[cfg(feature = "demo")]
    Demo {
        /// Port for wipehook (0 = any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Exit after printing the result instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Check a deployment, read-only, tenant by tenant: configuration and
    /// cloud, inbound app registration and callers, outbound tokens and
    /// roles, Exchange (canary mailbox, RBAC), Sentinel, clock, store. Exit
    /// code 0 only if no check failed.
    Doctor {
        /// The checklist as JSON (for automation).
        #[arg(long)]
        json: bool,
    },
    /// Read runs from the store.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Show the targets and decisions for a saved trigger body, without
    /// calling Exchange or writing a comment.
    Replay { file: PathBuf },
    /// Exit 0 when GET /healthz on the local listener answers 200 (container health checks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Benchmark the real service against the simulated tenant (see docs/performance.md).
    #[cfg(feature = "demo")]
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The newest runs.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run's full result (JSON).
    Show { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.config).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "demo")]
            Command::Demo { port, once } => crate::demo::run(port, once)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::CheckConfig => check_config(cli.config).map(|()| ExitCode::SUCCESS),
            Command::Doctor { json } => doctor(cli.config, json).await,
            Command::Runs { command } => {
                runs(cli.config, command).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Replay { file } => replay(cli.config, file).await.map(|()| ExitCode::SUCCESS),
            Command::Healthcheck { url } => healthcheck(&url).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "demo")]
            Command::Bench(args) => crate::bench::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Config> {
    Settings::load(config.as_deref()).map_err(anyhow::Error::msg)
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    crate::telemetry::init("info", true);
    let config = load(config)?;
    let app = crate::startup::Application::build(config).await?;
    tracing::info!(port = app.port(), "wipehook listening");
    app.run_until_stopped().await
}

fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(config)?;
    for t in &config.tenants {
        if let crate::config::CredentialSettings::ClientSecret {
            client_secret_env, ..
        } = &t.credential
        {
            let set = std::env::var(client_secret_env)
                .map(|v| !v.is_empty())
                .unwrap_or(false);
            eprintln!(
                "tenant {}: client secret variable {client_secret_env} is {}",
                t.id,
                if set { "set" } else { "NOT set" }
            );
        }
        if t.policy.allowed_domains.is_empty() {
            eprintln!(
                "tenant {}: warning: policy.allowed_domains is empty, every user will be refused",
                t.id
            );
        }
    }
    print!("{}", config.settings.redacted_toml());
    eprintln!("configuration is valid");
    Ok(())
}

/// The checklist (text or JSON); exit code 1 when a check failed. A
/// configuration that does not load is the first failed check, not an error.
async fn doctor(config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let report = crate::doctor::run_file(config.as_deref()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::from(report.exit_code()))
}

async fn runs(config: Option<PathBuf>, cmd: RunsCommand) -> anyhow::Result<()> {
    let config = load(config)?;
    let store = crate::store::Store::connect(&config.settings.store).await?;
    match cmd {
        RunsCommand::List { limit } => {
            println!(
                "{:<36}  {:<20}  {:<10}  {:<8}  {:>8}  incident",
                "run", "created", "status", "mode", "trigger"
            );
            for r in store.list_runs(limit).await? {
                println!(
                    "{:<36}  {:<20}  {:<10}  {:<8}  {:>8}  {}",
                    r.id,
                    crate::report::rfc3339(r.created_at)
                        .chars()
                        .take(19)
                        .collect::<String>(),
                    r.status,
                    r.mode,
                    r.trigger,
                    r.incident_number
                        .map(|n| format!("#{n}"))
                        .or_else(|| r.incident.map(|i| i.arm_id()))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        RunsCommand::Show { id } => {
            let run_id = crate::domain::RunId::parse(&id).map_err(anyhow::Error::msg)?;
            match crate::report::load(&store, &run_id).await? {
                Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
                None => anyhow::bail!("no run {id}"),
            }
        }
    }
    Ok(())
}

async fn replay(config: Option<PathBuf>, file: PathBuf) -> anyhow::Result<()> {
    let config = load(config)?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
    let out = crate::replay::explain(&config, &body).map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "{url} answered {}", r.status());
    Ok(())
}
