//! Checks that need no tenant: the configuration, its cloud, the store.

use std::path::Path;
use std::time::Duration;

use super::Check;
use crate::config::{Config, clouds_of_host};
use crate::store::{LATEST_SCHEMA, Store};

pub fn invalid(path: Option<&Path>, error: &str) -> Check {
    Check::new("config.valid", "the configuration loads and validates")
        .checked(source(path))
        .fail(
            error.to_string(),
            "correct the key named above (every key and its meaning: docs/config.example.toml); \
             `wipehook check-config --config FILE` prints the effective configuration",
        )
}

fn source(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!(
            "{}, then WIPEHOOK_<SECTION>__<KEY> overrides",
            p.display()
        ),
        None => "WIPEHOOK_CONFIG_TOML or the file in WIPEHOOK_CONFIG, then WIPEHOOK_<SECTION>__<KEY> overrides".into(),
    }
}

pub fn valid(config: &Config) -> Check {
    let s = &config.settings;
    let c = Check::new("config.valid", "the configuration loads and validates")
        .checked("every key parsed and validated (Config::new)");
    let saw = format!(
        "{} tenant(s); cloud {}; store {}; inbound: {} audience(s), {} allowed caller(s){}",
        config.tenants.len(),
        config.cloud.name,
        s.store.url,
        s.inbound.audiences.len(),
        config
            .tenants
            .iter()
            .map(|t| t.allowed_callers.len())
            .sum::<usize>(),
        if s.guard.kill_switch {
            "; guard.kill_switch = true: no wipe is sent"
        } else {
            ""
        }
    );
    if config.tenants.is_empty() {
        return c.fail(
            format!("{saw}: no [[tenants]], so every call is refused"),
            "add a [[tenants]] entry with the tenant id, its workspaces and wipehook's credential \
             (docs/setup.md, step 6.1)",
        );
    }
    let refusing: Vec<String> = config
        .tenants
        .iter()
        .filter(|t| t.policy.allowed_domains.is_empty())
        .map(|t| t.id.to_string())
        .collect();
    if !refusing.is_empty() {
        return c.warn(
            format!(
                "{saw}; policy.allowed_domains is empty for tenant(s) {}: every user will be refused",
                refusing.join(", ")
            ),
            "list the mail domains wipehook may contain in policy.allowed_domains (docs/config.example.toml)",
        );
    }
    c.pass(saw)
}

/// No mix of clouds: every Microsoft host among the configured URLs and
/// resource identifiers belongs to the configured cloud.
pub fn cloud(config: &Config) -> Check {
    let cloud = &config.cloud;
    let c = Check::new(
        "config.cloud",
        format!("every URL and resource identifier belongs to cloud '{}'", cloud.name),
    )
    .checked("the hosts of cloud.authority_host, exchange_url, arm_url, graph_url and the three *_resource keys");
    let mut foreign = vec![];
    let mut unjudged = vec![];
    for (key, url) in cloud.endpoints() {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        match clouds_of_host(&host) {
            Some(clouds) if !clouds.contains(&cloud.name.as_str()) => foreign.push(format!(
                "cloud.{key} = {url} is a host of {}",
                clouds.join("/")
            )),
            Some(_) => {}
            None => unjudged.push(format!("{key} ({host})")),
        }
    }
    let note = if unjudged.is_empty() {
        String::new()
    } else {
        format!(
            "; not Microsoft hosts, not judged (a private endpoint, a proxy or a test tenant): {}",
            unjudged.join(", ")
        )
    };
    if !foreign.is_empty() {
        return c.fail(
            format!("cloud.name = '{}', but {}{note}", cloud.name, foreign.join("; ")),
            format!(
                "remove the override (the preset of cloud.name gives every host of that cloud), or set \
                 cloud.name to the tenant's cloud (public, usgov, usgov-dod, china) if the tenant lives \
                 there. The *_url keys only change where requests go; the *_resource keys decide which \
                 tokens are requested, and a token of one cloud is refused by the other \
                 (docs/config.example.toml, [cloud])"
            ),
        );
    }
    c.pass(format!(
        "every Microsoft host belongs to '{}'{note}",
        cloud.name
    ))
}

/// The store: reachable, its schema version, the write path's latency. The
/// store is inspected, not migrated or created.
pub async fn store(config: &Config) -> Vec<Check> {
    let s = &config.settings.store;
    let schema = Check::new(
        "store.schema",
        "the store is reachable and at this build's schema",
    )
    .checked(format!(
        "connect to {} (without migrating) and read schema_version",
        s.url
    ));
    let write = Check::new("store.write", "the store takes writes quickly")
        .checked("an INSERT in a transaction that is rolled back (nothing is kept)");
    if s.url.is_sqlite() {
        let path = s
            .url
            .expose()
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && path != ":memory:" && !Path::new(path).exists() {
            return vec![
                schema.warn(
                    format!("no SQLite file at {path} yet"),
                    "fine before the first start (the service creates it); otherwise run doctor \
                     where the service runs, with the same store.url (docs/operations.md, Running the CLI)",
                ),
                write.skip("no store to write to"),
            ];
        }
    }
    let store = match Store::inspect(s).await {
        Ok(st) => st,
        Err(e) => {
            return vec![
                schema.fail(
                    format!("{e:#}"),
                    "check store.url (the PostgreSQL host, port, database and the password in \
                     WIPEHOOK_STORE__URL) and that this machine may reach it",
                ),
                write.skip("the store is not reachable"),
            ];
        }
    };
    let schema = match store.schema_version().await {
        Err(e) => {
            return vec![
                schema.warn(
                    format!("the store has no schema yet ({e:#})"),
                    "fine before the first start: the service creates the schema when it starts",
                ),
                write.skip("no schema to write to yet"),
            ];
        }
        Ok(v) if v < LATEST_SCHEMA => schema.warn(
            format!("schema version {v}; this build migrates it to {LATEST_SCHEMA} when the service starts"),
            "nothing to do: the next start of this version migrates the store (several replicas \
             take turns under a lock)",
        ),
        Ok(v) if v > LATEST_SCHEMA => schema.fail(
            format!("schema version {v}, newer than this build knows ({LATEST_SCHEMA}): a newer wipehook migrated it"),
            "run the wipehook version that migrated the store (docs/operations.md, Upgrading)",
        ),
        Ok(v) => schema.pass(format!("reachable; schema version {v} (this build's)")),
    };
    let write = match store.write_latency().await {
        Err(e) => write.fail(
            format!("{e:#}"),
            "the store refuses writes: check its disk (SQLite) or the database user's rights and \
             free space (PostgreSQL)",
        ),
        Ok(d) if d > Duration::from_secs(1) => write.warn(
            format!("{} ms", d.as_millis()),
            "every accepted call commits before its 202: a slow store slows every playbook; check \
             the disk (SQLite on a network volume is slow) or the database's load",
        ),
        Ok(d) => write.pass(format!("{:.1} ms", d.as_secs_f64() * 1000.0)),
    };
    vec![schema, write]
}
